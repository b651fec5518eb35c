//! `cargo xtask db-status`: whether the backups are fresh, as a Nagios plugin says it.

use anyhow::Result;
use xshell::Shell;

use crate::cli::DbStatus;

impl DbStatus {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        anyhow::bail!("db-status: not yet")
    }
}
