//! db-backup's own log (`--log-file`): rotated by size before a run, then this process's
//! stdout and stderr, and so every program it starts, append to it.

use std::path::Path;

use anyhow::Result;

/// Rotates `path` when it is `max_bytes` or more (0: never), then points stdout and stderr at it.
pub fn redirect(_path: &Path, _max_bytes: u64) -> Result<()> {
    anyhow::bail!("not yet")
}
