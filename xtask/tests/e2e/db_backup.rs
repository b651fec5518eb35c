//! `cargo xtask db-backup` against the real test bed: valid, private backups; nothing kept
//! from a failed dump and nothing older lost; retention; the lock; Compose v1 and v2.

use std::{
    fs::{self, File},
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::testbed::{Bed, Flavor};

const REV: &str = "3f2a9c1b7d4e";

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Checks one backup the way a person would: its name, its mode, `sha256sum -c`, and the
/// completion marker.
fn assert_valid_backup(bed: &Bed, path: &std::path::Path, revision: &str) {
    let name = path.file_name().unwrap().to_str().unwrap();
    let stamp = name.strip_prefix("hindsight_db_backup_").and_then(|r| r.strip_suffix(&format!("_{revision}.sql")));
    let stamp = stamp.unwrap_or_else(|| panic!("unexpected backup name {name}"));
    assert!(chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").is_ok(), "timestamp in {name}");
    assert_eq!(mode(path), 0o600, "{name} must be private");
    let sidecar = path.with_file_name(format!("{name}.sha256"));
    assert_eq!(mode(&sidecar), 0o600, "the sidecar must be private");
    let check = Command::new("sha256sum").arg("-c").arg(&sidecar).current_dir(&bed.backup_dir).output().unwrap();
    assert!(check.status.success(), "sha256sum -c: {}", String::from_utf8_lossy(&check.stdout));
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains("-- PostgreSQL database dump complete\n"), "{name} lacks the completion marker");
}

fn seed(bed: &Bed) {
    bed.psql(&format!(
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
         INSERT INTO alembic_version VALUES ('{REV}');
         CREATE TABLE notes (id serial PRIMARY KEY, body text);
         INSERT INTO notes (body) VALUES ('first note'), ('second, with a\ttab');"
    ));
}

#[test]
fn two_backups_are_valid_private_and_named_after_the_revision() {
    let bed = Bed::new("twice", Flavor::V2);
    bed.start();
    seed(&bed);

    let first = bed.run_ok(&["db-backup"]);
    let second = bed.run_ok(&["db-backup"]);

    let backups = bed.backups();
    assert_eq!(backups.len(), 2, "two runs, two backups: {backups:?}");
    assert_ne!(backups[0], backups[1]);
    for backup in &backups {
        assert_valid_backup(&bed, backup, REV);
        assert!(fs::read_to_string(backup).unwrap().contains("second, with a\\ttab"), "the data is in the dump");
    }
    assert_eq!(mode(&bed.backup_dir), 0o700, "the backup directory must be private");
    for run in [&first, &second] {
        assert!(run.last_line().contains("backup complete:") && run.last_line().contains(REV), "{}", run.stderr);
    }
}

#[test]
fn compressed_backups_hold_the_same_sql_and_check_out() {
    let bed = Bed::new("compress", Flavor::V2);
    bed.start();
    seed(&bed);
    bed.psql("CREATE TABLE filler AS SELECT g, 'some repetitive text ' || g AS t FROM generate_series(1, 200000) g;");
    bed.run_ok(&["db-backup"]);
    bed.run_ok(&["db-backup", "--compress", "gzip"]);
    let run = bed.run_ok(&["db-backup", "--compress", "zstd"]);
    assert!(run.last_line().contains("of SQL"), "{}", run.last_line());

    let files = bed.backups();
    let find = |ending: &str| files.iter().find(|p| p.to_string_lossy().ends_with(ending)).unwrap().clone();
    let plain = fs::read_to_string(find(&format!("_{REV}.sql"))).unwrap();
    for (ending, tool) in [(".sql.gz", "gzip"), (".sql.zst", "zstd")] {
        let path = bed
            .files()
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(ending))
            .unwrap_or_else(|| panic!("a {ending} backup"));
        assert_eq!(mode(&path), 0o600);
        let check = Command::new("sha256sum")
            .arg("-c")
            .arg(format!("{}.sha256", path.file_name().unwrap().to_string_lossy()))
            .current_dir(&bed.backup_dir)
            .output()
            .unwrap();
        assert!(check.status.success(), "sha256sum -c of the stored {ending} file");
        // The real tools read what was written.
        let out = Command::new(tool).arg("-dc").arg(&path).output().unwrap();
        assert!(out.status.success(), "{tool} -dc: {}", String::from_utf8_lossy(&out.stderr));
        let sql = String::from_utf8(out.stdout).unwrap();
        let body = |text: &str| text.lines().filter(|l| !l.starts_with("\\")).collect::<Vec<_>>().join("\n");
        assert_eq!(body(&sql), body(&plain), "{ending} holds the same dump");
        assert!((fs::metadata(&path).unwrap().len() as usize) * 4 < plain.len(), "{ending} is under a quarter");
    }
}

#[test]
fn compose_v1_starts_a_stopped_service_and_names_an_unknown_revision() {
    let bed = Bed::new("v1", Flavor::V1);
    // -v: the commands, which show which Compose ran.
    let run = bed.run_ok(&["db-backup", "-v"]);

    assert!(run.stderr.contains("is not running: starting it"), "{}", run.stderr);
    assert!(run.stderr.contains("docker-compose"), "Compose v1 ran: {}", run.stderr);
    assert!(run.stderr.contains("no alembic_version table"), "the warning says why: {}", run.stderr);
    let backups = bed.backups();
    assert_eq!(backups.len(), 1);
    assert_valid_backup(&bed, &backups[0], "unknown");
}

#[test]
fn a_pg_dump_error_keeps_no_new_backup_and_every_old_one() {
    let bed = Bed::new("dumperr", Flavor::V2);
    bed.start();
    seed(&bed);
    bed.run_ok(&["db-backup"]);
    // A real pg_dump failure: a role that may connect but not read every table.
    bed.psql("CREATE ROLE limited LOGIN; GRANT SELECT ON alembic_version TO limited; CREATE TABLE secret (x int);");
    let before = bed.snapshot();

    let run = bed.run(&["db-backup", "--db-user", "limited"]);

    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let error = run.last_line();
    assert!(error.contains("pg_dump failed") && error.contains("permission denied"), "pg_dump's own words: {error}");
    assert!(error.contains("every existing backup (1) is untouched"), "{error}");
    assert_eq!(bed.snapshot(), before, "nothing added, removed or changed");
}

#[test]
fn a_container_killed_mid_dump_keeps_no_new_backup_and_every_old_one() {
    let bed = Bed::new("killed", Flavor::V2);
    bed.start();
    seed(&bed);
    bed.run_ok(&["db-backup"]);
    let before = bed.snapshot();
    bed.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 4) AS body FROM generate_series(1, 2000000) g;");

    let backup = bed.xtask(&["db-backup"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let partial = wait_for_partial(&bed, 1 << 20);
    assert!(partial.is_some(), "the dump should be streaming into a .partial file");
    let kill = bed.compose(&["kill", "db"]);
    assert!(kill.status.success());
    let run = crate::testbed::Run::from(backup.wait_with_output().unwrap());

    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("no backup was written"), "{}", run.last_line());
    assert_eq!(bed.snapshot(), before, "no new backup, no partial, the old one intact");
}

#[test]
fn the_lock_keeps_a_second_run_out_and_passwords_stay_out_of_argv() {
    let bed = Bed::new("lock", Flavor::V2);
    bed.start();
    seed(&bed);
    bed.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 4) AS body FROM generate_series(1, 1500000) g;");

    // A run holding the lock (as cron's would), and a second one started meanwhile.
    let first = bed.xtask(&["db-backup"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    assert!(wait_for_partial(&bed, 1).is_some(), "the first run should be dumping");
    let argv_seen = all_argv();
    let second = bed.run(&["db-backup", "--lock-wait-secs", "1"]);
    let first = crate::testbed::Run::from(first.wait_with_output().unwrap());

    assert_eq!(second.code, Some(3), "the second run has its own exit code: {}", second.stderr);
    assert!(second.last_line().contains("holds the lock"), "{}", second.last_line());
    assert!(second.last_line().contains("db-backup (pid"), "it names the holder: {}", second.last_line());
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(bed.backups().len(), 1, "exactly the first run's backup");
    assert!(argv_seen.iter().any(|argv| argv.contains("pg_dump")), "the scan saw the dump running");
    let leaks: Vec<_> = argv_seen.iter().filter(|argv| argv.contains(&bed.password)).collect();
    assert!(leaks.is_empty(), "the password is in a process's argv: {leaks:?}");

    // A lock held by someone else, released only after the wait: exit 3, nothing written.
    let holder = File::open(bed.backup_dir.join(".hindsight.lock")).unwrap();
    holder.lock().unwrap();
    let started = Instant::now();
    let blocked = bed.run(&["db-backup", "--lock-wait-secs", "2"]);
    assert_eq!(blocked.code, Some(3), "{}", blocked.stderr);
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited for the lock first");
    drop(holder);
    assert_eq!(bed.backups().len(), 1);
}

#[test]
fn max_backups_keeps_the_newest_with_their_sidecars_and_touches_nothing_else() {
    let bed = Bed::new("retain", Flavor::V2);
    bed.start();
    seed(&bed);
    for _ in 0..4 {
        bed.run_ok(&["db-backup"]);
    }
    let strangers = [
        "notes.txt",
        "other_db_backup_20200101_000000_unknown.sql",
        "hindsight_db_backup_20200101_000000_unknown.sql.keep",
    ];
    for file in strangers {
        fs::write(bed.backup_dir.join(file), "not ours").unwrap();
    }
    let stale = bed.backup_dir.join("hindsight_db_backup_20200101_000000_unknown.sql.partial");
    fs::write(&stale, "left by a killed run").unwrap();

    bed.run_ok(&["db-backup", "--max-backups", "3"]);

    let ours: Vec<String> = bed
        .backups()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hindsight_db_backup_"))
        .collect();
    assert_eq!(ours.len(), 3, "{ours:?}");
    let all: Vec<String> = bed.files().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let mut expected: Vec<String> =
        ours.iter().flat_map(|n| [n.clone(), format!("{n}.roles.sql"), format!("{n}.sha256")]).collect();
    expected.extend(strangers.iter().map(|s| s.to_string()));
    expected.sort();
    assert_eq!(all, expected, "the newest three with their roles and sidecars, the strangers, no partial");
    for backup in bed.backups().iter().filter(|p| p.to_string_lossy().contains("hindsight_db_backup_")) {
        assert_valid_backup(&bed, backup, REV);
    }
}

#[test]
fn without_compose_the_error_says_what_to_install() {
    let bed = Bed::new("nocompose", Flavor::V2);
    let run = bed.xtask(&["db-backup"]).env("PATH", "/nonexistent").env("HINDSIGHT_COMPOSE", "auto").output().unwrap();
    let run = crate::testbed::Run::from(run);
    assert_eq!(run.code, Some(1));
    assert!(run.last_line().contains("`docker` is required for db-backup"), "{}", run.last_line());
    assert!(bed.backups().is_empty());
}

/// Waits until the `.partial` dump holds at least `bytes`; `None` if it never did.
fn wait_for_partial(bed: &Bed, bytes: u64) -> Option<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let found = bed
            .files()
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".sql.partial") && fs::metadata(p).is_ok_and(|m| m.len() >= bytes));
        if found.is_some() {
            return found;
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Every process's argv on this host; containers' processes are visible here too.
fn all_argv() -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .collect()
}

#[test]
fn db_name_is_checked_before_anything_runs() {
    let bed = Bed::new("badname", Flavor::V2);
    let run = bed.run(&["db-backup", "--db-name", "x; DROP"]);
    assert_eq!(run.code, Some(2), "a usage error: {}", run.stderr);
    assert!(bed.backups().is_empty());
}
