//! `cargo xtask`: backup, restore and scheduling tasks for the hindsight_db PostgreSQL database.
//!
//! See `cargo xtask --help` and the README. Each task lives in a module of `tasks/` named after it.

use std::process::ExitCode;

use clap::Parser;
use xtask::{cli, exit, interrupt, output, project_root};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Once, before anything prints.
    output::set_level(cli.level());
    let result = interrupt::install()
        .map_err(anyhow::Error::from)
        .and_then(|()| xshell::Shell::new().map_err(anyhow::Error::from))
        .and_then(|sh| {
            sh.change_dir(project_root());
            cli.task.run(&sh)
        });
    exit::report(result)
}
