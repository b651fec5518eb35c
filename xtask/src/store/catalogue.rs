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

/// A backup named by a person: `latest` (the newest complete one), a file name in `dir`,
/// or a path taken from the working directory. A name that is none of these is an error:
/// a typo must never read as "nothing to do".
pub fn resolve(dir: &Path, db: &str, wanted: &str) -> Result<PathBuf> {
    if wanted == "latest" {
        return list(dir, db)?
            .first()
            .map(|b| b.path.clone())
            .with_context(|| format!("there are no complete backups of `{db}` in {}", dir.display()));
    }
    let as_given = Path::new(wanted);
    let in_dir = (as_given.components().count() == 1).then(|| dir.join(as_given));
    if let Some(in_dir) = in_dir.as_ref().filter(|p| p.exists()) {
        return Ok(in_dir.clone());
    }
    let from_cwd = std::env::current_dir().context("cannot read the working directory")?.join(as_given);
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
    bail!("no backup `{wanted}`: {tried}; run `cargo xtask db-list` to see the backups in {}", dir.display())
}

/// `db`'s complete backups in `dir`, newest first: the only ones retention, `latest`, the
/// picker and db-backup's free-space estimate may count.
pub fn list(dir: &Path, db: &str) -> Result<Vec<Backup>> {
    Ok(scan(dir, db)?.into_iter().filter(|b| b.complete).collect())
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
    let mut head = Vec::new();
    if let Ok(decoder) = crate::stream::codec::decoder(compression, file) {
        let _ = decoder.take(HEAD_LEN).read_to_end(&mut head);
    }
    Ok(head)
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
    Ok(Candidate { path: path.to_owned(), size: meta.len(), compression, sha256, pg_dump })
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
}
