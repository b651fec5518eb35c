//! The backups in a directory: the complete files whose names parse as ours, newest first.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use walkdir::WalkDir;

use crate::backup_file::{BackupName, PARTIAL_SUFFIX, SHA256_SUFFIX};

#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub name: BackupName,
    pub size: u64,
}

impl Backup {
    pub fn sidecar(&self) -> PathBuf {
        let mut path = self.path.clone().into_os_string();
        path.push(SHA256_SUFFIX);
        path.into()
    }
}

/// `db`'s complete backups in `dir`, newest first. Symlinks and other databases' files are
/// not ours to list, nor to remove.
pub fn list(dir: &Path, db: &str) -> Result<Vec<Backup>> {
    let mut backups = Vec::new();
    for entry in entries(dir)? {
        let Some(name) = entry.file_name().to_str().and_then(BackupName::parse) else {
            continue;
        };
        if name.db != db || !entry.file_type().is_file() {
            continue;
        }
        let size = entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?
            .len();
        backups.push(Backup {
            path: entry.into_path(),
            name,
            size,
        });
    }
    backups.sort_by(|a, b| {
        b.name
            .taken
            .cmp(&a.name.taken)
            .then_with(|| b.path.cmp(&a.path))
    });
    Ok(backups)
}

/// Partial files a killed run left behind: a dump or a sidecar of `db` not yet renamed.
pub fn partials(dir: &Path, db: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in entries(dir)? {
        let Some(file_name) = entry.file_name().to_str() else {
            continue;
        };
        let Some(complete) = file_name.strip_suffix(PARTIAL_SUFFIX) else {
            continue;
        };
        let complete = complete.strip_suffix(SHA256_SUFFIX).unwrap_or(complete);
        if BackupName::parse(complete).is_some_and(|name| name.db == db)
            && entry.file_type().is_file()
        {
            found.push(entry.into_path());
        }
    }
    Ok(found)
}

fn entries(dir: &Path) -> Result<Vec<walkdir::DirEntry>> {
    WalkDir::new(dir)
        .min_depth(1)
        .max_depth(1)
        .into_iter()
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing backup directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn lists_only_complete_backups_newest_first() {
        let dir = std::env::temp_dir().join(format!("hindsight-catalogue-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let files = [
            "hindsight_db_backup_20261124_100000_unknown.sql",
            "hindsight_db_backup_20261125_090000_1a2b3c4d5e6f.sql",
            "hindsight_db_backup_20261125_090000_1a2b3c4d5e6f.sql.sha256",
            "hindsight_db_backup_20261126_090000_unknown.sql.partial",
            "hindsight_db_backup_20261126_090000_unknown.sql.sha256.partial",
            "other_backup_20261127_090000_unknown.sql",
            "other_backup_20261127_090000_unknown.sql.partial",
            "README.txt",
        ];
        for file in files {
            fs::write(dir.join(file), file).unwrap();
        }
        fs::create_dir(dir.join("hindsight_db_backup_20261128_090000_unknown.sql")).unwrap();

        let listed: Vec<String> = list(&dir, "hindsight_db")
            .unwrap()
            .iter()
            .map(|b| b.name.file_name())
            .collect();
        assert_eq!(listed, [files[1], files[0]]);
        let backups = list(&dir, "hindsight_db").unwrap();
        assert_eq!(backups[0].size, files[1].len() as u64);
        assert_eq!(backups[0].sidecar(), dir.join(files[2]));

        let mut stale: Vec<PathBuf> = partials(&dir, "hindsight_db").unwrap();
        stale.sort();
        assert_eq!(stale, [dir.join(files[3]), dir.join(files[4])]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
