//! Backup files as names and bytes: `<db>_backup_YYYYMMDD_HHMMSS_<rev>.sql[.gz|.zst]`, the
//! Alembic revision in them, the `sha256sum` sidecar, and pg_dump's completion marker.

use std::fmt;

use chrono::NaiveDateTime;

pub const PARTIAL_SUFFIX: &str = ".partial";
pub const SHA256_SUFFIX: &str = ".sha256";
/// Beside a backup that `db-verify` restored successfully: when, and what it found.
pub const VERIFIED_SUFFIX: &str = ".verified";
/// Timestamps in file and database names: `YYYYMMDD_HHMMSS`.
pub const TIME_FORMAT: &str = "%Y%m%d_%H%M%S";

/// How a dump is stored: plain SQL, or compressed on the host while it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".sql",
            Compression::Gzip => ".sql.gz",
            Compression::Zstd => ".sql.zst",
        }
    }

    /// By the file name's ending, whoever named it; anything else is plain SQL.
    pub fn of_file_name(file_name: &str) -> Compression {
        if file_name.ends_with(".gz") {
            Compression::Gzip
        } else if file_name.ends_with(".zst") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// An Alembic revision id as it goes into a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// Twelve lowercase hex digits, as `alembic revision` generates.
    Known(String),
    Unknown,
}

impl Revision {
    pub fn parse(text: &str) -> Option<Revision> {
        match text {
            "unknown" => Some(Revision::Unknown),
            _ if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
                Some(Revision::Known(text.to_owned()))
            }
            _ => None,
        }
    }

    /// The revision from `SELECT version_num FROM alembic_version` output (one row a line),
    /// `None` when the table does not exist. `Err` says why it is unknown.
    pub fn from_rows(rows: Option<&str>) -> Result<Revision, String> {
        let rows: Vec<&str> =
            rows.ok_or("no alembic_version table")?.lines().map(str::trim).filter(|r| !r.is_empty()).collect();
        match rows.as_slice() {
            [] => Err("alembic_version has no row".to_owned()),
            [one] => match Revision::parse(one) {
                Some(Revision::Known(id)) => Ok(Revision::Known(id)),
                _ => Err(format!("`{one}` is not a 12-hex revision id")),
            },
            several => Err(format!("alembic_version has {} rows (branches?)", several.len())),
        }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revision::Known(id) => f.write_str(id),
            Revision::Unknown => f.write_str("unknown"),
        }
    }
}

/// What a backup's file name says: whose, when (local time), at which revision, how stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    pub db: String,
    pub taken: NaiveDateTime,
    pub revision: Revision,
    pub compression: Compression,
}

impl BackupName {
    pub fn file_name(&self) -> String {
        let (db, taken, revision) = (&self.db, self.taken.format(TIME_FORMAT), &self.revision);
        format!("{db}_backup_{taken}_{revision}{}", self.compression.extension())
    }

    /// The name of the backup at `path`, if its file name is one.
    pub fn of_path(path: &std::path::Path) -> Option<BackupName> {
        BackupName::parse(path.file_name()?.to_str()?)
    }

    /// Parses a complete backup's file name; anything else (a `.partial`, a sidecar, a
    /// stranger's file) is `None`.
    pub fn parse(file_name: &str) -> Option<BackupName> {
        let compression = Compression::of_file_name(file_name);
        let stem = file_name.strip_suffix(compression.extension())?;
        // The revision and the timestamp hold no `_`, the database name may.
        let mut parts = stem.rsplitn(4, '_');
        let (revision, time, date, prefix) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let db = prefix.strip_suffix("_backup").filter(|db| !db.is_empty())?;
        if date.len() != 8 || time.len() != 6 {
            return None;
        }
        let taken = NaiveDateTime::parse_from_str(&format!("{date}_{time}"), TIME_FORMAT).ok()?;
        Some(BackupName { db: db.to_owned(), taken, revision: Revision::parse(revision)?, compression })
    }
}

/// A digest as lowercase hex, as `sha256sum` prints it.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The checksum in a sidecar's text (`HEX  NAME`), if it is one.
pub fn parse_sidecar(text: &str) -> Option<&str> {
    let sum = text.split_whitespace().next()?;
    (sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sum)
}

/// The sidecar's one line, in the format `sha256sum -c` reads.
pub fn sidecar_line(sha256_hex: &str, file_name: &str) -> String {
    format!("{sha256_hex}  {file_name}\n")
}

const MARKER: &[u8] = b"-- PostgreSQL database dump complete";

/// How much of a dump's end to keep for the marker check: the marker and what may follow it.
pub const TAIL_LEN: usize = 4096;

/// Whether a plain dump ends with pg_dump's completion marker line, followed by nothing
/// but blank lines, `--` comments, and current releases' `\unrestrict <key>` line.
pub fn ends_complete(tail: &[u8]) -> bool {
    let Some(at) = tail.windows(MARKER.len()).rposition(|window| window == MARKER) else {
        return false;
    };
    let starts_line = at == 0 || tail[at - 1] == b'\n';
    let after = &tail[at + MARKER.len()..];
    let Some(rest) = after.strip_prefix(b"\n") else {
        return false;
    };
    starts_line
        && after.ends_with(b"\n")
        && rest
            .split(|&b| b == b'\n')
            .all(|line| line.is_empty() || line.starts_with(b"--") || line.starts_with(b"\\unrestrict "))
}

/// Rows per table in a plain dump's `COPY ... FROM stdin;` blocks, counted as the dump
/// streams past (COPY's text format escapes newlines, so a row is a line). Only a line's
/// first bytes are kept: a multi-megabyte value costs nothing.
#[derive(Default)]
pub struct CopyRows {
    line: Vec<u8>,
    current: Option<(String, u64)>,
    tables: Vec<(String, u64)>,
}

impl CopyRows {
    /// Longer COPY header lines (thousands of columns) are not recognised.
    const KEEP: usize = 64 * 1024;

    pub fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..end]);
            self.end_line();
            bytes = &bytes[end + 1..];
        }
        self.keep(bytes);
    }

    /// Tables with their row counts, in dump order.
    pub fn tables(&self) -> &[(String, u64)] {
        &self.tables
    }

    fn keep(&mut self, part: &[u8]) {
        let room = Self::KEEP.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        match &mut self.current {
            Some(_) if line == b"\\." => self.tables.extend(self.current.take()),
            Some((_, rows)) => *rows += 1,
            None => {
                let header =
                    std::str::from_utf8(&line).ok().and_then(|l| l.strip_prefix("COPY ")?.strip_suffix(" FROM stdin;"));
                if let Some(header) = header {
                    let table = header.split_once(" (").map_or(header, |(table, _)| table);
                    self.current = Some((table.to_owned(), 0));
                }
            }
        }
        self.line = line;
        self.line.clear();
    }
}

/// The last `TAIL_LEN` bytes of a stream, kept while it passes so the marker check needs
/// no second read.
#[derive(Default)]
pub struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= TAIL_LEN {
            self.bytes.clear();
            self.bytes.extend_from_slice(&chunk[chunk.len() - TAIL_LEN..]);
        } else {
            let overflow = (self.bytes.len() + chunk.len()).saturating_sub(TAIL_LEN);
            self.bytes.drain(..overflow);
            self.bytes.extend_from_slice(chunk);
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn name(db: &str, rev: Revision) -> BackupName {
        let taken = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap().and_hms_opt(9, 5, 7).unwrap();
        BackupName { db: db.to_owned(), taken, revision: rev, compression: Compression::None }
    }

    #[test]
    fn names_round_trip() {
        let known = name("hindsight_db", Revision::Known("1a2b3c4d5e6f".into()));
        assert_eq!(known.file_name(), "hindsight_db_backup_20261124_090507_1a2b3c4d5e6f.sql");
        assert_eq!(BackupName::parse(&known.file_name()), Some(known));
        let unknown = name("other-db", Revision::Unknown);
        assert_eq!(unknown.file_name(), "other-db_backup_20261124_090507_unknown.sql");
        assert_eq!(BackupName::parse(&unknown.file_name()), Some(unknown.clone()));
        for (compression, ending) in [(Compression::Gzip, ".sql.gz"), (Compression::Zstd, ".sql.zst")] {
            let compressed = BackupName { compression, ..unknown.clone() };
            assert!(compressed.file_name().ends_with(&format!("_unknown{ending}")));
            assert_eq!(BackupName::parse(&compressed.file_name()), Some(compressed));
        }
    }

    #[test]
    fn other_files_are_not_backups() {
        for file in [
            "hindsight_db_backup_20261124_090507_unknown.sql.partial",
            "hindsight_db_backup_20261124_090507_unknown.sql.sha256",
            "hindsight_db_backup_20261124_090507_xyz.sql",
            "hindsight_db_backup_20261324_090507_unknown.sql",
            "hindsight_db_backup_2026112_090507_unknown.sql",
            "_backup_20261124_090507_unknown.sql",
            "notes.sql",
            "hindsight_db_20261124_090507_unknown.sql",
            "hindsight_db_backup_20261124_090507_unknown.gz",
            "hindsight_db_backup_20261124_090507_unknown.sql.gz.partial",
            "hindsight_db_backup_20261124_090507_unknown.sql.zst.sha256",
        ] {
            assert_eq!(BackupName::parse(file), None, "{file}");
        }
    }

    #[test]
    fn revision_from_alembic_version_rows() {
        assert_eq!(Revision::from_rows(Some("1a2b3c4d5e6f\n")), Ok(Revision::Known("1a2b3c4d5e6f".into())));
        assert!(Revision::from_rows(None).unwrap_err().contains("no alembic_version table"));
        assert!(Revision::from_rows(Some("\n")).unwrap_err().contains("no row"));
        assert!(Revision::from_rows(Some("1a2b3c4d5e6f\nabcdefabcdef\n")).unwrap_err().contains("2 rows"));
        assert!(Revision::from_rows(Some("0001_initial\n")).unwrap_err().contains("not a 12-hex"));
        assert!(Revision::from_rows(Some("1A2B3C4D5E6F\n")).is_err());
        assert!(Revision::from_rows(Some("unknown\n")).is_err());
    }

    #[test]
    fn sidecars_round_trip() {
        let sum = hex(&[0xab; 32]);
        let line = sidecar_line(&sum, "x.sql");
        assert_eq!(line, format!("{sum}  x.sql\n"));
        assert_eq!(parse_sidecar(&line), Some(sum.as_str()));
        assert_eq!(parse_sidecar("abc  x.sql"), None);
        assert_eq!(parse_sidecar(""), None);
    }

    #[test]
    fn completion_marker_with_and_without_unrestrict() {
        let old = b"COPY t FROM stdin;\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
        let new = b"SET x;\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abcDEF123\n\n";
        assert!(ends_complete(old));
        assert!(ends_complete(new));
    }

    #[test]
    fn truncated_or_trailing_data_is_incomplete() {
        assert!(!ends_complete(b""));
        assert!(!ends_complete(b"COPY t FROM stdin;\n1\tabc\n"));
        assert!(!ends_complete(b"--\n-- PostgreSQL database dump compl"));
        assert!(!ends_complete(b"--\n-- PostgreSQL database dump complete"));
        assert!(!ends_complete(b"-- PostgreSQL database dump complete\n--\n\nCREATE TABLE late();\n"));
        assert!(!ends_complete(b"x-- PostgreSQL database dump complete\n"));
    }

    #[test]
    fn copy_rows_are_counted_across_chunk_boundaries() {
        let dump = "SET x;\nCOPY public.memories (id, body) FROM stdin;\n1\tone\n2\ttwo\\nlines\n3\t\\N\n\\.\n\
                    COPY public.\"Empty Table\" (id) FROM stdin;\n\\.\n\
                    COPY public.big (v) FROM stdin;\n"
            .to_owned()
            + &"x".repeat(200_000)
            + "\n\\.\n-- COPY public.fake (x) FROM stdin;\n";
        for chunk_size in [1, 7, 4096, dump.len()] {
            let mut rows = CopyRows::default();
            for chunk in dump.as_bytes().chunks(chunk_size) {
                rows.push(chunk);
            }
            let expected = [
                ("public.memories".to_owned(), 3),
                ("public.\"Empty Table\"".to_owned(), 0),
                ("public.big".to_owned(), 1),
            ];
            assert_eq!(rows.tables(), expected, "chunks of {chunk_size}");
        }
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(777) {
            tail.push(chunk);
        }
        assert_eq!(tail.bytes(), &data[data.len() - TAIL_LEN..]);
        tail.push(&data);
        assert_eq!(tail.bytes(), &data[data.len() - TAIL_LEN..]);
    }
}
