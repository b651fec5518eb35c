//! Interruptions: SIGINT and SIGTERM during a real dump, a real load and a real
//! verification stop the work inside the container, clean up what the run made, and exit
//! 130 or 143; a run killed with SIGKILL is cleaned up by the next run, which never
//! touches a live run's work.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Stdio},
};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

use crate::testbed::{Bed, DB, Flavor, Run, wait_for};

/// A database whose dump and load take seconds: long enough to be caught in the act.
fn big_bed(name: &str) -> Bed {
    let bed = Bed::new(name, Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 4) AS body FROM generate_series(1, 2000000) g;");
    bed
}

/// Starts the xtask in a process group of its own, as a shell runs a foreground job.
fn spawn(bed: &Bed, args: &[&str]) -> Child {
    bed.xtask(args).process_group(0).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits until a session of `task` runs a query starting with `query` (the dump's or the
/// load's COPY): the work is really under way in the database.
fn wait_for_work(bed: &Bed, task: &str, query: &str) {
    let suffix = format!(":{task}");
    wait_for(&format!("{task} running `{query}` in pg_stat_activity"), 60, || {
        bed.xtask_sessions().into_iter().find(|(app, q)| app.ends_with(&suffix) && q.starts_with(query))
    });
}

/// SIGINT the way a terminal's Ctrl-C sends it: to the foreground process group, which
/// the xtask's own programs are not in.
fn interrupt(child: &Child, signal: Signal) {
    let pid = Pid::from_child(child);
    match signal {
        Signal::INT => kill_process_group(pid, signal).unwrap(),
        _ => kill_process(pid, signal).unwrap(),
    }
}

fn code_for(signal: Signal) -> i32 {
    128 + signal.as_raw()
}

/// Nothing of any run is left: no session on the server, no scratch database, no
/// `.partial` file.
fn assert_nothing_left(bed: &Bed, run: &Run) {
    let sessions = wait_for("the run's sessions to end", 15, || {
        let left = bed.xtask_sessions();
        left.is_empty().then_some(left)
    });
    assert!(sessions.is_empty());
    assert!(
        bed.scratch_databases().is_empty(),
        "scratch databases left: {:?}\n{}",
        bed.scratch_databases(),
        run.stderr
    );
    let partials: Vec<_> = bed.files().into_iter().filter(|p| p.to_string_lossy().ends_with(".partial")).collect();
    assert!(partials.is_empty(), "partial files left: {partials:?}");
}

#[test]
fn a_signal_during_a_dump_stops_it_and_removes_the_partial_file() {
    let bed = big_bed("sigdump");
    bed.run_ok(&["db-backup"]);
    let before = bed.snapshot();
    for signal in [Signal::INT, Signal::TERM] {
        let child = spawn(&bed, &["db-backup"]);
        wait_for_work(&bed, "db-backup", "COPY public.big");
        interrupt(&child, signal);
        let run = Run::from(child.wait_with_output().unwrap());
        assert_eq!(run.code, Some(code_for(signal)), "{signal:?}: {}", run.stderr);
        assert!(run.last_line().contains("stopped by"), "{}", run.last_line());
        assert_nothing_left(&bed, &run);
        assert_eq!(bed.snapshot(), before, "{signal:?}: no new file, the old backup intact");
        let status = bed.run(&["db-status", "--max-verify-age", "0"]);
        assert_eq!(status.code, Some(1), "a stopped run is a WARNING: {}", status.stdout);
        assert!(status.stdout.contains("was stopped by a signal"), "{}", status.stdout);
    }
    // SIGKILL: the run cannot say how it ended; its record says it started, and its pid
    // is gone: db-status calls that CRITICAL.
    let mut child = spawn(&bed, &["db-backup"]);
    wait_for_work(&bed, "db-backup", "COPY public.big");
    child.kill().unwrap();
    child.wait().unwrap();
    let status = bed.run(&["db-status", "--max-verify-age", "0"]);
    assert_eq!(status.code, Some(2), "{}", status.stdout);
    assert!(status.stdout.starts_with("CRITICAL: hindsight_db: the last run (pid "), "{}", status.stdout);
    assert!(status.stdout.contains("died without finishing"), "{}", status.stdout);
    // The locks went with the run: the next one works.
    bed.run_ok(&["db-backup"]);
}

#[test]
fn a_signal_during_a_restore_load_drops_the_scratch_database_and_keeps_the_live_one() {
    let bed = big_bed("sigload");
    bed.run_ok(&["db-backup"]);
    bed.psql("DELETE FROM big WHERE id > 1000000");
    let live = bed.psql("SELECT count(*), sum(id) FROM big");
    for signal in [Signal::TERM, Signal::INT] {
        let child = spawn(&bed, &["db-restore", "latest", "--yes", "--no-migrate"]);
        wait_for_work(&bed, "db-restore", "COPY public.big");
        interrupt(&child, signal);
        let run = Run::from(child.wait_with_output().unwrap());
        assert_eq!(run.code, Some(code_for(signal)), "{signal:?}: {}", run.stderr);
        assert_nothing_left(&bed, &run);
        assert_eq!(bed.psql("SELECT count(*), sum(id) FROM big"), live, "the live database was not swapped");
        assert!(bed.databases().iter().all(|d| !d.contains("__pre_restore_")), "nothing was swapped");
    }
    bed.run_ok(&["db-restore", "latest", "--yes", "--no-migrate"]);
    assert_eq!(bed.psql("SELECT count(*) FROM big").trim(), "2000000");
}

#[test]
fn a_signal_during_a_verification_drops_its_scratch_database() {
    let bed = big_bed("sigverify");
    bed.run_ok(&["db-backup"]);
    for signal in [Signal::INT, Signal::TERM] {
        let child = spawn(&bed, &["db-verify"]);
        wait_for_work(&bed, "db-verify", "COPY public.big");
        interrupt(&child, signal);
        let run = Run::from(child.wait_with_output().unwrap());
        assert_eq!(run.code, Some(code_for(signal)), "{signal:?}: {}", run.stderr);
        assert_nothing_left(&bed, &run);
        let records: Vec<_> = bed.files().into_iter().filter(|p| p.to_string_lossy().ends_with(".verified")).collect();
        assert!(records.is_empty(), "a stopped verification records nothing: {records:?}");
    }
    bed.run_ok(&["db-verify"]);
}

#[test]
fn after_sigkill_the_next_run_cleans_the_dead_runs_leftovers_and_never_a_live_runs() {
    let bed = big_bed("sigkill");
    bed.run_ok(&["db-backup"]);
    let backup = bed.backups().pop().unwrap();
    // A second directory holding the same backup: two verifications at once, as two
    // checkouts would run them.
    let other_dir = bed.backup_dir.with_extension("other");
    let _ = std::fs::remove_dir_all(&other_dir);
    std::fs::create_dir_all(&other_dir).unwrap();
    std::fs::copy(&backup, other_dir.join(backup.file_name().unwrap())).unwrap();
    let other_sidecar = backup.with_file_name(format!("{}.sha256", backup.file_name().unwrap().to_string_lossy()));
    std::fs::copy(&other_sidecar, other_dir.join(other_sidecar.file_name().unwrap())).unwrap();

    // The one to kill, then the live one, both caught mid-load.
    let mut dead = bed.xtask(&["db-verify", "--backup-dir", other_dir.to_str().unwrap()]);
    let mut dead = dead.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_work(&bed, "db-verify", "COPY public.big");
    let dead_scratch = bed.scratch_databases();
    assert_eq!(dead_scratch.len(), 1, "{dead_scratch:?}");
    let live = spawn(&bed, &["db-verify"]);
    wait_for("both loads", 60, || {
        let loading =
            bed.xtask_sessions().into_iter().filter(|(a, q)| a.ends_with(":db-verify") && q.starts_with("COPY"));
        (loading.count() == 2).then_some(())
    });
    let live_scratch: Vec<String> = bed.scratch_databases().into_iter().filter(|d| !dead_scratch.contains(d)).collect();
    assert_eq!(live_scratch.len(), 1, "{live_scratch:?}");

    // SIGKILL: no cleanup of its own runs. Its sessions end with their input; its
    // scratch database, half loaded, stays.
    dead.kill().unwrap();
    dead.wait().unwrap();
    // The run's id is in its scratch database's name and in its sessions' names.
    let dead_run = dead_scratch[0].trim_start_matches("hindsight_db__verify_").split('_').next().unwrap().to_owned();
    wait_for("the killed run's sessions to end", 15, || {
        let dead_sessions =
            bed.xtask_sessions().into_iter().filter(|(a, _)| a.contains(&format!(":{dead_run}:"))).count();
        (dead_sessions == 0).then_some(())
    });
    assert!(bed.scratch_databases().contains(&dead_scratch[0]), "the killed run left its scratch database");

    // Any task that reaches the database cleans up: db-backup runs beside db-verify.
    let cleaner = bed.xtask(&["db-backup"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the dead run's scratch database to go", 60, || {
        (!bed.scratch_databases().contains(&dead_scratch[0])).then_some(())
    });
    let live_state = live.id();
    assert!(
        bed.scratch_databases().contains(&live_scratch[0]),
        "the live run's scratch database is untouched (verify pid {live_state})"
    );
    let cleaner = Run::from(cleaner.wait_with_output().unwrap());
    assert_eq!(cleaner.code, Some(0), "{}", cleaner.stderr);
    assert!(cleaner.stderr.contains(&format!("dropping `{}`", dead_scratch[0])), "{}", cleaner.stderr);

    let run = Run::from(live.wait_with_output().unwrap());
    assert_eq!(run.code, Some(0), "the live verification was never disturbed and passes: {}", run.stderr);
    assert!(bed.scratch_databases().is_empty());
    assert!(bed.databases().contains(&DB.to_owned()));
    let _ = std::fs::remove_dir_all(&other_dir);
}
