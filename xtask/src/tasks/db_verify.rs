//! `cargo xtask db-verify`: a backup nobody has restored is a hope. This checks the
//! checksum and the completion marker, restores into a scratch database (never the live
//! one), compares the revision and every table's row count with the dump, drops the
//! scratch database, and records the result beside the backup.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use xshell::Shell;

use crate::{
    cli::{DbVerify, From},
    db::{
        Database, Start, load,
        session::{Mode, Session},
    },
    exit, interrupt, json,
    offsite::remote::{self, RemoteBackup},
    output::{count, detail, done, human_bytes, step},
    store::backup_dir::{BackupDir, remove_if_exists},
    store::backup_file::beside,
    store::backup_file::{BackupName, PARTIAL_SUFFIX, Revision, VERIFIED_SUFFIX},
    store::catalogue::{self, Candidate},
};

struct Verified {
    /// When its checks passed, as its record says.
    at: chrono::DateTime<chrono::Local>,
    checksum_verified: bool,
    revision: String,
    tables: Vec<(String, u64)>,
}

/// What each target came to, in order.
type Reports = Vec<(PathBuf, Result<Verified>)>;

impl DbVerify {
    pub fn run(self, sh: &Shell) -> Result<()> {
        // Nothing verified (no backups, a wrong name, no database): the error alone, which
        // `--json`'s envelope carries as `{"ok":false,"error":...,"code":N}`.
        let reports = self.verify_targets(sh)?;
        let failed = reports.iter().filter(|(_, r)| r.is_err()).count();
        let items = reports.iter().map(|(path, result)| {
            let object = json::Object::new().str("path", &path.to_string_lossy()).raw("ok", result.is_ok());
            match result {
                Ok(v) => object
                    .raw("checksum_verified", v.checksum_verified)
                    .str("revision", &v.revision)
                    .raw(
                        "tables",
                        json::array(
                            v.tables
                                .iter()
                                .map(|(name, rows)| json::Object::new().str("table", name).raw("rows", rows).build()),
                        ),
                    )
                    .str("verified_at", &json::time(&v.at))
                    .raw("error", "null"),
                Err(err) => object.str("error", &format!("{err:#}")),
            }
            .build()
        });
        // Also on failure: which backups failed, and why, beside the envelope's error.
        json::report(json::Object::new().raw("backups", json::array(items)));
        if failed > 0 {
            bail!(
                "{failed} of {} failed verification (see FAILED above); the live database was not touched",
                count(reports.len() as u64, "backup")
            );
        }
        Ok(())
    }

    /// Finds the targets and verifies each one. `Err` only when nothing could be verified
    /// (no backups, a name that is nowhere, no database, the lock); a failed target is a
    /// report.
    fn verify_targets(&self, sh: &Shell) -> Result<Reports> {
        if self.read.from == From::Offsite {
            return self.verify_offsite(sh);
        }
        // The directory and the backups first: a wrong one, or a wrong name, fails the same
        // way whether Docker is there or not.
        let dir = BackupDir::existing(self.dir.path(&sh.current_dir()))?;
        let name = &self.db.name.db_name;
        let targets: Vec<PathBuf> = if self.all {
            catalogue::list(dir.path(), name)?.into_iter().map(|b| b.path).collect()
        } else {
            vec![catalogue::resolve(dir.path(), name, self.backup.as_deref().unwrap_or("latest"))?]
        };
        if targets.is_empty() {
            bail!(
                "there are no complete backups of `{name}` in {} to verify: make one with `cargo xtask db-backup`",
                dir.path().display()
            );
        }
        let db = Database::open(sh, &self.db.target(&sh.current_dir()), "db-verify")?;
        let _lock = dir.lock_verify(self.lock.lock_wait_secs)?;
        dir.remove_partials(&db.name, true)?;
        let mut session = self.session(sh, &db)?;
        let mut reports = Vec::new();
        for (i, path) in targets.into_iter().enumerate() {
            let mut result =
                catalogue::precheck(&path).and_then(|backup| self.verify_one(sh, &db, &mut session, &backup, i));
            if let Err(err) = &result
                && exit::code_of(err).is_some()
            {
                return Err(result.err().expect("an error"));
            }
            if result.is_err() && !path.exists() {
                // Gone while it was read: it was not verified, and that is a failure, not a skip.
                result = Err(anyhow!(
                    "{} is gone (retention may have removed it while it was verified): \
                     see `cargo xtask db-list`, then verify another backup",
                    path.display()
                ));
            }
            record(&dir, &path, &result)?;
            summary(&path, &result);
            reports.push((path, result));
        }
        Ok(reports)
    }

    /// `--from offsite`: the copies named (or all of them), each streamed from the store
    /// into a scratch database. No record is written: `.verified` speaks of a local file.
    fn verify_offsite(&self, sh: &Shell) -> Result<Reports> {
        let (offsite, identities) = remote::required(remote::reader(&self.offsite, &self.read)?)?;
        let name = &self.db.name.db_name;
        let copies = offsite.list(name)?;
        let targets: Vec<RemoteBackup> = match self.all {
            true => copies.clone(),
            false => vec![offsite.pick(&copies, name, self.backup.as_deref().unwrap_or("latest"))?.clone()],
        };
        if targets.is_empty() {
            bail!("there are no complete offsite copies of `{name}` in {} to verify", offsite.url());
        }
        let db = Database::open(sh, &self.db.target(&sh.current_dir()), "db-verify")?;
        let mut session = self.session(sh, &db)?;
        let mut reports = Vec::new();
        for (i, copy) in targets.iter().enumerate() {
            let path = PathBuf::from(offsite.object_url(&copy.file_name));
            let result = offsite
                .candidate(sh, copy, identities.clone())
                .and_then(|backup| self.verify_one(sh, &db, &mut session, &backup, i));
            if let Err(err) = &result
                && exit::code_of(err).is_some()
            {
                return Err(result.err().expect("an error"));
            }
            summary(&path, &result);
            reports.push((path, result));
        }
        Ok(reports)
    }

    /// The session every verification runs in: shared, so db-backup and other
    /// verifications go on and a restore waits.
    fn session(&self, sh: &Shell, db: &Database) -> Result<Session> {
        let mut session = db.session_when_ready(sh, self.db.wait_secs, Start::IfStopped)?;
        session.lock(Mode::Shared, self.lock.lock_wait_secs)?;
        session.clean_dead_runs(sh, db)?;
        Ok(session)
    }

    fn verify_one(
        &self,
        sh: &Shell,
        db: &Database,
        session: &mut Session,
        backup: &Candidate,
        n: usize,
    ) -> Result<Verified> {
        interrupt::check()?;
        step!("verifying {}", backup.path.display());
        let result = verify(sh, db, session, backup, n, &self.load.options());
        interrupt::check()?;
        result
    }
}

/// The summary of each backup: the last line of a one-backup run, kept by -q.
fn summary(path: &Path, result: &Result<Verified>) {
    match result {
        Ok(v) => done!(
            "verified {}: {}, revision {}, {} with {} restored and counted",
            path.display(),
            if v.checksum_verified { "checksum matches" } else { "no .sha256 to compare" },
            v.revision,
            count(v.tables.len() as u64, "table"),
            count(v.tables.iter().map(|(_, n)| n).sum::<u64>(), "row")
        ),
        Err(err) => done!("FAILED {}: {err:#}", path.display()),
    }
}

/// Loads `backup` into a scratch database through the one restore pipeline (checksum,
/// marker and COPY row counts in the pass that loads it), compares the revision, and
/// drops the scratch database whatever happens.
fn verify(
    sh: &Shell,
    db: &Database,
    session: &mut Session,
    backup: &Candidate,
    n: usize,
    options: &load::Options,
) -> Result<Verified> {
    let loaded = db.load_backup(sh, session, backup, "verify", Some(n), options).context("the test restore failed")?;
    let named = BackupName::of_path(&backup.path).map(|n| n.revision);
    let restored = db.inspect(sh, loaded.scratch.name())?.revision;
    let revision = match (named, restored) {
        // Every row against the name's set: a head missing or extra is a mismatch.
        (Some(want @ Revision::Known(_)), Ok(got)) if want == got => want.to_string(),
        (Some(want @ Revision::Known(_)), got) => {
            let got = got.map_or_else(|why| why, |r| r.to_string());
            bail!("the file name says revision {want}, the restored alembic_version says {got}");
        }
        (_, Ok(got)) => got.to_string(),
        (_, Err(_)) => "unknown".to_owned(),
    };
    // The load's own line said as much; the verdict follows.
    detail!("restored {} of SQL into `{}`, all checks passed", human_bytes(loaded.sql_bytes), loaded.scratch.name());
    let at = chrono::Local::now();
    Ok(Verified { at, checksum_verified: loaded.checksum_verified, revision, tables: loaded.tables })
}

/// Records a pass as `NAME.verified` beside a backup in the backup directory; a failure
/// removes an earlier record, which no longer holds. Runs under the verify lock, so a
/// partial record left by a killed db-verify is this task's to remove.
fn record(dir: &BackupDir, path: &Path, result: &Result<Verified>) -> Result<()> {
    let marker = beside(path, VERIFIED_SUFFIX);
    let Ok(v) = result else { return remove_if_exists(&marker) };
    if path.parent() != Some(dir.path()) {
        return Ok(());
    }
    let name = marker.file_name().unwrap_or_default().to_string_lossy().into_owned();
    remove_if_exists(&beside(&marker, PARTIAL_SUFFIX))?;
    let mut partial = dir.create_partial(&name)?;
    let rows: u64 = v.tables.iter().map(|(_, n)| n).sum();
    // With its offset: a local time without one means another moment elsewhere, and
    // the hour daylight saving repeats would be read twice.
    let now = v.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    writeln!(partial.file(), "verified {now} revision={} tables={} rows={rows}", v.revision, v.tables.len())?;
    partial.commit_replacing()?;
    // Retention may have removed the backup meanwhile: no record without its backup.
    if !path.exists() {
        remove_if_exists(&marker)?;
    }
    Ok(())
}
