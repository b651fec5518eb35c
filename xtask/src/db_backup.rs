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
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::{
    backup_dir::BackupDir,
    backup_file::{self, BackupName, Revision, Tail},
    catalogue,
    cli::DbBackup,
    database::Database,
    output::{Progress, human_bytes, step},
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
        let name = fresh_name(dir.path(), &db.name, revision);

        step!("dumping database `{}` into {}", db.name, dir.path().join(name.file_name()).display());
        let mut partial = dir.create_partial(&name.file_name())?;
        let mut sink = DumpSink::new(partial.file());
        let dumped = process::stream_out("pg_dump", db.dump(sh), &mut sink);
        let (sha256, tail, size) = sink.finish();
        let nothing_lost = format!("no backup was written and every existing backup ({keeping}) is untouched");
        dumped
            .with_context(|| format!("pg_dump failed, {nothing_lost}: check the database, then run db-backup again"))?;
        if !backup_file::ends_complete(&tail) {
            bail!(
                "the dump is incomplete (no `-- PostgreSQL database dump complete` at its end after {}), {nothing_lost}: \
                 check that the database stayed up, then run db-backup again",
                human_bytes(size)
            );
        }

        let file_name = name.file_name();
        let path = partial.commit()?;
        let mut sidecar = dir.create_partial(&format!("{file_name}{}", backup_file::SHA256_SUFFIX))?;
        sidecar.file().write_all(backup_file::sidecar_line(&sha256, &file_name).as_bytes())?;
        sidecar.commit()?;

        let removed = self.apply_retention(dir.path(), &db.name, &path)?;
        step!(
            "backup complete: {} ({}, revision {}, {:.1} s{})",
            path.display(),
            human_bytes(size),
            name.revision,
            started.elapsed().as_secs_f64(),
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
fn fresh_name(dir: &Path, db: &str, revision: Revision) -> BackupName {
    loop {
        let now = chrono::Local::now().naive_local();
        let taken = now.with_nanosecond(0).unwrap_or(now);
        let name = BackupName { db: db.to_owned(), taken, revision: revision.clone() };
        if !dir.join(name.file_name()).exists() {
            return name;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Where the dump's bytes go as they stream: the file, the checksum, the tail for the
/// marker check and the progress line, all in one pass.
struct DumpSink<'a> {
    out: BufWriter<&'a mut File>,
    hasher: Sha256,
    tail: Tail,
    progress: Progress,
}

impl<'a> DumpSink<'a> {
    fn new(file: &'a mut File) -> DumpSink<'a> {
        DumpSink {
            out: BufWriter::with_capacity(WRITE_BUF, file),
            hasher: Sha256::new(),
            tail: Tail::default(),
            progress: Progress::new("dumped"),
        }
    }

    /// The sha256 as hex, the tail, and the byte count.
    fn finish(self) -> (String, Vec<u8>, u64) {
        self.progress.finish();
        let hex = self.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        (hex, self.tail.bytes().to_vec(), self.progress.bytes())
    }
}

impl Write for DumpSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.tail.push(&buf[..n]);
        self.progress.add(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
