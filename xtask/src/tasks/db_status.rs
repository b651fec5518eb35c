//! `cargo xtask db-status`: whether the backups are fresh, said as a Nagios plugin says
//! it (first line `STATE: ...`, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). It reads
//! the backup directory (the backups, the run record, the `.verified` records) and, with
//! --offsite, lists the store; it needs no Docker.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Local};
use xshell::Shell;

use crate::{
    cli::DbStatus,
    exit::Verdict,
    json::{self, human},
    monitor::{
        self,
        record::{self, OffsiteEnd},
        status::{self, Assessment, Facts, Limits, Offsite, State},
    },
    offsite::remote::Offsite as Store,
    store::{backup_dir, backup_file::BackupName, catalogue},
};

impl DbStatus {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let dir = self.dir.path(&sh.current_dir());
        let db = &self.name.db_name;
        let limits = Limits { max_age: self.max_age, max_verify_age: self.max_verify_age };
        let (assessment, facts) = match self.facts(&dir, Local::now().timestamp()) {
            Ok(facts) => (status::assess(&facts, limits), Some(facts)),
            // The directory cannot be read: nothing can be said of the backups.
            Err(err) => {
                let summary = format!("UNKNOWN: {db}: {err:#}");
                (Assessment { state: State::Unknown, summary, checks: Vec::new() }, None)
            }
        };
        let perfdata = facts
            .as_ref()
            .and_then(|f| f.newest.as_ref().map(|(_, taken, _)| (f.now - taken, f.backups)))
            .map_or(String::new(), |(age, backups)| {
                format!(" | backup_age={age}s;;{};0 backups={backups};;;0", self.max_age.as_secs())
            });
        human!("{}{perfdata}", assessment.summary);
        for check in &assessment.checks {
            human!("{:<8} {}: {}", check.state.name(), check.what, check.message);
        }
        json::report(self.fields(&dir, &assessment, facts.as_ref()));
        match assessment.state {
            State::Ok => Ok(()),
            state => Err(Verdict { code: state as u8, summary: assessment.summary }.into()),
        }
    }

    /// What the directory (and the store, with --offsite) says. Err: the directory
    /// cannot be read.
    fn facts(&self, dir: &Path, now: i64) -> Result<Facts> {
        let db = &self.name.db_name;
        backup_dir::require_existing(dir)?;
        let backups = catalogue::list(dir, db).with_context(|| format!("cannot read {}", dir.display()))?;
        let last_run = record::read(dir, db).map_err(|err| format!("{err:#}"));
        let run = last_run.as_ref().ok().and_then(Option::as_ref);
        let taken = |name: &str| BackupName::parse(name).map(|name| monitor::local_timestamp(name.taken));
        let offsite = match Store::settings(&self.offsite)? {
            Some(config) => {
                let listed = Store::connect(config, None).and_then(|store| Ok(store.list(db)?));
                Some(match listed {
                    Ok(copies) => {
                        Offsite::Newest(copies.iter().map(|copy| monitor::local_timestamp(copy.name.taken)).max())
                    }
                    Err(err) => Offsite::Unreachable(format!("{err:#}")),
                })
            }
            // Without --offsite, what the runs recorded, when they copy offsite.
            None => run
                .filter(|run| run.end.as_ref().map_or(run.offsite_newest.is_some(), |e| e.offsite != OffsiteEnd::None))
                .map(|run| Offsite::Newest(run.offsite_newest.as_deref().and_then(taken))),
        };
        Ok(Facts {
            db: db.clone(),
            now,
            newest: backups.first().map(|b| {
                let name = b.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                (name, monitor::local_timestamp(b.name.taken), b.size)
            }),
            backups: backups.len(),
            run_died: run.is_some_and(record::RunRecord::died),
            last_run,
            last_verify: backups.iter().filter_map(catalogue::verified_at).map(|at| at.timestamp()).max(),
            offsite,
        })
    }

    /// `--json`'s fields, after the envelope's `ok`, `error` (the summary) and `code`.
    fn fields(&self, dir: &Path, assessment: &Assessment, facts: Option<&Facts>) -> json::Object {
        let time = |secs: i64| DateTime::from_timestamp(secs, 0).map(|at| json::time(&at.with_timezone(&Local)));
        let mut fields = json::Object::new()
            .str("state", assessment.state.name())
            .str("summary", &assessment.summary)
            .str("database", &self.name.db_name)
            .str("backup_dir", &dir.to_string_lossy())
            .raw(
                "checks",
                json::array(assessment.checks.iter().map(|c| {
                    json::Object::new()
                        .str("state", c.state.name())
                        .str("check", c.what)
                        .str("message", &c.message)
                        .build()
                })),
            );
        let Some(facts) = facts else { return fields };
        let newest = facts.newest.as_ref().map(|(name, taken, size)| {
            json::Object::new()
                .str("file", name)
                .opt_str("taken", time(*taken).as_deref())
                .raw("age_secs", facts.now - taken)
                .raw("size", size)
                .build()
        });
        let run = facts.last_run.as_ref().ok().and_then(Option::as_ref).map(|run| {
            let started = json::Object::new()
                .str("state", if run.end.is_some() { "finished" } else { "started" })
                .raw("pid", run.pid)
                .str("started", &json::time(&run.started));
            match &run.end {
                None => started.raw("died", facts.run_died),
                Some(end) => started
                    .str("finished", &json::time(&end.finished))
                    .raw("exit_code", end.exit_code)
                    .str("outcome", &end.message)
                    .raw("duration_secs", format!("{:.3}", end.duration_secs))
                    .opt_str("backup", end.backup.as_deref()),
            }
            .build()
        });
        fields = fields
            .raw("backups", facts.backups)
            .raw("newest_backup", newest.unwrap_or_else(|| "null".to_owned()))
            .raw("last_run", run.unwrap_or_else(|| "null".to_owned()))
            .opt_str("last_verify", facts.last_verify.and_then(time).as_deref());
        if let Some(Offsite::Newest(newest)) = &facts.offsite {
            fields = fields.opt_str("offsite_newest", newest.and_then(time).as_deref());
        }
        fields
    }
}
