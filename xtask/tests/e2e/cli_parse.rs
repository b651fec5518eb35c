//! The command line as a person meets it (issue 12): the parser's suggestions, colour only
//! on a terminal, `cargo xtask` in usage, `--version`, values refused in words and blamed
//! on the variable that set them, cron's nicknames, an unknown service, and the cron job
//! that never starts a stopped database.

use std::process::{Command, Stdio};

use crate::testbed::{Bed, Flavor, Run};

/// The real binary with a clean `HINDSIGHT_*` environment, for what needs no database.
fn xtask(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HINDSIGHT_") || key == "NO_COLOR" || key.starts_with("CLICOLOR") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).envs(env.iter().copied()).current_dir(std::env::temp_dir()).stdin(Stdio::null());
    Run::from(cmd.output().expect("the xtask binary runs"))
}

#[test]
fn a_typo_gets_a_suggestion_and_usage_names_cargo_xtask() {
    let run = xtask(&["db-bakup"], &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    // clap also offers db-status, as close to the typo as db-backup.
    assert!(run.stderr.contains("similar subcommand") && run.stderr.contains("'db-backup'"), "{}", run.stderr);
    assert!(run.stderr.contains("Usage: cargo xtask"), "{}", run.stderr);

    let run = xtask(&["db-backup", "--max-backup", "5"], &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("similar argument exists: '--max-backups'"), "{}", run.stderr);
    assert!(run.stderr.contains("Usage: cargo xtask db-backup"), "{}", run.stderr);
    // Not a terminal: no colour codes for a log or a pipe to read.
    assert!(!run.stderr.contains('\x1b'), "colour without a terminal: {:?}", run.stderr);

    let help = xtask(&["--help"], &[]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("Usage: cargo xtask [OPTIONS] <COMMAND>"), "{}", help.stdout);
}

#[test]
fn a_terminal_gets_colour() {
    // `script` gives the binary a pseudo-terminal, as a person's shell would.
    let exe = env!("CARGO_BIN_EXE_xtask");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{exe} db-bakup"), "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("db-backup"), "{text}");
    assert!(text.contains('\x1b'), "no colour on a terminal: {text:?}");
}

#[test]
fn version_is_printed() {
    let run = xtask(&["--version"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.trim(), format!("cargo xtask {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn values_are_refused_in_words_naming_what_the_user_set() {
    let zero = xtask(&["db-prune", "--dry-run", "--max-backups", "0"], &[]);
    assert_eq!(zero.code, Some(2), "{}", zero.stderr);
    assert!(zero.stderr.contains("'--max-backups <N>': must be 1 or more"), "{}", zero.stderr);
    assert!(!zero.stderr.contains("non-zero type"), "{}", zero.stderr);

    let negative = xtask(&["db-prune", "--dry-run", "--keep-daily", "-1"], &[]);
    assert_eq!(negative.code, Some(2), "{}", negative.stderr);
    assert!(negative.stderr.contains("'--keep-daily <N>': a count cannot be negative"), "{}", negative.stderr);

    let huge = xtask(&["db-backup", "--wait-secs", "99999999999999999999"], &[]);
    assert_eq!(huge.code, Some(2), "{}", huge.stderr);
    assert!(huge.stderr.contains("too long: give at most"), "{}", huge.stderr);

    // Set in the environment, not typed: the message names the variable.
    let from_env = xtask(&["db-prune", "--dry-run"], &[("HINDSIGHT_MAX_BACKUPS", "0")]);
    assert_eq!(from_env.code, Some(2), "{}", from_env.stderr);
    assert!(
        from_env.stderr.contains("invalid value '0' in the environment variable HINDSIGHT_MAX_BACKUPS"),
        "{}",
        from_env.stderr
    );
    let from_env = xtask(&["db-backup"], &[("HINDSIGHT_BACKUP_COMPRESS", "lz4")]);
    assert_eq!(from_env.code, Some(2), "{}", from_env.stderr);
    assert!(from_env.stderr.contains("HINDSIGHT_BACKUP_COMPRESS") && from_env.stderr.contains("zstd"));
    // Typed, it is the flag's fault, even with the variable set too.
    let typed = xtask(&["db-prune", "--dry-run", "--max-backups=0"], &[("HINDSIGHT_MAX_BACKUPS", "3")]);
    assert!(typed.stderr.contains("'--max-backups <N>'"), "{}", typed.stderr);
}

#[test]
fn cron_nicknames_are_schedules() {
    let run = xtask(&["install-cron", "--print", "--schedule", "@hourly"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let job = run.stdout.lines().find(|line| !line.starts_with('#')).expect("a job line");
    assert!(job.starts_with("@hourly cd "), "{job}");
    // The installed job never starts a stopped database unless told to.
    assert!(job.contains(" '--no-start'"), "{job}");
    let told = xtask(&["install-cron", "--print", "--start"], &[]);
    assert!(told.stdout.contains(" '--start'") && !told.stdout.contains("--no-start"), "{}", told.stdout);

    let typo = xtask(&["install-cron", "--print", "--schedule", "@hourl"], &[]);
    assert_eq!(typo.code, Some(2));
    assert!(typo.stderr.contains("not a cron nickname; cron knows @reboot"), "{}", typo.stderr);
}

#[test]
fn an_unknown_service_lists_the_services_there_are() {
    let bed = Bed::new("nosvc", Flavor::V2);
    let run = bed.run(&["db-backup", "--service", "nope"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("the compose files define no service `nope`: they define db"), "{}", run.stderr);
    assert!(!run.stderr.contains("logs nope"), "no pointer to the logs of a service that does not exist");
}

#[test]
fn the_cron_job_never_starts_a_stopped_database() {
    let bed = Bed::new("nostart", Flavor::V2);
    bed.start();
    bed.run_ok(&["db-backup"]);
    let stop = bed.compose(&["stop", "-t", "5", "db"]);
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));

    // What the installed job runs: it fails, names the way out, and leaves the service stopped.
    let job = bed.run(&["db-backup", "--no-start"]);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(job.last_line().contains("service `db` is not running, and this run does not start it"), "{}", job.stderr);
    assert!(job.last_line().contains("up -d db"), "{}", job.stderr);
    let running = bed.compose(&["ps", "--services", "--filter", "status=running"]);
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "", "the job started the database");
    assert_eq!(bed.backups().len(), 1, "no backup was made");

    // A backup by hand still starts it, as documented.
    bed.run_ok(&["db-backup"]);
    assert_eq!(bed.backups().len(), 2);
}

#[test]
fn help_is_grouped_and_each_task_shows_only_its_own_flags() {
    let backup = xtask(&["db-backup", "--help"], &[]);
    assert_eq!(backup.code, Some(0));
    let headings: Vec<&str> =
        backup.stdout.lines().filter(|line| !line.starts_with(' ') && line.ends_with(':')).collect();
    assert_eq!(
        headings,
        ["Options:", "Connection:", "Backup directory:", "Locks:", "Retention:", "Offsite:", "Monitoring:", "Output:"],
        "{}",
        backup.stdout
    );
    let list = xtask(&["db-list", "--help"], &[]);
    assert_eq!(list.code, Some(0));
    // db-list neither locks nor creates the directory.
    assert!(!list.stdout.contains("--lock-wait-secs"), "{}", list.stdout);
    assert!(!list.stdout.contains("created with mode"), "{}", list.stdout);
    assert!(!list.stdout.contains("--compose-file"), "{}", list.stdout);
    let restore = xtask(&["db-restore", "--help"], &[]);
    assert!(restore.stdout.contains("--dry-run") && !restore.stdout.contains("--max-backups"), "{}", restore.stdout);
}
