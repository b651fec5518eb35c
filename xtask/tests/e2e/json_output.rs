//! `--json` through the real binary: every task that reports something prints exactly one
//! object on stdout (Python's `json.loads` of the whole of it), on success and on
//! failure, whose `ok` and `code` agree with the exit code, and whose times are RFC 3339
//! with an offset. Also a command-line error when `--json` was given, and a run stopped
//! by a signal.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use rustix::process::{Pid, Signal, kill_process};

use crate::testbed::{Bed, DB, Flavor, HEAD, Run, python_json, restore, wait_for};

/// Checks that `run`'s stdout is one JSON object saying what the exit code says:
/// `{"ok":true,...}` without `error` or `code` on 0, else `{"ok":false,"error":"...",
/// "code":N}` with N the exit code. Returns the exit code.
fn envelope(run: &Run, what: &str) -> i32 {
    let code = run.code.unwrap_or_else(|| panic!("{what}: killed by a signal\n{}", run.stderr));
    let seen = python_json(
        &run.stdout,
        "(type(d).__name__, d['ok'], d.get('code'), isinstance(d.get('error'), str) and len(d['error']) > 0)",
    );
    let want = match code {
        0 => "('dict', True, None, False)".to_owned(),
        code => format!("('dict', False, {code}, True)"),
    };
    assert_eq!(seen, want, "{what}: stdout {}\nstderr {}", run.stdout, run.stderr);
    code
}

/// `envelope`, for a run that must fail with `code`; returns its error.
fn failed(run: &Run, what: &str, code: i32) -> String {
    assert_eq!(envelope(run, what), code, "{what}: {}", run.stderr);
    python_json(&run.stdout, "d['error']")
}

/// `envelope`, for a run that must succeed.
fn succeeded(run: &Run, what: &str) {
    assert_eq!(envelope(run, what), 0, "{what}: {}", run.stderr);
}

/// Every string `times` (a Python expression over `d`, a list) yields is RFC 3339 with an
/// offset, as Python reads it; there is at least one.
fn assert_times(run: &Run, times: &str) {
    let check = format!(
        "[(t, __import__('datetime').datetime.fromisoformat(t).utcoffset() is not None \
         and __import__('re').fullmatch(r'\\d{{4}}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d[+-]\\d\\d:\\d\\d', t) is not None) \
         for t in {times}]"
    );
    let seen = python_json(&run.stdout, &check);
    assert!(seen.starts_with("[(") && !seen.contains("False"), "times with an offset, in {times}: {seen}");
}

#[test]
fn every_task_prints_one_object_on_success_and_on_failure() {
    let bed = Bed::new("json", Flavor::V2);

    // Failures before anything exists: a backup directory that is a file, no backups,
    // no backup named, no Docker, a bad command line.
    std::fs::create_dir_all(&bed.backup_dir).unwrap();
    let not_a_dir = bed.backup_dir.join("not_a_directory");
    std::fs::write(&not_a_dir, "x").unwrap();
    let not_a_dir = not_a_dir.to_str().unwrap();
    // db-list only reads, and lists what it finds (nothing, here): its failure is the
    // command-line error below and in the next test.
    for task in ["db-backup", "db-prune"] {
        let run = bed.run(&[task, "--json", "--backup-dir", not_a_dir]);
        failed(&run, &format!("{task} into a file"), 1);
    }
    let run = bed.run(&["db-list", "--json", "--db-name", "a b"]);
    assert!(failed(&run, "db-list with a bad name", 2).contains("--db-name"), "{}", run.stdout);
    let run = bed.run(&["db-verify", "--json"]);
    let error = failed(&run, "db-verify without backups", 1);
    assert!(error.contains("no complete backups"), "{error}");
    assert_eq!(python_json(&run.stdout, "sorted(d)"), "['code', 'error', 'ok']", "the envelope alone");
    let run = restore(&bed, &["nope.sql", "--yes", "--json"]);
    assert!(failed(&run, "db-restore of nothing", 1).contains("no backup `nope.sql`"), "{}", run.stdout);
    let run = restore(&bed, &["--json"]);
    failed(&run, "db-restore without a backup or a terminal", 2);
    let no_docker = bed.xtask(&["db-backup", "--json"]).env("PATH", "/nonexistent").output().unwrap();
    failed(&Run::from(no_docker), "db-backup without docker", 1);
    let run = bed.run(&["install-cron", "--print", "--json", "--schedule", "0 * * *"]);
    assert!(failed(&run, "install-cron with a bad schedule", 2).contains("--schedule"), "{}", run.stdout);
    assert!(run.stderr.contains("For more information"), "clap's own message stays on stderr: {}", run.stderr);

    // Successes, and the failures that need a database.
    bed.start();
    bed.migrate("head");
    let run = bed.run(&["db-backup", "--json"]);
    succeeded(&run, "db-backup");
    assert_eq!(python_json(&run.stdout, "(d['revision'], d['revision_ids'])"), format!("('{HEAD}', ['{HEAD}'])"));
    assert_times(&run, "[d['taken']]");
    let first = PathBuf::from(python_json(&run.stdout, "d['path']"));
    assert!(first.exists(), "{}", first.display());

    let run = bed.run(&["db-verify", "--json"]);
    succeeded(&run, "db-verify");
    assert_eq!(python_json(&run.stdout, "[b['ok'] for b in d['backups']]"), "[True]");
    assert_times(&run, "[b['verified_at'] for b in d['backups']]");

    let run = restore(&bed, &["latest", "--json"]);
    assert!(failed(&run, "db-restore unconfirmed", 4).contains("--yes"), "{}", run.stdout);

    let run = restore(&bed, &["latest", "--yes", "--json"]);
    succeeded(&run, "db-restore");
    let replaced = python_json(&run.stdout, "d['replaced']");
    assert!(replaced.starts_with(&format!("{DB}__pre_restore_")), "{}", run.stdout);
    assert_eq!(
        python_json(
            &run.stdout,
            "(d['backup'], d['database'], d['scratch'].startswith(d['database'] + '__restore_'), d['migration'], \
             d['kept'], d['dumped'], d['dropped'], d['duration_secs'] > 0)"
        ),
        format!("('{}', '{DB}', True, ['{HEAD}'], [], [], [], True)", first.display())
    );
    // The second restore replaces the first one's result and retires its replaced
    // database: dumped into the backup directory, then dropped.
    let run = restore(&bed, &["latest", "--yes", "--json", "--no-migrate"]);
    succeeded(&run, "db-restore --no-migrate");
    assert_eq!(
        python_json(&run.stdout, "(d['migration'], d['kept'], [x['database'] for x in d['dumped']], d['dropped'])"),
        format!("(None, [], ['{replaced}'], ['{replaced}'])")
    );
    let dump = PathBuf::from(python_json(&run.stdout, "d['dumped'][0]['path']"));
    assert!(dump.exists() && !bed.databases().contains(&replaced), "{}", run.stdout);

    bed.run_ok(&["db-backup"]);
    let run = bed.run(&["db-list", "--json"]);
    succeeded(&run, "db-list");
    assert_eq!(python_json(&run.stdout, "(len(d['backups']), len(d['prerestore_dumps']))"), "(2, 1)");
    assert_times(&run, "[b['taken'] for b in d['backups'] + d['prerestore_dumps']]");
    assert_times(&run, "[b['verified']['at'] for b in d['backups'] if b['verified']]");

    let run = bed.run(&["db-prune", "--json", "--dry-run", "--max-backups", "1"]);
    succeeded(&run, "db-prune --dry-run");
    assert_eq!(
        python_json(&run.stdout, "(d['dry_run'], [k['reasons'] for k in d['kept']], d['removed'], d['skipped'])"),
        format!("(True, [['newest', 'newest 1 #1']], ['{}'], [])", first.display())
    );
    assert!(first.exists(), "a dry run removes nothing");
    assert!(run.stderr.contains("would remove"), "the lines for a person go to stderr: {}", run.stderr);
    let run = bed.run(&["db-prune", "--json", "--max-backups", "1"]);
    succeeded(&run, "db-prune");
    assert_eq!(python_json(&run.stdout, "(d['dry_run'], d['removed'])"), format!("(False, ['{}'])", first.display()));
    assert!(!first.exists(), "pruned");

    let run = bed.run(&["install-cron", "--print", "--json", "--schedule", "*/5 * * * *"]);
    succeeded(&run, "install-cron --print");
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("hindsight_db_backups/bin/xtask");
    assert_eq!(
        python_json(
            &run.stdout,
            "(d['action'], d['schedule'], d['entry'].startswith('# '), d['entry'].endswith(d['line'] + '\\n'))"
        ),
        "('printed', '*/5 * * * *', True, True)"
    );
    assert_eq!(python_json(&run.stdout, "d['binary']"), binary.display().to_string());
    let line = python_json(&run.stdout, "d['line']");
    assert!(line.starts_with("*/5 * * * * cd ") && line.contains("'db-backup'"), "{line}");
    assert!(!line.contains("'--json'"), "--json is never written into the job: {line}");
    assert!(run.stderr.contains(&line), "the entry for a person, on stderr: {}", run.stderr);
}

#[test]
fn a_command_line_error_with_json_is_one_object_with_code_2() {
    let xtask = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).stdin(Stdio::null()).output().unwrap();
        Run::from(out)
    };
    for args in [
        &["db-list", "--json", "--no-such-flag"][..],
        &["db-prune", "--max-backups", "0", "--json"],
        &["db-verify", "--all", "x.sql", "--json"],
        &["--json", "db-list"],
    ] {
        let run = xtask(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        let error = failed(&run, &format!("{args:?}"), 2);
        assert!(!error.starts_with("error:") && !error.contains('\n'), "one line: {error}");
        assert!(run.stderr.contains(&format!("error: {error}")), "clap's message stays on stderr: {}", run.stderr);
    }
    // Without --json, clap's way: nothing on stdout.
    let run = xtask(&["db-list", "--no-such-flag"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(2), ""), "{}", run.stderr);
    // --help stays help, also with --json.
    let run = xtask(&["db-list", "--json", "--help"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("Usage:") && run.stdout.contains("Output:"), "{}", run.stdout);
}

#[test]
fn a_run_stopped_by_a_signal_is_one_object_with_its_exit_code() {
    let bed = Bed::new("jsonsig", Flavor::V2);
    bed.start();
    // Big enough that the dump takes seconds: caught while it runs.
    bed.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 4) AS body FROM generate_series(1, 2000000) g;");
    let child = bed.xtask(&["db-backup", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("db-backup's COPY in pg_stat_activity", 60, || {
        let sessions = bed.xtask_sessions();
        sessions.into_iter().find(|(app, query)| app.ends_with(":db-backup") && query.starts_with("COPY public.big"))
    });
    kill_process(Pid::from_child(&child), Signal::TERM).unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    let error = failed(&run, "db-backup stopped by SIGTERM", 143);
    assert!(error.starts_with("stopped by SIGTERM"), "{error}");
}
