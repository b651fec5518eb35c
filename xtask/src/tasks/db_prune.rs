//! `cargo xtask db-prune`: the retention policy db-backup applies after each good backup,
//! run on demand, saying what it keeps and why.

use std::path::{Path, PathBuf};

use anyhow::Result;
use xshell::Shell;

use crate::{
    cli::DbPrune,
    output::step,
    store::backup_dir::BackupDir,
    store::catalogue,
    store::retention::{self, Decision, Policy},
};

impl DbPrune {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let dir = BackupDir::open(sh.current_dir().join(&self.dir.backup_dir))?;
        let _lock = dir.lock("db-prune", self.dir.lock_wait_secs)?;
        let backups = catalogue::list(dir.path(), &self.name.db_name)?;
        let decisions = retention::decide(&backups, &self.retention.policy(), None);
        for decision in &decisions {
            let name = decision.backup.path.file_name().unwrap_or_default().to_string_lossy();
            if decision.keep() {
                println!("keep    {name}  ({})", decision.reasons.join(", "));
            } else {
                println!("{} {name}", if self.dry_run { "would remove" } else { "remove " });
            }
        }
        if self.dry_run {
            step!("dry run: nothing was removed");
            return Ok(());
        }
        let removed = remove_unkept(&dir, &decisions)?;
        step!("removed {} of {} backups", removed.len(), backups.len());
        Ok(())
    }
}

/// Removes the backups `policy` does not keep, with the files beside them, and returns
/// their paths. db-backup calls it only after a good new backup, `just_written`.
pub fn apply(dir: &BackupDir, db: &str, policy: &Policy, just_written: Option<&Path>) -> Result<Vec<PathBuf>> {
    let backups = catalogue::list(dir.path(), db)?;
    remove_unkept(dir, &retention::decide(&backups, policy, just_written))
}

/// Removes the backups no rule keeps, with the files beside them.
fn remove_unkept(dir: &BackupDir, decisions: &[Decision<'_>]) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for decision in decisions.iter().filter(|d| !d.keep()) {
        dir.remove_backup(decision.backup)?;
        step!("removed {}: no retention rule keeps it", decision.backup.path.display());
        removed.push(decision.backup.path.clone());
    }
    Ok(removed)
}
