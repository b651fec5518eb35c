//! `cargo xtask db-offsite`: the offsite sync db-backup does after each backup, on demand
//! and without a database: abort the uploads dead runs left, upload every complete local
//! backup remote retention keeps and the store lacks (newest first, no cap), then apply
//! remote retention.

use anyhow::{Result, bail};
use xshell::Shell;

use crate::{
    cli::DbOffsite,
    json,
    offsite::remote::{self, Offsite},
    output::{count, done, step},
    store::backup_dir::{self, BackupDir},
    tasks::db_backup::{self, OffsiteOutcome},
};

impl DbOffsite {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let Some(config) = Offsite::settings(&self.offsite)? else {
            bail!("no offsite store is set: give --offsite s3://BUCKET/PREFIX (HINDSIGHT_OFFSITE)");
        };
        let recipients = remote::recipients(&self.upload)?;
        let db = &self.name.db_name;
        let dir_path = self.dir.path(&sh.current_dir());
        backup_dir::require_existing(&dir_path)?;
        let dir = BackupDir::open(dir_path)?;
        // The same lock as db-backup: one run uploads, aborts and prunes at a time.
        let _lock = dir.lock("db-offsite", self.lock.lock_wait_secs)?;
        let mut outcome = OffsiteOutcome {
            url: config.location.to_string(),
            encrypted: recipients.is_some(),
            ..OffsiteOutcome::default()
        };
        step!("bringing the offsite copies of `{db}` in {} up to date", outcome.url);
        let remote = Offsite::connect(config, recipients)?;
        outcome.aborted = remote.abort_dead(&dir, db)?;
        db_backup::sync(sh, &remote, &dir, db, &self.upload.policy(&self.retention), usize::MAX, &mut outcome);
        json::report(
            json::Object::new()
                .str("url", &outcome.url)
                .raw("encrypted", outcome.encrypted)
                .raw("uploaded", json::strings(&outcome.caught_up))
                .raw("aborted", json::strings(&outcome.aborted))
                .raw("removed", json::strings(&outcome.removed)),
        );
        if let Some(err) = outcome.failure {
            return Err(err.context(format!(
                "the offsite sync to {} failed after {} and {} removed",
                outcome.url,
                count(outcome.caught_up.len() as u64, "upload"),
                outcome.removed.len()
            )));
        }
        let offsite = remote.list(db)?.len();
        done!(
            "offsite up to date: {} uploaded, {} aborted, {} removed; {} in {}",
            outcome.caught_up.len(),
            outcome.aborted.len(),
            outcome.removed.len(),
            count(offsite as u64, "backup"),
            outcome.url
        );
        Ok(())
    }
}
