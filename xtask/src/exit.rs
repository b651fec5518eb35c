//! Exit codes, and the one place that turns a task's error into its final line.

use std::{fmt, process::ExitCode};

/// Exit codes other than 0 (success), 1 (failure), 2 (bad command line, from clap), and
/// 128 + the signal's number for a run stopped by SIGINT (130) or SIGTERM (143).
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

pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    // A signal decides the exit code whatever failed on the way out: the step it stopped.
    if let Some(signal) = crate::interrupt::received() {
        let stopped = crate::interrupt::Stopped(signal);
        crate::output::line(format_args!("{stopped}: cleaned up and exiting ({err:#})"));
        return ExitCode::from(stopped.exit_code());
    }
    // `{:#}` puts the whole chain on one line: what failed, then the tool's own words.
    crate::output::line(format_args!("error: {err:#}"));
    ExitCode::from(code_of(&err).map_or(1, |code| code as u8))
}

/// The exit code an error carries, if it is not a plain failure (1).
pub fn code_of(err: &anyhow::Error) -> Option<Code> {
    err.chain().find_map(|cause| cause.downcast_ref::<Coded>()).map(|coded| coded.code)
}
