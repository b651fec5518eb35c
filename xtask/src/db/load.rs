//! The one restore pipeline, used by every task that loads a backup (db-restore,
//! db-verify): room on the database volume, then a scratch database, then one pass over
//! the file that hashes the stored bytes, decompresses, keeps the SQL's end and the COPY
//! row counts, and feeds psql. Nothing of the load is committed until that pass has
//! checked the size, the checksum and the completion marker: psql gets `BEGIN` from this
//! process and `COMMIT` only then (psql commits what it has read when its input simply
//! ends, so the end of input must never be the commit), and a comment set in the same
//! transaction proves the `COMMIT` really ran. (A file can commit on its own: pg_dump
//! wraps large objects in their own `BEGIN`/`COMMIT`. What it commits stays in the scratch
//! database, which is never swapped in unchecked.) The server's own count of each COPY's
//! rows, from psql's command tags, must match the dump's. Any failure, and any signal,
//! drops the scratch database.
//!
//! The file is untrusted: psql reads it after this process's own `\restrict` line with a
//! random key, and the file's own `\restrict`/`\unrestrict` lines are taken out, so a
//! `\connect`, `\!` or `\o |cmd` in the file fails the load. SQL itself still runs with
//! the rights of the database user (see the README).

use std::{
    cell::Cell,
    collections::BTreeMap,
    io::{self, BufWriter, Read, Write},
    thread,
};

use anyhow::{Context, Result, anyhow, bail};
use xshell::Shell;

use super::{Database, ident, literal, scratch::Scratch, session::Session};
use crate::{
    exit::{Code, Coded},
    interrupt,
    output::{Progress, count, human_bytes, step, warning},
    process::Feeding,
    store::{
        backup_file::{self, Compression, SqlScan},
        catalogue::{self, Candidate, Origin},
        roles::{self, ROLES_SUFFIX, Roles},
    },
    stream::codec::{self, Hashing},
};

/// What psql reads at a time; large enough that a pipe write is never split.
const CHUNK: usize = 256 * 1024;
/// Buffered towards psql: many short SQL lines become few writes.
const PIPE_BUF: usize = 1024 * 1024;

/// How a load runs: `cli::LoadArgs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Load even where psql cannot `\restrict` the file's backslash commands.
    pub trust_file: bool,
    /// psql sessions; `None`: the CPUs the database's container may use.
    pub jobs: Option<std::num::NonZeroUsize>,
}

/// A backup loaded into a scratch database that passed every check.
pub struct Loaded<'a> {
    pub scratch: Scratch<'a>,
    pub sql_bytes: u64,
    pub checksum_verified: bool,
    /// Tables with the rows the dump holds for them, each as many as the server took.
    pub tables: Vec<(String, u64)>,
}

impl Database {
    /// Loads `backup` into a new scratch database `<db>__<kind>_<run>[_<n>]`, checking it
    /// on the way; see the module's documentation.
    pub fn load_backup<'a>(
        &'a self,
        sh: &'a Shell,
        session: &mut Session,
        backup: &Candidate,
        kind: &str,
        n: Option<usize>,
        options: &Options,
    ) -> Result<Loaded<'a>> {
        self.check_pg_dump_version(session, backup)?;
        let restrict = self.restrict_key(session, options.trust_file)?;
        self.check_room(sh, session, backup)?;
        interrupt::check()?;
        self.create_missing_roles(sh, session, backup)?;
        let jobs = match options.jobs {
            Some(jobs) => jobs.get(),
            None => self.cpus(sh)?,
        };
        let scratch = self.scratch(sh, session, kind, n)?;
        let streamed = if jobs == 1 {
            step!("loading through 1 session, in one transaction");
            self.stream(sh, session, backup, scratch.name(), restrict.as_deref())?
        } else {
            self.stream_parallel(sh, backup, scratch.name(), restrict.as_deref(), jobs)?
        };
        step!(
            "loaded {} of SQL into `{}`: {}, complete, the rows of {} counted",
            human_bytes(streamed.sql_bytes),
            scratch.name(),
            if backup.sha256.is_some() { "checksum matches" } else { "no .sha256 to compare" },
            count(streamed.tables.len() as u64, "table")
        );
        Ok(Loaded {
            scratch,
            sql_bytes: streamed.sql_bytes,
            checksum_verified: backup.sha256.is_some(),
            tables: streamed.tables,
        })
    }

    /// The key of the `\restrict` line the load starts with. A psql that predates the
    /// command would run the file's backslash commands: refused unless the user vouches
    /// for the file.
    fn restrict_key(&self, session: &mut Session, trust_file: bool) -> Result<Option<String>> {
        let (major, minor) = session.psql_version();
        if restrict_supported(major, minor) {
            return Ok(Some(random_key()));
        }
        if trust_file {
            warning!(
                "psql {major}.{minor} predates \\restrict: --trust-file loads this file with its backslash commands enabled"
            );
            return Ok(None);
        }
        bail!(
            "psql {major}.{minor} in service `{}` predates `\\restrict` (13.22, 14.19, 15.14, 16.10, 17.6), so it cannot \
             load a file with its backslash commands disabled: update the image, or pass --trust-file if you made this \
             file yourself",
            self.door.service
        )
    }

    /// Refuses a dump from a newer pg_dump major than the server's: its SQL uses what
    /// the older server lacks, and fails halfway at best. Upgrades go the other way.
    fn check_pg_dump_version(&self, session: &mut Session, backup: &Candidate) -> Result<()> {
        let Some(dumped) = &backup.pg_dump else {
            return Ok(());
        };
        let rows = session.query("SHOW server_version_num;")?;
        let num: u32 = rows
            .first()
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("the server of service `{}` gave no server_version_num", self.door.service))?;
        let (major, minor) = (num / 10000, num % 100);
        if dumped.major > major {
            bail!(
                "{} was made by pg_dump {}, newer than the server of service `{}` (PostgreSQL {major}.{minor}): a dump \
                 does not load into an older major, so nothing was touched; restore it into PostgreSQL {} or newer, \
                 or dump the database again with pg_dump {major}",
                backup.path.display(),
                dumped.release,
                self.door.service,
                dumped.major
            );
        }
        Ok(())
    }

    /// Refuses (exit 5) a load that clearly will not fit on the database volume: a full
    /// volume stops PostgreSQL itself. The estimate is the larger of the live database's
    /// size and the backup's SQL (plain: the file; compressed: five times the file, a
    /// low guess for both gzip and zstd).
    fn check_room(&self, sh: &Shell, session: &mut Session, backup: &Candidate) -> Result<()> {
        let sql = match backup.compression {
            Compression::None => backup.size,
            _ => backup.size.saturating_mul(5),
        };
        let need = sql.max(session.size_of(&self.name)?.unwrap_or(0));
        let free = self.volume_free(sh, &session.data_directory()?)?;
        if free < need {
            return Err(Coded {
                code: Code::NoSpace,
                message: format!(
                    "the database volume of service `{}` has {} free, and loading {} into a scratch database needs \
                     about {} ({} missing): nothing was loaded; free space on that volume (old `{}__pre_restore_` \
                     databases, other data), then retry",
                    self.door.service,
                    human_bytes(free),
                    backup.path.display(),
                    human_bytes(need),
                    human_bytes(need - free),
                    self.name
                ),
            }
            .into());
        }
        Ok(())
    }

    /// Creates the roles the backup's `NAME.roles.sql` names and the cluster lacks, before
    /// the load that needs them (owners, grants, policies). Existing roles are never
    /// changed, and no administrator is created from a file: see `store::roles`.
    fn create_missing_roles(&self, sh: &Shell, session: &mut Session, backup: &Candidate) -> Result<()> {
        let plan = self.roles_plan(session, backup)?;
        for (role, why) in &plan.refused {
            warning!(
                "role `{role}` is not created ({why}): create it by hand if you trust where {} came from",
                backup.path.display()
            );
        }
        if !plan.statements.is_empty() {
            // On psql's stdin, never its argv: a role's password hash is a secret, and an
            // argv shows in `ps` and in the verbose echo.
            let script: String = plan.statements.iter().map(|statement| format!("{statement};\n")).collect();
            self.script_in(sh, "postgres", &script).context("cannot create the backup's roles")?;
            step!("created the roles the backup needs and the cluster lacked: {}", plan.created.join(", "));
        }
        Ok(())
    }

    /// The roles the backup's `NAME.roles.sql` names and the cluster lacks: which would be
    /// created, which refused. The file is checked against its `.sha256` line first.
    fn roles_plan(&self, session: &mut Session, backup: &Candidate) -> Result<roles::Plan> {
        if let Origin::Offsite(fetch) = &backup.origin {
            // Checked against its `.sha256` line when it was fetched.
            let Some(text) = &fetch.roles else { return Ok(roles::Plan::default()) };
            return Ok(Roles::parse(text).plan(&session.roles()?));
        }
        let path = backup_file::beside(&backup.path, ROLES_SUFFIX);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // Older backups and the old script's have none.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(roles::Plan::default()),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        if let Some(expected) = catalogue::sidecar_sum_of(&backup.path, &path)? {
            let mut hashing = Hashing::new(io::sink());
            hashing.write_all(text.as_bytes())?;
            let actual = hashing.finish().1;
            if actual != expected {
                return Err(FileFault(format!("{:#}", catalogue::checksum_mismatch(&path, &actual, &expected))).into());
            }
        }
        Ok(Roles::parse(&text).plan(&session.roles()?))
    }

    /// Everything a load checks, without loading: the versions, psql's `\restrict`, room on
    /// the volume, the roles file, and one whole pass over the file (size, checksum,
    /// completion marker, every COPY block closed). What it cannot tell is whether the
    /// server accepts the SQL: db-verify loads it to know.
    pub fn check_backup(
        &self,
        sh: &Shell,
        session: &mut Session,
        backup: &Candidate,
        trust_file: bool,
    ) -> Result<Checked> {
        self.check_pg_dump_version(session, backup)?;
        self.restrict_key(session, trust_file)?;
        self.check_room(sh, session, backup)?;
        let roles = self.roles_plan(session, backup)?;
        let pass = read_through(sh, backup, "checked", &mut |_| Ok(()))?;
        interrupt::check()?;
        if let Some(problem) = verdict(backup, &pass.fed, &pass.sha256, pass.stored, &pass.scan) {
            return Err(match problem {
                Problem::File(fault) => fault.into(),
                Problem::Psql(message) => anyhow!("{message}"),
            });
        }
        Ok(Checked { sql_bytes: pass.scan.bytes(), tables: pass.scan.tables().to_vec(), roles })
    }

    /// The one pass over the file; commits only when it checked out.
    fn stream(
        &self,
        sh: &Shell,
        session: &mut Session,
        backup: &Candidate,
        scratch: &str,
        restrict: Option<&str>,
    ) -> Result<Streamed> {
        let mut psql = Feeding::start_reading("psql", self.load_cmd(sh, scratch))?;
        let tags = psql.stdout().map(|stdout| thread::spawn(move || copy_tags(stdout)));
        let Pass { fed, sha256, stored, scan } = {
            let mut pipe = BufWriter::with_capacity(PIPE_BUF, psql.stdin());
            // psql's own `\restrict`, then the one transaction, before the file's first byte.
            let start = match restrict {
                Some(key) => format!("\\restrict {key}\nBEGIN;\n"),
                None => "BEGIN;\n".to_owned(),
            };
            let started = pipe.write_all(start.as_bytes());
            let mut pass = read_through(sh, backup, "loaded", &mut |bytes| {
                started.as_ref().map_err(|err| io::Error::new(err.kind(), err.to_string()))?;
                pipe.write_all(bytes)
            })?;
            pass.fed = pass.fed.and_then(|()| pipe.flush().map_err(Fed::Sink));
            pass
        };

        let problem = verdict(backup, &fed, &sha256, stored, &scan);
        interrupt::check()?;
        match problem {
            None => {
                // Every check passed: only now does the load become permanent. The
                // comment, in the same transaction, shows afterwards that it was.
                let proof = random_key();
                let commit = format!("COMMENT ON DATABASE {} IS {};\nCOMMIT;\n", ident(scratch), literal(&proof));
                let committed = psql.stdin().write_all(commit.as_bytes()).and_then(|()| psql.stdin().flush());
                let finished = psql.finish();
                interrupt::check()?;
                finished?;
                committed.context("psql stopped before the COMMIT")?;
                if session.database_comment(scratch)?.as_deref() != Some(proof.as_str()) {
                    return Err(FileFault(format!(
                        "psql ended without committing {}: the file's end left it somewhere the COMMIT could not run",
                        backup.path.display()
                    ))
                    .into());
                }
                session.query(&format!("COMMENT ON DATABASE {} IS NULL;", ident(scratch)))?;
                let tags = tags.and_then(|tags| tags.join().ok()).unwrap_or_default();
                let tables = scan.tables().iter().map(|(table, _)| table.as_str()).collect();
                compare_rows(scan.tables(), &[(tables, tags)])?;
                Ok(Streamed { sql_bytes: scan.bytes(), tables: scan.tables().to_vec() })
            }
            Some(problem) => {
                // No COMMIT: psql rolls back at the end of its input.
                let said = psql.close();
                interrupt::check()?;
                Err(match (problem, said) {
                    // A damaged file is the cause of whatever psql said about it.
                    (Problem::File(fault), Some(failure)) => anyhow::Error::from(failure).context(fault),
                    (Problem::File(fault), None) => fault.into(),
                    // psql's own words say why it stopped reading.
                    (Problem::Psql(_), Some(failure)) => failure.into(),
                    (Problem::Psql(message), None) => anyhow!("{message}"),
                })
            }
        }
    }
}

/// The server's count of the rows each `COPY` took, from psql's command tags (`COPY 1000`),
/// in order. Reading psql's output also keeps it from ever blocking on a full pipe.
fn copy_tags(stdout: std::process::ChildStdout) -> Vec<u64> {
    let mut tags = Vec::new();
    let mut lines = io::BufReader::new(stdout);
    let mut line = Vec::new();
    while matches!(io::BufRead::read_until(&mut lines, b'\n', &mut line), Ok(1..)) {
        tags.extend(copy_tag(&line));
        line.clear();
    }
    tags
}

/// The rows of a `COPY 1000` command tag line.
pub(super) fn copy_tag(line: &[u8]) -> Option<u64> {
    std::str::from_utf8(line.strip_prefix(b"COPY ")?).ok()?.trim().parse().ok()
}

/// Every table got exactly the rows the dump holds for it: each session's `COPY` tags,
/// in order, matched with the tables it was given (one session: every table, in dump
/// order), summed per table, against the lines the scan counted.
pub(super) fn compare_rows(expected: &[(String, u64)], sessions: &[(Vec<&str>, Vec<u64>)]) -> Result<()> {
    let mut loaded: BTreeMap<&str, u64> = BTreeMap::new();
    for (index, (tables, tags)) in sessions.iter().enumerate() {
        if tables.len() != tags.len() {
            let given = count(tables.len() as u64, "COPY block");
            match sessions.len() {
                1 => bail!("the dump has {given}, the server reported {} loaded", tags.len()),
                n => bail!(
                    "session {} of {n} was given {given}, and the server reported {} loaded",
                    index + 1,
                    tags.len()
                ),
            }
        }
        for (table, rows) in tables.iter().zip(tags) {
            *loaded.entry(table).or_default() += rows;
        }
    }
    let mut want: BTreeMap<&str, u64> = BTreeMap::new();
    for (table, rows) in expected {
        *want.entry(table).or_default() += rows;
    }
    for (table, want) in &want {
        let got = loaded.get(table).copied().unwrap_or(0);
        if got != *want {
            bail!("table {table} took {}, the dump holds {want}", count(got, "row"));
        }
    }
    if let Some(table) = loaded.keys().find(|table| !want.contains_key(*table)) {
        bail!("the server loaded rows into {table}, which the dump has no COPY block for");
    }
    Ok(())
}

/// What `check_backup` found: the file whole, and what a load would do with roles.
pub struct Checked {
    pub sql_bytes: u64,
    pub tables: Vec<(String, u64)>,
    pub roles: roles::Plan,
}

/// The one pass over a backup file, whatever its format, and how it went.
pub(super) struct Pass {
    pub(super) fed: Result<(), Fed>,
    pub(super) sha256: String,
    /// Bytes of the file as stored.
    pub(super) stored: u64,
    pub(super) scan: SqlScan,
}

/// Reads `backup` once: hashes the stored bytes, decompresses, scans the SQL and hands it
/// to `send` (psql's pipe, the parallel loader's splitter, or nothing for a dry run).
pub(super) fn read_through(
    sh: &Shell,
    backup: &Candidate,
    verb: &'static str,
    send: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Pass> {
    let mut stored = Hashing::new(backup.open(sh)?);
    let mut scan = SqlScan::default();
    // The percentage is of the file as stored, whose size is known; the line shows the SQL.
    let mut progress = Progress::with_total(verb, backup.size, false);
    let fed = feed(backup.compression, &mut stored, &mut scan, &mut progress, send);
    progress.finish();
    // What the decoder did not read (trailing bytes) still counts for the checksum;
    // after an early stop, reading on lets a damaged file take the blame for what
    // psql or the decoder said.
    if interrupt::received().is_none() && (fed.is_ok() || backup.sha256.is_some()) {
        let _ = io::copy(&mut stored, &mut io::sink());
    }
    let (_, sha256, stored) = stored.finish();
    Ok(Pass { fed, sha256, stored, scan })
}

pub(super) struct Streamed {
    pub(super) sql_bytes: u64,
    pub(super) tables: Vec<(String, u64)>,
}

/// How feeding psql ended early.
pub(super) enum Fed {
    /// Reading or decompressing the file failed.
    Source(io::Error),
    /// psql stopped reading (an SQL error, a signal).
    Sink(io::Error),
}

fn feed(
    compression: Compression,
    stored: &mut Hashing<Box<dyn Read + Send>>,
    scan: &mut SqlScan,
    progress: &mut Progress,
    send: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), Fed> {
    let read = Cell::new(0);
    let mut sql = codec::decoder(compression, Counted { inner: stored, read: &read }).map_err(Fed::Source)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match sql.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(Fed::Source(err)),
        };
        progress.add_with_done(n, read.get());
        scan.feed(&buf[..n], send).map_err(Fed::Sink)?;
    }
    scan.finish(send).map_err(Fed::Sink)?;
    // A newline first: the file's last line may lack one.
    send(b"\n").map_err(Fed::Sink)
}

/// A reader that counts what it read, for the progress line's percentage of the file.
struct Counted<'a, R> {
    inner: R,
    read: &'a Cell<u64>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// The backup file itself is at fault (damaged, truncated, changed while read, not a
/// whole dump): another backup may do.
#[derive(Debug)]
pub struct FileFault(pub String);

impl FileFault {
    /// Whether `err` is, or was caused by, a fault of the file.
    pub fn in_error(err: &anyhow::Error) -> bool {
        err.downcast_ref::<FileFault>().is_some() || err.chain().any(|cause| cause.is::<FileFault>())
    }
}

impl std::fmt::Display for FileFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FileFault {}

pub(super) enum Problem {
    /// psql's words, if it has any, are only the symptom.
    File(FileFault),
    /// psql stopped reading: its own words say why.
    Psql(String),
}

/// What is wrong with the pass, if anything, the file's own faults first.
pub(super) fn verdict(
    backup: &Candidate,
    fed: &Result<(), Fed>,
    sha256: &str,
    stored: u64,
    scan: &SqlScan,
) -> Option<Problem> {
    let path = &backup.path;
    let file_fault = |message: String| Some(Problem::File(FileFault(message)));
    if let Some(expected) = &backup.sha256
        && expected != sha256
    {
        return file_fault(format!("{:#}", catalogue::checksum_mismatch(path, sha256, expected)));
    }
    match fed {
        Err(Fed::Source(err)) => {
            return file_fault(format!(
                "{} is truncated or damaged: it cannot be read to its end ({err})",
                path.display()
            ));
        }
        Err(Fed::Sink(err)) => return Some(Problem::Psql(format!("psql stopped reading: {err}"))),
        Ok(()) => {}
    }
    if backup.exact_size() && stored != backup.size {
        return file_fault(format!(
            "{} changed while it was read ({} bytes before, {stored} read): restore it again once nothing writes it",
            path.display(),
            backup.size
        ));
    }
    if !backup_file::ends_complete(scan.tail()) {
        return file_fault(format!("{:#}", catalogue::incomplete(path)));
    }
    if let Some(table) = scan.open_copy() {
        return file_fault(format!(
            "{} ends inside the data of table {table} (no `\\.` line): it is not a whole pg_dump file",
            path.display()
        ));
    }
    None
}

/// psql learnt `\restrict` in 13.22, 14.19, 15.14, 16.10 and 17.6.
fn restrict_supported(major: u32, minor: u32) -> bool {
    match major {
        ..=12 => false,
        13 => minor >= 22,
        14 => minor >= 19,
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        _ => true,
    }
}

/// 32 random letters and digits: a file cannot guess it to `\unrestrict` itself.
pub(super) fn random_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 32];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).expect("the kernel's random numbers");
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_arrived_in_these_releases() {
        for (major, minor, ok) in
            [(12, 22, false), (13, 16, false), (13, 22, true), (14, 18, false), (14, 19, true), (15, 13, false)]
        {
            assert_eq!(restrict_supported(major, minor), ok, "{major}.{minor}");
        }
        for (major, minor) in [(15, 14), (15, 18), (16, 10), (17, 6), (17, 12), (18, 0)] {
            assert!(restrict_supported(major, minor), "{major}.{minor}");
        }
        assert!(!restrict_supported(16, 9) && !restrict_supported(17, 5));
    }

    #[test]
    fn rows_are_compared_per_table_across_sessions() {
        let expected = [("public.a".to_owned(), 3), ("public.b".to_owned(), 2), ("public.a".to_owned(), 1)];
        let ok = [(vec!["public.a", "public.b"], vec![3, 2]), (vec!["public.a"], vec![1])];
        assert!(compare_rows(&expected, &ok).is_ok());
        let short = [(vec!["public.a", "public.b"], vec![3, 1]), (vec!["public.a"], vec![1])];
        assert!(format!("{:#}", compare_rows(&expected, &short).unwrap_err()).contains("table public.b took 1 row"));
        let untold = [(vec!["public.a", "public.b"], vec![3]), (vec!["public.a"], vec![1])];
        assert!(format!("{:#}", compare_rows(&expected, &untold).unwrap_err()).starts_with("session 1 of 2 was given"));
        let one = [(vec!["public.a", "public.b", "public.a"], vec![3, 2])];
        assert!(format!("{:#}", compare_rows(&expected, &one).unwrap_err()).starts_with("the dump has 3 COPY blocks"));
    }

    #[test]
    fn keys_are_random_and_plain() {
        let (a, b) = (random_key(), random_key());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
