//! `cargo xtask db-backup`: pg_dump into `NAME.partial`, keep it only when pg_dump
//! succeeded and the dump is complete, then fsync, checksum, rename, and apply retention.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use chrono::Timelike;
use xshell::Shell;

use crate::{
    cli::DbBackup,
    db::{Database, session::Mode},
    exit::{self, Code, Coded},
    interrupt, json,
    monitor::{self, Ended, Watch, record::OffsiteEnd},
    offsite::remote::{self, Offsite, Outgoing},
    output::{self, Progress, count, done, human_bytes, step, warning},
    process::{self, Background, Failure},
    store::backup_dir::BackupDir,
    store::backup_file::Backup,
    store::backup_file::{self, BackupName, Compression, Kind, Revision, Tail},
    store::catalogue,
    store::retention::Policy,
    store::roles::ROLES_SUFFIX,
    stream::codec::{Encoder, Hashing},
    stream::overlap::Overlapped,
    stream::shadow::{Shadow, Tee},
    tasks::db_prune,
};

/// Big writes: a dump is gigabytes, and every write is a syscall.
const WRITE_BUF: usize = 1024 * 1024;

/// What a successful backup reports.
struct Outcome {
    path: PathBuf,
    /// The local time in its name.
    taken: chrono::NaiveDateTime,
    written: Written,
    revision: Revision,
    removed: Vec<PathBuf>,
    offsite: Option<OffsiteOutcome>,
}

/// What happened offsite: what was uploaded, aborted and removed, and the first failure.
#[derive(Default)]
pub struct OffsiteOutcome {
    pub url: String,
    /// This backup's object, when its upload completed.
    pub object: Option<String>,
    pub encrypted: bool,
    pub caught_up: Vec<String>,
    pub aborted: Vec<String>,
    pub removed: Vec<String>,
    pub failure: Option<anyhow::Error>,
}

impl OffsiteOutcome {
    /// Keeps the first failure; later ones are logged.
    pub fn failed(&mut self, err: anyhow::Error) {
        match &self.failure {
            None => self.failure = Some(err),
            Some(_) => warning!("offsite: {err:#}"),
        }
    }

    pub fn json(&self) -> json::Object {
        let mut fields = json::Object::new()
            .str("url", &self.url)
            .opt_str("object", self.object.as_deref())
            .raw("encrypted", self.encrypted)
            .raw("caught_up", json::strings(&self.caught_up))
            .raw("aborted", json::strings(&self.aborted))
            .raw("removed", json::strings(&self.removed));
        if let Some(err) = &self.failure {
            fields = fields.str("error", &format!("{err:#}"));
        }
        fields
    }
}

impl DbBackup {
    pub fn run(self, sh: &Shell) -> Result<()> {
        // A log that cannot be opened must not cost the backup: its lines go to stderr
        // (cron mails them), and the record, metrics and ping still tell.
        if let Some(log) = self.monitor.log_file()
            && let Err(err) = monitor::log::redirect(&log, self.monitor.log_max_bytes)
        {
            warning!("{err:#}: this run's output goes to stderr instead");
        }
        let started = Instant::now();
        // The header of each run in a cron log.
        step!("db-backup of `{}` started (pid {})", self.db.name.db_name, std::process::id());
        // The directory first, so that even a run that fails at once leaves its record
        // (db-backup creates it anyway); a directory that cannot be made is the run's error.
        let dir = self.dir.path(&sh.current_dir());
        let _ = BackupDir::open(dir.clone());
        let mut watch = Watch::start(
            dir,
            &self.db.name.db_name,
            self.monitor.ping_url.as_deref(),
            self.monitor.metrics_file(),
            self.offsite.offsite.is_some(),
        );
        let outcome = self.backup(sh, &mut watch);
        let (result, ended, summary) = self.conclude(outcome, started);
        watch.finish(ended);
        // The last line of the run, after the record, the metrics and the ping: `tail -1`
        // of the log answers "did it work?" (a failure's line is `exit::report`'s).
        if let Some(summary) = summary {
            done!("{summary}");
        }
        result
    }

    /// The run's result, what the world outside is told of it, and its summary line when
    /// the backup is complete.
    fn conclude(&self, outcome: Result<Outcome>, started: Instant) -> (Result<()>, Ended, Option<String>) {
        let offsite_none = || {
            if self.offsite.offsite.is_some() { OffsiteEnd::Failed("no backup".to_owned()) } else { OffsiteEnd::None }
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                let (code, message) = exit::judge(&err);
                let ended =
                    Ended { code, message: first_line(&message), backup: None, offsite: offsite_none(), copied: false };
                return (Err(err), ended, None);
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let Outcome { path, taken, written, revision, removed, offsite } = outcome;
        let stored = match self.compress {
            Compression::None => human_bytes(written.stored_bytes),
            _ => format!("{} from {} of SQL", human_bytes(written.stored_bytes), human_bytes(written.sql_bytes)),
        };
        let removed_note = match removed.len() {
            0 => String::new(),
            n => format!(", {} removed", count(n as u64, "old backup")),
        };
        let offsite_note = match &offsite {
            Some(OffsiteOutcome { object: Some(object), url, .. }) => format!(", offsite {url}{object}"),
            _ => String::new(),
        };
        let summary = format!(
            "backup complete: {} ({stored}, revision {revision}, {secs:.1} s, peak memory {}{removed_note}{offsite_note})",
            path.display(),
            output::peak_memory(),
        );
        // With --json, `exit::report` prints these after `"ok":true`, or after the error
        // and code 6 when the offsite copy failed.
        let mut fields = json::Object::new()
            .str("path", &path.to_string_lossy())
            .local_time("taken", taken)
            .raw("size", written.stored_bytes)
            .raw("sql_bytes", written.sql_bytes)
            .str("sha256", &written.sha256)
            .str("revision", &revision.to_string())
            .raw("revision_ids", json::strings(revision.ids()))
            .str("compression", self.compress.name())
            .raw("duration_secs", format!("{secs:.3}"))
            .raw("removed", json::strings(removed.iter().map(|p| p.to_string_lossy())));
        if let Some(offsite) = &offsite {
            fields = fields.raw("offsite", offsite.json().build());
        }
        json::report(fields);
        let backup = Some((path.clone(), written.stored_bytes, revision.to_string()));
        let failure = offsite.as_ref().and_then(|o| o.failure.as_ref());
        let offsite_end = match (&offsite, failure) {
            (None, _) => OffsiteEnd::None,
            (Some(_), None) => OffsiteEnd::Ok,
            (Some(_), Some(err)) => OffsiteEnd::Failed(first_line(&format!("{err:#}"))),
        };
        let result = match failure {
            None => Ok(()),
            Some(err) => Err(Coded {
                code: Code::OffsiteFailed,
                message: format!(
                    "the backup is complete here ({}), but its offsite copy failed: {err:#}; the next db-backup \
                     (or `cargo xtask db-offsite`) uploads what is missing once the store works",
                    path.display()
                ),
            }
            .into()),
        };
        let (code, message) = match &result {
            Ok(()) => (0, "ok".to_owned()),
            Err(err) => exit::judge(err),
        };
        let copied = offsite.as_ref().is_some_and(|o| o.object.is_some());
        let ended = Ended { code, message: first_line(&message), backup, offsite: offsite_end, copied };
        // Exit 6 ends on its error line: the summary comes first.
        if result.is_err() {
            done!("{summary}");
            return (result, ended, None);
        }
        (result, ended, Some(summary))
    }

    fn backup(&self, sh: &Shell, watch: &mut Watch) -> Result<Outcome> {
        let db = Database::open(sh, &self.db.target(&sh.current_dir()), "db-backup")?;
        // Settings that cannot work are refused before anything is written. A recipients
        // file that cannot be read is the offsite copy's failure, not the backup's: the
        // local backup is still made.
        let offsite_settings = match Offsite::settings(&self.offsite)? {
            Some(config) => {
                remote::check_choice(&self.upload)?;
                Some((config, remote::recipients(&self.upload)))
            }
            None => None,
        };
        let dir = BackupDir::open(self.dir.path(&sh.current_dir()))?;
        let _lock = dir.lock("db-backup", self.lock.lock_wait_secs)?;
        watch.locked();
        dir.remove_partials(&db.name, false)?;
        let existing = catalogue::list(dir.path(), &db.name)?;

        // The run's session first, so this run counts as alive for every other run's
        // cleanup.
        let mut session = db.session_when_ready(sh, self.db.wait_secs, self.start_policy())?;
        // Shared with db-verify and other backups, never during a restore; holding it, the
        // leftovers of runs that died can go.
        session.lock(Mode::Shared, self.lock.lock_wait_secs)?;
        session.clean_dead_runs(sh, &db)?;
        let inspection = db.inspect(sh, &db.name)?;
        self.check_free_space(inspection.size, &dir, &existing)?;
        let revision = inspection.revision.unwrap_or_else(|why| {
            warning!("Alembic revision unknown ({why}): the backup is named `unknown`");
            Revision::Unknown
        });
        let name = fresh_name(dir.path(), &db.name, revision.clone(), self.compress);
        let nothing_lost = format!("no backup was written and every existing backup ({}) is untouched", existing.len());
        // The progress line's estimate of the SQL to come: the last plain backup's size
        // (an hour ago, much the same), else the database's (larger than its dump).
        let last_plain = existing.iter().find(|b| b.name.compression == Compression::None).map(|b| b.size);
        let estimate = Some(last_plain.unwrap_or(inspection.size));

        // The offsite copy streams beside the file; whatever happens to it, the local
        // backup goes on.
        let mut offsite = offsite_settings.map(|(config, recipients)| {
            let mut outcome = OffsiteOutcome {
                url: config.location.to_string(),
                encrypted: !self.upload.offsite_plaintext,
                ..OffsiteOutcome::default()
            };
            let connected = recipients
                .and_then(|recipients| Offsite::connect(config, recipients))
                .and_then(|offsite| {
                    outcome.aborted = offsite.abort_dead(&dir, &db.name)?;
                    Ok(offsite)
                })
                .map_err(|err| outcome.failed(err))
                .ok();
            (connected, outcome)
        });
        let last_stored = existing.iter().find(|b| b.name.compression == self.compress).map(|b| b.size);
        let copy = match &mut offsite {
            Some((Some(remote), outcome)) => {
                match remote.start(sh, &dir, &name.file_name(), last_stored.or(estimate)) {
                    Ok(outgoing) => Some(Shadow::new(outgoing)),
                    Err(err) => {
                        outcome.failed(err.context("cannot start the offsite upload"));
                        None
                    }
                }
            }
            _ => None,
        };
        let (path, written) = dump_to_file(
            sh,
            &db,
            &db.name,
            &dir,
            &name,
            estimate,
            self.db_lock_wait_secs,
            &nothing_lost,
            copy.clone(),
        )?;

        // The local backup is good: only now may its copy appear offsite.
        if let (Some((Some(remote), outcome)), Some(copy)) = (&mut offsite, copy) {
            let finished = copy
                .take()
                .context("uploading the offsite copy failed")
                .and_then(|outgoing| remote.finish(sh, outgoing, &path));
            match finished {
                Ok(uploaded) => {
                    step!(
                        "offsite copy complete: {} ({}{})",
                        remote.object_url(&uploaded.object),
                        human_bytes(uploaded.bytes),
                        if remote.encrypted() { ", encrypted" } else { ", not encrypted" }
                    );
                    outcome.object = Some(uploaded.object);
                }
                Err(err) => outcome.failed(err),
            }
        }

        // Only now that a good new backup exists.
        let removed = db_prune::apply(&dir, &db.name, &self.retention.policy(), Some(&path))
            .with_context(|| format!("the backup succeeded ({}), but removing old backups failed", path.display()))?;

        // A store that already failed this run would only fail again, slowly.
        if let Some((Some(remote), outcome)) = &mut offsite
            && outcome.failure.is_none()
        {
            let policy = self.upload.policy(&self.retention);
            sync(sh, remote, &dir, &db.name, &policy, self.offsite_catch_up, outcome);
        }
        Ok(Outcome {
            path,
            taken: name.taken,
            written,
            revision,
            removed,
            offsite: offsite.map(|(_, outcome)| outcome),
        })
    }

    /// Refuses before writing anything when the backup clearly will not fit: less free space
    /// than the last backup of this compression took, or, with no such backup, than half
    /// the database's size (a plain dump leaves out index data; a compressed first backup
    /// has nothing to go by).
    fn check_free_space(&self, db_size: u64, dir: &BackupDir, existing: &[Backup]) -> Result<()> {
        let last = existing.iter().find(|b| b.name.compression == self.compress);
        let need = match (last, self.compress) {
            (Some(last), _) => last.size,
            (None, Compression::None) => db_size / 2,
            (None, _) => return Ok(()),
        };
        let free = dir.free_bytes()?;
        if free < need {
            let basis = match last {
                Some(last) => format!("the last {} backup took {}", self.compress.name(), human_bytes(last.size)),
                None => {
                    format!("a plain dump of a {} database needs at least {}", human_bytes(db_size), human_bytes(need))
                }
            };
            return Err(Coded {
                code: Code::NoSpace,
                message: format!(
                    "only {} free in {}, and {basis}: nothing was written; free some space (or remove old backups: \
                     cargo xtask db-prune), then run db-backup again",
                    human_bytes(free),
                    dir.path().display()
                ),
            }
            .into());
        }
        Ok(())
    }
}

/// Dumps database `source` into `name` in `dir`: `NAME.partial` first, kept only when
/// pg_dump exited 0 and the SQL ends with its completion marker; then fsync, a no-clobber
/// rename, the cluster's roles beside it (`NAME.roles.sql`, dumped while pg_dump runs),
/// and last the `.sha256` sidecar with both checksums. Used for backups and for the dumps
/// a restore makes of the databases it replaced. `estimate` (the database's size, when
/// known) gives the progress line an approximate percentage. `nothing_lost` says, in
/// every error, what is untouched. `copy` gets every byte stored, as it is written (the
/// offsite upload); its failure is its own and never fails the dump.
#[allow(clippy::too_many_arguments)]
pub fn dump_to_file(
    sh: &Shell,
    db: &Database,
    source: &str,
    dir: &BackupDir,
    name: &BackupName,
    estimate: Option<u64>,
    lock_wait: Duration,
    nothing_lost: &str,
    copy: Option<Shadow<Outgoing>>,
) -> Result<(PathBuf, Written)> {
    let file_name = name.file_name();
    step!("dumping database `{source}` into {}", dir.path().join(&file_name).display());
    let mut partial = dir.create_partial(&file_name)?;
    // Small, and beside the big one: it costs no time of its own.
    let roles = Background::start("pg_dumpall", db.roles_dump(sh));
    let (dumped, written) = match name.compression {
        // Plain SQL goes into the file untouched: the docker CLI writes it there itself
        // and this process reads it back as it lands, to hash and check it.
        Compression::None => {
            let mut follow = File::open(partial.path())?;
            let out = Tee { first: io::sink(), second: copy };
            let mut sink = DumpSink::new(Compression::None, out, Some(partial.file().try_clone()?), estimate)?;
            let dump = db.dump(sh, source, lock_wait);
            let dumped = process::stream_into_file("pg_dump", dump, partial.file(), &mut follow, &mut sink);
            (dumped, sink.finish())
        }
        // Compressed: pg_dump's pipe is read here and compressed on another thread.
        compression => {
            let file = Tee { first: BufWriter::with_capacity(WRITE_BUF, partial.file().try_clone()?), second: copy };
            let mut overlapped = Overlapped::spawn(DumpSink::new(compression, file, None, estimate)?, DumpSink::finish);
            let dumped = process::stream_out("pg_dump", db.dump(sh, source, lock_wait), &mut overlapped);
            (dumped, overlapped.finish())
        }
    };
    interrupt::check()?;
    // A failed write stops pg_dump, so its error is the one that says why.
    let written = written.with_context(|| {
        format!(
            "writing the dump into {} failed, {nothing_lost}: free some space, then run db-backup again",
            dir.path().display()
        )
    })?;
    if let Err(err) = dumped {
        if let Some(failure) = Failure::in_chain(&err)
            && let Some(conflict) = db.lock_conflict(sh, source, failure)
        {
            return Err(Coded {
                code: Code::Busy,
                message: format!(
                    "pg_dump waited {} s for a table lock and gave up: {conflict}; {nothing_lost}: end that \
                         session or let it finish, then run again (or raise --db-lock-wait-secs)",
                    lock_wait.as_secs()
                ),
            }
            .into());
        }
        // A plain dump is written by the docker CLI itself: a full disk is its error.
        let full = Failure::in_chain(&err).is_some_and(|f| f.said("no space left"));
        let next = if full { "free some space" } else { "check the database" };
        return Err(err.context(format!("pg_dump failed, {nothing_lost}: {next}, then run again")));
    }
    if !backup_file::ends_complete(&written.tail) {
        bail!(
            "the dump is incomplete (no `-- PostgreSQL database dump complete` at its end after {}), {nothing_lost}: \
             check that the database stayed up, then run again",
            human_bytes(written.sql_bytes)
        );
    }

    let path = partial.commit()?;
    let roles_line = match roles.and_then(Background::finish) {
        Ok(text) => Some(write_roles(dir, &file_name, &text).with_context(|| {
            format!("{} is complete, but writing its roles failed: free some space, then run again", path.display())
        })?),
        Err(err) => {
            warning!(
                "the cluster's roles were not saved beside the backup ({err:#}): a restore into a new cluster \
                 needs them created by hand"
            );
            None
        }
    };
    let write_sidecar = || -> Result<()> {
        let mut sidecar = dir.create_partial(&format!("{file_name}{}", backup_file::SHA256_SUFFIX))?;
        let mut lines = backup_file::sidecar_line(&written.sha256, &file_name);
        lines.extend(roles_line);
        sidecar.file().write_all(lines.as_bytes())?;
        sidecar.commit().map(drop)
    };
    write_sidecar().with_context(|| {
        format!("{} is complete, but writing its .sha256 failed: free some space, then run again", path.display())
    })?;
    Ok((path, written))
}

/// Writes `NAME.roles.sql` (0600, fsynced, never replacing a file) and returns its
/// `.sha256` line.
fn write_roles(dir: &BackupDir, file_name: &str, text: &str) -> Result<String> {
    let roles_name = format!("{file_name}{ROLES_SUFFIX}");
    let mut partial = dir.create_partial(&roles_name)?;
    partial.file().write_all(text.as_bytes())?;
    partial.commit()?;
    let mut hashing = Hashing::new(io::sink());
    hashing.write_all(text.as_bytes())?;
    Ok(backup_file::sidecar_line(&hashing.finish().1, &roles_name))
}

/// The first line of a message: what a ping's body and the record hold.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_owned()
}

/// A name no existing file has: two backups within one second would share one, so the
/// second waits for the clock to tick.
fn fresh_name(dir: &Path, db: &str, revision: Revision, compression: Compression) -> BackupName {
    loop {
        let now = chrono::Local::now().naive_local();
        let taken = now.with_nanosecond(0).unwrap_or(now);
        let name = BackupName { db: db.to_owned(), kind: Kind::Backup, taken, revision: revision.clone(), compression };
        if !dir.join(name.file_name()).exists() {
            return name;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Brings the offsite copies up to date after a backup (or in `db-offsite`): uploads up to
/// `limit` complete local backups that remote retention keeps and the store lacks, newest
/// first, then applies remote retention, but only when nothing failed, so that no copy is
/// removed while a newer one may be missing. Failures go into `outcome`.
pub fn sync(
    sh: &Shell,
    remote: &Offsite,
    dir: &BackupDir,
    db: &str,
    policy: &Policy,
    limit: usize,
    outcome: &mut OffsiteOutcome,
) {
    let mut run = || -> Result<()> {
        let copies = remote.list(db)?;
        let local = catalogue::list(dir.path(), db)?;
        let missing = remote::to_catch_up(&local, &copies, policy, limit);
        if !missing.is_empty() {
            step!("uploading {} that the store lacks, newest first", count(missing.len() as u64, "backup"));
        }
        for backup in missing {
            interrupt::check()?;
            let uploaded = remote.upload_file(sh, dir, backup)?;
            step!("caught up: {} ({})", remote.object_url(&uploaded.object), human_bytes(uploaded.bytes));
            outcome.caught_up.push(uploaded.object);
        }
        if outcome.failure.is_none() {
            outcome.removed = remote.prune(&remote.list(db)?, policy)?;
        }
        Ok(())
    };
    if let Err(err) = run() {
        outcome.failed(err);
    }
}

/// Where the dump's bytes go, in one pass: the tail of the plain SQL for the marker check,
/// the progress line, the encoder, the hash of what is stored, and `W` (the file, or
/// nothing when the file is written by pg_dump's side).
struct DumpSink<W: Write> {
    tail: Tail,
    progress: Progress,
    encoder: Encoder<Hashing<W>>,
    /// Flushed to disk every `SYNC_EVERY` bytes, so the final fsync has little left to do.
    writeback: Option<(File, u64)>,
}

/// How often the file's written part is flushed to disk while the dump goes on.
const SYNC_EVERY: u64 = 64 * 1024 * 1024;

pub struct Written {
    tail: Vec<u8>,
    pub sql_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
}

impl<W: Write> DumpSink<W> {
    fn new(
        compression: Compression,
        out: W,
        writeback: Option<File>,
        estimate: Option<u64>,
    ) -> io::Result<DumpSink<W>> {
        // The database's size is only an estimate of the dump's (no index data, text
        // instead of pages): "about", and never past 99%.
        let progress = match estimate {
            Some(size) => Progress::with_total("dumped", size, true),
            None => Progress::new("dumped"),
        };
        Ok(DumpSink {
            tail: Tail::default(),
            progress,
            encoder: Encoder::new(compression, Hashing::new(out))?,
            writeback: writeback.map(|file| (file, SYNC_EVERY)),
        })
    }

    fn finish(self) -> io::Result<Written> {
        self.progress.finish();
        let (mut out, sha256, stored_bytes) = self.encoder.finish()?.finish();
        out.flush()?;
        Ok(Written { tail: self.tail.bytes().to_vec(), sql_bytes: self.progress.bytes(), stored_bytes, sha256 })
    }
}

impl<W: Write> Write for DumpSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write_all(buf)?;
        self.tail.push(buf);
        self.progress.add(buf.len());
        if let Some((file, next)) = &mut self.writeback
            && self.progress.bytes() >= *next
        {
            file.sync_data()?;
            *next += SYNC_EVERY;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}
