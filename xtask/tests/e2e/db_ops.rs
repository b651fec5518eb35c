//! Operating the backups against the real test bed: db-list and db-verify (with JSON
//! checked by Python's parser), db-prune over a series spanning months, db-backup --json,
//! and a disk that is too small or fills up mid-dump (a real tmpfs).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::testbed::{Bed, Flavor, python_json};

const REV: &str = "5e6f7a8b9c0d";

fn seed(bed: &Bed) {
    bed.psql(&format!(
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
         INSERT INTO alembic_version VALUES ('{REV}');
         CREATE TABLE notes (id serial PRIMARY KEY, body text);
         INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 500) g;
         CREATE TABLE empty_one (x int);"
    ));
}

#[test]
fn db_verify_passes_a_good_backup_fails_a_damaged_one_and_never_touches_the_live_database() {
    let bed = Bed::new("verify", Flavor::V2);
    bed.start();
    seed(&bed);
    let run = bed.run_ok(&["db-backup", "--json"]);
    let path = python_json(&run.stdout, "d['path']");
    assert_eq!(
        python_json(&run.stdout, "(d['ok'], d['revision'], d['compression'], d['removed'])"),
        format!("(True, '{REV}', 'none', [])")
    );
    assert_eq!(
        python_json(
            &run.stdout,
            "d['size'] == d['sql_bytes'] > 0 and d['duration_secs'] > 0 and len(d['sha256']) == 64"
        ),
        "True"
    );
    let good = PathBuf::from(path);
    let live = (bed.dump_text(), bed.databases());

    let run = bed.run_ok(&["db-verify", "--json"]);
    assert_eq!(python_json(&run.stdout, "(d['ok'], len(d['backups']))"), "(True, 1)");
    let report = "d['backups'][0]";
    assert_eq!(
        python_json(&run.stdout, &format!("({report}['revision'], {report}['checksum_verified'], {report}['error'])")),
        format!("('{REV}', True, None)")
    );
    assert_eq!(
        python_json(&run.stdout, &format!("{report}['tables']")),
        "[{'table': 'public.alembic_version', 'rows': 1}, {'table': 'public.empty_one', 'rows': 0}, {'table': 'public.notes', 'rows': 500}]"
    );
    let marker = PathBuf::from(format!("{}.verified", good.display()));
    assert!(marker.exists(), "the pass is recorded");

    let list = bed.run_ok(&["db-list", "--json"]);
    let backup = "d['backups'][0]";
    assert_eq!(python_json(&list.stdout, "(d['database'], len(d['backups']))"), "('hindsight_db', 1)");
    assert_eq!(
        python_json(&list.stdout, &format!("sorted({backup}.keys())")),
        "['age_secs', 'checksum_file', 'complete', 'compression', 'file', 'path', 'revision', 'revision_ids', 'size', 'taken', 'verified']"
    );
    assert_eq!(python_json(&list.stdout, &format!("{backup}['revision_ids']")), format!("['{REV}']"));
    assert_eq!(
        python_json(
            &list.stdout,
            &format!(
                "({backup}['revision'], {backup}['compression'], {backup}['checksum_file'], {backup}['verified']['record'].startswith('verified '), {backup}['size'] == {})",
                fs::metadata(&good).unwrap().len()
            )
        ),
        format!("('{REV}', 'none', True, True, True)")
    );
    let table = bed.run_ok(&["db-list"]);
    // The revision in its own column, between two others.
    assert!(table.stdout.contains(&format!("  {REV}  ")) && table.stdout.contains("verified 20"), "{}", table.stdout);

    // A byte changed in the data: the checksum catches it.
    let mut bytes = fs::read(&good).unwrap();
    let at = bytes.windows(8).position(|w| w == b"note 250").unwrap();
    bytes[at] = b'N';
    fs::write(&good, &bytes).unwrap();
    let run = bed.run(&["db-verify", "latest"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("does not match its checksum"), "{}", run.stderr);
    assert!(!marker.exists(), "a failed verification removes the old record");

    // Damage its checksum would not catch (the sidecar rewritten to match): the restore does.
    let at = bytes.windows(6).position(|w| w == b"\n250\tN").unwrap() + 1;
    bytes[at..at + 3].copy_from_slice(b"x5x");
    fs::write(&good, &bytes).unwrap();
    let sum = Command::new("sha256sum").arg(&good).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_owned();
    fs::write(
        format!("{}.sha256", good.display()),
        format!("{sum}  {}\n", good.file_name().unwrap().to_string_lossy()),
    )
    .unwrap();
    let run = bed.run(&["db-verify", good.file_name().unwrap().to_str().unwrap(), "--json"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(python_json(&run.stdout, "d['ok']"), "False");
    assert!(
        python_json(&run.stdout, "d['backups'][0]['error']").contains("invalid input syntax for type integer"),
        "psql's words: {}",
        run.stdout
    );

    assert!(bed.scratch_databases().is_empty(), "no scratch database left");
    assert_eq!((bed.dump_text(), bed.databases()), live, "the live database was never touched");
}

#[test]
fn db_verify_all_reports_every_backup() {
    let bed = Bed::new("verifyall", Flavor::V2);
    bed.start();
    seed(&bed);
    bed.run_ok(&["db-backup", "--compress", "zstd"]);
    bed.run_ok(&["db-backup"]);
    let run = bed.run_ok(&["db-verify", "--all", "--json"]);
    assert_eq!(python_json(&run.stdout, "[b['ok'] for b in d['backups']]"), "[True, True]");
    let list = bed.run_ok(&["db-list", "--json"]);
    assert_eq!(python_json(&list.stdout, "[b['verified'] is not None for b in d['backups']]"), "[True, True]");
    assert_eq!(python_json(&list.stdout, "sorted(b['compression'] for b in d['backups'])"), "['none', 'zstd']");
    assert!(bed.scratch_databases().is_empty());
}

/// Copies of one real backup under names spanning months, as hourly cron would leave them.
fn synthetic_series(bed: &Bed, body: &[u8], stamps: &[&str]) -> Vec<String> {
    stamps
        .iter()
        .map(|stamp| {
            let name = format!("hindsight_db_backup_{stamp}_{REV}.sql");
            fs::write(bed.backup_dir.join(&name), body).unwrap();
            fs::write(bed.backup_dir.join(format!("{name}.sha256")), "x").unwrap();
            name
        })
        .collect()
}

#[test]
fn db_prune_applies_the_age_policy_and_says_why() {
    let bed = Bed::new("prune", Flavor::V2);
    bed.start();
    seed(&bed);
    bed.run_ok(&["db-backup"]);
    let good = bed.backups().pop().unwrap();
    let real = fs::read(&good).unwrap();
    fs::remove_file(&good).unwrap();
    fs::remove_file(format!("{}.sha256", good.display())).unwrap();
    let names = synthetic_series(
        &bed,
        &real,
        &[
            "20260815_100000",
            "20260820_100000", // August: monthly
            "20260910_100000",
            "20260930_230000", // September: monthly (the 30th)
            "20261101_090000",
            "20261101_100000", // Nov 1: daily (10:00)
            "20261102_080000",
            "20261102_090000",
            "20261102_100000", // Nov 2: daily (10:00), hourly
        ],
    );
    let strangers = bed.backup_dir.join("notes.txt");
    fs::write(&strangers, "mine").unwrap();

    let dry = bed.run_ok(&["db-prune", "--dry-run", "--keep-daily", "2", "--keep-monthly", "3", "--keep-hourly", "2"]);
    assert!(
        dry.stdout.contains(&format!("keep    {}  (newest, hourly #1, daily #1, monthly #1)", names[8])),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains(&format!("would remove {}", names[0])), "{}", dry.stdout);
    assert_eq!(bed.backups().len(), 9, "a dry run removes nothing");

    bed.run_ok(&["db-prune", "--keep-daily", "2", "--keep-monthly", "3", "--keep-hourly", "2"]);
    let left: Vec<String> =
        bed.backups().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let expected = [&names[1], &names[3], &names[5], &names[7], &names[8]].map(String::clone);
    assert_eq!(left, expected, "monthly: Aug 20, Sep 30, Nov 2; daily: Nov 2, Nov 1; hourly: Nov 2 10:00 and 09:00");
    assert!(!bed.backup_dir.join(format!("{}.sha256", names[0])).exists(), "sidecars go with their backups");
    assert!(strangers.exists());

    // Whatever the policy, the newest complete backup stays.
    bed.run_ok(&["db-prune", "--max-backups", "1"]);
    let left: Vec<String> =
        bed.backups().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(left, [names[8].clone()]);
}

/// A real small filesystem for the backup directory, unmounted afterwards.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs (the test needs root): {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_disk_too_small_is_refused_before_writing_and_a_full_disk_loses_nothing() {
    let bed = Bed::new("diskfull", Flavor::V2);
    bed.start();
    seed(&bed);
    // Large in the database, tiny once compressed.
    bed.psql("CREATE TABLE filler AS SELECT g, 'row ' || g || ' ' || repeat('abc', 30) AS t FROM generate_series(1, 300000) g;");
    let _disk = Tmpfs::mount(&bed.backup_dir, "6m");

    // The plain dump would need about the database's size: refused up front.
    let run = bed.run(&["db-backup"]);
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    assert!(
        run.last_line().contains("free in") && run.last_line().contains("nothing was written"),
        "{}",
        run.last_line()
    );
    assert!(bed.backups().is_empty());

    // A first zstd backup has nothing to go by, starts, and meets the full disk.
    bed.run_ok(&["db-backup", "--compress", "zstd"]);
    let before = bed.snapshot();
    // Random text, which no compression shrinks below the disk's size.
    bed.psql("INSERT INTO filler SELECT g, md5(g::text) || md5((g * 3)::text) FROM generate_series(300001, 900000) g;");
    // The last zstd backup fits, so the check lets it start; the disk fills mid-dump.
    let run = bed.run(&["db-backup", "--compress", "zstd"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.last_line().contains("No space left on device") || run.last_line().contains("space"),
        "{}",
        run.last_line()
    );
    assert!(run.last_line().contains("every existing backup (1) is untouched"), "{}", run.last_line());
    assert_eq!(bed.snapshot(), before, "the old backup intact, no partial left");
}
