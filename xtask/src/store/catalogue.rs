//! The backups in a directory: the files whose names parse as ours, newest first, each
//! classified as complete or not, so that only complete ones are ever counted.

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
        self, Backup, BackupName, Compression, Kind, PARTIAL_SUFFIX, SHA256_SUFFIX, TAIL_LEN, VERIFIED_SUFFIX, beside,
    },
    store::roles::ROLES_SUFFIX,
};

/// What `db-verify` recorded for `backup`, if it passed.
pub fn verified_record(backup: &Backup) -> Option<String> {
    std::fs::read_to_string(backup.verified_marker()).ok().map(|text| text.trim().to_owned())
}

/// When db-verify last passed `backup`, as its record says.
pub fn verified_at(backup: &Backup) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let record = verified_record(backup)?;
    let time = record.strip_prefix("verified ")?.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(time).ok()
}

/// How a person names a backup. Which kind a reference is depends on its spelling alone,
/// never on which files happen to exist, so the same words always mean the same thing:
/// `latest` and `latest~N` (any case), then 1 to 3 digits (a number), then 4 or more
/// digits with at most one `_` after the eighth (a time); anything else is a file name or
/// a path. A file called `7` or `2026` is named as `./7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The newest complete backup (0), or the Nth before it.
    Latest(usize),
    /// The number db-list shows and the picker offers: 1 is the newest complete backup.
    Number(usize),
    /// A prefix of the time in the name, `YYYYMMDD_HHMMSS`: at least the year. Four to six
    /// digits also match the time of day (`0710`, `071028`), as db-list shows it.
    Time(String),
    /// A file name in the backup directory, or a path from the working directory.
    File,
}

impl Reference {
    pub fn parse(text: &str) -> Reference {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let lower = text.to_ascii_lowercase();
        if lower == "latest" {
            return Reference::Latest(0);
        }
        if let Some(n) = lower.strip_prefix("latest~").filter(|n| digits(n))
            && let Ok(n) = n.parse()
        {
            return Reference::Latest(n);
        }
        // Three digits: a list longer than 999 is named by time; four are a year.
        if digits(text) && text.len() <= 3 {
            return Reference::Number(text.parse().expect("at most three digits"));
        }
        let time = match text.split_once('_') {
            None => digits(text) && (4..=8).contains(&text.len()),
            Some((date, clock)) => {
                date.len() == 8 && digits(date) && clock.len() <= 6 && clock.bytes().all(|b| b.is_ascii_digit())
            }
        };
        if time { Reference::Time(text.to_owned()) } else { Reference::File }
    }
}

/// A backup named by a person (see `Reference`): the backup it names in `dir`, or the path
/// it gives. A name that is none of these, or more than one, is an error naming the
/// candidates, the directory and db-list: a typo must never read as "nothing to do".
pub fn resolve(dir: &Path, db: &str, wanted: &str) -> Result<PathBuf> {
    let reference = Reference::parse(wanted);
    if reference == Reference::File {
        return resolve_file(dir, db, wanted);
    }
    let backups = list(dir, db)?;
    pick(&reference, wanted, &backups, dir, db).map(|backup| backup.path.clone())
}

/// Which of `backups` (`list`'s: complete, newest first, numbered from 1) `reference`
/// names; `wanted` is how the person spelled it.
pub fn pick<'a>(
    reference: &Reference,
    wanted: &str,
    backups: &'a [Backup],
    dir: &Path,
    db: &str,
) -> Result<&'a Backup> {
    let dir = dir.display();
    if backups.is_empty() {
        bail!(
            "there are no complete backups of `{db}` in {dir}, so no `{wanted}`: make one with `cargo xtask db-backup`"
        );
    }
    let count = backups.len();
    let newest = candidates(backups.iter().enumerate(), count);
    match reference {
        Reference::Latest(n) => backups.get(*n).with_context(|| {
            format!(
                "no backup `{wanted}`: there are only {count} complete backups of `{db}` in {dir} (latest~0 to \
                 latest~{}): {newest}; run `cargo xtask db-list` to see them",
                count - 1
            )
        }),
        Reference::Number(n) => n.checked_sub(1).and_then(|i| backups.get(i)).with_context(|| {
            format!(
                "no backup number {n}: the complete backups of `{db}` in {dir} are numbered 1 to {count}, newest \
                 first: {newest}; run `cargo xtask db-list` to see them"
            )
        }),
        Reference::Time(prefix) => {
            let matching: Vec<(usize, &Backup)> =
                backups.iter().enumerate().filter(|(_, b)| taken_at(&b.name.taken, prefix)).collect();
            match matching.as_slice() {
                [(_, one)] => Ok(one),
                [] => bail!(
                    "no complete backup of `{db}` in {dir} was taken at `{prefix}…` (YYYYMMDD_HHMMSS, or a time of \
                     day HHMMSS); the newest: {newest}; run `cargo xtask db-list` to see them all"
                ),
                several => bail!(
                    "`{wanted}` is ambiguous: {} complete backups of `{db}` in {dir} were taken at `{prefix}…` \
                     ({}); give more of the time, or the number `cargo xtask db-list` shows",
                    several.len(),
                    candidates(several.iter().copied(), several.len())
                ),
            }
        }
        Reference::File => bail!("`{wanted}` names a file, not one of the listed backups"),
    }
}

/// Whether a backup taken at `taken` matches a time reference: its `YYYYMMDD_HHMMSS` starts
/// with `prefix`, or, for four to six digits, its time of day does (`0710` is 07:10 on any
/// day). When both readings match different backups, the reference is ambiguous and says
/// so: it never guesses.
fn taken_at(taken: &NaiveDateTime, prefix: &str) -> bool {
    let stamp = taken.format(backup_file::TIME_FORMAT).to_string();
    let time_of_day = (4..=6).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_digit());
    stamp.starts_with(prefix) || (time_of_day && stamp[9..].starts_with(prefix))
}

/// A few of the backups, with their numbers, for an error line: `#1 NAME, #2 NAME, and 7 more`.
fn candidates<'a>(backups: impl Iterator<Item = (usize, &'a Backup)>, count: usize) -> String {
    const SHOWN: usize = 5;
    let mut text: Vec<String> =
        backups.take(SHOWN).map(|(i, b)| format!("#{} {}", i + 1, b.name.file_name())).collect();
    if count > SHOWN {
        text.push(format!("and {} more", count - SHOWN));
    }
    text.join(", ")
}

/// A file name in `dir`, or a path from the working directory, that exists.
fn resolve_file(dir: &Path, db: &str, wanted: &str) -> Result<PathBuf> {
    let as_given = Path::new(wanted);
    let in_dir = (as_given.components().count() == 1).then(|| crate::paths::normalise(&dir.join(as_given)));
    if let Some(in_dir) = in_dir.as_ref().filter(|p| p.exists()) {
        return Ok(in_dir.clone());
    }
    let from_cwd = crate::paths::absolute(as_given);
    if from_cwd.exists() {
        return Ok(from_cwd);
    }
    let tried = match &in_dir {
        Some(in_dir) => format!("neither {} nor {} exists", in_dir.display(), from_cwd.display()),
        None => format!(
            "{} does not exist (a path, so the backup directory {} was not searched)",
            from_cwd.display(),
            dir.display()
        ),
    };
    let newest = match list(dir, db) {
        Ok(backups) if !backups.is_empty() => {
            format!("; the newest in {}: {}", dir.display(), candidates(backups.iter().enumerate(), backups.len()))
        }
        _ => String::new(),
    };
    bail!("no backup `{wanted}`: {tried}{newest}; run `cargo xtask db-list` to see the backups in {}", dir.display())
}

/// The numbers db-list shows, the picker offers and `resolve` takes, over the files `scan`
/// returns: the complete backups counted from 1, newest first, `None` for the others. `list`
/// is exactly the numbered ones in this order, so a number means the same backup everywhere.
pub fn numbers(scanned: &[Backup]) -> Vec<Option<usize>> {
    let mut next = 0;
    scanned
        .iter()
        .map(|backup| {
            backup.complete.then(|| {
                next += 1;
                next
            })
        })
        .collect()
}

/// `db`'s complete backups in `dir`, newest first: the only ones retention, `latest`, the
/// picker and db-backup's free-space estimate may count.
pub fn list(dir: &Path, db: &str) -> Result<Vec<Backup>> {
    let scanned = scan(dir, db)?;
    let numbers = numbers(&scanned);
    Ok(scanned.into_iter().zip(numbers).filter_map(|(backup, number)| number.map(|_| backup)).collect())
}

/// Every file in `dir` named as one of `db`'s backups, complete or not, newest first.
/// Symlinks and other databases' files are not ours to list, nor to remove. Whether a
/// file is complete costs at most one read of its last `TAIL_LEN` bytes, never the file.
pub fn scan(dir: &Path, db: &str) -> Result<Vec<Backup>> {
    scan_kind(dir, db, Kind::Backup)
}

/// The dumps restores made of the databases they retired (`<db>_prerestore_...`), newest
/// first: listed apart, never `latest`, never counted or removed by retention.
pub fn prerestore_dumps(dir: &Path, db: &str) -> Result<Vec<Backup>> {
    scan_kind(dir, db, Kind::PreRestore)
}

fn scan_kind(dir: &Path, db: &str, kind: Kind) -> Result<Vec<Backup>> {
    let mut backups = Vec::new();
    for entry in entries(dir)? {
        let Some(name) = entry.file_name().to_str().and_then(BackupName::parse) else {
            continue;
        };
        if name.db != db || name.kind != kind || !entry.file_type().is_file() {
            continue;
        }
        let size = entry.metadata().with_context(|| format!("reading {}", entry.path().display()))?.len();
        let path = entry.into_path();
        let complete = is_complete(&path, name.compression, size)?;
        backups.push(Backup { path, name, size, complete });
    }
    backups.sort_by(|a, b| b.name.taken.cmp(&a.name.taken).then_with(|| b.path.cmp(&a.path)));
    Ok(backups)
}

/// See `Backup::complete`. A compressed file's marker is only known after decompressing
/// all of it, so without a sidecar it is not taken on trust.
fn is_complete(path: &Path, compression: Compression, size: u64) -> Result<bool> {
    if beside(path, SHA256_SUFFIX).is_file() {
        return Ok(true);
    }
    if compression != Compression::None || size == 0 {
        return Ok(false);
    }
    let tail = File::open(path).and_then(|mut file| read_tail(&mut file, size)).with_context(|| {
        format!(
            "cannot read the end of {} to tell whether it is a complete backup: fix its permissions, \
             or move it out of the backup directory",
            path.display()
        )
    })?;
    Ok(backup_file::ends_complete(&tail))
}

/// The last `TAIL_LEN` bytes of a file `size` bytes long: where pg_dump's marker is.
fn read_tail(file: &mut File, size: u64) -> std::io::Result<Vec<u8>> {
    let mut tail = Vec::with_capacity(TAIL_LEN);
    file.seek(SeekFrom::End(-(size.min(TAIL_LEN as u64) as i64)))?;
    file.take(TAIL_LEN as u64).read_to_end(&mut tail)?;
    Ok(tail)
}

/// Partial files a killed run left behind: a dump or a sidecar of `db` not yet renamed.
/// `verify_records`: the `.verified.partial` files, which db-verify writes under its own
/// lock; else every other partial file, which the tasks holding the directory's lock write.
pub fn partials(dir: &Path, db: &str, verify_records: bool) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in entries(dir)? {
        let Some(file_name) = entry.file_name().to_str() else {
            continue;
        };
        let Some(complete) = file_name.strip_suffix(PARTIAL_SUFFIX) else {
            continue;
        };
        let (complete, record) = match complete.strip_suffix(VERIFIED_SUFFIX) {
            Some(backup) => (backup, true),
            None => {
                let sidecar = [SHA256_SUFFIX, ROLES_SUFFIX].iter().find_map(|suffix| complete.strip_suffix(suffix));
                (sidecar.unwrap_or(complete), false)
            }
        };
        if record == verify_records
            && BackupName::parse(complete).is_some_and(|name| name.db == db)
            && entry.file_type().is_file()
        {
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
    /// The release of the pg_dump that wrote the file, from its header: a dump loads
    /// into the same or a newer major, never an older one. `None` when the header does
    /// not say (not a pg_dump file, or one the load will refuse for its own reasons).
    pub pg_dump: Option<PgDumpVersion>,
    /// Where its bytes come from.
    pub origin: Origin,
}

/// Where a candidate's bytes come from: its file, or its offsite copy, downloaded (and
/// decrypted) as it is read. `path` is then the copy's URL, without `.age`.
#[derive(Debug)]
pub enum Origin {
    Local,
    Offsite(Box<crate::offsite::remote::Fetch>),
}

impl Candidate {
    /// The stored bytes (compressed when the backup is), from the start: the file, or the
    /// offsite copy downloaded and decrypted on the way.
    pub fn open(&self, sh: &xshell::Shell) -> Result<Box<dyn Read + Send>> {
        match &self.origin {
            Origin::Local => {
                Ok(Box::new(File::open(&self.path).with_context(|| format!("cannot open {}", self.path.display()))?))
            }
            Origin::Offsite(fetch) => fetch.open(sh),
        }
    }

    /// Whether `size` is exactly the stored bytes' (a local file's): an offsite copy's is
    /// the object's, encrypted.
    pub fn exact_size(&self) -> bool {
        matches!(self.origin, Origin::Local)
    }
}

/// `-- Dumped by pg_dump version 17.12 (Debian ...)`: the release, as written, and its major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgDumpVersion {
    pub major: u32,
    pub release: String,
}

/// How much of the SQL's start is read for pg_dump's header: it is within the first
/// dozen lines, well inside this.
const HEAD_LEN: u64 = 4096;

/// The pg_dump release in the header of `head`, the first bytes of a dump's SQL.
pub fn pg_dump_version(head: &[u8]) -> Option<PgDumpVersion> {
    const PREFIX: &str = "-- Dumped by pg_dump version ";
    let text = String::from_utf8_lossy(head);
    let release = text.lines().find_map(|line| line.strip_prefix(PREFIX))?.split_whitespace().next()?;
    // "17.12", "9.6.24", "18beta1": the major is the leading number (9.6 is older than
    // any supported server either way).
    let digits = release.find(|c: char| !c.is_ascii_digit()).unwrap_or(release.len());
    let major = release[..digits].parse().ok()?;
    Some(PgDumpVersion { major, release: release.to_owned() })
}

/// The first `HEAD_LEN` bytes of the file's SQL, decompressed if need be. A file that
/// cannot be decoded yields what could be read: the load reports the real error.
fn read_head(path: &Path, compression: Compression) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(head_of(file, compression))
}

/// The first `HEAD_LEN` bytes of the SQL in `stored`, decompressed if need be.
pub fn head_of(stored: impl Read, compression: Compression) -> Vec<u8> {
    let mut head = Vec::new();
    if let Ok(decoder) = crate::stream::codec::decoder(compression, stored) {
        let _ = decoder.take(HEAD_LEN).read_to_end(&mut head);
    }
    head
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
        if !backup_file::ends_complete(&read_tail(&mut file, meta.len())?) {
            return Err(incomplete(path));
        }
    }
    let pg_dump = pg_dump_version(&read_head(path, compression)?);
    Ok(Candidate { path: path.to_owned(), size: meta.len(), compression, sha256, pg_dump, origin: Origin::Local })
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

/// The checksum of the backup at `path` in its `PATH.sha256`, if there is such a file.
pub fn sidecar_sum(path: &Path) -> Result<Option<String>> {
    sidecar_sum_of(path, path)
}

/// The checksum of `file` (the backup at `backup`, or a file beside it) in the backup's
/// `.sha256`, if there is one.
pub fn sidecar_sum_of(backup: &Path, file: &Path) -> Result<Option<String>> {
    let sidecar = beside(backup, SHA256_SUFFIX);
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    match std::fs::read_to_string(&sidecar) {
        // A file beside the backup needs a line of its own; the backup may be the only one.
        Ok(text) if file != backup => Ok(backup_file::parse_sidecar_named(&text, &name).map(str::to_owned)),
        Ok(text) => backup_file::parse_sidecar_for(&text, &name)
            .map(|sum| Some(sum.to_owned()))
            .with_context(|| format!("{} has no sha256sum line for {name}", sidecar.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", sidecar.display())),
    }
}

/// The columns a person reads a backup by, as db-list and the picker show them (see
/// `COLUMNS`): time taken, age, revision, format, size, file name.
pub fn columns(backup: &Backup, now: NaiveDateTime) -> Vec<String> {
    let taken = backup.name.taken;
    vec![
        taken.format("%Y-%m-%d %H:%M:%S").to_string(),
        age(now - taken),
        backup.name.revision.to_string(),
        backup.name.compression.name().to_owned(),
        human_bytes(backup.size),
        backup.path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
    ]
}

/// The headers of `columns`, and which of them are right-aligned (numbers read best so).
pub const COLUMNS: [(&str, bool); 6] =
    [("taken", false), ("age", true), ("revision", false), ("format", false), ("size", true), ("file", false)];

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
        assert!(format!("{:#}", precheck(&good).unwrap_err()).contains("has no sha256sum line for good.sql"));

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
    fn precheck_reads_the_pg_dump_release_from_the_header_plain_or_compressed() {
        let dir = scratch_dir("header");
        let dump = "--\n-- PostgreSQL database dump\n--\n\n\\restrict k\n\n\
                    -- Dumped from database version 17.12 (Debian 17.12-1.pgdg13+1)\n\
                    -- Dumped by pg_dump version 17.12 (Debian 17.12-1.pgdg13+1)\n\nSET x;\n\
                    --\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict k\n";
        let plain = dir.join("plain.sql");
        fs::write(&plain, dump).unwrap();
        let expected = Some(PgDumpVersion { major: 17, release: "17.12".to_owned() });
        assert_eq!(precheck(&plain).unwrap().pg_dump, expected);

        let packed = dir.join("packed.sql.zst");
        fs::write(&packed, zstd::encode_all(dump.as_bytes(), 3).unwrap()).unwrap();
        assert_eq!(precheck(&packed).unwrap().pg_dump, expected);
        // Undecodable: no release, and the load says what is wrong with the file.
        let garbage = dir.join("garbage.sql.gz");
        fs::write(&garbage, b"not gzip").unwrap();
        assert_eq!(precheck(&garbage).unwrap().pg_dump, None);

        assert_eq!(pg_dump_version(b"-- Dumped by pg_dump version 9.6.24\n").unwrap().major, 9);
        assert_eq!(pg_dump_version(b"-- Dumped by pg_dump version 18beta1\n").unwrap().major, 18);
        assert_eq!(pg_dump_version(b"SET x;\n"), None);
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
            fs::write(dir.join(file), format!("{file}\n{DUMP_END}")).unwrap();
        }
        fs::create_dir(dir.join("hindsight_db_backup_20261128_090000_unknown.sql")).unwrap();

        let listed: Vec<String> = list(&dir, "hindsight_db").unwrap().iter().map(|b| b.name.file_name()).collect();
        assert_eq!(listed, [files[1], files[0]]);
        let backups = list(&dir, "hindsight_db").unwrap();
        assert_eq!(backups[0].size, (files[1].len() + 1 + DUMP_END.len()) as u64);
        assert_eq!(backups[0].sidecar(), dir.join(files[2]));

        let mut stale: Vec<PathBuf> = partials(&dir, "hindsight_db", false).unwrap();
        stale.sort();
        assert_eq!(stale, [dir.join(files[3]), dir.join(files[4])]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The end of a real pg_dump: what makes a plain file without a sidecar complete.
    const DUMP_END: &str = "--\n-- PostgreSQL database dump complete\n--\n\n";

    #[test]
    fn only_files_with_a_sidecar_or_a_marked_plain_end_are_complete() {
        let dir = scratch_dir("classify");
        let name = |stamp: &str, ending: &str| format!("hindsight_db_backup_{stamp}_unknown{ending}");
        // Oldest to newest: the broken ones are the newest, as a killed run leaves them.
        let with_sidecar = name("20261120_090000", ".sql.zst");
        let old_script = name("20261121_090000", ".sql");
        let plain_with_sidecar = name("20261122_090000", ".sql");
        let truncated = name("20261123_090000", ".sql");
        let compressed_bare = name("20261124_090000", ".sql.gz");
        let empty = name("20261125_090000", ".sql");
        // A sidecar vouches for the file: its bytes are not read here (check() hashes them).
        fs::write(dir.join(&with_sidecar), "zstd bytes").unwrap();
        fs::write(dir.join(format!("{with_sidecar}.sha256")), "x").unwrap();
        // The marker beyond the first TAIL_LEN bytes: only the end is read.
        let long_dump = format!("{}\n{DUMP_END}", "COPY t FROM stdin;\n".repeat(1000));
        fs::write(dir.join(&old_script), &long_dump).unwrap();
        fs::write(dir.join(&plain_with_sidecar), "cut sho").unwrap();
        fs::write(dir.join(format!("{plain_with_sidecar}.sha256")), "x").unwrap();
        fs::write(dir.join(&truncated), &long_dump[..long_dump.len() - 20]).unwrap();
        // Compressed: its marker would need the whole file decompressed; no sidecar, no trust.
        let mut encoder = crate::stream::codec::Encoder::new(Compression::Gzip, Vec::new()).unwrap();
        std::io::Write::write_all(&mut encoder, long_dump.as_bytes()).unwrap();
        fs::write(dir.join(&compressed_bare), encoder.finish().unwrap()).unwrap();
        fs::write(dir.join(&empty), "").unwrap();

        let scanned: Vec<(String, bool, Option<&str>)> = scan(&dir, "hindsight_db")
            .unwrap()
            .iter()
            .map(|b| (b.name.file_name(), b.complete, b.why_incomplete()))
            .collect();
        assert_eq!(
            scanned,
            [
                (empty.clone(), false, Some("empty")),
                (compressed_bare.clone(), false, Some("compressed, without its .sha256")),
                (truncated.clone(), false, Some("no .sha256 and no completion marker at its end")),
                (plain_with_sidecar.clone(), true, None),
                (old_script.clone(), true, None),
                (with_sidecar.clone(), true, None),
            ]
        );
        let listed: Vec<String> = list(&dir, "hindsight_db").unwrap().iter().map(|b| b.name.file_name()).collect();
        assert_eq!(listed, [plain_with_sidecar.clone(), old_script, with_sidecar]);
        assert_eq!(
            resolve(&dir, "hindsight_db", "latest").unwrap(),
            dir.join(&plain_with_sidecar),
            "never a broken one"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_name_that_is_nowhere_is_an_error_naming_where_it_looked() {
        let dir = scratch_dir("resolve");
        let file = "hindsight_db_backup_20261120_090000_unknown.sql";
        fs::write(dir.join(file), DUMP_END).unwrap();
        assert_eq!(resolve(&dir, "hindsight_db", file).unwrap(), dir.join(file));
        let by_path = dir.join(file).display().to_string();
        assert_eq!(resolve(&dir, "hindsight_db", &by_path).unwrap(), dir.join(file));

        let err = format!("{:#}", resolve(&dir, "hindsight_db", "nope.sql").unwrap_err());
        let cwd = std::env::current_dir().unwrap();
        assert!(err.contains(&dir.join("nope.sql").display().to_string()), "{err}");
        assert!(err.contains(&cwd.join("nope.sql").display().to_string()), "{err}");
        assert!(err.contains("cargo xtask db-list"), "{err}");
        let err = format!("{:#}", resolve(&dir, "hindsight_db", "sub/nope.sql").unwrap_err());
        assert!(err.contains(&dir.display().to_string()) && err.contains("cargo xtask db-list"), "{err}");

        let empty = scratch_dir("resolve-empty");
        let err = format!("{:#}", resolve(&empty, "hindsight_db", "latest").unwrap_err());
        assert!(err.contains("no complete backups"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn references_are_told_apart_by_their_spelling() {
        use Reference::*;
        for (text, expected) in [
            ("latest", Latest(0)),
            ("LATEST", Latest(0)),
            ("Latest~0", Latest(0)),
            ("latest~2", Latest(2)),
            ("1", Number(1)),
            ("42", Number(42)),
            ("999", Number(999)),
            ("0", Number(0)),
            ("2026", Time("2026".to_owned())),
            ("071028", Time("071028".to_owned())),
            ("20261125_0710", Time("20261125_0710".to_owned())),
            ("20261125_", Time("20261125_".to_owned())),
            ("20261125_071028", Time("20261125_071028".to_owned())),
            ("latest~", File),
            ("latest~x", File),
            ("latest~-1", File),
            ("latest~+1", File),
            ("+1", File),
            ("123456789", File),
            ("2026112_07", File),
            ("20261125_0710281", File),
            ("./7", File),
            ("hindsight_db_backup_20261124_114600_3f2a9c1b7d4e.sql", File),
            ("/srv/b.sql", File),
        ] {
            assert_eq!(Reference::parse(text), expected, "{text}");
        }
    }

    fn backup(stamp: &str, complete: bool) -> Backup {
        let file = format!("hindsight_db_backup_{stamp}_unknown.sql");
        let name = BackupName::parse(&file).expect("a backup's name");
        Backup { path: PathBuf::from("/b").join(&file), name, size: 1, complete }
    }

    #[test]
    fn a_reference_names_one_backup_or_fails_with_the_candidates() {
        let dir = Path::new("/b");
        let backups: Vec<Backup> = ["20261125_080000", "20261125_071512", "20261125_071028", "20261124_114600"]
            .iter()
            .map(|stamp| backup(stamp, true))
            .collect();
        let pick_file =
            |text: &str| pick(&Reference::parse(text), text, &backups, dir, "hindsight_db").map(|b| b.name.file_name());
        let file = |stamp: &str| format!("hindsight_db_backup_{stamp}_unknown.sql");
        assert_eq!(pick_file("latest").unwrap(), file("20261125_080000"));
        assert_eq!(pick_file("LATEST").unwrap(), file("20261125_080000"));
        assert_eq!(pick_file("latest~1").unwrap(), file("20261125_071512"));
        assert_eq!(pick_file("latest~3").unwrap(), file("20261124_114600"));
        assert_eq!(pick_file("1").unwrap(), file("20261125_080000"));
        assert_eq!(pick_file("3").unwrap(), file("20261125_071028"));
        assert_eq!(pick_file("20261125_0710").unwrap(), file("20261125_071028"));
        assert_eq!(pick_file("20261124").unwrap(), file("20261124_114600"));
        assert_eq!(pick_file("071028").unwrap(), file("20261125_071028"), "the time of day, as db-list shows it");
        assert_eq!(pick_file("1146").unwrap(), file("20261124_114600"));

        let err = |text: &str| format!("{:#}", pick_file(text).unwrap_err());
        let ambiguous = err("20261125_07");
        assert!(ambiguous.contains("ambiguous") && ambiguous.contains("/b"), "{ambiguous}");
        assert!(ambiguous.contains(&format!("#2 {}", file("20261125_071512"))), "{ambiguous}");
        assert!(ambiguous.contains(&format!("#3 {}", file("20261125_071028"))), "{ambiguous}");
        assert!(!ambiguous.contains(&file("20261125_080000")), "only the matching ones: {ambiguous}");
        assert!(ambiguous.contains("cargo xtask db-list"), "{ambiguous}");
        assert_eq!(pick_file("0710").unwrap(), file("20261125_071028"), "07:10, not 07:15");
        assert!(err("2026").contains("4 complete backups"), "a year: every one, so ambiguous");
        for missing in ["5", "0", "latest~4", "2027", "20261125_09", "0930"] {
            let text = err(missing);
            assert!(text.contains(&format!("#1 {}", file("20261125_080000"))), "the newest, for {missing}: {text}");
            assert!(text.contains("/b") && text.contains("cargo xtask db-list"), "{text}");
        }
        let none = pick(&Reference::Latest(0), "latest", &[], dir, "hindsight_db").unwrap_err();
        assert!(format!("{none:#}").contains("no complete backups"), "{none:#}");
    }

    #[test]
    fn numbers_count_the_complete_backups_as_list_returns_them() {
        let dir = scratch_dir("numbers");
        let stamps = ["20261125_090000", "20261125_080000", "20261125_070000", "20261125_060000"];
        for (i, stamp) in stamps.iter().enumerate() {
            // The second newest is empty: incomplete, so it has no number.
            let body = if i == 1 { String::new() } else { DUMP_END.to_owned() };
            fs::write(dir.join(format!("hindsight_db_backup_{stamp}_unknown.sql")), body).unwrap();
        }
        let scanned = scan(&dir, "hindsight_db").unwrap();
        assert_eq!(numbers(&scanned), [Some(1), None, Some(2), Some(3)]);
        let listed = list(&dir, "hindsight_db").unwrap();
        for (backup, number) in scanned.iter().zip(numbers(&scanned)) {
            if let Some(n) = number {
                assert_eq!(listed[n - 1].path, backup.path, "number {n} is the same backup in list and scan");
            }
        }
        assert_eq!(resolve(&dir, "hindsight_db", "2").unwrap(), listed[1].path);
        fs::remove_dir_all(&dir).unwrap();
    }
}
