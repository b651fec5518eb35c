//! Exit codes, and the one place that turns a task's result into its final line (and,
//! with `--json`, its one object on stdout).

use std::{fmt, process::ExitCode};

/// Exit codes other than 0 (success), 1 (failure), 2 (bad command line, from clap), and
/// 128 + the signal's number for a run stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A usage problem found after parsing, such as no backup named and no terminal to pick one.
    Usage = 2,
    /// Another backup or restore held the backup directory's lock for the whole wait.
    Busy = 3,
    /// The user did not confirm (or could not be asked): nothing was changed.
    Refused = 4,
    /// Not enough free space for a backup or a scratch load, found before anything was written.
    NoSpace = 5,
    /// The local backup is complete and checked, but its offsite copy failed.
    OffsiteFailed = 6,
}

/// An error that ends the run with its own exit code.
#[derive(Debug)]
pub struct Coded {
    pub code: Code,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// The run's last word: on failure the error line on stderr, and with `--json` the one
/// object on stdout (`json::print_envelope`), whose `code` is the exit code returned here.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let (code, error) = match result {
        Ok(()) => (0, None),
        Err(err) => failure(&err),
    };
    crate::json::print_envelope(code, error.as_deref());
    ExitCode::from(code)
}

/// Prints a failure's last line and returns its exit code and its one-line message.
fn failure(err: &anyhow::Error) -> (u8, Option<String>) {
    // db-status printed its own lines: its verdict is only an exit code.
    if let Some(verdict) = err.downcast_ref::<Verdict>() {
        return (verdict.code, Some(verdict.summary.clone()));
    }
    let (code, message) = judge(err);
    match crate::interrupt::received() {
        Some(_) => crate::output::line(format_args!("{message}")),
        None => crate::output::line(format_args!("error: {message}")),
    }
    (code, Some(message))
}

/// A failure's exit code and its message on one line, as `report` will print them: for
/// what a run tells the world before it exits (its record, its metrics, its ping).
pub fn judge(err: &anyhow::Error) -> (u8, String) {
    // A signal decides the exit code whatever failed on the way out: the step it stopped.
    if let Some(signal) = crate::interrupt::received() {
        let stopped = crate::interrupt::Stopped(signal);
        return (stopped.exit_code(), format!("{stopped}: cleaned up and exiting ({err:#})"));
    }
    // `{:#}` puts the whole chain on one line: what failed, then the tool's own words.
    (code_of(err).map_or(1, |code| code as u8), format!("{err:#}"))
}

/// db-status's result when it is not OK: the Nagios state as the exit code (1 WARNING,
/// 2 CRITICAL, 3 UNKNOWN), after the task printed its own lines.
#[derive(Debug)]
pub struct Verdict {
    pub code: u8,
    pub summary: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for Verdict {}

/// The exit code an error carries, if it is not a plain failure (1).
pub fn code_of(err: &anyhow::Error) -> Option<Code> {
    err.chain().find_map(|cause| cause.downcast_ref::<Coded>()).map(|coded| coded.code)
}
