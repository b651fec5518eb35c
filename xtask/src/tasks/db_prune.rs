//! `cargo xtask db-prune`: the retention policy db-backup applies after each good backup,
//! run on demand, saying what it keeps and why; or, with `--incomplete`, the removal of
//! the files named like backups that are not complete, which retention never counts.

use std::path::{Path, PathBuf};

use anyhow::Result;
use xshell::Shell;

use crate::{
    cli::DbPrune,
    output::{count, done, step, warning},
    store::backup_dir::BackupDir,
    store::backup_file::Backup,
    store::catalogue,
    store::retention::{self, Decision, Policy},
};

impl DbPrune {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let dir = BackupDir::open(sh.current_dir().join(&self.dir.backup_dir))?;
        let _lock = dir.lock("db-prune", self.dir.lock_wait_secs)?;
        let scanned = catalogue::scan(dir.path(), &self.name.db_name)?;
        let (complete, incomplete): (Vec<Backup>, Vec<Backup>) = scanned.into_iter().partition(|b| b.complete);
        if self.incomplete {
            return self.remove_incomplete(&dir, &incomplete, complete.len());
        }
        let decisions = retention::decide(&complete, &self.retention.policy(), None);
        for decision in &decisions {
            let name = decision.backup.path.file_name().unwrap_or_default().to_string_lossy();
            if decision.keep() {
                println!("keep    {name}  ({})", decision.reasons.join(", "));
            } else {
                println!("{} {name}", if self.dry_run { "would remove" } else { "remove " });
            }
        }
        for backup in &incomplete {
            let name = backup.path.file_name().unwrap_or_default().to_string_lossy();
            println!("skip    {name}  (incomplete: {}; not counted)", backup.why_incomplete().unwrap_or_default());
        }
        if !incomplete.is_empty() {
            let are = if incomplete.len() == 1 { "is not a backup" } else { "are not backups" };
            step!(
                "{} {are}: `cargo xtask db-prune --incomplete` removes them",
                count(incomplete.len() as u64, "incomplete file")
            );
        }
        if self.dry_run {
            done!("dry run: nothing was removed");
            return Ok(());
        }
        let removed = remove_unkept(&dir, &decisions)?;
        done!("removed {} of {}", removed.len(), count(complete.len() as u64, "backup"));
        Ok(())
    }

    /// Removes the incomplete files (with anything beside them) and nothing else: the only
    /// way they go, since a person may want to look at one before it does.
    fn remove_incomplete(&self, dir: &BackupDir, incomplete: &[Backup], complete: usize) -> Result<()> {
        for backup in incomplete {
            let name = backup.path.file_name().unwrap_or_default().to_string_lossy();
            let why = backup.why_incomplete().unwrap_or_default();
            if self.dry_run {
                println!("would remove {name}  (incomplete: {why})");
            } else {
                dir.remove_backup(backup)?;
                println!("remove  {name}  (incomplete: {why})");
            }
        }
        let done = if self.dry_run { "dry run: nothing was removed" } else { "removed" };
        done!("{done}: {}; complete backups untouched: {complete}", count(incomplete.len() as u64, "incomplete file"));
        Ok(())
    }
}

/// Removes the complete backups `policy` does not keep, with the files beside them, and
/// returns their paths. db-backup calls it only after a good new backup, `just_written`.
/// Incomplete files are left alone, with a warning saying how to remove them.
pub fn apply(dir: &BackupDir, db: &str, policy: &Policy, just_written: Option<&Path>) -> Result<Vec<PathBuf>> {
    let backups = catalogue::scan(dir.path(), db)?;
    let incomplete = backups.iter().filter(|b| !b.complete).count();
    if incomplete > 0 {
        let are = if incomplete == 1 { "is" } else { "are" };
        warning!(
            "{} named like backups in {} {are} not counted: see `cargo xtask db-list`, remove them with \
             `cargo xtask db-prune --incomplete`",
            count(incomplete as u64, "incomplete file"),
            dir.path().display()
        );
    }
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
