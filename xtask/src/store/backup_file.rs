//! Backup files as names and bytes: `<db>_backup_YYYYMMDD_HHMMSS_<rev>.sql[.gz|.zst]`, the
//! Alembic revision in them (its ids as they are, `+`-joined while heads are unmerged), the
//! `sha256sum` sidecar, and pg_dump's completion marker.

use std::{
    fmt,
    path::{Path, PathBuf},
};

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

/// The longest revision id that goes into a file name as it is.
pub const MAX_ID_LEN: usize = 64;

/// The longest revision part of a file name. With the longest database name (34 bytes),
/// `_prerestore_`, the timestamp and the longest endings (`.sql.zst.verified.partial`) a
/// name stays under the 255 bytes file systems allow; two 64-byte heads fit.
pub const MAX_PART_LEN: usize = 160;

/// The Alembic revision a dump was taken at, as it goes into its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// The ids `alembic_version` holds: one, or several while branches are unmerged
    /// (each head is a row). Sorted, distinct, never empty; `+` joins them in a name.
    Known(Vec<String>),
    Unknown,
}

impl Revision {
    /// A file name's revision part: `unknown`, an id, or ids joined with `+` in any
    /// order. `None` when it is none of those (the file is not one of ours).
    pub fn parse(text: &str) -> Option<Revision> {
        match text {
            "unknown" => Some(Revision::Unknown),
            _ => Revision::of_ids(text.split('+')).ok(),
        }
    }

    /// The revision from `SELECT version_num FROM alembic_version` output (one row a line),
    /// `None` when the table does not exist. `Err` says why it is unknown.
    pub fn from_rows(rows: Option<&str>) -> Result<Revision, String> {
        let rows: Vec<&str> =
            rows.ok_or("no alembic_version table")?.lines().map(str::trim).filter(|r| !r.is_empty()).collect();
        if rows.is_empty() {
            return Err("alembic_version has no row".to_owned());
        }
        Revision::of_ids(rows)
    }

    /// Checks every id and sorts them, so the same heads always make the same name.
    fn of_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Result<Revision, String> {
        let mut ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        if let Some(bad) = ids.iter().find(|id| !is_id(id)) {
            return Err(format!(
                "`{bad}` is not a revision id a file can be named by (1 to {MAX_ID_LEN} ASCII letters, digits, `_` \
                 or `-`, not starting with `-`, not `unknown`)"
            ));
        }
        ids.sort();
        let count = ids.len();
        ids.dedup();
        if ids.len() != count {
            return Err(format!("the same revision id appears twice in `{}`", ids.join("+")));
        }
        let part = ids.join("+");
        if part.len() > MAX_PART_LEN {
            return Err(format!("{} heads make `{part}`, longer than {MAX_PART_LEN} bytes", ids.len()));
        }
        Ok(Revision::Known(ids))
    }

    /// The ids, sorted; none when unknown.
    pub fn ids(&self) -> &[String] {
        match self {
            Revision::Known(ids) => ids,
            Revision::Unknown => &[],
        }
    }
}

/// `[A-Za-z0-9_-]`, as Alembic projects name revisions (`1a2b3c4d5e6f`, `2026050201`,
/// `20240915_merge_heads`). A leading `-` is refused: `alembic upgrade` would read it as an
/// option. `unknown` is the name of no revision, and `+` joins heads, so neither can be one.
fn is_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && !id.starts_with('-')
        && id != "unknown"
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revision::Known(ids) => f.write_str(&ids.join("+")),
            Revision::Unknown => f.write_str("unknown"),
        }
    }
}

/// What a dump file is: a backup, or the dump a restore made of a database it replaced
/// before dropping it (kept until the user removes it, never `latest`, never pruned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Backup,
    PreRestore,
}

impl Kind {
    /// The word between the database's name and the timestamp.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::PreRestore => "prerestore",
        }
    }
}

/// What a dump's file name says: whose, what kind, when (local time), at which revision,
/// how stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    pub db: String,
    pub kind: Kind,
    pub taken: NaiveDateTime,
    pub revision: Revision,
    pub compression: Compression,
}

impl BackupName {
    pub fn file_name(&self) -> String {
        let (db, word, taken, revision) = (&self.db, self.kind.word(), self.taken.format(TIME_FORMAT), &self.revision);
        format!("{db}_{word}_{taken}_{revision}{}", self.compression.extension())
    }

    /// The name of the backup at `path`, if its file name is one.
    pub fn of_path(path: &std::path::Path) -> Option<BackupName> {
        BackupName::parse(path.file_name()?.to_str()?)
    }

    /// Parses a complete backup's file name; anything else (a `.partial`, a sidecar, a
    /// stranger's file, the old shell script's names without a revision) is `None`. The
    /// name is found by its fixed middle, `_backup_YYYYMMDD_HHMMSS_` or
    /// `_prerestore_YYYYMMDD_HHMMSS_`: the database's name before it and the revision
    /// after it may both hold `_`. The first place from the left where the middle and the
    /// parts around it all make sense wins.
    pub fn parse(file_name: &str) -> Option<BackupName> {
        let compression = Compression::of_file_name(file_name);
        let stem = file_name.strip_suffix(compression.extension())?;
        stem.match_indices('_').find_map(|(at, _)| {
            let (db, rest) = (&stem[..at], &stem[at + 1..]);
            [Kind::Backup, Kind::PreRestore].into_iter().find_map(|kind| {
                let rest = rest.strip_prefix(kind.word())?.strip_prefix('_')?;
                let (stamp, revision) = (rest.get(..15)?, rest.get(15..)?.strip_prefix('_')?);
                // chrono alone would take signs and short fields.
                let shaped =
                    stamp.bytes().enumerate().all(|(i, b)| if i == 8 { b == b'_' } else { b.is_ascii_digit() });
                if db.is_empty() || !shaped {
                    return None;
                }
                let taken = NaiveDateTime::parse_from_str(stamp, TIME_FORMAT).ok()?;
                let revision = Revision::parse(revision)?;
                Some(BackupName { db: db.to_owned(), kind, taken, revision, compression })
            })
        })
    }
}

/// A file named as one of a database's backups, as a listing found it: what retention,
/// `latest` and the picker decide on.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub name: BackupName,
    pub size: u64,
    /// It has its `.sha256` (db-backup writes that only after every check passed), or it
    /// is a plain `.sql` without one (the old script's) whose end carries pg_dump's
    /// completion marker. Anything else named like a backup was cut short (a killed run, a
    /// full disk): it never counts for retention, `latest`, the picker or the free-space
    /// estimate, and only `db-prune --incomplete` removes it.
    pub complete: bool,
}

impl Backup {
    /// Why an incomplete file is one, in a few words for a listing; `None` when complete.
    pub fn why_incomplete(&self) -> Option<&'static str> {
        match (self.complete, self.size, self.name.compression) {
            (true, _, _) => None,
            (false, 0, _) => Some("empty"),
            (false, _, Compression::None) => Some("no .sha256 and no completion marker at its end"),
            (false, _, _) => Some("compressed, without its .sha256"),
        }
    }

    pub fn sidecar(&self) -> PathBuf {
        beside(&self.path, SHA256_SUFFIX)
    }

    pub fn verified_marker(&self) -> PathBuf {
        beside(&self.path, VERIFIED_SUFFIX)
    }
}

/// `PATH` + `suffix`: the files that travel with a backup.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut path = path.as_os_str().to_owned();
    path.push(suffix);
    path.into()
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

/// The checksum of the backup `file_name` in its sidecar, whose lines (the backup's first,
/// then its roles file's) `sha256sum -c` reads; a backup renamed by hand, which no line
/// names any more, is the first line's.
pub fn parse_sidecar_for<'a>(text: &'a str, file_name: &str) -> Option<&'a str> {
    parse_sidecar_named(text, file_name).or_else(|| parse_sidecar(text.lines().find(|l| !l.trim().is_empty())?))
}

/// The checksum of exactly `file_name` in a sidecar, if it has a line for it.
pub fn parse_sidecar_named<'a>(text: &'a str, file_name: &str) -> Option<&'a str> {
    let line = text.lines().find(|line| {
        line.split_once(char::is_whitespace)
            .is_some_and(|(_, name)| name.trim_start().trim_start_matches('*') == file_name)
    })?;
    parse_sidecar(line)
}

/// The sidecar's one line, in the format `sha256sum -c` reads.
pub fn sidecar_line(sha256_hex: &str, file_name: &str) -> String {
    format!("{sha256_hex}  {file_name}\n")
}

/// pg_dump's completion marker line; also where `stream::split` puts a dump's footer.
pub(crate) const MARKER: &[u8] = b"-- PostgreSQL database dump complete";

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

/// One pass over a plain dump on its way into psql: it keeps the SQL's end (for the
/// completion marker), counts the rows of every `COPY ... FROM stdin;` block (COPY's text
/// format escapes newlines, so a row is a line), and takes out the file's own
/// `\restrict` and `\unrestrict` lines, which the loader replaces with its own. Those are
/// taken out only where pg_dump writes them: `\restrict` before the first statement,
/// `\unrestrict` after the completion marker. Anywhere else a line is passed as it is
/// (psql refuses a backslash command there), so no row of data and no line of a function
/// body is ever changed. Memory stays bounded: only a line's first bytes are kept.
#[derive(Default)]
pub struct SqlScan {
    tail: Tail,
    bytes: u64,
    /// The current line's first bytes (at most `KEEP`).
    line: Vec<u8>,
    /// The current line's last bytes, for a COPY header longer than `KEEP`.
    line_end: Tail,
    /// The current line is held back until its end shows whether it is taken out.
    holding: Option<Vec<u8>>,
    /// Mid-line: the current line did not start in this chunk.
    mid_line: bool,
    phase: Phase,
    copy: Option<(String, u64)>,
    tables: Vec<(String, u64)>,
}

/// Where in pg_dump's layout the scan is.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Only comments and blank lines so far: where pg_dump writes `\restrict`.
    #[default]
    Header,
    Body,
    /// The completion marker and nothing but comments and blank lines after it: where
    /// pg_dump writes `\unrestrict`.
    AfterMarker,
}

impl SqlScan {
    /// Enough for any COPY header: 1600 columns of 63-byte names, quoted.
    const KEEP: usize = 256 * 1024;

    /// Takes in `chunk` and passes what psql should read to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        self.tail.push(chunk);
        self.bytes += chunk.len() as u64;
        let mut pass_from = 0;
        let mut at = 0;
        while at < chunk.len() {
            // memchr: every byte of a dump passes here, most in long runs of COPY rows.
            let end = memchr::memchr(b'\n', &chunk[at..]).map(|i| at + i);
            let segment_end = end.map_or(chunk.len(), |e| e + 1);
            let segment = &chunk[at..segment_end];
            if !self.mid_line && self.phase != Phase::Body && self.copy.is_none() && segment[0] == b'\\' {
                // A backslash line where pg_dump writes its own: hold it until its end.
                out(&chunk[pass_from..at])?;
                self.holding = Some(Vec::new());
            }
            if let Some(held) = &mut self.holding {
                held.extend_from_slice(segment);
                pass_from = segment_end;
                if held.len() > Self::KEEP {
                    // Too long to be pg_dump's line: let it through.
                    out(held)?;
                    self.holding = None;
                }
            }
            let room = if self.copy.is_some() { 3 } else { Self::KEEP };
            let take = segment.len().min(room.saturating_sub(self.line.len()));
            self.line.extend_from_slice(&segment[..take]);
            if self.copy.is_none() {
                self.line_end.push(segment);
            }
            match end {
                Some(_) => {
                    self.end_line(out)?;
                    self.mid_line = false;
                }
                None => self.mid_line = true,
            }
            at = segment_end;
        }
        if self.holding.is_none() {
            out(&chunk[pass_from.min(chunk.len())..])?;
        }
        Ok(())
    }

    fn end_line(&mut self, out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let ending = self.line_end.bytes().strip_suffix(b"\n").unwrap_or(self.line_end.bytes()).to_vec();
        self.line_end = Tail::default();
        if let Some(held) = self.holding.take()
            && !self.is_pg_dumps_own(text)
        {
            out(&held)?;
        }
        match &mut self.copy {
            Some(_) if text == b"\\." => self.tables.extend(self.copy.take()),
            Some((_, rows)) => *rows += 1,
            None => {
                let blank_or_comment = text.is_empty() || text.starts_with(b"--");
                self.phase = match self.phase {
                    _ if text == MARKER => Phase::AfterMarker,
                    Phase::Header if blank_or_comment || self.is_pg_dumps_own(text) => Phase::Header,
                    Phase::AfterMarker if blank_or_comment || self.is_pg_dumps_own(text) => Phase::AfterMarker,
                    _ => Phase::Body,
                };
                if text.starts_with(b"COPY ") && ending.ends_with(b" FROM stdin;") {
                    let header = text.strip_suffix(b" FROM stdin;").unwrap_or(text);
                    self.copy = Some((copy_table(&header[b"COPY ".len()..]), 0));
                }
            }
        }
        self.line = line;
        self.line.clear();
        Ok(())
    }

    /// pg_dump's own `\restrict` (before the first statement) or `\unrestrict` (after
    /// the completion marker) line.
    fn is_pg_dumps_own(&self, line: &[u8]) -> bool {
        match self.phase {
            Phase::Header => line.starts_with(b"\\restrict "),
            Phase::AfterMarker => line.starts_with(b"\\unrestrict "),
            Phase::Body => false,
        }
    }

    /// Tables with their row counts, in dump order.
    pub fn tables(&self) -> &[(String, u64)] {
        &self.tables
    }

    /// The table whose COPY data the SQL ended in, if it did: psql would take whatever
    /// follows the file (the loader's `COMMIT`) as rows.
    pub fn open_copy(&self) -> Option<&str> {
        self.copy.as_ref().map(|(table, _)| table.as_str())
    }

    /// The SQL's last bytes, as read (before any line was taken out).
    pub fn tail(&self) -> &[u8] {
        self.tail.bytes()
    }

    /// Bytes of SQL read.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Anything still held back (a last line without a newline) goes out at the end.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        if let Some(held) = self.holding.take()
            && !self.is_pg_dumps_own(&held)
        {
            out(&held)?;
        }
        Ok(())
    }
}

/// The table in a COPY header (`public."a (b" (id, v)`): up to the first space outside
/// double quotes. `stream::split` names its data blocks by it too, so both agree.
pub(crate) fn copy_table(header: &[u8]) -> String {
    let mut quoted = false;
    let end = header
        .iter()
        .position(|&b| {
            if b == b'"' {
                quoted = !quoted;
            }
            b == b' ' && !quoted
        })
        .unwrap_or(header.len());
    String::from_utf8_lossy(&header[..end]).into_owned()
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
        BackupName { db: db.to_owned(), kind: Kind::Backup, taken, revision: rev, compression: Compression::None }
    }

    #[test]
    fn names_round_trip() {
        let known = name("hindsight_db", known(&["1a2b3c4d5e6f"]));
        assert_eq!(known.file_name(), "hindsight_db_backup_20261124_090507_1a2b3c4d5e6f.sql");
        assert_eq!(BackupName::parse(&known.file_name()), Some(known));
        let unknown = name("other-db", Revision::Unknown);
        assert_eq!(unknown.file_name(), "other-db_backup_20261124_090507_unknown.sql");
        assert_eq!(BackupName::parse(&unknown.file_name()), Some(unknown.clone()));
        let pre = BackupName { kind: Kind::PreRestore, ..unknown.clone() };
        assert_eq!(pre.file_name(), "other-db_prerestore_20261124_090507_unknown.sql");
        assert_eq!(BackupName::parse(&pre.file_name()), Some(pre));
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
            "hindsight_db_backup_20261124_090507_x.y.sql",
            "hindsight_db_backup_20261124_090507_.sql",
            "hindsight_db_backup_20261124_090507_a++b.sql",
            "hindsight_db_backup_20261124_090507_a+a.sql",
            "hindsight_db_backup_20261124_090507_a+unknown.sql",
            "hindsight_db_backup_20261124_090507_-rev.sql",
            "hindsight_db_backup_20261124_090507.sql",
            "hindsight_db_backup_20261124_09050_unknown.sql",
            "hindsight_db_backup_2026112a_090507_unknown.sql",
            "hindsight_db_backup_+2026112_090507_unknown.sql",
            "hindsight_db_backup_20261124_090507unknown.sql",
            "hindsight_db_backups_20261124_090507_unknown.sql",
            "hindsight_db_backup_20261124_090507_r\u{e9}v.sql",
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

    fn known(ids: &[&str]) -> Revision {
        Revision::Known(ids.iter().map(|id| id.to_string()).collect())
    }

    /// The application's own kinds of ids, and Alembic's generated one.
    const IDS: [&str; 5] =
        ["1a2b3c4d5e6f", "2026050201", "2026042900", "20240915_merge_heads", "rls_policies_20240915"];

    #[test]
    fn revision_from_alembic_version_rows() {
        for id in IDS {
            assert_eq!(Revision::from_rows(Some(&format!("{id}\n"))), Ok(known(&[id])), "{id}");
        }
        assert_eq!(Revision::from_rows(Some("1A2B3C4D5E6F\n")), Ok(known(&["1A2B3C4D5E6F"])));
        assert_eq!(Revision::from_rows(Some("a-b\n")), Ok(known(&["a-b"])));
        assert!(Revision::from_rows(None).unwrap_err().contains("no alembic_version table"));
        assert!(Revision::from_rows(Some("\n")).unwrap_err().contains("no row"));
        for bad in ["unknown", "0001.initial", "a+b", "-rev", "r\u{e9}v", "a/b", &"x".repeat(MAX_ID_LEN + 1)] {
            let why = Revision::from_rows(Some(&format!("{bad}\n"))).unwrap_err();
            assert!(why.contains(&format!("`{bad}` is not a revision id")), "{bad}: {why}");
            assert!(!why.contains('\n'), "one line: {why}");
        }
        assert_eq!(Revision::from_rows(Some(&"x".repeat(MAX_ID_LEN))), Ok(known(&[&"x".repeat(MAX_ID_LEN)])));
    }

    #[test]
    fn unmerged_heads_are_one_sorted_set() {
        let heads = Revision::from_rows(Some("rls_policies_20240915\n2026050201\n")).unwrap();
        assert_eq!(heads, known(&["2026050201", "rls_policies_20240915"]));
        assert_eq!(heads.to_string(), "2026050201+rls_policies_20240915");
        assert_eq!(Revision::parse("2026050201+rls_policies_20240915"), Some(heads.clone()));
        assert_eq!(Revision::parse("rls_policies_20240915+2026050201"), Some(heads.clone()), "a set: any order");
        assert_eq!(heads.ids(), ["2026050201", "rls_policies_20240915"]);
        let three = Revision::from_rows(Some("c\nB\na\n")).unwrap();
        assert_eq!(three.to_string(), "B+a+c", "byte order: the same rows always make the same name");
        // One bad row makes the whole set unknown: a name must not claim fewer heads.
        assert!(Revision::from_rows(Some("2026050201\nnot.an.id\n")).unwrap_err().contains("`not.an.id`"));
        // Two 64-byte heads fit; a third would make the name too long for a file system.
        let long = |c: char| c.to_string().repeat(MAX_ID_LEN);
        let two = format!("{}\n{}\n", long('a'), long('b'));
        assert_eq!(Revision::from_rows(Some(&two)).unwrap().to_string().len(), 2 * MAX_ID_LEN + 1);
        let why = Revision::from_rows(Some(&format!("{two}{}\n", long('c')))).unwrap_err();
        assert!(why.contains(&format!("longer than {MAX_PART_LEN} bytes")), "{why}");
        assert!(Revision::Unknown.ids().is_empty());
    }

    #[test]
    fn application_ids_round_trip_through_file_names() {
        for id in IDS {
            for kind in [Kind::Backup, Kind::PreRestore] {
                let named = BackupName { kind, ..name("hindsight_db", known(&[id])) };
                let file = named.file_name();
                assert_eq!(file, format!("hindsight_db_{}_20261124_090507_{id}.sql", kind.word()));
                assert_eq!(BackupName::parse(&file), Some(named), "{file}");
            }
        }
        let heads = name("hindsight_db", known(&["2026050201", "rls_policies_20240915"]));
        let file = BackupName { compression: Compression::Zstd, ..heads.clone() }.file_name();
        assert_eq!(file, "hindsight_db_backup_20261124_090507_2026050201+rls_policies_20240915.sql.zst");
        assert_eq!(BackupName::parse(&file).map(|n| n.revision), Some(heads.revision));
        // The longest name this tool writes, with its longest endings, fits a file system.
        let longest = BackupName {
            kind: Kind::PreRestore,
            compression: Compression::Zstd,
            ..name(&"d".repeat(34), known(&[&"a".repeat(MAX_ID_LEN), &"b".repeat(MAX_ID_LEN), &"c".repeat(30)]))
        };
        assert_eq!(longest.revision.to_string().len(), MAX_PART_LEN);
        assert!(longest.file_name().len() + ".verified.partial".len() <= 255, "{}", longest.file_name());
        assert_eq!(BackupName::parse(&longest.file_name()), Some(longest));
    }

    #[test]
    fn underscores_in_the_database_name_and_the_revision() {
        for db in ["hindsight_db", "a_b_c", "my_backup_db", "x_backup_2026", "db_prerestore_x", "_lead", "a-b"] {
            for id in ["20240915_merge_heads", "unknown", "a_backup_20261124_090507_b"] {
                let named = name(db, Revision::parse(id).unwrap());
                assert_eq!(BackupName::parse(&named.file_name()), Some(named), "{db} / {id}");
            }
        }
        // A database whose name holds the whole middle cannot be told apart from a
        // revision holding it: the first place from the left that makes sense wins.
        let odd = "a_backup_20200101_000000_b_backup_20261124_090507_c.sql";
        assert_eq!(BackupName::parse(odd).map(|n| n.db), Some("a".to_owned()));
        // Today's names keep parsing as they did.
        let today = BackupName::parse("hindsight_db_backup_20261124_090507_1a2b3c4d5e6f.sql.gz").unwrap();
        assert_eq!((today.db.as_str(), today.revision), ("hindsight_db", known(&["1a2b3c4d5e6f"])));
        // The old shell script's names (no revision) are not ours, as before: a restore
        // of one by its path migrates to `head`.
        assert_eq!(BackupName::parse("hindsight_db_backup_20240101_120000.sql"), None);
    }

    #[test]
    fn sidecars_round_trip() {
        let sum = hex(&[0xab; 32]);
        let line = sidecar_line(&sum, "x.sql");
        assert_eq!(line, format!("{sum}  x.sql\n"));
        assert_eq!(parse_sidecar(&line), Some(sum.as_str()));
        assert_eq!(parse_sidecar("abc  x.sql"), None);
        assert_eq!(parse_sidecar(""), None);
        let two = format!("{sum}  x.sql\n{}  x.sql.roles.sql\n", "cd".repeat(32));
        assert_eq!(parse_sidecar_for(&two, "x.sql"), Some(sum.as_str()));
        assert_eq!(parse_sidecar_for(&two, "x.sql.roles.sql"), Some("cd".repeat(32).as_str()));
        assert_eq!(parse_sidecar_for(&two, "renamed.sql"), Some(sum.as_str()), "renamed: the backup's line");
        assert_eq!(parse_sidecar_named(&two, "renamed.sql"), None);
        assert_eq!(parse_sidecar_for(&line, "renamed.sql"), Some(sum.as_str()));
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

    fn scan(dump: &str, chunk_size: usize) -> (String, SqlScan) {
        let mut scan = SqlScan::default();
        let mut out = Vec::new();
        for chunk in dump.as_bytes().chunks(chunk_size) {
            scan.feed(chunk, &mut |bytes| {
                out.extend_from_slice(bytes);
                Ok(())
            })
            .unwrap();
        }
        scan.finish(&mut |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
        (String::from_utf8(out).unwrap(), scan)
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
            let (out, rows) = scan(&dump, chunk_size);
            let expected = [
                ("public.memories".to_owned(), 3),
                ("public.\"Empty Table\"".to_owned(), 0),
                ("public.big".to_owned(), 1),
            ];
            assert_eq!(rows.tables(), expected, "chunks of {chunk_size}");
            assert_eq!(out, dump, "chunks of {chunk_size}: nothing taken out");
            assert_eq!(rows.bytes(), dump.len() as u64);
        }
    }

    #[test]
    fn the_files_own_restrict_lines_are_taken_out_but_never_data() {
        let dump = "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\nSET x;\n\\restrict late\n\
                    COPY t (v) FROM stdin;\n\\restrict in a row\n\\unrestrict too\n\\.\n\
                    CREATE FUNCTION f() RETURNS text AS $$\n\\unrestrict in a body\n$$ LANGUAGE sql;\n\
                    \\connect other\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict AbC123\n\n";
        let want = "--\n-- PostgreSQL database dump\n--\n\n\nSET x;\n\\restrict late\n\
                    COPY t (v) FROM stdin;\n\\restrict in a row\n\\unrestrict too\n\\.\n\
                    CREATE FUNCTION f() RETURNS text AS $$\n\\unrestrict in a body\n$$ LANGUAGE sql;\n\
                    \\connect other\n--\n-- PostgreSQL database dump complete\n--\n\n\n";
        for chunk_size in [1, 2, 5, 13, 64, dump.len()] {
            let (out, rows) = scan(dump, chunk_size);
            assert_eq!(out, want, "chunks of {chunk_size}");
            assert_eq!(rows.tables(), [("t".to_owned(), 2)]);
            assert_eq!(rows.open_copy(), None);
            assert!(ends_complete(rows.tail()), "the marker is checked on the SQL as read");
        }
        // A last line without its newline is judged at the end.
        let end = "-- PostgreSQL database dump complete\n";
        assert_eq!(scan(&format!("SELECT 1;\n{end}\\unrestrict k"), 3).0, format!("SELECT 1;\n{end}"));
        assert_eq!(scan("SELECT 1;\n\\unrestrict k", 3).0, "SELECT 1;\n\\unrestrict k");
        assert_eq!(scan("SELECT 1;\n\\connect x", 3).0, "SELECT 1;\n\\connect x");
    }

    #[test]
    fn copy_headers_are_read_as_psql_reads_them() {
        let dump = "COPY public.\"a (b\" (id, \"v w\") FROM stdin;\n1\tx\n\\.\n\
                    COPY \"Sch\"\"ema\".t FROM stdin;\n1\n2\n\\.\n\
                    COPY public.open (v) FROM stdin;\n1\n";
        let (_, rows) = scan(dump, 7);
        let want = [("public.\"a (b\"".to_owned(), 1), ("\"Sch\"\"ema\".t".to_owned(), 2)];
        assert_eq!(rows.tables(), want);
        assert_eq!(rows.open_copy(), Some("public.open"), "a file that ends inside COPY data");
        // A header longer than what is kept is still seen by its end.
        let columns: Vec<String> = (0..1600).map(|i| format!("\"column {i:04} {}\"", "x".repeat(160))).collect();
        let long = format!("COPY public.wide ({}) FROM stdin;\n1\n\\.\n", columns.join(", "));
        assert!(long.len() > SqlScan::KEEP);
        assert_eq!(scan(&long, 4096).1.tables(), [("public.wide".to_owned(), 1)]);
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
