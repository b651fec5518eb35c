//! `cargo xtask db-verify`: a backup nobody has restored is a hope. This checks the
//! checksum and the completion marker, restores into a scratch database (never the live
//! one), compares the revision and every table's row count with the dump, drops the
//! scratch database, and records the result beside the backup.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use xshell::Shell;

use crate::{
    cli::DbVerify,
    db::Database,
    json,
    output::{human_bytes, step, warning},
    process,
    store::backup_dir::{BackupDir, remove_if_exists},
    store::backup_file::{
        self, BackupName, Compression, CopyRows, PARTIAL_SUFFIX, Revision, TIME_FORMAT, Tail, VERIFIED_SUFFIX,
    },
    store::catalogue::{self, beside},
    stream::codec::{self, Hashing, Tap},
};

struct Verified {
    checksum_verified: bool,
    revision: String,
    tables: Vec<(String, u64)>,
}

/// What each target came to, in order.
type Reports = Vec<(PathBuf, Result<Verified>)>;

impl DbVerify {
    pub fn run(self, sh: &Shell) -> Result<()> {
        // `--json` promises one object on stdout, also when nothing got as far as a report.
        let reports = match self.verify_targets(sh) {
            Ok(reports) => reports,
            Err(err) => {
                if self.json {
                    let report = json::Object::new().raw("ok", false).str("error", &format!("{err:#}"));
                    println!("{}", report.raw("backups", json::array(std::iter::empty())).build());
                }
                return Err(err);
            }
        };

        let failed = reports.iter().filter(|(_, r)| r.is_err()).count();
        if self.json {
            let items =
                reports.iter().map(|(path, result)| {
                    let object = json::Object::new().str("path", &path.to_string_lossy()).raw("ok", result.is_ok());
                    match result {
                        Ok(v) => object
                            .raw("checksum_verified", v.checksum_verified)
                            .str("revision", &v.revision)
                            .raw(
                                "tables",
                                json::array(v.tables.iter().map(|(name, rows)| {
                                    json::Object::new().str("table", name).raw("rows", rows).build()
                                })),
                            )
                            .raw("error", "null"),
                        Err(err) => object.str("error", &format!("{err:#}")),
                    }
                    .build()
                });
            println!("{}", json::Object::new().raw("ok", failed == 0).raw("backups", json::array(items)).build());
        }
        if failed > 0 {
            bail!(
                "{failed} of {} backups failed verification (see FAILED above); the live database was not touched",
                reports.len()
            );
        }
        Ok(())
    }

    /// Finds the targets and verifies each one. `Err` only when nothing could be verified
    /// (no backups, a name that is nowhere, no database, the lock); a failed target is a
    /// report.
    fn verify_targets(&self, sh: &Shell) -> Result<Reports> {
        let db = Database::open(sh, &self.db, "db-verify")?;
        let dir = BackupDir::open(sh.current_dir().join(&self.dir.backup_dir))?;
        let targets: Vec<PathBuf> = if self.all {
            catalogue::list(dir.path(), &db.name)?.into_iter().map(|b| b.path).collect()
        } else {
            vec![catalogue::resolve(dir.path(), &db.name, self.backup.as_deref().unwrap_or("latest"))?]
        };
        if targets.is_empty() {
            bail!(
                "there are no complete backups of `{}` in {} to verify: make one with `cargo xtask db-backup`",
                db.name,
                dir.path().display()
            );
        }
        let _lock = dir.lock_verify(self.dir.lock_wait_secs)?;
        db.ensure_ready(sh, self.db.wait_secs)?;
        let prefix = format!("{}__verify_", db.name);
        db.drop_leftovers(sh, &prefix, "db-verify")?;

        let stamp = chrono::Utc::now().format(TIME_FORMAT);
        let mut reports = Vec::new();
        for (i, path) in targets.into_iter().enumerate() {
            step!("verifying {}", path.display());
            let mut result = verify(sh, &db, &path, &format!("{prefix}{stamp}_{i}"));
            if result.is_err() && !path.exists() {
                // Gone while it was read: it was not verified, and that is a failure, not a skip.
                result = Err(anyhow!(
                    "{} is gone (retention may have removed it while it was verified): \
                     see `cargo xtask db-list`, then verify another backup",
                    path.display()
                ));
            }
            record(&dir, &path, &result)?;
            match &result {
                Ok(v) => step!(
                    "verified {}: {}, revision {}, {} tables with {} rows restored and counted",
                    path.display(),
                    if v.checksum_verified { "checksum matches" } else { "no .sha256 to compare" },
                    v.revision,
                    v.tables.len(),
                    v.tables.iter().map(|(_, n)| n).sum::<u64>()
                ),
                Err(err) => step!("FAILED {}: {err:#}", path.display()),
            }
            reports.push((path, result));
        }
        Ok(reports)
    }
}

/// Restores `path` into `scratch` and compares it with the dump; the scratch database is
/// dropped whatever happens. Everything is checked in the one pass that feeds psql: the
/// stored bytes are hashed, the SQL's end and its COPY rows are kept as they stream.
fn verify(sh: &Shell, db: &Database, path: &Path, scratch: &str) -> Result<Verified> {
    let meta = std::fs::metadata(path).with_context(|| format!("backup {} not found", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let expected = catalogue::sidecar_sum(path)?;
    db.create_database(sh, scratch)?;
    let result = restore_and_compare(sh, db, path, scratch, expected.as_deref());
    if let Err(err) = db.drop_database(sh, scratch) {
        // The verdict stands; the next db-verify drops what is left.
        warning!("could not drop `{scratch}`: {err:#}");
    }
    let verified = result?;
    step!("restored {} into `{scratch}` and dropped it again", human_bytes(meta.len()));
    Ok(verified)
}

fn restore_and_compare(
    sh: &Shell,
    db: &Database,
    path: &Path,
    scratch: &str,
    expected: Option<&str>,
) -> Result<Verified> {
    let compression = Compression::of_file_name(&path.file_name().unwrap_or_default().to_string_lossy());
    let mut stored = Hashing::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?);
    let (mut rows, mut tail) = (CopyRows::default(), Tail::default());
    let loaded = codec::decoder(compression, &mut stored).map_err(anyhow::Error::from).and_then(|sql| {
        let mut seen = Tap::new(sql, |chunk| {
            rows.push(chunk);
            tail.push(chunk);
        });
        process::stream_in("psql", db.load(sh, scratch), &mut seen)
    });
    // The rest of the file, if psql stopped early, still counts for the checksum.
    std::io::copy(&mut stored, &mut std::io::sink())?;
    let (_, actual, _) = stored.finish();
    // A damaged file is the cause of whatever psql said about it.
    if let Some(expected) = expected
        && actual != expected
    {
        return Err(catalogue::checksum_mismatch(path, &actual, expected));
    }
    loaded.context("the test restore failed")?;
    if !backup_file::ends_complete(tail.bytes()) {
        bail!("{} is truncated: its SQL does not end with `-- PostgreSQL database dump complete`", path.display());
    }

    let named = BackupName::of_path(path).map(|n| n.revision);
    let restored = db.inspect(sh, scratch)?.revision;
    let revision = match (named, restored) {
        (Some(Revision::Known(want)), Ok(Revision::Known(got))) if want == got => want,
        (Some(Revision::Known(want)), got) => {
            let got = got.map_or_else(|why| why, |r| r.to_string());
            bail!("the file name says revision {want}, the restored alembic_version says {got}");
        }
        (_, Ok(got)) => got.to_string(),
        (_, Err(_)) => "unknown".to_owned(),
    };

    let tables = rows.tables().to_vec();
    let with_rows: Vec<&(String, u64)> = tables.iter().filter(|(_, rows)| *rows > 0).collect();
    if !with_rows.is_empty() {
        // ONLY: COPY holds a table's own rows, count(*) would add its children's.
        let counts: Vec<String> =
            with_rows.iter().map(|(table, _)| format!("(SELECT count(*) FROM ONLY {table})")).collect();
        let got = db.query_in(sh, scratch, &format!("SELECT {}", counts.join(", ")))?;
        for ((table, want), got) in with_rows.iter().zip(got.trim().split('|')) {
            if got.trim() != want.to_string() {
                bail!("table {table} has {} rows after the restore, the dump holds {want}", got.trim());
            }
        }
    }
    Ok(Verified { checksum_verified: expected.is_some(), revision, tables })
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
    let now = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S");
    writeln!(partial.file(), "verified {now} revision={} tables={} rows={rows}", v.revision, v.tables.len())?;
    partial.commit_replacing()?;
    // Retention may have removed the backup meanwhile: no record without its backup.
    if !path.exists() {
        remove_if_exists(&marker)?;
    }
    Ok(())
}
