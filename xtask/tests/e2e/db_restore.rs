//! `cargo xtask db-restore` against the real test bed: a round trip through `down -v`
//! with awkward values, refusals that leave the live database untouched, a restore that
//! fails halfway, a connected session, and the Alembic step with the real uv.

use std::{
    fs,
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use crate::testbed::{Bed, DB, FIRST, Flavor, HEAD, fingerprint, migrated_with_data, restore};

#[test]
fn round_trip_through_down_v_keeps_every_value_schema_and_revision() {
    let bed = migrated_with_data("roundtrip");
    let before = fingerprint(&bed);
    assert!(before.1.contains(HEAD), "migrated: {}", before.1);
    bed.run_ok(&["db-backup"]);

    let down = bed.compose(&["down", "-v"]);
    assert!(down.status.success());
    let volumes = Command::new("docker").args(["volume", "ls", "-q"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&volumes.stdout).contains(&format!("{}_db_data", bed.project)),
        "the volume is gone"
    );

    let run = restore(&bed, &["latest", "--yes"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("alembic upgrade {HEAD}")), "migrated to the file's revision: {}", run.stderr);
    assert!(run.last_line().contains("restore complete"), "{}", run.last_line());
    let after = fingerprint(&bed);
    assert_eq!(after.1, before.1, "values, sequences and revision");
    assert!(after.0 == before.0, "pg_dump sees a different database after the restore");
    assert!(bed.scratch_databases().is_empty());
}

#[test]
fn compressed_backups_and_the_old_scripts_plain_files_restore() {
    let bed = migrated_with_data("formats");
    let before = fingerprint(&bed);
    bed.run_ok(&["db-backup", "--compress", "zstd"]);
    bed.run_ok(&["db-backup", "--compress", "gzip"]);
    // What the old shell script wrote: a bare pg_dump pipe, no sidecar.
    let legacy = bed.backup_dir.join("hindsight_db_backup_20240101_120000.sql");
    let out = bed.compose(&["exec", "-T", "db", "pg_dump", "-U", "user", "-d", DB]);
    assert!(out.status.success());
    fs::write(&legacy, &out.stdout).unwrap();

    for ending in [".sql.zst", ".sql.gz"] {
        let path = bed.files().into_iter().find(|p| p.to_string_lossy().ends_with(ending)).unwrap();
        bed.psql("DELETE FROM memories WHERE id > 1000");
        let run = restore(&bed, &[path.to_str().unwrap(), "--yes"]);
        assert_eq!(run.code, Some(0), "{ending}: {}", run.stderr);
        assert!(run.stderr.contains("checksum matches"), "{}", run.stderr);
        assert_eq!(fingerprint(&bed), before, "{ending} restores every value");
    }

    bed.psql("DELETE FROM memories WHERE id > 1000");
    let run = restore(&bed, &[legacy.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("no .sha256 to compare"), "{}", run.stderr);
    assert!(run.stderr.contains("alembic upgrade head"), "an unparsed name migrates to head: {}", run.stderr);
    assert_eq!(fingerprint(&bed), before);

    // A cut zstd file is refused before anything is touched.
    let zst = bed.files().into_iter().find(|p| p.to_string_lossy().ends_with(".sql.zst")).unwrap();
    let bytes = fs::read(&zst).unwrap();
    let cut = bed.backup_dir.join("hindsight_db_backup_20990101_000000_unknown.sql.zst");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let databases = bed.databases();
    // Named by hand: without its .sha256 it is incomplete, so `latest` never picks it.
    let run = restore(&bed, &[cut.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("truncated"), "{}", run.last_line());
    assert_eq!((fingerprint(&bed), bed.databases()), (before, databases));
}

#[test]
fn truncated_and_mismatching_backups_are_refused_with_the_database_untouched() {
    let bed = migrated_with_data("refuse");
    bed.run_ok(&["db-backup"]);
    let good = bed.backups().pop().unwrap();
    let dump = fs::read(&good).unwrap();
    let before = (fingerprint(&bed), bed.databases());

    // Truncated, named by hand: `latest` skips it, being incomplete.
    let truncated = bed.backup_dir.join("hindsight_db_backup_20990101_000000_unknown.sql");
    fs::write(&truncated, &dump[..dump.len() / 2]).unwrap();
    let run = restore(&bed, &[truncated.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("truncated") && run.last_line().contains("not touched"), "{}", run.last_line());
    fs::remove_file(&truncated).unwrap();

    // Complete, but one byte differs from what its sidecar says.
    let mut damaged = dump.clone();
    let at = damaged.windows(8).position(|w| w == b"row 2500").unwrap();
    damaged[at] = b'R';
    let name = good.file_name().unwrap().to_str().unwrap();
    fs::write(&good, &damaged).unwrap();
    let run = restore(&bed, &[name, "--yes"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("does not match its checksum"), "{}", run.last_line());

    assert_eq!((fingerprint(&bed), bed.databases()), before, "nothing changed");
}

#[test]
fn a_restore_failing_halfway_leaves_the_live_database_and_no_scratch_database() {
    let bed = migrated_with_data("halfway");
    bed.run_ok(&["db-backup"]);
    let text = fs::read_to_string(bed.backups().pop().unwrap()).unwrap();
    // An error after the first table's data is in: a dump that breaks halfway.
    let end_of_copy = text.find("\n\\.\n").expect("a COPY block") + 4;
    let broken = format!("{}SELECT no_such_function();\n{}", &text[..end_of_copy], &text[end_of_copy..]);
    let path: PathBuf = bed.backup_dir.join("hindsight_db_backup_20990101_000000_unknown.sql");
    fs::write(&path, broken).unwrap();
    let before = (fingerprint(&bed), bed.databases());

    let run = restore(&bed, &[path.to_str().unwrap(), "--yes"]);

    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let error = run.last_line();
    assert!(error.contains("no_such_function"), "psql's own error: {error}");
    assert!(
        error.contains("is unchanged")
            && error.contains("no scratch database is left")
            && error.contains("pick another backup"),
        "{error}"
    );
    assert!(bed.scratch_databases().is_empty(), "no __restore_ database behind");
    assert_eq!((fingerprint(&bed), bed.databases()), before, "the live database is exactly as it was");
}

#[test]
fn a_connected_session_does_not_block_the_restore_and_old_data_is_kept() {
    let bed = migrated_with_data("session");
    bed.run_ok(&["db-backup"]);
    bed.psql("DELETE FROM memories WHERE id > 1000");
    let changed = bed.psql("SELECT count(*) FROM memories");

    let mut client = bed.hold_connection();

    let run = restore(&bed, &["latest", "--yes"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(bed.psql("SELECT count(*) FROM memories WHERE id > 1000").trim(), "5000", "the backup's rows are back");
    let ended = Instant::now();
    let status = client.wait().unwrap();
    assert!(!status.success() && ended.elapsed() < Duration::from_secs(60), "the other session was ended");

    // The replaced data is kept, and a second restore keeps only the newest replaced one.
    let previous: Vec<String> = bed.databases().into_iter().filter(|d| d.contains("__pre_restore_")).collect();
    assert_eq!(previous.len(), 1, "{previous:?}");
    let kept = bed.psql_in(&previous[0], "SELECT count(*) FROM memories");
    assert_eq!(kept.trim(), changed.trim(), "the previous data is intact");
    thread::sleep(Duration::from_millis(1100));
    let run = restore(&bed, &["latest", "--yes"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let now: Vec<String> = bed.databases().into_iter().filter(|d| d.contains("__pre_restore_")).collect();
    assert_eq!(now.len(), 1, "--keep-previous 1: {now:?}");
    assert_ne!(now, previous, "the newest replaced database is the one kept");
}

#[test]
fn without_a_terminal_nothing_happens_unless_yes() {
    let bed = migrated_with_data("noterm");
    bed.run_ok(&["db-backup"]);
    let before = (fingerprint(&bed), bed.databases());

    let run = restore(&bed, &["latest"]);
    assert_eq!(run.code, Some(4), "refused: {}", run.stderr);
    assert!(
        run.last_line().contains("--yes") && run.last_line().contains("nothing was changed"),
        "{}",
        run.last_line()
    );

    let run = restore(&bed, &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.last_line().contains("`latest`"), "says what to pass: {}", run.last_line());

    assert_eq!((fingerprint(&bed), bed.databases()), before);
}

#[test]
fn alembic_runs_to_head_for_an_unknown_revision_and_to_what_is_asked() {
    let bed = Bed::new("unknownrev", Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE legacy (id int); INSERT INTO legacy VALUES (1), (2);");
    bed.run_ok(&["db-backup"]);
    assert!(bed.backups()[0].to_string_lossy().ends_with("_unknown.sql"));

    let run = restore(&bed, &["latest", "--yes"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("alembic upgrade head"), "{}", run.stderr);
    assert_eq!(bed.psql("SELECT version_num FROM alembic_version").trim(), HEAD);
    assert_eq!(bed.psql("SELECT count(*) FROM legacy").trim(), "2");

    // --migrate-to wins over the file name.
    bed.psql("DROP TABLE alembic_version; DROP VIEW recent_memories; DROP TABLE memory_counts, memories; DROP FUNCTION count_memory_tags();");
    bed.run_ok(&["db-backup"]);
    let run = restore(&bed, &["latest", "--yes", "--migrate-to", FIRST]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("alembic upgrade {FIRST}")), "{}", run.stderr);
    assert_eq!(bed.psql("SELECT version_num FROM alembic_version").trim(), FIRST);
}

#[test]
fn a_failed_migration_says_how_to_roll_back() {
    let bed = Bed::new("badmigrate", Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE memories (id int);");
    bed.run_ok(&["db-backup"]);
    // `head` would create `memories`, which the backup already has.
    let run = restore(&bed, &["latest", "--yes"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let error = run.last_line();
    assert!(error.contains("migration to head failed") && error.contains("roll back"), "{error}");
    assert!(error.contains("already exists"), "alembic's own words: {error}");
    assert!(error.contains("__pre_restore_"), "names the previous database: {error}");
}

#[test]
fn on_a_terminal_a_picker_lists_the_backups_and_asks_before_restoring() {
    let bed = Bed::new("picker", Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('older');");
    bed.run_ok(&["db-backup"]);
    bed.psql("UPDATE t SET v = 'newer';");
    bed.run_ok(&["db-backup"]);
    let older = bed.backups()[0].file_name().unwrap().to_string_lossy().into_owned();

    let (code, screen) = bed.on_a_terminal("db-restore", "2\nn\n");
    assert_eq!(code, Some(4), "answering no refuses: {screen}");
    assert!(screen.contains("newest first") && screen.contains("2) ") && screen.contains(&older), "{screen}");
    assert!(screen.contains("revision") && screen.contains("unknown"), "a header and the revision: {screen}");
    assert!(screen.contains("just now"), "date, age, revision: {screen}");
    assert_eq!(bed.psql("SELECT v FROM t").trim(), "newer");

    let (code, screen) = bed.on_a_terminal("db-restore", "2\ny\n");
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(bed.psql("SELECT v FROM t").trim(), "older", "the second in the list, the older backup");
}

#[test]
fn a_live_database_dropped_by_accident_is_restored() {
    let bed = migrated_with_data("dropped");
    let before = fingerprint(&bed);
    bed.run_ok(&["db-backup"]);
    let out =
        bed.compose(&["exec", "-T", "db", "psql", "-U", "user", "-d", "postgres", "-c", "DROP DATABASE hindsight_db"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let run = restore(&bed, &["latest", "--yes", "--no-migrate"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("skipping the Alembic migration"), "{}", run.stderr);
    assert_eq!(fingerprint(&bed), before);
    assert!(bed.databases().iter().all(|d| !d.contains("__restore_")));
}
