//! How a run is watched from outside: its record in the backup directory, a Prometheus
//! metrics file, pings to a dead-man's switch, its own rotated log, and the file that
//! keeps the job's secrets out of the cron line.

pub mod log;
pub mod metrics;
pub mod ping;
pub mod record;
pub mod secrets_file;
pub mod status;

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use chrono::{Local, NaiveDateTime};

use crate::{
    output::{detail, warning},
    store::{backup_file::BackupName, catalogue},
};
use ping::{Ping, Started};
use record::{End, OffsiteEnd, RunRecord};

/// A db-backup run as the world outside sees it: from its start (the `/start` ping; the
/// "started" record once it holds the directory's lock) to its end (the final record, the
/// metrics file, the last ping). Nothing here fails the run: what cannot be written is a
/// warning, and the other two still carry the outcome (a full disk takes the record, not
/// the ping).
pub struct Watch {
    dir: PathBuf,
    db: String,
    clock: Instant,
    started: chrono::DateTime<chrono::FixedOffset>,
    /// This run's "started" record, once it holds the lock: until then the record speaks
    /// of the run that holds it, and is not this run's to replace.
    record: Option<RunRecord>,
    ping: Option<(Ping, Started)>,
    metrics: Option<PathBuf>,
    offsite: bool,
}

/// How the run ended, for `Watch::finish`.
pub struct Ended {
    /// The exit code the process will return.
    pub code: u8,
    /// `ok`, or the error on one line.
    pub message: String,
    /// The backup written: its path, size as stored, revision.
    pub backup: Option<(PathBuf, u64, String)>,
    /// None without --offsite.
    pub offsite: OffsiteEnd,
    /// Whether this backup's offsite copy is complete (also when a later catch-up failed).
    pub copied: bool,
}

impl Watch {
    /// Pings the start, in the background. `dir` is the backup directory.
    pub fn start(dir: PathBuf, db: &str, ping_url: Option<&str>, metrics: Option<PathBuf>, offsite: bool) -> Watch {
        // A URL that cannot work must not stop a backup: the ping is what is lost.
        let ping = ping_url.and_then(|url| match Ping::parse(url) {
            Ok(ping) => Some(ping),
            Err(why) => {
                warning!("no pings for this run: {why}");
                None
            }
        });
        let ping = ping.map(|ping| {
            let started = ping.start();
            (ping, started)
        });
        let started = Local::now().fixed_offset();
        Watch { dir, db: db.to_owned(), clock: Instant::now(), started, record: None, ping, metrics, offsite }
    }

    /// This run holds the directory's lock: from here on the record is its own.
    pub fn locked(&mut self) {
        let record = RunRecord { started: self.started, ..RunRecord::started(Watch::previous(&self.dir, &self.db)) };
        if let Err(err) = record::write(&self.dir, &self.db, &record) {
            warning!("this run is not recorded ({err:#}); its metrics and ping still are");
        }
        self.record = Some(record);
    }

    /// Records the end, writes the metrics file, sends the last ping: the success ping
    /// for exit 0, `/fail` for any other, but none for a run that never got the
    /// directory's lock (busy, exit 3): it pinged `/start`, and the run holding the lock
    /// pings its own end. That busy run does not replace the holder's record either: it
    /// adds itself to it (`busy_at`), so that a hanging or dead holder stays in sight.
    pub fn finish(self, ended: Ended) {
        let Watch { dir, db, clock, started, record, ping, metrics, offsite } = self;
        let duration_secs = clock.elapsed().as_secs_f64();
        let file_name = |path: &Path| path.file_name().map(|n| n.to_string_lossy().into_owned());
        let busy = record.is_none() && ended.code == 3;
        let written = if busy {
            record::read(&dir, &db).ok().flatten().map(|mut holder| {
                holder.busy = Some((Local::now().fixed_offset(), ended.message.clone()));
                holder
            })
        } else {
            None
        };
        let written = written.unwrap_or_else(|| {
            // A run that failed before it got the lock has no record yet.
            let record = record.unwrap_or_else(|| RunRecord {
                started,
                ..RunRecord::started(dir.is_dir().then(|| Watch::previous(&dir, &db)).flatten())
            });
            let offsite_newest = match (&ended.backup, ended.copied) {
                (Some((path, _, _)), true) => file_name(path),
                _ => record.offsite_newest.clone(),
            };
            let end = End {
                finished: Local::now().fixed_offset(),
                exit_code: ended.code,
                message: ended.message.clone(),
                duration_secs,
                backup: ended.backup.as_ref().and_then(|(path, _, _)| file_name(path)),
                size: ended.backup.as_ref().map(|(_, size, _)| *size),
                revision: ended.backup.as_ref().map(|(_, _, revision)| revision.clone()),
                offsite: ended.offsite.clone(),
            };
            RunRecord { end: Some(end), offsite_newest, ..record }
        });
        if dir.is_dir()
            && let Err(err) = record::write(&dir, &db, &written)
        {
            warning!("this run's outcome is not recorded for db-status ({err:#})");
        }
        if let Some(path) = metrics {
            let run = LastRun { started: started.timestamp(), success: ended.code == 0, duration_secs };
            let snapshot = snapshot(&dir, &db, run, offsite.then(|| written.offsite_newest.clone()));
            match metrics::write(&path, &snapshot) {
                Ok(()) => detail!("wrote the metrics into {}", path.display()),
                Err(err) => warning!("the metrics file is not updated ({err:#}): check its directory"),
            }
        }
        if let Some((ping, started)) = ping {
            let outcome = match ended.code {
                0 => ping::Outcome::Success,
                _ if busy => ping::Outcome::Nothing,
                _ => ping::Outcome::Failure,
            };
            ping.finish(started, outcome, &ended.message);
        }
    }

    /// The newest offsite copy the last run knew of, carried forward.
    fn previous(dir: &Path, db: &str) -> Option<String> {
        match record::read(dir, db) {
            Ok(previous) => previous.and_then(|p| p.offsite_newest),
            Err(err) => {
                warning!("{err:#}: it is replaced by this run's");
                None
            }
        }
    }
}

/// What the metrics say of the run itself.
struct LastRun {
    started: i64,
    success: bool,
    duration_secs: f64,
}

/// The gauges after a run: the run's own facts, and what the backup directory holds.
fn snapshot(dir: &Path, db: &str, run: LastRun, offsite_newest: Option<Option<String>>) -> metrics::Snapshot {
    let backups = catalogue::list(dir, db).unwrap_or_else(|err| {
        warning!("the metrics say 0 backups: {err:#}");
        Vec::new()
    });
    let newest = backups.first();
    metrics::Snapshot {
        database: db.to_owned(),
        last_success: newest.map(|b| local_timestamp(b.name.taken)),
        last_run: run.started,
        last_run_success: run.success,
        last_duration_secs: run.duration_secs,
        last_size: newest.map(|b| b.size),
        backups: backups.len(),
        last_verify: backups.iter().filter_map(catalogue::verified_at).max().map(|at| at.timestamp()),
        offsite_last_success: offsite_newest
            .map(|name| name.and_then(|n| BackupName::parse(&n)).map(|name| local_timestamp(name.taken))),
    }
}

/// A backup name's local wall-clock time as Unix seconds, as `json::local_time` reads it.
pub fn local_timestamp(naive: NaiveDateTime) -> i64 {
    crate::json::local_instant(naive).timestamp()
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a
/// part: a temporary file in the same directory (`.NAME.PID.tmp`: hidden, and not ending
/// in `.prom`, so node_exporter never reads it), fsynced, renamed over `path`, and the
/// directory fsynced. The temporary files of runs that died are removed first.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("a file name")?.to_string_lossy().into_owned();
    remove_dead_temporaries(dir, &name);
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temporary)?;
        // `mode` from creation is masked by the umask: a metrics file must be readable by
        // node_exporter whatever the cron job's umask.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|err| {
        let _ = fs::remove_file(&temporary);
        anyhow::Error::from(err).context(format!("cannot write {}", path.display()))
    })
}

/// `.NAME.PID.tmp` files beside `NAME` whose process is gone: what a killed run left.
fn remove_dead_temporaries(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let prefix = format!(".{name}.");
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".tmp")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}
