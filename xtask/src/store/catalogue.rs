//! The backups in a directory: the complete files whose names parse as ours, newest first.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use chrono::NaiveDateTime;
use walkdir::WalkDir;

use crate::{
    output::human_bytes,
    store::backup_file::{
        self, BackupName, Compression, Kind, PARTIAL_SUFFIX, SHA256_SUFFIX, TAIL_LEN, VERIFIED_SUFFIX,
    },
};

#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub name: BackupName,
    pub size: u64,
}

impl Backup {
    pub fn sidecar(&self) -> PathBuf {
        beside(&self.path, SHA256_SUFFIX)
    }

    pub fn verified_marker(&self) -> PathBuf {
        beside(&self.path, VERIFIED_SUFFIX)
    }

    /// What `db-verify` recorded for this backup, if it passed.
    pub fn verified(&self) -> Option<String> {
        std::fs::read_to_string(self.verified_marker()).ok().map(|text| text.trim().to_owned())
    }
}

/// `PATH` + `suffix`: the files that travel with a backup.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut path = path.as_os_str().to_owned();
    path.push(suffix);
    path.into()
}

/// A backup named by a person: `latest`, a file name in `dir`, or a path taken from the
/// working directory.
pub fn resolve(dir: &Path, db: &str, wanted: &str) -> Result<PathBuf> {
    if wanted == "latest" {
        return list(dir, db)?
            .first()
            .map(|b| b.path.clone())
            .with_context(|| format!("there are no backups of `{db}` in {}", dir.display()));
    }
    let as_given = Path::new(wanted);
    if as_given.components().count() == 1 && dir.join(as_given).exists() {
        return Ok(dir.join(as_given));
    }
    Ok(std::env::current_dir()?.join(as_given))
}

/// `db`'s complete backups in `dir`, newest first. Symlinks and other databases' files are
/// not ours to list, nor to remove.
pub fn list(dir: &Path, db: &str) -> Result<Vec<Backup>> {
    let mut backups = Vec::new();
    for entry in entries(dir)? {
        let Some(name) = entry.file_name().to_str().and_then(BackupName::parse) else {
            continue;
        };
        // A restore's dumps of replaced databases are listed apart: never `latest`, never pruned.
        if name.db != db || name.kind != Kind::Backup || !entry.file_type().is_file() {
            continue;
        }
        let size = entry.metadata().with_context(|| format!("reading {}", entry.path().display()))?.len();
        backups.push(Backup { path: entry.into_path(), name, size });
    }
    backups.sort_by(|a, b| b.name.taken.cmp(&a.name.taken).then_with(|| b.path.cmp(&a.path)));
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
        let complete =
            [SHA256_SUFFIX, VERIFIED_SUFFIX].iter().find_map(|s| complete.strip_suffix(s)).unwrap_or(complete);
        if BackupName::parse(complete).is_some_and(|name| name.db == db) && entry.file_type().is_file() {
            found.push(entry.into_path());
        }
    }
    Ok(found)
}

/// A backup that passed the checks possible before anything is touched.
#[derive(Debug)]
pub struct Candidate {
    pub path: PathBuf,
    pub size: u64,
    pub compression: Compression,
    /// The sidecar's checksum, compared during the load, before anything is swapped.
    pub sha256: Option<String>,
}

/// Checks a backup before anything is touched, without reading it whole: a regular file,
/// a readable sidecar when there is one (the old shell script wrote none), and for plain
/// SQL the completion marker in its last bytes. The rest (checksum, the marker of a
/// compressed file's SQL, COPY row counts) is checked in the one pass that loads it.
pub fn precheck(path: &Path) -> Result<Candidate> {
    let meta = std::fs::metadata(path).with_context(|| format!("backup {} not found", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let compression = Compression::of_file_name(&path.file_name().unwrap_or_default().to_string_lossy());
    let sha256 = sidecar_sum(path)?;
    if compression == Compression::None {
        let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut tail = Vec::new();
        file.seek(SeekFrom::End(-(meta.len().min(TAIL_LEN as u64) as i64)))?;
        file.read_to_end(&mut tail)?;
        if !backup_file::ends_complete(&tail) {
            return Err(incomplete(path));
        }
    }
    Ok(Candidate { path: path.to_owned(), size: meta.len(), compression, sha256 })
}

/// The error for a file whose SQL does not end with pg_dump's completion marker.
pub fn incomplete(path: &Path) -> anyhow::Error {
    anyhow!(
        "{} is truncated or not a pg_dump file: its SQL does not end with `-- PostgreSQL database dump complete`",
        path.display()
    )
}

/// The error for a file that does not match its sidecar.
pub fn checksum_mismatch(path: &Path, actual: &str, expected: &str) -> anyhow::Error {
    anyhow!(
        "{} does not match its checksum (sha256 {actual}, sidecar says {expected}): the file is damaged",
        path.display()
    )
}

/// The checksum in `PATH.sha256`, if there is such a file.
pub fn sidecar_sum(path: &Path) -> Result<Option<String>> {
    let sidecar = beside(path, SHA256_SUFFIX);
    match std::fs::read_to_string(&sidecar) {
        Ok(text) => backup_file::parse_sidecar(&text)
            .map(|sum| Some(sum.to_owned()))
            .with_context(|| format!("{} is not a sha256sum line", sidecar.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", sidecar.display())),
    }
}

/// One line for a person choosing a backup: date, age, revision, size, file name.
pub fn describe(backup: &Backup, now: NaiveDateTime) -> String {
    let taken = backup.name.taken;
    format!(
        "{}  {:>12}  rev {:<12}  {:<4}  {:>10}  {}",
        taken.format("%Y-%m-%d %H:%M:%S"),
        age(now - taken),
        backup.name.revision.to_string(),
        backup.name.compression.name(),
        human_bytes(backup.size),
        backup.path.file_name().unwrap_or_default().to_string_lossy()
    )
}

fn age(age: chrono::TimeDelta) -> String {
    let minutes = age.num_minutes();
    match minutes {
        ..1 => "just now".to_owned(),
        1..60 => format!("{minutes} min ago"),
        60..2880 => format!("{} h ago", minutes / 60),
        _ => format!("{} days ago", minutes / 1440),
    }
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

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hindsight-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn precheck_refuses_what_it_can_without_reading_the_whole_file() {
        let dir = scratch_dir("check");
        let dump = "SET x;\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict k\n\n";
        let good = dir.join("good.sql");
        fs::write(&good, dump).unwrap();
        let checked = precheck(&good).unwrap();
        assert_eq!((checked.size, checked.sha256.as_deref()), (dump.len() as u64, None));

        let sum = "ab".repeat(32);
        fs::write(dir.join("good.sql.sha256"), backup_file::sidecar_line(&sum, "good.sql")).unwrap();
        assert_eq!(precheck(&good).unwrap().sha256.as_deref(), Some(sum.as_str()));
        fs::write(dir.join("good.sql.sha256"), "not a checksum").unwrap();
        assert!(format!("{:#}", precheck(&good).unwrap_err()).contains("not a sha256sum line"));

        // A compressed file's marker is only known at the end of its SQL: the load checks it.
        let packed = dir.join("cut.sql.zst");
        fs::write(&packed, b"not even zstd").unwrap();
        assert_eq!(precheck(&packed).unwrap().compression, Compression::Zstd);

        let truncated = dir.join("truncated.sql");
        fs::write(&truncated, &dump[..20]).unwrap();
        assert!(format!("{:#}", precheck(&truncated).unwrap_err()).contains("truncated"));
        assert!(precheck(&dir.join("missing.sql")).is_err());
        assert!(precheck(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ages_read_as_a_person_would() {
        use chrono::TimeDelta;
        assert_eq!(age(TimeDelta::seconds(30)), "just now");
        assert_eq!(age(TimeDelta::minutes(5)), "5 min ago");
        assert_eq!(age(TimeDelta::hours(3)), "3 h ago");
        assert_eq!(age(TimeDelta::days(9)), "9 days ago");
    }

    #[test]
    fn lists_only_complete_backups_newest_first() {
        let dir = scratch_dir("catalogue");
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

        let listed: Vec<String> = list(&dir, "hindsight_db").unwrap().iter().map(|b| b.name.file_name()).collect();
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
