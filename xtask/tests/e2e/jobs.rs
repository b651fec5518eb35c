//! The default number of load sessions (`--jobs`): the CPUs the database's container may
//! use, a Compose `cpus:` quota included, which `nproc` in the container ignores.

use std::fs;

use crate::testbed::{Bed, Flavor, compose_file};

#[test]
fn the_default_jobs_follow_the_containers_cpu_quota() {
    let bed = Bed::new("jobsquota", Flavor::V2);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("jobsquota_{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let quota = dir.join("cpus.yml");
    fs::write(&quota, "services:\n  db:\n    cpus: 1.0\n").unwrap();
    let (base, quota) = (compose_file().display().to_string(), quota.display().to_string());
    let with_quota = ["--compose-file", base.as_str(), "--compose-file", quota.as_str()];

    // Started by the xtask from both files: the container has a quota of one CPU.
    bed.run_ok(&[&["db-backup", "--start"][..], &with_quota].concat());
    let nproc = bed.compose(&["exec", "-T", "db", "nproc"]);
    let nproc: usize = String::from_utf8_lossy(&nproc.stdout).trim().parse().expect("nproc in the container");
    assert!(nproc >= 2, "the test needs a machine with two CPUs or more, the container sees {nproc}");
    let run = bed.run_ok(&[&["db-restore", "latest", "--yes", "--no-migrate"][..], &with_quota].concat());
    assert!(run.stderr.contains("loading through 1 session, in one transaction"), "{}", run.stderr);

    // The same data without the quota: as many sessions as the container's CPUs.
    let up = bed.compose(&["up", "-d", "--force-recreate", "db"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let run = bed.run_ok(&["db-restore", "latest", "--yes", "--no-migrate", "--wait-secs", "90"]);
    assert!(run.stderr.contains(&format!("loading through {nproc} sessions")), "{}", run.stderr);
    // The flag and its variable win over the default.
    let run = bed.run_ok(&["db-verify", "--jobs", "3"]);
    assert!(run.stderr.contains("loading through 3 sessions"), "{}", run.stderr);
    let mut verify = bed.xtask(&["db-verify"]);
    let out = verify.env("HINDSIGHT_JOBS", "1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("loading through 1 session"), "{stderr}");
    let _ = fs::remove_dir_all(&dir);
}

/// A function body holding a line shaped like pg_dump's own comment block: the splitter
/// cuts the dump there, and a session waits inside the unfinished statement. The load
/// fails, naming `--jobs 1`, rather than hanging or loading wrong; `--jobs 1` loads it.
#[test]
fn a_statement_the_splitter_cuts_in_two_fails_the_parallel_load_and_one_session_loads_it() {
    let bed = Bed::new("jobscut", Flavor::V2);
    bed.start();
    bed.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
         CREATE FUNCTION tricky() RETURNS text LANGUAGE sql AS $f$
         SELECT '
--
-- Name: x; Type: TABLE DATA; Schema: public; Owner: user
--
'::text
$f$;",
    );
    bed.run_ok(&["db-backup"]);
    let before = bed.psql("SELECT count(*) FROM t");

    let run = bed.run(&["db-restore", "latest", "--yes", "--no-migrate", "--jobs", "2"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.last_line().contains("is stuck inside a statement") && run.last_line().contains("--jobs 1"),
        "{}",
        run.stderr
    );
    assert!(bed.scratch_databases().is_empty() && bed.xtask_sessions().is_empty(), "nothing left behind");
    assert_eq!(bed.psql("SELECT count(*) FROM t"), before, "the live database is as it was");

    bed.run_ok(&["db-restore", "latest", "--yes", "--no-migrate", "--jobs", "1"]);
    assert!(bed.psql("SELECT tricky()").contains("Type: TABLE DATA"), "the function came back whole");
}
