//! `cargo xtask`: backup, restore and scheduling tasks for the hindsight_db PostgreSQL database.
//!
//! See `cargo xtask --help` and the README. Each task lives in a module named after it.

mod alembic;
mod backup_dir;
mod backup_file;
mod bench;
mod catalogue;
mod cli;
mod codec;
mod compose;
mod cron_entry;
mod database;
mod db_backup;
mod db_list;
mod db_prune;
mod db_restore;
mod db_verify;
mod exit;
mod install_cron;
mod json;
mod output;
mod overlap;
mod process;
mod prompt;
mod retention;
mod test;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = xshell::Shell::new().map_err(anyhow::Error::from).and_then(|sh| {
        sh.change_dir(project_root());
        cli.task.run(&sh)
    });
    exit::report(result)
}

/// The repository root: every relative path in the settings is taken from here,
/// whatever directory (or cron) started the binary.
fn project_root() -> PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    PathBuf::from(dir).parent().expect("xtask lives one level below the repository root").to_path_buf()
}
