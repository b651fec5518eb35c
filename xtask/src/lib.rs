//! The `xtask` crate as a library: the binary (`main.rs`) parses and dispatches, and the
//! end-to-end tests reach the database through the same door the tasks use.
//!
//! The layers, one folder each: `tasks` (one module per task), `db` (where pg_dump and
//! psql run, and the SQL they run), `store` (the backup directory and its files),
//! `stream` (the byte streams a dump passes through), `offsite` (the copies on S3), and
//! `monitor` (how a run is watched from outside: its record, metrics, pings, log). `testbed` is test-bed code only:
//! the throwaway servers the end-to-end tests and the bench start (Garage, run as a
//! separate program, never linked).

pub mod alembic;
pub mod cli;
pub mod cron_entry;
pub mod db;
pub mod exit;
pub mod interrupt;
pub mod json;
pub mod monitor;
pub mod offsite;
pub mod output;
pub mod paths;
pub mod process;
pub mod prompt;
pub mod store;
pub mod stream;
pub mod tasks;
pub mod testbed;
pub mod tls;

use std::path::PathBuf;

/// The repository root: the default paths (backups, compose file, cron log) live here,
/// whatever directory (or cron) started the binary. Paths a person gives are taken from
/// the working directory instead: see `paths`.
pub fn project_root() -> PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    PathBuf::from(dir).parent().expect("xtask lives one level below the repository root").to_path_buf()
}
