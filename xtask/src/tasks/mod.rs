//! One module per task, each an `impl` of its `cli` type with `run(self, sh)`.

pub mod bench;
pub mod db_backup;
pub mod db_list;
pub mod db_offsite;
pub mod db_prune;
pub mod db_restore;
pub mod db_status;
pub mod db_verify;
pub mod install_cron;
pub mod test;
