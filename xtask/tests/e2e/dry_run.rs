//! `cargo xtask db-restore --dry-run` (issue 12): the file checked completely, the plan a
//! real run would follow printed, and nothing changed: no database, file, session or
//! started service.

use std::fs;

use crate::testbed::{Bed, DB, HEAD, migrated_with_data, restore};

/// What a dry run must leave as it was: the databases, the files, the live data.
fn state(bed: &Bed) -> (Vec<String>, Vec<(String, String)>, String) {
    (bed.databases(), bed.snapshot(), bed.psql("SELECT count(*) FROM memories"))
}

#[test]
fn a_dry_run_checks_everything_says_what_would_happen_and_changes_nothing() {
    let bed = migrated_with_data("dryrun");
    bed.run_ok(&["db-backup"]);
    // Two real restores: the second leaves an older replaced database, which a third
    // restore with --keep-previous 1 would dump and drop.
    for _ in 0..2 {
        let run = restore(&bed, &["latest", "--yes", "--no-migrate"]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    let earlier: Vec<String> = bed.databases().into_iter().filter(|d| d.contains("__pre_restore_")).collect();
    assert_eq!(earlier.len(), 1, "{earlier:?}");
    bed.psql("INSERT INTO memories (body) VALUES ('written after the backup')");
    let before = state(&bed);

    let run = restore(&bed, &["latest", "--dry-run"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let said = &run.stderr;
    assert!(said.contains("checksum matches, complete"), "the whole file was checked: {said}");
    assert!(said.contains(&format!("load it into a new database `{DB}__restore_<run>`")), "{said}");
    assert!(said.contains(&format!("the current data of `{DB}` is kept as database `{DB}__pre_restore_<now>`")));
    assert!(said.contains(&format!("then dropped: `{}`", earlier[0])), "the older one is retired: {said}");
    assert!(said.contains(&format!("migrate to {HEAD} with Alembic in")), "the migration target: {said}");
    assert!(run.last_line().contains("dry run complete") && run.last_line().contains("nothing was changed"));
    assert_eq!(state(&bed), before, "a dry run changed something");
    assert!(bed.xtask_sessions().is_empty(), "{:?}", bed.xtask_sessions());

    let run = restore(&bed, &["latest", "--dry-run", "--no-migrate", "--keep-previous", "3"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("not migrated (--no-migrate)"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("kept as they are: `{}`", earlier[0])), "{}", run.stderr);
    assert!(!run.stderr.contains("then dropped"), "{}", run.stderr);

    // A damaged file: refused by the dry run as a real run would refuse it.
    let damaged = bed.backup_dir.join(format!("{DB}_backup_20200101_000000_{HEAD}.sql"));
    let good = bed.backups().into_iter().next_back().expect("a backup");
    fs::copy(&good, &damaged).unwrap();
    fs::copy(good.with_extension("sql.sha256"), damaged.with_extension("sql.sha256")).unwrap();
    let sidecar = fs::read_to_string(damaged.with_extension("sql.sha256")).unwrap();
    let good_name = good.file_name().unwrap().to_string_lossy().into_owned();
    let damaged_name = damaged.file_name().unwrap().to_string_lossy().into_owned();
    fs::write(damaged.with_extension("sql.sha256"), sidecar.replace(&good_name, &damaged_name)).unwrap();
    let mut bytes = fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&damaged, bytes).unwrap();
    let before = state(&bed);
    let run = restore(&bed, &[damaged.to_str().unwrap(), "--dry-run"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("dry run refused") && run.last_line().contains("checksum"), "{}", run.stderr);
    assert_eq!(state(&bed), before);

    // A stopped service stays stopped.
    let stop = bed.compose(&["stop", "-t", "5", "db"]);
    assert!(stop.status.success());
    let run = restore(&bed, &["latest", "--dry-run"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("a dry run does not start it"), "{}", run.stderr);
    let running = bed.compose(&["ps", "--services", "--filter", "status=running"]);
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "", "the dry run started the database");
}
