//! The backup directory on disk: private permissions, the lock that keeps two runs apart,
//! and partial files that become backups only by an fsynced, no-clobber rename.

use std::{
    fs::{self, DirBuilder, File, OpenOptions, Permissions, TryLockError},
    io::{self, Read, Seek, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    exit::{Code, Coded},
    output::{step, warning},
    store::backup_file::Backup,
    store::backup_file::PARTIAL_SUFFIX,
    store::catalogue,
    store::roles::ROLES_SUFFIX,
};

const LOCK_FILE: &str = ".hindsight.lock";
const VERIFY_LOCK_FILE: &str = ".hindsight.verify.lock";

pub struct BackupDir {
    path: PathBuf,
}

impl BackupDir {
    /// Creates the directory (mode 0700) when missing, and makes an existing one private:
    /// a git checkout creates it 0755.
    pub fn open(path: PathBuf) -> Result<BackupDir> {
        DirBuilder::new().recursive(true).mode(0o700).create(&path).with_context(|| {
            format!("cannot create backup directory {}: check its parent's permissions", path.display())
        })?;
        let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            fs::set_permissions(&path, Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make backup directory {} private (mode 0700)", path.display()))?;
            step!("made {} private (mode {mode:o} -> 700)", path.display());
        }
        Ok(BackupDir { path })
    }

    /// The directory as it is, for the tasks that only read it or write their own records
    /// in it (db-list, db-verify, db-prune): a missing one is an error, never created where
    /// a typo pointed them.
    pub fn existing(path: PathBuf) -> Result<BackupDir> {
        require_existing(&path)?;
        Ok(BackupDir { path })
    }

    /// The directory a real run would open, for a dry run to name: neither created nor
    /// made private, since a dry run changes nothing.
    pub fn as_planned(path: PathBuf) -> BackupDir {
        BackupDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes an unprivileged writer may still use on the directory's filesystem.
    pub fn free_bytes(&self) -> Result<u64> {
        let stat = rustix::fs::statvfs(&self.path).with_context(|| format!("cannot stat {}", self.path.display()))?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Takes the directory's lock, waiting up to `wait` for a run that holds it. The kernel
    /// drops the lock with its holder, so a killed run never leaves it stuck.
    pub fn lock(&self, task: &str, wait: Duration) -> Result<Lock> {
        self.take_lock(LOCK_FILE, task, wait)
    }

    /// The lock that keeps two db-verify runs from dropping each other's scratch
    /// databases; a verification, which can take long, never holds up a backup.
    pub fn lock_verify(&self, wait: Duration) -> Result<Lock> {
        self.take_lock(VERIFY_LOCK_FILE, "db-verify", wait)
    }

    fn take_lock(&self, name: &str, task: &str, wait: Duration) -> Result<Lock> {
        let path = self.path.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            crate::interrupt::check()?;
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    if !said {
                        step!("waiting up to {} s for {} to finish", wait.as_secs(), holder(&mut file));
                        said = true;
                    }
                    thread::sleep(Duration::from_millis(200));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Coded {
                        code: Code::Busy,
                        message: format!(
                            "{} holds the lock on {}, so this {task} did not run: try again when it has finished, or raise --lock-wait-secs",
                            holder(&mut file),
                            self.path.display()
                        ),
                    }
                    .into());
                }
                Err(TryLockError::Error(err)) => {
                    return Err(err).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
        }
        // Who holds it, for the message the next run may print.
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{task} (pid {})", std::process::id())?;
        Ok(Lock { _file: file })
    }

    /// Removes what a killed run left: partial files are never backups. Call with the
    /// directory's lock held (`verify_records`: the verify lock, for `.verified.partial`).
    pub fn remove_partials(&self, db: &str, verify_records: bool) -> Result<()> {
        for path in catalogue::partials(&self.path, db, verify_records)? {
            fs::remove_file(&path).with_context(|| format!("cannot remove stale {}", path.display()))?;
            step!("removed {}, left by an interrupted run", path.display());
        }
        Ok(())
    }

    /// Removes a backup with the files beside it (checksum, roles, verification record).
    pub fn remove_backup(&self, backup: &Backup) -> Result<()> {
        fs::remove_file(&backup.path).with_context(|| format!("cannot remove {}", backup.path.display()))?;
        remove_if_exists(&backup.sidecar())?;
        remove_if_exists(&crate::store::backup_file::beside(&backup.path, ROLES_SUFFIX))?;
        remove_if_exists(&backup.verified_marker())
    }

    /// A new `NAME.partial` (mode 0600), removed again unless committed.
    pub fn create_partial(&self, file_name: &str) -> Result<Partial> {
        let done = self.path.join(file_name);
        let path = self.path.join(format!("{file_name}{PARTIAL_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Partial { path, done, file, dir: self.path.clone(), committed: false })
    }
}

/// `rename` that fails rather than replace `to`: `RENAME_NOREPLACE` where the filesystem
/// has it, else a hard link and an unlink (also atomic and no-clobber), else, on
/// filesystems with neither (exFAT, some network mounts), a check and a plain rename,
/// safe here because every writer of the directory holds its lock.
fn rename_no_clobber(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(err) if err == rustix::io::Errno::EXIST => return Err(err.into()),
        Err(_) => {}
    }
    match fs::hard_link(from, to) {
        Ok(()) => return fs::remove_file(from),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Err(err),
        Err(_) => {}
    }
    if to.exists() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} already exists", to.display())));
    }
    fs::rename(from, to)
}

/// Fails unless `path` is a directory, saying where to look: a wrong directory must not
/// read as "no backups".
pub fn require_existing(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => {
            bail!("backup directory {} is not a directory: check --backup-dir (HINDSIGHT_BACKUP_DIR)", path.display())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "backup directory {} does not exist: check --backup-dir (HINDSIGHT_BACKUP_DIR), or run \
             `cargo xtask db-backup` first, which creates it",
            path.display()
        ),
        Err(err) => {
            Err(err).with_context(|| format!("cannot read backup directory {}: check its permissions", path.display()))
        }
    }
}

/// Removes a file that may not be there.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Who holds a lock, as its holder wrote it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match text.trim() {
        "" => "another run".to_owned(),
        who => format!("another run, {who},"),
    }
}

/// Held for the length of a task.
pub struct Lock {
    _file: File,
}

/// A file being written under its final name plus `.partial`.
pub struct Partial {
    path: PathBuf,
    done: PathBuf,
    file: File,
    dir: PathBuf,
    committed: bool,
}

impl Partial {
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fsyncs the data, then gives it its final name, replacing any file of that name: for
    /// records that are rewritten (the `.verified` marker), never for backups.
    pub fn commit_replacing(mut self) -> Result<PathBuf> {
        self.file.sync_all().with_context(|| format!("cannot fsync {}", self.path.display()))?;
        fs::rename(&self.path, &self.done).with_context(|| format!("cannot name {}", self.done.display()))?;
        self.committed = true;
        Ok(self.done.clone())
    }

    /// Fsyncs the data, then gives it its final name, never replacing an existing file,
    /// then fsyncs the directory so the name survives a crash.
    pub fn commit(mut self) -> Result<PathBuf> {
        self.file.sync_all().with_context(|| format!("cannot fsync {}", self.path.display()))?;
        rename_no_clobber(&self.path, &self.done).with_context(|| format!("cannot name {}", self.done.display()))?;
        self.committed = true;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot fsync directory {}", self.dir.display()))?;
        Ok(self.done.clone())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed
            && let Err(err) = fs::remove_file(&self.path)
        {
            warning!("could not remove {}: {err}", self.path.display());
        }
    }
}
