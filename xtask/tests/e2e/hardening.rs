//! What operators really do to a backup tool: feed it a hostile file, run it while the
//! application holds a lock, run two restores from two checkouts at once, restore onto a
//! volume too small for a second copy.

use std::{
    fs,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::testbed::{Bed, DB, Flavor, Run, wait_for};

const MARKER_END: &str = "--\n-- PostgreSQL database dump complete\n--\n\n";

fn seeded(name: &str) -> Bed {
    let bed = Bed::new(name, Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g;");
    bed
}

/// Whether `path` exists inside the database container.
fn exists_in_container(bed: &Bed, path: &str) -> bool {
    bed.compose(&["exec", "-T", "db", "test", "-e", path]).status.success()
}

#[test]
fn a_crafted_file_cannot_reach_the_live_database_or_run_commands() {
    let bed = seeded("crafted");
    bed.run_ok(&["db-backup"]);
    let before = (bed.dump_text(), bed.databases());
    fs::create_dir_all(&bed.backup_dir).unwrap();
    // Each ends as a complete dump does, and has no `\restrict` of its own.
    let crafted = [
        ("20200101_000001", format!("CREATE TABLE harmless (x int);\n\\connect {DB}\nCREATE TABLE pwned (x int);\n")),
        ("20200101_000002", "CREATE TABLE harmless (x int);\n\\! touch /tmp/pwned_shell\n".to_owned()),
        ("20200101_000003", "\\o |touch /tmp/pwned_pipe\nSELECT 1;\n".to_owned()),
        // A file that tries to lift the tool's own restriction.
        ("20200101_000004", "\\unrestrict guess\n\\! touch /tmp/pwned_unrestrict\n".to_owned()),
    ];
    for (stamp, body) in &crafted {
        let path: PathBuf = bed.backup_dir.join(format!("{DB}_backup_{stamp}_unknown.sql"));
        fs::write(&path, format!("{body}{MARKER_END}")).unwrap();
        let path = path.to_str().unwrap();
        for args in [vec!["db-verify", path], vec!["db-restore", path, "--yes", "--no-migrate"]] {
            let run = bed.run(&args);
            assert_eq!(run.code, Some(1), "{args:?} must fail: {}", run.stderr);
            assert!(
                run.stderr.contains("backslash commands are restricted") || run.stderr.contains("wrong key"),
                "psql refused the meta-command itself: {}",
                run.stderr
            );
        }
    }
    assert_eq!((bed.dump_text(), bed.databases()), before, "the live database and the database list are untouched");
    for file in ["/tmp/pwned_shell", "/tmp/pwned_pipe", "/tmp/pwned_unrestrict"] {
        assert!(!exists_in_container(&bed, file), "{file} was created: a command ran");
    }
    assert!(bed.scratch_databases().is_empty());
}

#[test]
fn a_file_that_ends_inside_copy_data_is_never_swapped_in() {
    let bed = seeded("opencopy");
    let before = (bed.dump_text(), bed.databases());
    fs::create_dir_all(&bed.backup_dir).unwrap();
    // Complete by its last lines, but psql would still be reading rows of `t2` there: the
    // loader's COMMIT would become a row, and the load end uncommitted.
    let path = bed.backup_dir.join(format!("{DB}_backup_20200101_000005_unknown.sql"));
    fs::write(&path, format!("CREATE TABLE t2 (v text);\nCOPY public.t2 (v) FROM stdin;\n{MARKER_END}")).unwrap();
    let run = bed.run(&["db-restore", path.to_str().unwrap(), "--yes", "--no-migrate"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("ends inside the data of table public.t2"), "{}", run.last_line());
    assert_eq!((bed.dump_text(), bed.databases()), before, "nothing swapped, nothing left");
}

#[test]
fn a_table_lock_held_by_the_application_fails_the_backup_in_time_and_names_the_holder() {
    let bed = seeded("stucklock");
    bed.run_ok(&["db-backup"]);
    let before = bed.snapshot();
    // The application: an ALTER TABLE's lock, held in an open transaction.
    let mut app = Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &bed.port.to_string(), "-U", "user", "-d", DB])
        .env("PGPASSWORD", &bed.password)
        .env("PGAPPNAME", "the-application")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = app.stdin.take().unwrap();
    stdin.write_all(b"BEGIN;\nLOCK TABLE t IN ACCESS EXCLUSIVE MODE;\n").unwrap();
    stdin.flush().unwrap();
    wait_for("the application's lock", 30, || {
        let held = bed.psql(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'the-application' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        );
        (held.trim() == "1").then_some(())
    });

    let started = Instant::now();
    let run = bed.run(&["db-backup", "--db-lock-wait-secs", "2"]);
    let took = started.elapsed();
    assert_eq!(run.code, Some(3), "a lock not granted in time is busy: {}", run.stderr);
    assert!(took < Duration::from_secs(30), "it gave up within the timeout, not hours later: {took:?}");
    let error = run.last_line();
    assert!(error.contains("public.t") && error.contains("pid "), "names the table and the holder: {error}");
    assert!(error.contains("LOCK TABLE t IN ACCESS EXCLUSIVE MODE"), "and its query: {error}");
    assert!(error.contains("idle in transaction"), "and its state: {error}");
    assert_eq!(bed.snapshot(), before, "nothing written, nothing lost");

    drop(stdin);
    app.wait().unwrap();
    bed.run_ok(&["db-backup", "--db-lock-wait-secs", "2"]);
}

#[test]
fn two_restores_from_two_backup_directories_are_kept_apart_by_the_database_lock() {
    let bed = seeded("tworestores");
    bed.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 4) AS body FROM generate_series(1, 1500000) g;");
    bed.run_ok(&["db-backup"]);
    let backup = bed.backups().pop().unwrap();
    let other_dir = bed.backup_dir.with_extension("checkout2");
    let _ = fs::remove_dir_all(&other_dir);
    fs::create_dir_all(&other_dir).unwrap();
    fs::copy(&backup, other_dir.join(backup.file_name().unwrap())).unwrap();

    let first = bed.xtask(&["db-restore", "latest", "--yes", "--no-migrate"]);
    let first = { first }.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the first restore's load", 60, || {
        let loading =
            bed.xtask_sessions().into_iter().any(|(a, q)| a.ends_with(":db-restore") && q.starts_with("COPY"));
        loading.then_some(())
    });
    let scratch = bed.scratch_databases();

    // The other checkout's restore: another directory, so another directory lock.
    let second =
        bed.run(&["db-restore", "latest", "--yes", "--no-migrate", "--backup-dir", other_dir.to_str().unwrap()]);
    assert_eq!(second.code, Some(3), "busy: {}", second.stderr);
    assert!(second.last_line().contains(":db-restore:lock"), "names the run holding it: {}", second.last_line());
    assert_eq!(bed.scratch_databases(), scratch, "the first restore's scratch database is untouched");

    let first = Run::from(first.wait_with_output().unwrap());
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(bed.psql("SELECT count(*) FROM big").trim(), "1500000");
    let _ = fs::remove_dir_all(&other_dir);
}

#[test]
fn a_scratch_load_that_would_fill_the_database_volume_is_refused() {
    let bed = Bed::new("smallvolume", Flavor::V2);
    // The database's volume is a 220 MB tmpfs: room for the data, not for a second copy.
    let volume = format!("{}_db_data", bed.project);
    let created = Command::new("docker")
        .args(["volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs"])
        .args(["--opt", "o=size=220m", "--label", &format!("com.docker.compose.project={}", bed.project)])
        .args(["--label", "com.docker.compose.volume=db_data", "--label", "com.docker.compose.version=2.26.1", &volume])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    bed.start();
    // Little WAL kept, so the volume's room is the data's.
    bed.psql("ALTER SYSTEM SET min_wal_size = '32MB'; ALTER SYSTEM SET max_wal_size = '32MB';");
    bed.psql("SELECT pg_reload_conf();");
    bed.psql("CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS body FROM generate_series(1, 900000) g;");
    bed.psql("CHECKPOINT;");
    bed.run_ok(&["db-backup"]);
    let live = bed.psql("SELECT count(*) FROM filler");

    for args in [vec!["db-restore", "latest", "--yes", "--no-migrate"], vec!["db-verify"]] {
        let run = bed.run(&args);
        assert_eq!(run.code, Some(5), "{args:?}: {}", run.stderr);
        assert!(run.last_line().contains("missing") && run.last_line().contains("free"), "{}", run.last_line());
        assert!(bed.scratch_databases().is_empty());
    }
    assert_eq!(bed.psql("SELECT count(*) FROM filler"), live, "PostgreSQL is up and the data as it was");
}
