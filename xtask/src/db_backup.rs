//! `cargo xtask db-backup`: pg_dump into `NAME.partial`, keep it only when pg_dump
//! succeeded and the dump is complete, then fsync, checksum, rename, and apply retention.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use chrono::Timelike;
use xshell::Shell;

use crate::{
    backup_dir::BackupDir,
    backup_file::{self, BackupName, Compression, Revision, Tail},
    catalogue,
    cli::DbBackup,
    codec::{Encoder, Hashing},
    database::Database,
    output::{self, Progress, human_bytes, step},
    overlap::Overlapped,
    process, retention,
};

/// Big writes: a dump is gigabytes, and every write is a syscall.
const WRITE_BUF: usize = 1024 * 1024;

impl DbBackup {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let started = Instant::now();
        // The header of each run in a cron log.
        step!("db-backup of `{}` started (pid {})", self.db.db_name, std::process::id());
        let db = Database::open(sh, &self.db, "db-backup")?;
        let dir = BackupDir::open(sh.current_dir().join(&self.dir.backup_dir))?;
        let _lock = dir.lock("db-backup", self.dir.lock_wait_secs)?;
        dir.remove_partials(&db.name)?;
        let keeping = catalogue::list(dir.path(), &db.name)?.len();

        db.ensure_ready(sh, self.db.wait_secs)?;
        let revision = db.alembic_revision(sh)?;
        let name = fresh_name(dir.path(), &db.name, revision, self.compress);

        let file_name = name.file_name();
        step!("dumping database `{}` into {}", db.name, dir.path().join(&file_name).display());
        let mut partial = dir.create_partial(&file_name)?;
        let sink = DumpSink::new(self.compress, partial.file().try_clone()?)?;
        let mut overlapped = Overlapped::spawn(sink, DumpSink::finish);
        let dumped = process::stream_out("pg_dump", db.dump(sh), &mut overlapped);
        let written = overlapped.finish();
        let nothing_lost = format!("no backup was written and every existing backup ({keeping}) is untouched");
        // A failed write stops pg_dump, so its error is the one that says why.
        let written = written.with_context(|| {
            format!(
                "writing the dump into {} failed, {nothing_lost}: free some space, then run db-backup again",
                dir.path().display()
            )
        })?;
        dumped
            .with_context(|| format!("pg_dump failed, {nothing_lost}: check the database, then run db-backup again"))?;
        if !backup_file::ends_complete(&written.tail) {
            bail!(
                "the dump is incomplete (no `-- PostgreSQL database dump complete` at its end after {}), {nothing_lost}: \
                 check that the database stayed up, then run db-backup again",
                human_bytes(written.sql_bytes)
            );
        }

        let path = partial.commit()?;
        let mut sidecar = dir.create_partial(&format!("{file_name}{}", backup_file::SHA256_SUFFIX))?;
        sidecar.file().write_all(backup_file::sidecar_line(&written.sha256, &file_name).as_bytes())?;
        sidecar.commit()?;

        let removed = self.apply_retention(dir.path(), &db.name, &path)?;
        let stored = match self.compress {
            Compression::None => human_bytes(written.stored_bytes),
            _ => format!("{} from {} of SQL", human_bytes(written.stored_bytes), human_bytes(written.sql_bytes)),
        };
        step!(
            "backup complete: {} ({stored}, revision {}, {:.1} s, peak memory {}{})",
            path.display(),
            name.revision,
            started.elapsed().as_secs_f64(),
            output::peak_memory(),
            if removed > 0 { format!(", {removed} old removed") } else { String::new() }
        );
        Ok(())
    }

    /// Runs only after a good new backup exists; removes a backup's sidecar with it.
    fn apply_retention(&self, dir: &Path, db: &str, just_written: &Path) -> Result<usize> {
        let backups = catalogue::list(dir, db)?;
        let removed = retention::to_remove(&backups, self.max_backups.get(), just_written);
        for backup in &removed {
            std::fs::remove_file(&backup.path)
                .with_context(|| format!("the backup succeeded, but removing old {} failed", backup.path.display()))?;
            match std::fs::remove_file(backup.sidecar()) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(err)
                        .context(format!("the backup succeeded, but removing {} failed", backup.sidecar().display()));
                }
                _ => {}
            }
            step!("removed {} (keeping the newest {})", backup.path.display(), self.max_backups);
        }
        Ok(removed.len())
    }
}

/// A name no existing file has: two backups within one second would share one, so the
/// second waits for the clock to tick.
fn fresh_name(dir: &Path, db: &str, revision: Revision, compression: Compression) -> BackupName {
    loop {
        let now = chrono::Local::now().naive_local();
        let taken = now.with_nanosecond(0).unwrap_or(now);
        let name = BackupName { db: db.to_owned(), taken, revision: revision.clone(), compression };
        if !dir.join(name.file_name()).exists() {
            return name;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Where the dump's bytes go, on the writer thread, in one pass: the tail of the plain
/// SQL for the marker check, the progress line, the encoder, the hash of what is stored,
/// and the file.
struct DumpSink {
    tail: Tail,
    progress: Progress,
    encoder: Encoder<Hashing<BufWriter<File>>>,
}

struct Written {
    tail: Vec<u8>,
    sql_bytes: u64,
    stored_bytes: u64,
    sha256: String,
}

impl DumpSink {
    fn new(compression: Compression, file: File) -> io::Result<DumpSink> {
        let file = Hashing::new(BufWriter::with_capacity(WRITE_BUF, file));
        Ok(DumpSink {
            tail: Tail::default(),
            progress: Progress::new("dumped"),
            encoder: Encoder::new(compression, file)?,
        })
    }

    fn finish(self) -> io::Result<Written> {
        self.progress.finish();
        let (file, sha256, stored_bytes) = self.encoder.finish()?.finish();
        file.into_inner().map_err(|err| err.into_error())?;
        Ok(Written { tail: self.tail.bytes().to_vec(), sql_bytes: self.progress.bytes(), stored_bytes, sha256 })
    }
}

impl Write for DumpSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write_all(buf)?;
        self.tail.push(buf);
        self.progress.add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}
