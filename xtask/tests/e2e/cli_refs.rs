//! The command line as a person meets it: short references to backups (`latest~1`, the
//! number db-list shows, a prefix of the time), one rule for relative paths (the working
//! directory, as every command-line tool), read-only tasks that say a directory is missing
//! instead of creating it, and db-list's header and aligned columns.
//!
//! Only the tests that restore need the Docker test bed; the others run the real binary on
//! a directory of files named as backups, which is all those tasks read.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::testbed::{Bed, Flavor, Run, python_json, xtask_in};

/// The end of a real pg_dump: what makes a plain file without a `.sha256` complete.
const DUMP_END: &str = "--\n-- PostgreSQL database dump complete\n--\n";

/// Oldest to newest, as db-list numbers them: #4 to #1; the last one is empty (incomplete,
/// no number), as a killed run of the old script leaves it.
const A: &str = "hindsight_db_backup_20261124_114600_3f2a9c1b7d4e.sql";
const B: &str = "hindsight_db_backup_20261125_071028_3f2a9c1b7d4e.sql.zst";
const C: &str = "hindsight_db_backup_20261125_071512_3f2a9c1b7d4e.sql";
const D: &str = "hindsight_db_backup_20261125_080000_unknown.sql";
const EMPTY: &str = "hindsight_db_backup_20261125_090000_unknown.sql";

/// A fresh directory of this test's own under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli_refs_{name}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dir` with the backups above: plain ones complete by their marker, the zstd one by its
/// `.sha256`, and the empty one incomplete.
fn fake_backups(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for name in [A, C, D] {
        fs::write(dir.join(name), format!("SELECT 1;\n{DUMP_END}")).unwrap();
    }
    fs::write(dir.join(B), b"zstd bytes").unwrap();
    fs::write(dir.join(format!("{B}.sha256")), format!("{}  {B}\n", "ab".repeat(32))).unwrap();
    fs::write(dir.join(EMPTY), "").unwrap();
}

fn run(mut cmd: Command) -> Run {
    Run::from(cmd.output().expect("the xtask binary runs"))
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn references_that_name_no_backup_or_several_fail_with_the_candidates_and_the_directory() {
    let base = scratch("fail");
    let (data, sub) = (base.join("data"), base.join("sub"));
    fake_backups(&data);
    fs::create_dir_all(&sub).unwrap();
    let before = names(&data);
    let shown = data.display().to_string();
    // Given with `..`, printed without.
    let verify = |reference: &str| {
        let run = run(xtask_in(&sub, &["db-verify", reference, "--backup-dir", "../x/../data"]));
        assert_eq!(run.code, Some(1), "db-verify {reference}: {}", run.stderr);
        let error = run.last_line().to_owned();
        assert!(error.contains(&shown) && !error.contains("/../"), "names the directory, normalised: {error}");
        assert!(error.contains("cargo xtask db-list"), "points to db-list: {error}");
        error
    };

    let error = verify("20261125_07");
    assert!(error.contains("`20261125_07` is ambiguous"), "{error}");
    assert!(error.contains(&format!("#2 {C}")) && error.contains(&format!("#3 {B}")), "the matching ones: {error}");
    assert!(!error.contains(D) && !error.contains(A), "only the matching ones: {error}");

    let error = verify("nope.sql");
    assert!(error.contains("no backup `nope.sql`"), "{error}");
    assert!(error.contains(&format!("{}/nope.sql", sub.display())), "and where else it looked: {error}");
    assert!(error.contains(&format!("#1 {D}")), "the newest, with their numbers: {error}");
    assert!(!error.contains(EMPTY), "never an incomplete file: {error}");

    let error = verify("9");
    assert!(error.contains("no backup number 9") && error.contains("numbered 1 to 4"), "{error}");
    let error = verify("latest~4");
    assert!(error.contains("no backup `latest~4`") && error.contains("latest~3"), "{error}");
    let error = verify("2027");
    assert!(error.contains("was taken at `2027"), "{error}");

    assert_eq!(names(&data), before, "nothing was written");
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn read_only_tasks_on_a_missing_directory_fail_and_create_nothing() {
    let base = scratch("missing");
    let missing = base.join("typo");
    for args in [&["db-list"][..], &["db-list", "--json"], &["db-verify"], &["db-prune", "--dry-run"]] {
        let run = run(xtask_in(&base, &[args, &["--backup-dir", "typo"]].concat()));
        assert_eq!(run.code, Some(1), "{args:?} on a missing directory: {}", run.stderr);
        let error = run.last_line();
        assert!(error.contains(&format!("backup directory {} does not exist", missing.display())), "{args:?}: {error}");
        assert!(error.contains("--backup-dir") && error.contains("db-backup"), "says what to do: {error}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    // db-restore creates the directory for a file given by its path, never to look for
    // `latest` in it: that would only end in "no backups".
    let run = run(xtask_in(&base, &["db-restore", "latest", "--yes", "--backup-dir", "typo", "--compose", "v2"]));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains(&format!("{} does not exist", missing.display())), "{}", run.last_line());
    assert!(!missing.exists(), "db-restore latest created {}", missing.display());
    // A dry run writes nothing into a directory that exists either, not even a lock file.
    fs::create_dir(&missing).unwrap();
    let dry = self::run(xtask_in(&base, &["db-prune", "--dry-run", "--backup-dir", "typo"]));
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert_eq!(fs::read_dir(&missing).unwrap().count(), 0, "db-prune --dry-run wrote into the directory");
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn db_list_prints_a_header_and_aligned_numbered_columns() {
    let base = scratch("table");
    fake_backups(&base);
    let list = run(xtask_in(&base, &["db-list", "--backup-dir", "."]));
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    let lines: Vec<&str> = list.stdout.lines().collect();
    let header = lines.iter().position(|l| l.trim_start().starts_with("# ")).expect("a header row");
    let header_line = lines[header];
    for column in ["taken", "age", "revision", "format", "size", "file", "status"] {
        assert!(header_line.contains(column), "{column} in the header: {header_line}");
    }
    let rows = &lines[header + 1..header + 6];
    let at = |line: &str, what: &str| line.find(what).unwrap_or_else(|| panic!("{what} in {line}"));
    // Left-aligned columns start where their header does, right-aligned ones end there.
    for row in rows {
        assert_eq!(at(row, "hindsight_db_backup_"), at(header_line, "file"), "\n{header_line}\n{row}");
        assert_eq!(at(row, "2026-11-2"), at(header_line, "taken"), "\n{header_line}\n{row}");
        let status = row.find("not verified").or(row.find("incomplete")).expect("a status");
        assert_eq!(status, at(header_line, "status"), "the .sql.zst row too:\n{header_line}\n{row}");
        let size_end = at(header_line, "size") + "size".len();
        assert_eq!(&row[size_end - 1..size_end], "B", "sizes end under `size`:\n{header_line}\n{row}");
    }
    // The numbers references take: complete backups only, newest first.
    let number = |name: &str| {
        let row = rows.iter().find(|r| r.contains(name)).expect("listed");
        row[..at(header_line, "taken")].trim().to_owned()
    };
    let numbers: Vec<String> = [EMPTY, D, C, B, A].iter().map(|n| number(n)).collect();
    assert_eq!(numbers, ["", "1", "2", "3", "4"]);
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn relative_paths_are_taken_from_the_working_directory_and_printed_normalised() {
    let base = scratch("relative");
    let (data, sub) = (base.join("data"), base.join("sub"));
    fake_backups(&data);
    fs::create_dir_all(&sub).unwrap();
    let listed_in = format!("backups of `hindsight_db` in {}, newest first", data.display());

    let flag = run(xtask_in(&sub, &["db-list", "--backup-dir", "../x/../data"]));
    assert_eq!(flag.code, Some(0), "{}", flag.stderr);
    assert!(flag.stdout.contains(&listed_in) && flag.stdout.contains(D), "{}", flag.stdout);

    let mut with_env = xtask_in(&sub, &["db-list"]);
    with_env.env("HINDSIGHT_BACKUP_DIR", "./../data");
    let env = run(with_env);
    assert_eq!(env.code, Some(0), "{}", env.stderr);
    assert!(env.stdout.contains(&listed_in), "the variable follows the same rule: {}", env.stdout);

    // A BACKUP path is taken from the same place, not from the backup directory's.
    let missing = run(xtask_in(&sub, &["db-verify", "elsewhere/../old/nope.sql", "--backup-dir", "../data"]));
    assert_eq!(missing.code, Some(1), "{}", missing.stderr);
    let error = missing.last_line();
    assert!(error.contains(&format!("{}/old/nope.sql does not exist", sub.display())), "{error}");
    fs::remove_dir_all(&base).unwrap();
}

/// What `db-verify REFERENCE --json`, started in `cwd`, verified: the paths, and every one passed.
fn verified(bed: &Bed, cwd: &Path, reference: &str) -> String {
    let mut cmd = bed.xtask(&["db-verify", reference, "--json"]);
    cmd.current_dir(cwd);
    let run = run(cmd);
    assert_eq!(run.code, Some(0), "db-verify {reference}: {}", run.stderr);
    assert_eq!(python_json(&run.stdout, "[b['ok'] for b in d['backups']]"), "[True]", "{}", run.stdout);
    python_json(&run.stdout, "d['backups'][0]['path']")
}

#[test]
fn short_references_name_the_backup_db_list_numbers() {
    let bed = Bed::new("refs", Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) VALUES ('kept');");
    bed.run_ok(&["db-backup"]);
    let real = bed.backups().pop().expect("a backup");
    let dump = fs::read(&real).unwrap();
    // The real dump under names of known times; nothing else in the directory.
    for file in bed.files() {
        fs::remove_file(file).unwrap();
    }
    let stamps = ["20261124_114600", "20261125_071028", "20261125_071512"];
    let paths: Vec<PathBuf> =
        stamps.iter().map(|stamp| bed.backup_dir.join(format!("hindsight_db_backup_{stamp}_unknown.sql"))).collect();
    for path in &paths {
        fs::write(path, &dump).unwrap();
    }
    let [oldest, middle, newest] = [0, 1, 2].map(|i| paths[i].display().to_string());
    let here = std::env::temp_dir();

    assert_eq!(verified(&bed, &here, "latest"), newest);
    assert_eq!(verified(&bed, &here, "LATEST"), newest);
    assert_eq!(verified(&bed, &here, "latest~1"), middle);
    assert_eq!(verified(&bed, &here, "20261125_0710"), middle, "a unique prefix of the time");
    assert_eq!(verified(&bed, &here, "071512"), newest, "the time of day, as db-list shows it");

    // The number db-list shows for a backup is that backup.
    let list = bed.run_ok(&["db-list"]);
    let file = paths[0].file_name().unwrap().to_string_lossy().into_owned();
    let row = list.stdout.lines().find(|l| l.contains(&file)).expect("listed").to_owned();
    let number = row.split_whitespace().next().unwrap().to_owned();
    assert_eq!(number, "3", "{}", list.stdout);
    assert_eq!(verified(&bed, &here, &number), oldest);

    // A path is taken from the working directory, and reported without `..`.
    let work = scratch("refs_work");
    fs::create_dir_all(work.join("sub")).unwrap();
    fs::write(work.join("old.sql"), &dump).unwrap();
    let by_path = verified(&bed, &work.join("sub"), "../x/../old.sql");
    assert_eq!(by_path, work.join("old.sql").display().to_string());
    fs::remove_dir_all(&work).unwrap();
}
