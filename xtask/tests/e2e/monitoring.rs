//! Knowing when backups stop, against the real test bed: db-status's Nagios codes, the
//! metrics file read by the real Prometheus parser (`prometheus_client` from PyPI), and
//! the pings a real HTTP server on loopback receives, for good, failing, busy runs and
//! a dead server.

use std::{
    fs::{self, File},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    ping_server::PingServer,
    testbed::{Bed, Flavor, Run, python_json, uv_turn},
};

const TOKEN: &str = "0f3c-secret-token";

/// The samples of a metrics file as the real Prometheus text parser reads them:
/// `(name, database label, value)`. Fails on a sample with a timestamp.
fn parse_metrics(path: &Path) -> Vec<(String, String, f64)> {
    const PROGRAM: &str = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for family in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
        \x20   assert family.type == 'gauge', family\n\
        \x20   for s in family.samples:\n\
        \x20       assert s.timestamp is None, s\n\
        \x20       print(s.name, s.labels['database'], repr(s.value))\n";
    let _turn = uv_turn();
    let out = Command::new("uv")
        .args(["run", "--quiet", "--no-project", "--with", "prometheus_client", "python3", "-c", PROGRAM])
        .arg(path)
        .output()
        .expect("uv runs");
    assert!(
        out.status.success(),
        "prometheus_client rejects {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut words = line.split(' ');
            let (name, db, value) = (words.next().unwrap(), words.next().unwrap(), words.next().unwrap());
            (name.to_owned(), db.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn gauge(samples: &[(String, String, f64)], name: &str) -> f64 {
    let found: Vec<f64> = samples.iter().filter(|(n, db, _)| n == name && db == "hindsight_db").map(|s| s.2).collect();
    assert_eq!(found.len(), 1, "{name} once, with database=\"hindsight_db\": {samples:?}");
    found[0]
}

/// db-status on the bed's directory: its exit code, first stdout line, and the run.
fn status(bed: &Bed, args: &[&str]) -> (Option<i32>, String, Run) {
    let run = bed.run(&[&["db-status"], args].concat());
    let first = run.stdout.lines().next().unwrap_or_default().to_owned();
    (run.code, first, run)
}

/// A backup's time, as its name holds it, in Unix seconds.
fn taken(path: &Path) -> i64 {
    let name = xtask::store::backup_file::BackupName::parse(&path.file_name().unwrap().to_string_lossy()).unwrap();
    xtask::monitor::local_timestamp(name.taken)
}

#[test]
fn status_metrics_and_pings_follow_good_failing_busy_and_unpinged_runs() {
    let server = PingServer::start();
    let url = server.url(&format!("/ping/{TOKEN}"));
    let bed = Bed::new("monitor", Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) VALUES ('kept');");
    let metrics = bed.backup_dir.with_extension("prom");
    let metrics_arg = metrics.to_str().unwrap();
    let backup = |extra: &[&str]| -> Run {
        let args = [&["db-backup", "--metrics-file", metrics_arg][..], extra].concat();
        let run = Run::from(bed.xtask(&args).env("HINDSIGHT_PING_URL", &url).output().unwrap());
        assert!(
            !run.stderr.contains(TOKEN) && !run.stdout.contains(TOKEN),
            "the token is never printed:\n{}",
            run.stderr
        );
        run
    };

    // A good run: start and success pinged, the metrics match it, db-status is OK.
    let clock = Instant::now();
    let good = backup(&[]);
    let good_took = clock.elapsed();
    assert_eq!(good.code, Some(0), "{}", good.stderr);
    assert!(good.last_line().contains("backup complete"), "`tail -1` says ok: {}", good.last_line());
    let requests = server.requests();
    let paths: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    let base = format!("/ping/{TOKEN}");
    assert_eq!(paths, [("POST", format!("{base}/start").as_str()), ("POST", base.as_str())], "{requests:?}");
    let backups = bed.backups();
    assert_eq!(backups.len(), 1);
    let samples = parse_metrics(&metrics);
    assert_eq!(samples.len(), 7, "seven gauges without --offsite: {samples:?}");
    assert_eq!(gauge(&samples, "hindsight_backup_last_run_success"), 1.0);
    assert_eq!(gauge(&samples, "hindsight_backups"), 1.0);
    assert_eq!(gauge(&samples, "hindsight_backup_last_size_bytes"), fs::metadata(&backups[0]).unwrap().len() as f64);
    assert_eq!(gauge(&samples, "hindsight_backup_last_success_timestamp_seconds"), taken(&backups[0]) as f64);
    assert_eq!(gauge(&samples, "hindsight_backup_last_verify_timestamp_seconds"), 0.0, "never verified");
    let run_at = gauge(&samples, "hindsight_backup_last_run_timestamp_seconds");
    assert!((run_at - taken(&backups[0]) as f64).abs() < 60.0, "the run started when its backup was named");
    let duration = gauge(&samples, "hindsight_backup_last_duration_seconds");
    assert!(duration > 0.0 && duration < 120.0, "{duration}");
    assert_eq!(fs::metadata(&metrics).unwrap().permissions().mode() & 0o777, 0o644, "node_exporter reads it");
    let leftovers: Vec<_> = fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file left: {leftovers:?}");

    // Not verified yet: WARNING (exit 1); verified: OK (exit 0).
    let (code, first, _) = status(&bed, &[]);
    assert_eq!(
        (code, first.starts_with("WARNING: hindsight_db: no backup kept has passed db-verify")),
        (Some(1), true),
        "{first}"
    );
    bed.run_ok(&["db-verify", "latest"]);
    let (code, first, run) = status(&bed, &[]);
    assert_eq!(code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(first.starts_with("OK: hindsight_db: newest backup"), "{first}");
    let json = bed.run(&["db-status", "--json"]);
    assert_eq!(
        python_json(&json.stdout, "(d['ok'], d['state'], d['backups'], d['last_run']['exit_code'])"),
        "(True, 'OK', 1, 0)"
    );

    // A backup with an old name, alone in a directory: CRITICAL (2) for --max-age.
    let old_dir = bed.backup_dir.with_extension("old");
    fs::create_dir_all(&old_dir).unwrap();
    fs::copy(&backups[0], old_dir.join("hindsight_db_backup_20200101_000000_unknown.sql")).unwrap();
    let (code, first, _) = status(&bed, &["--backup-dir", old_dir.to_str().unwrap(), "--max-verify-age", "0"]);
    assert_eq!(code, Some(2), "{first}");
    assert!(
        first.starts_with("CRITICAL: hindsight_db: the newest backup is ") && first.contains("over --max-age 2h"),
        "{first}"
    );
    fs::remove_dir_all(&old_dir).unwrap();

    // A failing run (the database is stopped): start and fail with the error pinged,
    // CRITICAL, and the metrics say so while keeping the last success.
    bed.compose(&["stop", "-t", "1"]);
    let failed = backup(&["--no-start"]);
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(
        (requests[2].path.as_str(), requests[3].path.as_str()),
        (format!("{base}/start").as_str(), format!("{base}/fail").as_str())
    );
    let error = failed.last_line().split("error: ").nth(1).expect("the error line");
    assert_eq!(requests[3].body, error, "the body is the error's line");
    let (code, first, _) = status(&bed, &[]);
    assert_eq!(code, Some(2), "{first}");
    assert!(first.starts_with("CRITICAL: hindsight_db: the last run failed") && first.contains("(exit 1)"), "{first}");
    let samples = parse_metrics(&metrics);
    assert_eq!(gauge(&samples, "hindsight_backup_last_run_success"), 0.0);
    assert_eq!(gauge(&samples, "hindsight_backups"), 1.0);
    assert_eq!(gauge(&samples, "hindsight_backup_last_success_timestamp_seconds"), taken(&backups[0]) as f64);
    assert!(gauge(&samples, "hindsight_backup_last_verify_timestamp_seconds") > 0.0, "the verify counts");
    let record = fs::read_to_string(bed.backup_dir.join("hindsight_db.last-run")).unwrap();
    assert!(record.contains("state=finished\n") && record.contains("exit_code=1\n"), "{record}");

    // Back up, then a busy run (another holds the directory's lock): it pings /start
    // only, keeps the good run's record and adds itself to it: WARNING.
    bed.start();
    assert_eq!(backup(&[]).code, Some(0));
    let holder = File::open(bed.backup_dir.join(".hindsight.lock")).unwrap();
    holder.lock().unwrap();
    let busy = backup(&[]);
    drop(holder);
    assert_eq!(busy.code, Some(3), "{}", busy.stderr);
    let requests = server.requests();
    assert_eq!(requests.len(), 7, "a busy run pings /start only: {requests:?}");
    assert_eq!(
        (requests[5].path.as_str(), requests[6].path.as_str()),
        (base.as_str(), format!("{base}/start").as_str())
    );
    let record = fs::read_to_string(bed.backup_dir.join("hindsight_db.last-run")).unwrap();
    assert!(record.contains("exit_code=0\n") && record.contains("busy_at="), "the holder's record, noted: {record}");
    let (code, first, _) = status(&bed, &[]);
    assert_eq!(code, Some(1), "{first}");
    assert!(first.starts_with("WARNING: hindsight_db: a run ") && first.contains("was busy (exit 3)"), "{first}");

    // A dead ping server: the backup succeeds, a few seconds later at most, and warns
    // naming the host only.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}/ping/{TOKEN}");
    let clock = Instant::now();
    let run = Run::from(
        bed.xtask(&["db-backup", "--metrics-file", metrics_arg]).env("HINDSIGHT_PING_URL", &dead).output().unwrap(),
    );
    let took = clock.elapsed();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stderr.contains(TOKEN), "{}", run.stderr);
    assert!(run.stderr.contains("warning: ping to 127.0.0.1:"), "a warning names the host: {}", run.stderr);
    assert!(run.last_line().contains("backup complete"), "{}", run.last_line());
    // A refused connection and its one retry: well under a second; the bound is loose
    // for a busy machine, and tight enough to catch a ping that waits out long timeouts.
    assert!(took < good_took + Duration::from_secs(8), "{took:?} against {good_took:?} with a live server");
    let (code, first, _) = status(&bed, &[]);
    assert_eq!(code, Some(0), "{first}");
}

#[test]
fn db_status_says_unknown_for_a_directory_it_cannot_read_and_for_a_bad_command_line() {
    let dir = std::env::temp_dir().join(format!("hsdbt_status_{}", std::process::id()));
    let run = Run::from(
        crate::testbed::xtask_in(&std::env::temp_dir(), &["db-status", "--backup-dir", dir.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(run.stdout.starts_with("UNKNOWN: hindsight_db: backup directory "), "{}", run.stdout);
    let run = Run::from(
        crate::testbed::xtask_in(&std::env::temp_dir(), &["db-status", "--max-age", "soon"]).output().unwrap(),
    );
    assert_eq!(run.code, Some(3), "a Nagios plugin's usage error is UNKNOWN: {}", run.stderr);
    assert!(run.stdout.starts_with("UNKNOWN: bad command line: "), "{}", run.stdout);
    let run = Run::from(
        crate::testbed::xtask_in(&std::env::temp_dir(), &["db-status", "--json", "--max-age", "soon"])
            .output()
            .unwrap(),
    );
    assert_eq!(python_json(&run.stdout, "(d['ok'], d['code'])"), "(False, 3)");
}
