//! `cargo xtask db-restore`: check the backup, load it into a new database through the one
//! restore pipeline, swap that in by renaming (the replaced data is kept), migrate with
//! Alembic, and only then retire older replaced databases: each is dumped into the backup
//! directory, checked, and only then dropped.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use chrono::{Local, NaiveDateTime, TimeZone, Utc};
use xshell::Shell;

use crate::{
    alembic::Alembic,
    cli::{DbRestore, From},
    db::{
        Database, Start,
        load::FileFault,
        session::{Mode, Session},
    },
    exit::{Code, Coded},
    interrupt, json,
    offsite::remote::{self, Offsite},
    output::{self, count, done, human_bytes, step, warning},
    process::Failure,
    prompt,
    store::backup_dir::{self, BackupDir},
    store::backup_file::{self, BackupName, Compression, Kind, Revision},
    store::catalogue,
    stream::crypt::Identities,
    tasks::db_backup::dump_to_file,
};

impl DbRestore {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let started = Instant::now();
        step!("db-restore of `{}` started (pid {})", self.db.name.db_name, std::process::id());
        let db = Database::open(sh, &self.db.target(&sh.current_dir()), "db-restore")?;
        let alembic = Alembic::find(sh, self.alembic_dir().as_deref(), "db-restore")?;
        let dir_path = self.dir.path(&sh.current_dir());
        // Only a file given by its path, or an offsite copy, restores without the
        // directory; for anything else (a reference, the picker) creating it on a typo
        // would just say "no backups".
        let given_file = self.backup.as_deref().is_some_and(|backup| {
            catalogue::Reference::parse(backup) == catalogue::Reference::File
                && crate::paths::absolute(backup.as_ref()).is_file()
        });
        let only_offsite = self.read.from == From::Offsite || self.names_an_offsite_copy(&dir_path);
        if !given_file && !only_offsite {
            backup_dir::require_existing(&dir_path)?;
        }
        let dir = if self.dry_run { BackupDir::as_planned(dir_path) } else { BackupDir::open(dir_path)? };
        let backup = match only_offsite {
            true => remote::reader(&self.offsite, &self.read)
                .and_then(|offsite| self.offsite_candidate(sh, offsite, &db.name)),
            false => self.choose(&dir, &db.name).and_then(|path| catalogue::precheck(&path)),
        }
        .context("the backup was refused and the database not touched")?;
        let path = backup.path.clone();
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
        let start = match self.dry_run {
            true => Start::Never("a dry run does not start it (it changes nothing)"),
            false => Start::IfStopped,
        };
        let mut session = db.session_when_ready(sh, self.db.wait_secs, start)?;
        let plan = self.plan(&db, &mut session)?;
        if self.dry_run {
            return self.dry_run(sh, &db, &mut session, &backup, &dir, &plan, alembic.as_ref());
        }
        self.confirm(&db.name, &path, &dir, &plan)?;

        let _lock = dir.lock("db-restore", self.lock.lock_wait_secs)?;
        dir.remove_partials(&db.name, false)?;
        // Alone: no backup, verification or other restore of this database meanwhile,
        // from this checkout or any other.
        session.lock(Mode::Exclusive, self.lock.lock_wait_secs)?;
        session.clean_dead_runs(sh, &db)?;

        // UTC: the names sort by age whatever the clock's zone or daylight saving did.
        let stamp = Utc::now().format(backup_file::TIME_FORMAT).to_string();
        let previous = format!("{}{stamp}", previous_prefix(&db.name));
        step!("restoring into a new database; `{}` stays as it is until every check has passed", db.name);
        let loaded =
            db.load_backup(sh, &mut session, &backup, "restore", None, &self.load.options()).map_err(|err| {
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
        // From the swap on the restore happened: with --json, these fields come also when a
        // later step fails, so a script learns where the replaced data is.
        let swapped = || {
            json::report(
                json::Object::new()
                    .raw("dry_run", false)
                    .str("backup", &path.to_string_lossy())
                    .str("database", &db.name)
                    .str("scratch", &scratch)
                    .opt_str("replaced", replaced.then_some(previous.as_str())),
            )
        };
        if let Err(err) = db.swap_in(sh, &scratch, &previous, self.db_lock_wait_secs, replaced) {
            // psql can be stopped (a signal) after its transaction committed: look.
            if session.size_of(&scratch)?.is_none() && (!replaced || session.size_of(&previous)?.is_some()) {
                loaded.scratch.keep();
                swapped();
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
        swapped();
        if replaced {
            step!("the replaced data is kept as `{previous}`; to swap back: {}", db.psql_command(sh, &back));
        }

        // From here on the restored data is live: a failure or a signal stops, drops
        // nothing, and says how to go back.
        let targets = migration_targets(self.migrate_to.as_deref(), &path);
        let mut after_swap = || -> Result<Retired> {
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
        let retired = after_swap().with_context(|| {
            let back = if replaced {
                format!(" (the replaced data is `{previous}`; to roll back to it: {})", db.psql_command(sh, &back))
            } else {
                String::new()
            };
            format!("the backup was restored into `{}`{back}; a later step failed", db.name)
        })?;
        let migrated = alembic.is_some() && !self.no_migrate;
        let migration = match &alembic {
            _ if self.no_migrate => "not migrated (--no-migrate)".to_owned(),
            None => "not migrated (no alembic.ini)".to_owned(),
            Some(_) => format!("migrated to {}", targets.join("+")),
        };
        done!(
            "restore complete: `{}` now holds {} ({}, {migration}, {:.1} s, peak memory {})",
            db.name,
            path.file_name().unwrap_or_default().to_string_lossy(),
            human_bytes(backup.size),
            started.elapsed().as_secs_f64(),
            output::peak_memory()
        );
        let dumped = retired
            .dumped
            .iter()
            .map(|(name, path)| json::Object::new().str("database", name).str("path", &path.to_string_lossy()).build());
        json::report(
            json::Object::new()
                .raw("kept", json::strings(&retired.kept))
                .raw("dumped", json::array(dumped))
                .raw("dropped", json::strings(&retired.dropped))
                // null: not migrated (--no-migrate, or no alembic.ini found).
                .raw("migration", if migrated { json::strings(&targets) } else { "null".to_owned() })
                .raw("duration_secs", format!("{:.3}", started.elapsed().as_secs_f64())),
        );
        Ok(())
    }

    /// Whether the backup named is a file name that is not in the backup directory (nor a
    /// path), with an offsite store set: then it is read from there, with a notice.
    fn names_an_offsite_copy(&self, dir: &Path) -> bool {
        let Some(wanted) = self.backup.as_deref() else { return false };
        self.offsite.offsite.is_some()
            && catalogue::Reference::parse(wanted) == catalogue::Reference::File
            && !wanted.contains('/')
            && !dir.join(wanted).exists()
            && !crate::paths::absolute(wanted.as_ref()).exists()
    }

    /// The offsite copy named (`latest` by default, as a reference never picks here),
    /// fetched and checked as far as possible before anything is loaded.
    fn offsite_candidate(
        &self,
        sh: &Shell,
        offsite: Option<(Arc<Offsite>, Option<Identities>)>,
        db: &str,
    ) -> Result<catalogue::Candidate> {
        let (offsite, identities) = remote::required(offsite)?;
        let Some(wanted) = self.backup.as_deref() else {
            return Err(Coded {
                code: Code::Usage,
                message: format!(
                    "no backup given: pass `latest`, `latest~N`, a time or a file name from `cargo xtask db-list \
                     --offsite {}`",
                    offsite.url()
                ),
            }
            .into());
        };
        let copies = offsite.list(db)?;
        let copy = offsite.pick(&copies, db, wanted)?;
        if self.read.from == From::Local {
            step!(
                "{wanted} is not in the backup directory: reading its offsite copy {}",
                offsite.object_url(&copy.object)
            );
        }
        step!("fetching {}", remote::describe(copy));
        offsite.candidate(sh, copy, identities)
    }

    /// A reference (`catalogue::resolve`: latest, latest~N, a number, a time, a file
    /// name, a path), or a pick on a terminal.
    fn choose(&self, dir: &BackupDir, db: &str) -> Result<PathBuf> {
        let Some(wanted) = self.backup.as_deref() else {
            if !prompt::is_interactive() {
                return Err(Coded {
                    code: Code::Usage,
                    message: format!(
                        "no backup given and no terminal to pick one: pass `latest`, a number or a file name from \
                         `cargo xtask db-list` (backups in {}), or a path",
                        dir.path().display()
                    ),
                }
                .into());
            }
            let backups = catalogue::list(dir.path(), db)?;
            if backups.is_empty() {
                bail!("there are no backups of `{db}` in {}", dir.path().display());
            }
            // `list`'s order, numbered from 1 by the picker: db-list's numbers, the same backups.
            let now = chrono::Local::now().naive_local();
            let header = catalogue::COLUMNS.map(|(name, _)| name.to_owned()).to_vec();
            let rows: Vec<Vec<String>> =
                std::iter::once(header).chain(backups.iter().map(|b| catalogue::columns(b, now))).collect();
            let mut lines = output::table(&rows, &catalogue::COLUMNS.map(|(_, right)| right));
            let header = lines.remove(0);
            // The header over the picker's own `  NNN) ` prefix, as db-list shows it.
            let title = format!("Backups of `{db}` in {}, newest first:\n    #  {header}", dir.path().display());
            return match prompt::pick(&title, &lines)? {
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

    /// Everything a real run does, checked, and nothing done: no lock taken, nothing
    /// created, dropped, started or written.
    #[allow(clippy::too_many_arguments)]
    fn dry_run(
        &self,
        sh: &Shell,
        db: &Database,
        session: &mut Session,
        backup: &catalogue::Candidate,
        dir: &BackupDir,
        plan: &Plan,
        alembic: Option<&Alembic>,
    ) -> Result<()> {
        let path = &backup.path;
        let checked = db.check_backup(sh, session, backup, self.load.trust_file).with_context(|| {
            format!("the dry run refused {}: a real run would refuse it too, and nothing was changed", path.display())
        })?;
        let rows: u64 = checked.tables.iter().map(|(_, rows)| rows).sum();
        step!(
            "checked all of {}: {} of SQL, {}, complete, {} with {}",
            path.display(),
            human_bytes(checked.sql_bytes),
            if backup.sha256.is_some() { "checksum matches" } else { "no .sha256 to compare" },
            count(checked.tables.len() as u64, "table"),
            count(rows, "row"),
        );
        step!("a real run would, in order:");
        step!(
            "  load it into a new database `{}` (named after that run), and check the row counts",
            db.scratch_prefix("restore") + "<run>"
        );
        for (role, why) in &checked.roles.refused {
            warning!("  role `{role}` would not be created ({why})");
        }
        if !checked.roles.created.is_empty() {
            step!("  first create the roles the cluster lacks: {}", checked.roles.created.join(", "));
        }
        step!("  swap it in as `{}`", db.name);
        for line in plan_lines(&db.name, dir, plan) {
            step!("  {line}");
        }
        let targets = migration_targets(self.migrate_to.as_deref(), path);
        step!("  {}", self.migration_words(alembic, &targets));
        let tables = checked
            .tables
            .iter()
            .map(|(table, rows)| json::Object::new().str("table", table).raw("rows", rows).build());
        let migrated = alembic.is_some() && !self.no_migrate;
        json::report(
            json::Object::new()
                .raw("dry_run", true)
                .str("backup", &path.to_string_lossy())
                .str("database", &db.name)
                .str("scratch", &(db.scratch_prefix("restore") + "<run>"))
                .raw("sql_bytes", checked.sql_bytes)
                .raw("checksum_verified", backup.sha256.is_some())
                .raw("tables", json::array(tables))
                .raw("replaces", plan.live)
                .raw("kept", json::strings(&plan.kept))
                .raw("dumped_and_dropped", json::strings(&plan.retired))
                .raw("roles_created", json::strings(&checked.roles.created))
                .raw("migration", if migrated { json::strings(&targets) } else { "null".to_owned() }),
        );
        done!("dry run complete: {} would restore into `{}`; nothing was changed", path.display(), db.name);
        Ok(())
    }

    /// What the migration step does, in words.
    fn migration_words(&self, alembic: Option<&Alembic>, targets: &[String]) -> String {
        match alembic {
            _ if self.no_migrate => "not migrated (--no-migrate)".to_owned(),
            None => "not migrated: no alembic.ini found (pass --alembic-dir to migrate)".to_owned(),
            Some(alembic) => {
                format!("migrate to {} with Alembic in {}", targets.join(" and "), alembic.dir().display())
            }
        }
    }

    fn confirm(&self, db: &str, path: &Path, dir: &BackupDir, plan: &Plan) -> Result<()> {
        let lines = plan_lines(db, dir, plan);
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
    ) -> Result<Retired> {
        let prefix = previous_prefix(&db.name);
        let mut earlier = session.databases_with_prefix(&prefix)?;
        earlier.retain(|name| Some(name.as_str()) != just_made);
        // The UTC timestamp in the names sorts them by age: newest first.
        earlier.reverse();
        let keep = self.keep_previous.get() - usize::from(just_made.is_some());
        let mut retired = Retired { kept: earlier.iter().take(keep).cloned().collect(), ..Retired::default() };
        for old in earlier.iter().skip(keep) {
            interrupt::check()?;
            let revision = db.revision_of(sh, old)?;
            let replaced_at = replaced_at(&old[prefix.len()..]).unwrap_or_else(|| Local::now().naive_local());
            let name = fresh_prerestore_name(dir.path(), &db.name, replaced_at, revision);
            let untouched = format!("`{old}` was not dropped");
            let estimate = session.size_of(old)?;
            let (path, _) = dump_to_file(sh, db, old, dir, &name, estimate, self.db_lock_wait_secs, &untouched, None)
                .with_context(|| format!("could not dump `{old}` before dropping it"))?;
            retired.dumped.push((old.clone(), path.clone()));
            // Stopped after the dump: the database stays too, as promised.
            interrupt::check()?;
            db.drop_database(sh, old)?;
            retired.dropped.push(old.clone());
            step!("dropped `{old}` (--keep-previous {}); its data is in {}", self.keep_previous, path.display());
        }
        Ok(retired)
    }
}

/// What became of the databases earlier restores replaced (not counting the one this
/// restore made): kept as they are, dumped (name, file), dropped after their dump.
#[derive(Default)]
struct Retired {
    kept: Vec<String>,
    dumped: Vec<(String, PathBuf)>,
    dropped: Vec<String>,
}

/// What a restore does with earlier replaced databases.
struct Plan {
    live: bool,
    kept: Vec<String>,
    retired: Vec<String>,
}

/// What happens to the current data and to the databases earlier restores replaced.
fn plan_lines(db: &str, dir: &BackupDir, plan: &Plan) -> Vec<String> {
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
    lines
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
