//! `cargo xtask db-prune`: the retention policy db-backup applies after each good backup,
//! run on demand, saying what it keeps and why; or, with `--incomplete`, the removal of
//! the files named like backups that are not complete, which retention never counts.

use std::path::{Path, PathBuf};

use anyhow::Result;
use xshell::Shell;

use crate::{
    cli::DbPrune,
    json::{self, human},
    output::{count, done, step, warning},
    store::backup_dir::BackupDir,
    store::backup_file::Backup,
    store::catalogue,
    store::retention::{self, Decision, Policy},
};

impl DbPrune {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let dir = BackupDir::existing(self.dir.path(&sh.current_dir()))?;
        // A dry run writes nothing, not even the lock file; what it shows may be stale by
        // the time a real run takes the lock, which is why it only shows.
        let _lock = if self.dry_run { None } else { Some(dir.lock("db-prune", self.lock.lock_wait_secs)?) };
        let scanned = catalogue::scan(dir.path(), &self.name.db_name)?;
        let (complete, incomplete): (Vec<Backup>, Vec<Backup>) = scanned.into_iter().partition(|b| b.complete);
        if self.incomplete {
            return self.remove_incomplete(&dir, &incomplete, &complete);
        }
        let decisions = retention::decide(&complete, &self.retention.policy(), None);
        for decision in &decisions {
            let name = decision.backup.path.file_name().unwrap_or_default().to_string_lossy();
            if decision.keep() {
                human!("keep    {name}  ({})", decision.reasons.join(", "));
            } else {
                human!("{} {name}", if self.dry_run { "would remove" } else { "remove " });
            }
        }
        for backup in &incomplete {
            let name = backup.path.file_name().unwrap_or_default().to_string_lossy();
            human!("skip    {name}  (incomplete: {}; not counted)", backup.why_incomplete().unwrap_or_default());
        }
        if !incomplete.is_empty() {
            let are = if incomplete.len() == 1 { "is not a backup" } else { "are not backups" };
            step!(
                "{} {are}: `cargo xtask db-prune --incomplete` removes them",
                count(incomplete.len() as u64, "incomplete file")
            );
        }
        let kept = decisions.iter().filter(|d| d.keep()).map(|d| kept(&d.backup.path, &d.reasons));
        let kept = json::array(kept);
        let skipped = json::array(incomplete.iter().map(skipped));
        if self.dry_run {
            done!("dry run: nothing was removed");
            let would = decisions.iter().filter(|d| !d.keep()).map(|d| d.backup.path.to_string_lossy());
            json::report(report(true, false, kept, json::strings(would), skipped));
            return Ok(());
        }
        let removed = remove_unkept(&dir, &decisions)?;
        done!("removed {} of {}", removed.len(), count(complete.len() as u64, "backup"));
        json::report(report(false, false, kept, json::strings(removed.iter().map(|p| p.to_string_lossy())), skipped));
        Ok(())
    }

    /// Removes the incomplete files (with anything beside them) and nothing else: the only
    /// way they go, since a person may want to look at one before it does.
    fn remove_incomplete(&self, dir: &BackupDir, incomplete: &[Backup], complete: &[Backup]) -> Result<()> {
        for backup in incomplete {
            let name = backup.path.file_name().unwrap_or_default().to_string_lossy();
            let why = backup.why_incomplete().unwrap_or_default();
            if self.dry_run {
                human!("would remove {name}  (incomplete: {why})");
            } else {
                dir.remove_backup(backup)?;
                human!("remove  {name}  (incomplete: {why})");
            }
        }
        let done = if self.dry_run { "dry run: nothing was removed" } else { "removed" };
        done!(
            "{done}: {}; complete backups untouched: {}",
            count(incomplete.len() as u64, "incomplete file"),
            complete.len()
        );
        let kept = json::array(complete.iter().map(|b| kept(&b.path, &["complete"])));
        let removed = json::strings(incomplete.iter().map(|b| b.path.to_string_lossy()));
        json::report(report(self.dry_run, true, kept, removed, "[]".to_owned()));
        Ok(())
    }
}

/// db-prune's `--json` fields. `removed` is what went, or with `dry_run` what would go;
/// `incomplete_only` is `--incomplete`, where the complete backups are `kept` as such.
fn report(dry_run: bool, incomplete_only: bool, kept: String, removed: String, skipped: String) -> json::Object {
    json::Object::new()
        .raw("dry_run", dry_run)
        .raw("incomplete_only", incomplete_only)
        .raw("kept", kept)
        .raw("removed", removed)
        .raw("skipped", skipped)
}

/// A backup that stays, and the rules that keep it (`newest`, `daily #1`, ...).
fn kept<S: AsRef<str>>(path: &Path, reasons: &[S]) -> String {
    json::Object::new()
        .str("path", &path.to_string_lossy())
        .raw("reasons", json::strings(reasons.iter().map(AsRef::as_ref)))
        .build()
}

/// An incomplete file that retention does not count, and why it is incomplete.
fn skipped(backup: &Backup) -> String {
    json::Object::new()
        .str("path", &backup.path.to_string_lossy())
        .str("incomplete", backup.why_incomplete().unwrap_or_default())
        .build()
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
