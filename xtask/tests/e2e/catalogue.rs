//! Which files count as backups, against the real test bed: empty and cut-short files
//! named like backups (the old shell script leaves them) never take a good backup's place
//! in retention or as `latest`, db-list marks them, and only `db-prune --incomplete`
//! removes them. A backup name that is nowhere fails instead of passing as "nothing to do".

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::testbed::{Bed, Flavor, python_json};

const REV: &str = "0a1b2c3d4e5f";

fn seed(bed: &Bed) {
    bed.psql(&format!(
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
         INSERT INTO alembic_version VALUES ('{REV}');
         CREATE TABLE notes (id serial PRIMARY KEY, body text);
         INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 300) g;"
    ));
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| file_name(p)).collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn incomplete_files_never_take_a_good_backups_place_and_go_only_when_asked() {
    let bed = Bed::new("catalogue", Flavor::V2);
    bed.start();
    seed(&bed);
    bed.run_ok(&["db-backup"]);
    bed.run_ok(&["db-backup"]);
    let good = bed.backups();
    assert_eq!(good.len(), 2, "{good:?}");
    let (older, newer) = (good[0].clone(), good[1].clone());

    // What a killed or disk-full run of the old script leaves: named newer than every real
    // backup, as the next hour's would be.
    let empty = bed.backup_dir.join("hindsight_db_backup_20990101_000000_unknown.sql");
    fs::write(&empty, "").unwrap();
    let truncated = bed.backup_dir.join(format!("hindsight_db_backup_20990102_000000_{REV}.sql"));
    let dump = fs::read(&newer).unwrap();
    fs::write(&truncated, &dump[..dump.len() / 2]).unwrap();
    // A record an earlier db-verify might have left goes with its file.
    let truncated_record = bed.backup_dir.join(format!("{}.verified", file_name(&truncated)));
    fs::write(&truncated_record, "verified 2099-01-02T00:00:00\n").unwrap();
    let stranger = bed.backup_dir.join("other_db_backup_20990103_000000_unknown.sql");
    fs::write(&stranger, "").unwrap();

    // Counting the broken files, the newest two would be them, and both good backups would
    // go. Counting complete backups only: the new one and the newer good one stay.
    let run = bed.run_ok(&["db-backup", "--max-backups", "2", "--json"]);
    let new = PathBuf::from(python_json(&run.stdout, "d['path']"));
    assert_eq!(
        python_json(&run.stdout, "d['removed']"),
        format!("['{}']", older.display()),
        "exactly the oldest good backup goes"
    );
    assert!(run.stderr.contains("2 incomplete files"), "db-backup says they are there: {}", run.stderr);
    let mut expected = vec![
        file_name(&new),
        format!("{}.roles.sql", file_name(&new)),
        format!("{}.sha256", file_name(&new)),
        file_name(&newer),
        format!("{}.roles.sql", file_name(&newer)),
        format!("{}.sha256", file_name(&newer)),
        file_name(&empty),
        file_name(&truncated),
        file_name(&truncated_record),
        file_name(&stranger),
    ];
    expected.sort();
    assert_eq!(names(&bed.files()), expected, "both good backups the rule keeps, and the broken files untouched");

    // db-list shows them, marked; they are never the newest.
    let list = bed.run_ok(&["db-list"]);
    let line = |path: &Path| {
        let column = format!("  {}  ", file_name(path));
        let found = list.stdout.lines().find(|l| l.contains(&column));
        found.unwrap_or_else(|| panic!("{} not listed:\n{}", path.display(), list.stdout)).to_owned()
    };
    assert!(line(&empty).contains("incomplete (empty)"), "{}", list.stdout);
    assert!(
        line(&truncated).contains("incomplete (no .sha256 and no completion marker at its end)"),
        "{}",
        list.stdout
    );
    assert!(!line(&new).contains("incomplete") && !line(&newer).contains("incomplete"), "{}", list.stdout);
    assert!(list.stdout.contains("db-prune --incomplete"), "{}", list.stdout);
    let json = bed.run_ok(&["db-list", "--json"]);
    assert_eq!(
        python_json(&json.stdout, "[(b['file'], b['complete']) for b in d['backups']]"),
        format!(
            "[('{}', False), ('{}', False), ('{}', True), ('{}', True)]",
            file_name(&truncated),
            file_name(&empty),
            file_name(&new),
            file_name(&newer)
        )
    );

    // `latest` is the newest complete backup: db-verify restores that one.
    let verify = bed.run_ok(&["db-verify", "--json"]);
    assert_eq!(
        python_json(&verify.stdout, "[(b['path'], b['ok']) for b in d['backups']]"),
        format!("[('{}', True)]", new.display())
    );

    // Only an explicit --incomplete removes them; a dry run nothing at all.
    let before = bed.snapshot();
    let dry = bed.run_ok(&["db-prune", "--incomplete", "--dry-run"]);
    assert!(dry.stdout.contains(&format!("would remove {}", file_name(&empty))), "{}", dry.stdout);
    assert!(dry.stdout.contains(&format!("would remove {}", file_name(&truncated))), "{}", dry.stdout);
    assert_eq!(bed.snapshot(), before, "a dry run removes nothing");

    let prune = bed.run_ok(&["db-prune", "--incomplete"]);
    assert!(prune.last_line().contains("removed: 2 incomplete files"), "{}", prune.stderr);
    let gone = [file_name(&empty), file_name(&truncated), file_name(&truncated_record)];
    let left: Vec<(String, String)> = before.into_iter().filter(|(name, _)| !gone.contains(name)).collect();
    assert_eq!(bed.snapshot(), left, "exactly the incomplete files went; the rest is byte for byte as it was");
    assert!(stranger.exists(), "another database's files are not ours");
}

#[test]
fn a_backup_name_that_is_nowhere_fails_and_touches_nothing() {
    let bed = Bed::new("nowhere", Flavor::V2);
    bed.start();
    seed(&bed);

    // No directory yet: with --json, still one object saying so, and nothing created.
    let run = bed.run(&["db-verify", "--json"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(python_json(&run.stdout, "(d['ok'], d['code'], 'backups' in d)"), "(False, 1, False)");
    assert!(python_json(&run.stdout, "d['error']").contains("does not exist"), "{}", run.stdout);
    assert!(!bed.backup_dir.exists(), "db-verify only reads the directory");

    // Nothing to verify yet.
    fs::create_dir_all(&bed.backup_dir).unwrap();
    let run = bed.run(&["db-verify", "--json"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(python_json(&run.stdout, "(d['ok'], d['code'], 'backups' in d)"), "(False, 1, False)");
    assert!(python_json(&run.stdout, "d['error']").contains("no complete backups"), "{}", run.stdout);

    bed.run_ok(&["db-backup"]);
    let files = bed.snapshot();
    let live = (bed.dump_text(), bed.databases());
    let dir = bed.backup_dir.display().to_string();

    let run = bed.run(&["db-verify", "nope.sql"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let error = run.last_line();
    assert!(error.contains("no backup `nope.sql`") && error.contains(&format!("{dir}/nope.sql")), "{error}");
    assert!(error.contains("cargo xtask db-list"), "{error}");
    assert!(!run.stderr.contains("skipped"), "a name that is nowhere is no skip: {}", run.stderr);

    let run = bed.run(&["db-verify", "nope.sql", "--json"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(python_json(&run.stdout, "d['ok']"), "False");
    assert!(python_json(&run.stdout, "d['error']").contains("no backup `nope.sql`"), "{}", run.stdout);

    let run = bed.run(&["db-restore", "nope.sql", "--yes"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("no backup `nope.sql`"), "{}", run.last_line());

    assert_eq!((bed.dump_text(), bed.databases()), live, "the database is untouched");
    assert_eq!(bed.snapshot(), files, "so are the backups");
}
