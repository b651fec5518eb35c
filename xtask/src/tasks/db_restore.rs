//! `cargo xtask db-restore`: check the backup, load it into a new database through the one
//! restore pipeline, swap that in by renaming (the replaced data is kept), migrate with
//! Alembic, and only then retire older replaced databases: each is dumped into the backup
//! directory, checked, and only then dropped.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use chrono::{Local, NaiveDateTime, TimeZone, Utc};
use xshell::Shell;

use crate::{
    alembic::Alembic,
    cli::DbRestore,
    db::{
        Database,
        load::FileFault,
        session::{Mode, Session},
    },
    exit::{Code, Coded},
    interrupt,
    output::{self, done, human_bytes, step},
    process::Failure,
    prompt,
    store::backup_dir::BackupDir,
    store::backup_file::{self, BackupName, Compression, Kind, Revision},
    store::catalogue,
    tasks::db_backup::dump_to_file,
};

impl DbRestore {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let started = Instant::now();
        step!("db-restore of `{}` started (pid {})", self.db.name.db_name, std::process::id());
        let db = Database::open(sh, &self.db.target(&sh.current_dir()), "db-restore")?;
        let alembic = Alembic::find(sh, self.alembic_dir.as_deref(), "db-restore")?;
        let dir = BackupDir::open(sh.current_dir().join(&self.dir.backup_dir))?;
        let path = self.choose(&dir, &db.name)?;
        let backup = catalogue::precheck(&path).context("the backup was refused and the database not touched")?;
        step!(
            "checked {} ({}; {})",
            path.display(),
            human_bytes(backup.size),
            match backup.sha256 {
                Some(_) =>
                    "its checksum, marker and row counts are checked during the load, before anything is swapped",
                None => "no .sha256 to compare; its marker and row counts are checked during the load",
            }
        );
        // What happens to the replaced data is part of the question: look before asking.
        let mut session = db.session_when_ready(sh, self.db.wait_secs)?;
        let plan = self.plan(&db, &mut session)?;
        self.confirm(&db.name, &path, &dir, &plan)?;

        let _lock = dir.lock("db-restore", self.dir.lock_wait_secs)?;
        dir.remove_partials(&db.name, false)?;
        // Alone: no backup, verification or other restore of this database meanwhile,
        // from this checkout or any other.
        session.lock(Mode::Exclusive, self.dir.lock_wait_secs)?;
        session.clean_dead_runs(sh, &db)?;

        // UTC: the names sort by age whatever the clock's zone or daylight saving did.
        let stamp = Utc::now().format(backup_file::TIME_FORMAT).to_string();
        let previous = format!("{}{stamp}", previous_prefix(&db.name));
        step!("restoring into a new database; `{}` stays as it is until every check has passed", db.name);
        let loaded = db.load_backup(sh, &mut session, &backup, "restore", None, self.trust_file).map_err(|err| {
            // The file at fault, or psql refusing it: another backup may do. Room, a lock,
            // a signal, an old psql: the inner message says what to do.
            let file = FileFault::in_error(&err) || Failure::in_chain(&err).is_some_and(|f| f.what == "psql");
            let next = if file { ": pick another backup" } else { "" };
            err.context(format!(
                "restoring {} failed; database `{}` is unchanged and no scratch database is left{next}",
                path.display(),
                db.name
            ))
        })?;
        interrupt::check()?;

        let scratch = loaded.scratch.name().to_owned();
        let replaced = session.size_of(&db.name)?.is_some();
        if replaced {
            step!("swapping `{scratch}` in as `{}`; the current data becomes `{previous}`", db.name);
        } else {
            // Nothing is replaced, so nothing is kept: no word about kept data.
            step!("swapping `{scratch}` in as `{}`, which does not exist now", db.name);
        }
        let back = db.swap_back_sql(&previous, &stamp);
        if let Err(err) = db.swap_in(sh, &scratch, &previous, self.db_lock_wait_secs, replaced) {
            // psql can be stopped (a signal) after its transaction committed: look.
            if session.size_of(&scratch)?.is_none() && (!replaced || session.size_of(&previous)?.is_some()) {
                loaded.scratch.keep();
                let back =
                    if replaced { format!("; to swap back: {}", db.psql_command(sh, &back)) } else { String::new() };
                return Err(err.context(format!(
                    "the swap was done before psql was stopped: `{}` holds the restored data{back}",
                    db.name
                )));
            }
            return Err(err.context(format!("the swap failed; `{}` is unchanged: retry db-restore", db.name)));
        }
        loaded.scratch.keep();
        if replaced {
            step!("the replaced data is kept as `{previous}`; to swap back: {}", db.psql_command(sh, &back));
        }

        // From here on the restored data is live: a failure or a signal stops, drops
        // nothing, and says how to go back.
        let targets = migration_targets(self.migrate_to.as_deref(), &path);
        let mut after_swap = || -> Result<()> {
            match &alembic {
                _ if self.no_migrate => step!("--no-migrate: skipping the Alembic migration"),
                None => step!("no alembic.ini found: skipping the migration (pass --alembic-dir to run it)"),
                Some(alembic) => {
                    let url = db.host_url(sh)?;
                    for target in &targets {
                        interrupt::check()?;
                        // What runs, without -v too: the command echo is verbose-only.
                        step!("migrating `{}`: alembic upgrade {target} in {}", db.name, alembic.dir().display());
                        alembic
                            .upgrade(sh, target, &url)
                            .with_context(|| format!("the migration to {target} failed"))?;
                    }
                }
            }
            self.retire_previous(sh, &db, &mut session, &dir, replaced.then_some(previous.as_str()))
        };
        after_swap().with_context(|| {
            let back = if replaced {
                format!(" (the replaced data is `{previous}`; to roll back to it: {})", db.psql_command(sh, &back))
            } else {
                String::new()
            };
            format!("the backup was restored into `{}`{back}; a later step failed", db.name)
        })?;
        let migrated = match &alembic {
            _ if self.no_migrate => "not migrated (--no-migrate)".to_owned(),
            None => "not migrated (no alembic.ini)".to_owned(),
            Some(_) => format!("migrated to {}", targets.join("+")),
        };
        done!(
            "restore complete: `{}` now holds {} ({}, {migrated}, {:.1} s, peak memory {})",
            db.name,
            path.file_name().unwrap_or_default().to_string_lossy(),
            human_bytes(backup.size),
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

    /// What this restore will do with the databases earlier restores replaced: the newest
    /// `--keep-previous` stay (counting the one this restore makes), the rest are dumped
    /// into the backup directory and then dropped.
    fn plan(&self, db: &Database, session: &mut Session) -> Result<Plan> {
        let live = session.size_of(&db.name)?.is_some();
        let mut earlier = session.databases_with_prefix(&previous_prefix(&db.name))?;
        earlier.reverse();
        let kept = self.keep_previous.get() - usize::from(live);
        let retired = earlier.split_off(kept.min(earlier.len()));
        Ok(Plan { live, kept: earlier, retired })
    }

    fn confirm(&self, db: &str, path: &Path, dir: &BackupDir, plan: &Plan) -> Result<()> {
        let mut lines = vec![match plan.live {
            true => format!("the current data of `{db}` is kept as database `{db}__pre_restore_<now>`"),
            false => format!("there is no database `{db}` now: nothing is replaced"),
        }];
        if !plan.kept.is_empty() {
            lines.push(format!("kept as they are: {}", quoted(&plan.kept)));
        }
        if !plan.retired.is_empty() {
            lines.push(format!(
                "dumped into {} as `{db}_prerestore_<time>_<revision>.sql` (checked, with a .sha256; kept until you \
                 remove them), then dropped: {}",
                dir.path().display(),
                quoted(&plan.retired)
            ));
        }
        if self.yes {
            for line in &lines {
                step!("{line}");
            }
            return Ok(());
        }
        if !prompt::is_interactive() {
            return Err(refused("no terminal to confirm on: pass --yes to restore without a question"));
        }
        let question = format!("Restore {} into database `{db}`?\n  {}\nGo ahead?", path.display(), lines.join("\n  "));
        if prompt::confirm(&question)? { Ok(()) } else { Err(refused("not confirmed")) }
    }

    /// Keeps the newest `--keep-previous` replaced databases (`just_made` among them) and
    /// retires the others: each is dumped into the backup directory as a prerestore file,
    /// checked like any backup, and dropped only then. A dump that fails keeps its database.
    fn retire_previous(
        &self,
        sh: &Shell,
        db: &Database,
        session: &mut Session,
        dir: &BackupDir,
        just_made: Option<&str>,
    ) -> Result<()> {
        let prefix = previous_prefix(&db.name);
        let mut earlier = session.databases_with_prefix(&prefix)?;
        earlier.retain(|name| Some(name.as_str()) != just_made);
        // The UTC timestamp in the names sorts them by age: newest first.
        earlier.reverse();
        let keep = self.keep_previous.get() - usize::from(just_made.is_some());
        for old in earlier.iter().skip(keep) {
            interrupt::check()?;
            let revision = db.revision_of(sh, old)?;
            let replaced_at = replaced_at(&old[prefix.len()..]).unwrap_or_else(|| Local::now().naive_local());
            let name = fresh_prerestore_name(dir.path(), &db.name, replaced_at, revision);
            let untouched = format!("`{old}` was not dropped");
            let estimate = session.size_of(old)?;
            let (path, _) = dump_to_file(sh, db, old, dir, &name, estimate, self.db_lock_wait_secs, &untouched)
                .with_context(|| format!("could not dump `{old}` before dropping it"))?;
            // Stopped after the dump: the database stays too, as promised.
            interrupt::check()?;
            db.drop_database(sh, old)?;
            step!("dropped `{old}` (--keep-previous {}); its data is in {}", self.keep_previous, path.display());
        }
        Ok(())
    }
}

/// What a restore does with earlier replaced databases.
struct Plan {
    live: bool,
    kept: Vec<String>,
    retired: Vec<String>,
}

/// The migration targets: `--migrate-to`, else the backup's revision, else `head`.
/// `alembic upgrade` takes one revision, and `heads` would be the code's heads, which may
/// lie past the backup (a merge made since): a backup taken while branches were unmerged
/// is migrated to each of its heads in turn. Each is a no-op when the restored
/// `alembic_version` already holds it, which proves the code knows it.
fn migration_targets(migrate_to: Option<&str>, path: &Path) -> Vec<String> {
    if let Some(target) = migrate_to {
        return vec![target.to_owned()];
    }
    match BackupName::of_path(path).map(|n| n.revision) {
        Some(Revision::Known(ids)) => ids,
        _ => vec!["head".to_owned()],
    }
}

fn previous_prefix(db: &str) -> String {
    format!("{db}__pre_restore_")
}

/// The local time a `__pre_restore_<UTC stamp>` database was replaced at.
fn replaced_at(stamp: &str) -> Option<NaiveDateTime> {
    let utc = NaiveDateTime::parse_from_str(stamp, backup_file::TIME_FORMAT).ok()?;
    Some(Local.from_utc_datetime(&utc).naive_local())
}

/// A prerestore name no file has yet: a second later if the first is taken.
fn fresh_prerestore_name(dir: &Path, db: &str, taken: NaiveDateTime, revision: Revision) -> BackupName {
    let mut name =
        BackupName { db: db.to_owned(), kind: Kind::PreRestore, taken, revision, compression: Compression::None };
    while dir.join(name.file_name()).exists() {
        name.taken += Duration::from_secs(1);
    }
    name
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

fn refused(why: &str) -> anyhow::Error {
    Coded { code: Code::Refused, message: format!("{why}; nothing was changed") }.into()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::migration_targets;

    #[test]
    fn a_backup_migrates_to_its_own_revision_or_each_of_its_heads() {
        let at = |file: &str| migration_targets(None, &Path::new("/b").join(file));
        assert_eq!(at("hindsight_db_backup_20261124_090507_20240915_merge_heads.sql"), ["20240915_merge_heads"]);
        assert_eq!(
            at("hindsight_db_backup_20261124_090507_2026050201+rls_policies_20240915.sql.zst"),
            ["2026050201", "rls_policies_20240915"]
        );
        assert_eq!(at("hindsight_db_prerestore_20261124_090507_1a2b3c4d5e6f.sql"), ["1a2b3c4d5e6f"]);
        assert_eq!(at("hindsight_db_backup_20261124_090507_unknown.sql"), ["head"]);
        assert_eq!(at("hindsight_db_backup_20240101_120000.sql"), ["head"], "the old script's names");
        assert_eq!(at("dump.sql"), ["head"]);
        let wanted = migration_targets(Some("2026042900"), Path::new("/b/hindsight_db_backup_20261124_090507_a+b.sql"));
        assert_eq!(wanted, ["2026042900"], "--migrate-to wins");
    }
}
