//! A second restore never destroys data: the replaced database it retires is first dumped
//! into a checked prerestore file, which is never `latest`, never pruned, and restores by
//! name.

use std::fs;

use crate::testbed::{Bed, Flavor, assert_sidecar_matches};

fn notes(bed: &Bed) -> String {
    bed.psql("SELECT string_agg(v, ',' ORDER BY v) FROM notes").trim().to_owned()
}

fn prerestore_files(bed: &Bed) -> Vec<std::path::PathBuf> {
    use xtask::store::backup_file::{BackupName, Kind};
    bed.files().into_iter().filter(|p| BackupName::of_path(p).is_some_and(|n| n.kind == Kind::PreRestore)).collect()
}

#[test]
fn the_writes_between_two_restores_are_kept_in_a_checked_file() {
    let bed = Bed::new("prerestore", Flavor::V1);
    bed.start();
    bed.psql("CREATE TABLE notes (v text); INSERT INTO notes VALUES ('backed up');");
    bed.run_ok(&["db-backup"]);
    let restore = ["db-restore", "latest", "--yes", "--no-migrate"];

    bed.psql("INSERT INTO notes VALUES ('written before the first restore');");
    let first = bed.run_ok(&restore);
    assert!(first.stderr.contains("is kept as database `hindsight_db__pre_restore_<now>`"), "{}", first.stderr);
    assert!(prerestore_files(&bed).is_empty(), "nothing to retire yet");

    bed.psql("INSERT INTO notes VALUES ('written between the restores');");
    let second = bed.run_ok(&restore);
    assert!(second.stderr.contains("then dropped: `hindsight_db__pre_restore_"), "the plan says so: {}", second.stderr);
    let files = prerestore_files(&bed);
    assert_eq!(files.len(), 1, "{:?}", bed.files());
    let first_replaced = fs::read_to_string(&files[0]).unwrap();
    assert!(first_replaced.contains("written before the first restore"), "the first restore's replaced data");
    assert_sidecar_matches(&files[0]);

    bed.psql("INSERT INTO notes VALUES ('written after the second restore');");
    bed.run_ok(&restore);
    let files = prerestore_files(&bed);
    assert_eq!(files.len(), 2, "{:?}", bed.files());
    let second_replaced = fs::read_to_string(&files[1]).unwrap();
    assert!(second_replaced.contains("written between the restores"), "the writes between the restores are kept");
    for file in &files {
        assert_sidecar_matches(file);
    }
    let pre_restore: Vec<String> = bed.databases().into_iter().filter(|d| d.contains("__pre_restore_")).collect();
    assert_eq!(pre_restore.len(), 1, "--keep-previous 1: {pre_restore:?}");

    // Never `latest`, never counted by retention.
    assert_eq!(notes(&bed), "backed up");
    bed.run_ok(&["db-prune", "--max-backups", "1"]);
    assert_eq!(prerestore_files(&bed), files, "pruning leaves them");
    let listed = bed.run_ok(&["db-list"]);
    assert!(
        listed.stdout.contains(files[1].file_name().unwrap().to_str().unwrap()),
        "db-list shows them: {}",
        listed.stdout
    );

    // And they restore by name.
    let name = files[1].file_name().unwrap().to_str().unwrap();
    bed.run_ok(&["db-restore", name, "--yes", "--no-migrate"]);
    assert_eq!(notes(&bed), "backed up,written between the restores");
}
