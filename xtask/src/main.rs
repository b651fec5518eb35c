//! `cargo xtask`: backup, restore and scheduling tasks for the hindsight_db PostgreSQL database.
//!
//! See `cargo xtask --help` and the README. Each task lives in a module of `tasks/` named after it.

use std::{ffi::OsString, process::ExitCode};

use xtask::{
    cli::{self, Task},
    exit, interrupt, json, monitor, output, paths, project_root,
};

fn main() -> ExitCode {
    // SAFETY: first thing in `main`, before any thread starts (interrupt::install's comes
    // later): nothing else reads or writes the environment while `load` sets it.
    // The installed job's secrets become variables before clap reads them.
    if let Err(err) = unsafe { monitor::secrets_file::load() } {
        eprintln!("error: {err:#}");
        return ExitCode::FAILURE;
    }
    // Before the shell moves to the repository root: paths a person gives are theirs.
    if let Ok(dir) = std::env::current_dir() {
        paths::set_working_dir(dir);
    }
    let cli = match cli::Cli::try_parse_args() {
        Ok(cli) => cli,
        Err(err) => return command_line_error(err, std::env::args_os().skip(1)),
    };
    // Once, before anything prints.
    output::set_level(cli.level());
    if wants_json(&cli.task) {
        json::request();
        on_panic_print_the_envelope();
    }
    let result = interrupt::install()
        .map_err(anyhow::Error::from)
        .and_then(|()| xshell::Shell::new().map_err(anyhow::Error::from))
        .and_then(|sh| {
            sh.change_dir(project_root());
            cli.task.run(&sh)
        });
    exit::report(result)
}

/// Whether the task's `--json` was given (install-cron's comes with db-backup's flags).
fn wants_json(task: &Task) -> bool {
    match task {
        Task::DbBackup(task) => task.json,
        Task::DbRestore(task) => task.json,
        Task::InstallCron(task) => task.backup.json,
        Task::DbList(task) => task.json,
        Task::DbVerify(task) => task.json,
        Task::DbPrune(task) => task.json,
        Task::DbOffsite(task) => task.json,
        Task::DbStatus(task) => task.json,
        Task::Bench(_) | Task::Test(_) => false,
    }
}

/// clap's own message on stderr, as always; and when `--json` is among the arguments, the
/// object a script waits for, with clap's exit code (2). `--help` and `--version` print
/// as they always do, whatever else is given. db-status is a Nagios plugin: its bad
/// command line is UNKNOWN (3), said on stdout too, where monitoring reads.
fn command_line_error(err: clap::Error, args: impl Iterator<Item = OsString>) -> ExitCode {
    // After `--` an argument is a value (cargo test's, for `test`), never our flag.
    let args: Vec<OsString> = args.take_while(|arg| arg != "--").collect();
    let asked_json = args.iter().any(|arg| arg == "--json");
    let status =
        args.iter().find(|arg| !arg.to_string_lossy().starts_with('-')).is_some_and(|task| task == "db-status");
    if !err.use_stderr() || !(asked_json || status) {
        err.exit();
    }
    let _ = err.print();
    let message = json::clap_message(&err.render().to_string());
    let code = if status { 3 } else { u8::try_from(err.exit_code()).unwrap_or(2) };
    if status && !asked_json {
        println!("UNKNOWN: bad command line: {message}");
    }
    if asked_json {
        json::request();
        json::print_envelope(code, Some(&message));
    }
    ExitCode::from(code)
}

/// A panic ends the run without `exit::report`: with `--json`, the object still comes,
/// with the exit code the standard library gives a panic in `main` (101). A panic on
/// another thread becomes an error of the task, reported as such.
fn on_panic_print_the_envelope() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if std::thread::current().name() == Some("main") {
            json::print_envelope(101, Some(&format!("internal error: {info}; please report it")));
        }
    }));
}
