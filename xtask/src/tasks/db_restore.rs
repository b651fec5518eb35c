//! `cargo xtask db-restore`: check the backup, load it into a new database, swap that in
//! by renaming (the replaced data is kept), then migrate with Alembic.

use std::{
    fs::File,
    path::{Path, PathBuf},
    thread,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::{
    alembic::Alembic,
    cli::DbRestore,
    db::Database,
    exit::{Code, Coded},
    output::{self, Progress, human_bytes, step, warning},
    process, prompt,
    store::backup_dir::BackupDir,
    store::backup_file::{self, BackupName, Compression, Revision},
    store::catalogue,
    store::catalogue::Checked,
    stream::codec::{self, Hashing, Tap},
};

impl DbRestore {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let started = Instant::now();
        step!("db-restore of `{}` started (pid {})", self.db.name.db_name, std::process::id());
        let db = Database::open(sh, &self.db, "db-restore")?;
        let alembic = Alembic::find(sh, self.alembic_dir.as_deref(), "db-restore")?;
        let dir = BackupDir::open(sh.current_dir().join(&self.dir.backup_dir))?;
        let path = self.choose(&dir, &db.name)?;
        // A plain file's checksum is compared while psql reads it, before the swap.
        let checked = catalogue::check(&path).context("the backup was refused and the database not touched")?;
        step!(
            "checked {} ({}, {})",
            path.display(),
            human_bytes(checked.size),
            match (checked.checksum_verified, &checked.sha256_to_compare) {
                (true, _) => "checksum matches",
                (false, Some(_)) => "checksum compared during the load, before anything is swapped",
                (false, None) => "no .sha256 to compare",
            }
        );
        self.confirm(&db.name, &path)?;

        let _lock = dir.lock("db-restore", self.dir.lock_wait_secs)?;
        db.ensure_ready(sh, self.db.wait_secs)?;
        let prefix = |what: &str| format!("{}__{what}_", db.name);
        db.drop_leftovers(sh, &prefix("restore"), "db-restore")?;

        // UTC: the names sort by age whatever the clock's zone or daylight saving did.
        let stamp = chrono::Utc::now().format(backup_file::TIME_FORMAT).to_string();
        let scratch = format!("{}{stamp}", prefix("restore"));
        let previous = format!("{}{stamp}", prefix("pre_restore"));
        step!("restoring into new database `{scratch}`; `{}` stays as it is until it succeeds", db.name);
        db.create_database(sh, &scratch)?;
        if let Err(err) = load(sh, &db, &scratch, &path, &checked) {
            let cleanup = db.drop_database(sh, &scratch);
            let left = match cleanup {
                Ok(()) => "the scratch database was dropped".to_owned(),
                Err(drop_err) => format!("drop `{scratch}` by hand ({drop_err:#})"),
            };
            return Err(err.context(format!(
                "restoring {} failed; database `{}` is unchanged and {left}: pick another backup",
                path.display(),
                db.name
            )));
        }

        step!("swapping `{scratch}` in as `{}`; the current data becomes `{previous}`", db.name);
        db.swap_in(sh, &scratch, &previous).with_context(|| {
            format!(
                "the swap failed; `{}` is unchanged and the restored data is in `{scratch}`: retry db-restore",
                db.name
            )
        })?;
        let back = format!(
            "ALTER DATABASE \"{0}\" RENAME TO \"{0}__unwanted_{stamp}\"; ALTER DATABASE \"{previous}\" RENAME TO \"{0}\"",
            db.name
        );
        step!("the replaced data is kept as `{previous}`; to swap back: {}", db.psql_hint(&back));

        // From here on the restored data is live: every failure says how to go back.
        let target = self.migration_target(&path);
        let after_swap = || -> Result<()> {
            self.drop_old_previous(sh, &db, &prefix("pre_restore"), &previous)?;
            match &alembic {
                _ if self.no_migrate => step!("--no-migrate: skipping the Alembic migration"),
                None => step!("no alembic.ini found: skipping the migration (pass --alembic-dir to run it)"),
                Some(alembic) => {
                    step!("migrating `{}` to {target} with Alembic in {}", db.name, alembic.dir().display());
                    alembic
                        .upgrade(sh, &target, &db.host_url(sh)?)
                        .with_context(|| format!("the migration to {target} failed"))?;
                }
            }
            Ok(())
        };
        after_swap().with_context(|| {
            format!(
                "the backup was restored into `{}` (the replaced data is `{previous}`), but a later step failed; \
                 to roll back to the previous database: {}",
                db.name,
                db.psql_hint(&back)
            )
        })?;
        step!(
            "restore complete: `{}` now holds {} ({}, migrated to {}, {:.1} s, peak memory {})",
            db.name,
            path.file_name().unwrap_or_default().to_string_lossy(),
            human_bytes(checked.size),
            if alembic.is_some() && !self.no_migrate { target.as_str() } else { "-" },
            started.elapsed().as_secs_f64(),
            output::peak_memory()
        );
        Ok(())
    }

    /// A path, a file name in the backup directory, `latest`, or a pick on a terminal.
    fn choose(&self, dir: &BackupDir, db: &str) -> Result<PathBuf> {
        let Some(wanted) = self.backup.as_deref() else {
            if !prompt::is_interactive() {
                return Err(Coded {
                    code: Code::Usage,
                    message: format!(
                        "no backup given and no terminal to pick one: pass a path, a file name in {}, or `latest`",
                        dir.path().display()
                    ),
                }
                .into());
            }
            let backups = catalogue::list(dir.path(), db)?;
            if backups.is_empty() {
                bail!("there are no backups of `{db}` in {}", dir.path().display());
            }
            let now = chrono::Local::now().naive_local();
            let lines: Vec<String> = backups.iter().map(|b| catalogue::describe(b, now)).collect();
            return match prompt::pick(&format!("Backups of `{db}` in {}, newest first:", dir.path().display()), &lines)?
            {
                Some(i) => Ok(backups[i].path.clone()),
                None => Err(refused("no backup chosen")),
            };
        };
        catalogue::resolve(dir.path(), db, wanted)
    }

    fn confirm(&self, db: &str, path: &Path) -> Result<()> {
        if self.yes {
            return Ok(());
        }
        if !prompt::is_interactive() {
            return Err(refused("no terminal to confirm on: pass --yes to restore without a question"));
        }
        let question = format!(
            "Restore {} into database `{db}`? Its current data is kept as `{db}__pre_restore_...`.",
            path.display()
        );
        if prompt::confirm(&question)? { Ok(()) } else { Err(refused("not confirmed")) }
    }

    /// The migration target: `--migrate-to`, else the backup's revision, else `head`.
    fn migration_target(&self, path: &Path) -> String {
        if let Some(target) = &self.migrate_to {
            return target.clone();
        }
        match BackupName::of_path(path).map(|n| n.revision) {
            Some(Revision::Known(id)) => id,
            _ => "head".to_owned(),
        }
    }

    /// Keeps the newest `--keep-previous` replaced databases, the one just made always
    /// among them.
    fn drop_old_previous(&self, sh: &Shell, db: &Database, prefix: &str, just_made: &str) -> Result<()> {
        let mut older = db.databases_with_prefix(sh, prefix)?;
        older.retain(|name| name != just_made);
        // The UTC timestamp in the names sorts them by age.
        older.reverse();
        for old in older.iter().skip(self.keep_previous.get() - 1) {
            step!("dropping `{old}` (keeping the newest {} replaced databases)", self.keep_previous);
            if let Err(err) = db.drop_database(sh, old) {
                warning!("could not drop `{old}`: {err:#}");
            }
        }
        Ok(())
    }
}

fn refused(why: &str) -> anyhow::Error {
    Coded { code: Code::Refused, message: format!("{why}; nothing was changed") }.into()
}

/// Streams the dump from the file into psql, decompressing on the way: the file is never
/// read into memory. A plain file's checksum, left by the check, is computed alongside
/// from the page cache, and a mismatch fails the load.
fn load(sh: &Shell, db: &Database, into: &str, path: &Path, checked: &Checked) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut progress = Progress::new("read");
    let loaded = match checked.compression {
        // Plain SQL needs nothing from this process: psql's side reads the file itself.
        Compression::None => {
            let hashing = checked.sha256_to_compare.as_ref().map(|_| {
                let path = path.to_owned();
                thread::spawn(move || -> std::io::Result<String> {
                    let mut stored = Hashing::new(File::open(&path)?);
                    std::io::copy(&mut stored, &mut std::io::sink())?;
                    Ok(stored.finish().1)
                })
            });
            let loaded = process::stream_from_file("psql", db.load(sh, into), file, &mut progress);
            if let (Some(hashing), Some(expected)) = (hashing, &checked.sha256_to_compare) {
                let actual = hashing.join().map_err(|_| anyhow::anyhow!("the hashing thread panicked"))??;
                // A damaged file is the cause of whatever psql said about it.
                if &actual != expected {
                    return Err(catalogue::checksum_mismatch(path, &actual, expected));
                }
            }
            loaded
        }
        compression => {
            let stored = Tap::new(file, |chunk| progress.add(chunk.len()));
            process::stream_in("psql", db.load(sh, into), &mut codec::decoder(compression, stored)?)
        }
    };
    progress.finish();
    loaded
}
