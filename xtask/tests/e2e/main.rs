//! The end-to-end tests: one binary (rust-analyzer's `slow-tests` shape) driving the real
//! `xtask` binary against the real test bed. Each module covers one task or promise;
//! `testbed` holds the helpers, which reach the database through the xtask's own door.

mod age_interop;
mod catalogue;
mod cli_parse;
mod cli_refs;
mod compose_setups;
mod db_backup;
mod db_ops;
mod db_restore;
mod dry_run;
mod garage;
mod hardening;
mod install_cron;
mod interrupt;
mod jobs;
mod json_output;
mod matrix;
mod memory;
mod monitoring;
mod offsite;
mod output_levels;
mod parallel;
mod ping;
mod ping_server;
mod prerestore;
mod revisions;
mod roles;
mod testbed;
