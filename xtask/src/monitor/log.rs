//! db-backup's own log (`--log-file`): rotated by size before a run, then this process's
//! stdout and stderr, and so every program it starts, append to it.
//!
//! The job opens its log itself rather than through a shell's `>> LOG`: a shell would
//! keep writing into the file after it was renamed to `LOG.1`.

use std::{
    fs::{self, DirBuilder, File, OpenOptions, Permissions},
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use rustix::fs::FlockOperation;

use crate::store::backup_dir::remove_if_exists;

/// Rotated logs kept beside the current one: `FILE.1` (the newest) to `FILE.3`.
pub const KEEP: u32 = 3;

/// Rotates `path` when it is `max_bytes` or more (0: never), then points stdout and stderr at it.
pub fn redirect(path: &Path, max_bytes: u64) -> Result<()> {
    let file = open(path, max_bytes)?;
    // dup2 clears close-on-exec on the copies: the programs this run starts (docker,
    // pg_dump through it) inherit them and write into the log as well.
    rustix::stdio::dup2_stdout(&file).with_context(|| format!("cannot send stdout to the log {}", path.display()))?;
    rustix::stdio::dup2_stderr(&file).with_context(|| format!("cannot send stderr to the log {}", path.display()))?;
    Ok(())
}

/// The log, ready to append to: its directory created (0700) if missing, rotated when
/// full, opened (created 0600).
fn open(path: &Path, max_bytes: u64) -> Result<File> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| {
        format!(
            "cannot create the log directory {}: check its parent's owner and mode, or give another --log-file",
            dir.display()
        )
    })?;
    // Two runs at once (cron's and one by hand) would both see a full log and rotate it
    // twice, the second moving the first's fresh log away: the directory's lock makes the
    // check, the renames and the open one step. Held only until this function returns.
    let _lock = lock_dir(dir)?;
    rotate(path, max_bytes, KEEP)?;
    let file = OpenOptions::new().append(true).create(true).mode(0o600).open(path).with_context(|| {
        format!("cannot open the log {}: check the owner and mode of it and its directory", path.display())
    })?;
    // A log written before (by a shell's `>>`, with the umask's mode) is made private too;
    // a file this user does not own keeps its mode, as it did before.
    let private = Permissions::from_mode(0o600);
    if file.metadata().is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0) {
        let _ = file.set_permissions(private);
    }
    Ok(file)
}

/// An exclusive lock on `dir`, released when the file is dropped.
fn lock_dir(dir: &Path) -> Result<File> {
    let handle = File::open(dir).with_context(|| format!("cannot open the log directory {}", dir.display()))?;
    rustix::fs::flock(&handle, FlockOperation::LockExclusive)
        .with_context(|| format!("cannot lock the log directory {}", dir.display()))?;
    Ok(handle)
}

/// When `path` is `max_bytes` or more (0: never), shifts it to `path.1`, `path.1` to
/// `path.2`, and so on up to `path.KEEP`, whose old content is dropped. Whether it rotated.
/// A file missing along the way (never written, or moved by another run) is skipped.
pub fn rotate(path: &Path, max_bytes: u64, keep: u32) -> Result<bool> {
    if max_bytes == 0 {
        return Ok(false);
    }
    let len = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => {
            return Err(err).with_context(|| {
                format!("cannot read the size of the log {}: check its directory's mode", path.display())
            });
        }
    };
    if len < max_bytes {
        return Ok(false);
    }
    // Oldest first, so that no rename lands on a file not yet moved: `.2` over `.3` drops
    // the oldest.
    for n in (1..keep).rev() {
        rename_if_present(&numbered(path, n), &numbered(path, n + 1))?;
    }
    if keep == 0 {
        return remove_if_exists(path)
            .context("cannot rotate the log (check its directory's owner and mode)")
            .map(|()| true);
    }
    rename_if_present(path, &numbered(path, 1))?;
    Ok(true)
}

/// `FILE.n`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn rename_if_present(from: &Path, to: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err).with_context(|| {
            format!(
                "cannot rotate the log {} to {}: check the directory's owner and mode, or give --log-max-bytes 0",
                from.display(),
                to.display()
            )
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary one, removed by the test's end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("xtask-log-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn read(path: &Path) -> Option<String> {
        fs::read_to_string(path).ok()
    }

    #[test]
    fn a_full_log_shifts_down_and_the_oldest_is_dropped() {
        let dir = TempDir::new("shift");
        let log = dir.0.join("backup.log");
        for (name, text) in [("backup.log", "now"), ("backup.log.1", "one"), ("backup.log.2", "two")] {
            fs::write(dir.0.join(name), text).unwrap();
        }
        fs::write(dir.0.join("backup.log.3"), "three").unwrap();
        assert!(rotate(&log, 3, 3).unwrap());
        assert_eq!(read(&log), None, "the next run starts a fresh log");
        assert_eq!(read(&numbered(&log, 1)).as_deref(), Some("now"));
        assert_eq!(read(&numbered(&log, 2)).as_deref(), Some("one"));
        assert_eq!(read(&numbered(&log, 3)).as_deref(), Some("two"), "the old .3 is dropped");
        assert_eq!(read(&numbered(&log, 4)), None, "no more than `keep` are kept");

        // Gaps (a first rotation) are skipped, not errors.
        fs::write(&log, "again").unwrap();
        fs::remove_file(numbered(&log, 2)).unwrap();
        assert!(rotate(&log, 1, 3).unwrap());
        assert_eq!(read(&numbered(&log, 1)).as_deref(), Some("again"));
        assert_eq!(read(&numbered(&log, 2)).as_deref(), Some("now"));
        assert_eq!(read(&numbered(&log, 3)).as_deref(), Some("two"), "nothing moved over it");
    }

    #[test]
    fn a_small_log_a_missing_one_and_0_are_left_alone() {
        let dir = TempDir::new("small");
        let log = dir.0.join("backup.log");
        assert!(!rotate(&log, 10, 3).unwrap(), "no log yet");
        fs::write(&log, "123456789").unwrap();
        assert!(!rotate(&log, 10, 3).unwrap(), "one byte below the limit");
        assert!(!rotate(&log, 0, 3).unwrap(), "0 never rotates");
        assert_eq!(read(&log).as_deref(), Some("123456789"));
        assert!(rotate(&log, 9, 3).unwrap(), "at the limit");
        assert_eq!(read(&numbered(&log, 1)).as_deref(), Some("123456789"));
    }

    #[test]
    fn two_runs_rotating_at_once_lose_nothing_but_the_oldest() {
        // The second run finds the files already moved: its renames of missing files are no errors.
        let dir = TempDir::new("twice");
        let log = dir.0.join("backup.log");
        fs::write(&log, "full").unwrap();
        assert!(rotate(&log, 1, 3).unwrap());
        assert!(!rotate(&log, 1, 3).unwrap(), "nothing left to rotate");
        assert_eq!(read(&numbered(&log, 1)).as_deref(), Some("full"));
    }

    #[test]
    fn the_log_and_its_directory_are_private_and_a_full_one_rotates_first() {
        // What `redirect` opens, without pointing this test process's stderr at it.
        let dir = TempDir::new("mode");
        let log = dir.0.join("logs/backup.log");
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        open(&log, 5).unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(mode(log.parent().unwrap()), 0o700);

        // An older log, world-readable as a shell's `>>` made it, is made private; a full one
        // moves to .1 and a fresh one is opened.
        fs::set_permissions(&log, Permissions::from_mode(0o644)).unwrap();
        open(&log, 5).unwrap();
        assert_eq!(mode(&log), 0o600);
        fs::write(&log, "full log").unwrap();
        use std::io::Write;
        writeln!(open(&log, 5).unwrap(), "next run").unwrap();
        assert_eq!(read(&numbered(&log, 1)).as_deref(), Some("full log"));
        assert_eq!(read(&log).as_deref(), Some("next run\n"));
        assert_eq!(mode(&log), 0o600);
    }
}
