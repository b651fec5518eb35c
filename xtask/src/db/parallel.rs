//! A plain dump loaded through several psql sessions (`--jobs N`, N > 1), as `pg_restore
//! -j` loads a custom one. The file is still read once, by the one pass that hashes and
//! checks it (`load::read_through`); the pass feeds `stream::split`, and this module
//! routes each part of the dump to a session:
//!
//! 1. The header and the pre-data (types, tables, functions) go to session 0, in order.
//!    Every other session replays the header's settings first.
//! 2. Once the pre-data has run, each table's COPY block goes to the session with the
//!    least still to load. The other data (sequence values, large objects) stays on
//!    session 0.
//! 3. Each index, primary-key and unique build goes to the session that loaded its
//!    table's rows, after them: it starts while other sessions still load other tables,
//!    as `pg_restore -j` schedules it. A table without rows takes the least loaded session.
//! 4. Once every session has finished, the rest of the post-data, in dump order on
//!    session 0: the builds on tables in an inheritance or partition tree (asked of the
//!    server; a build there may lock the tree's other tables), index attaches (after both
//!    indexes exist), foreign keys (one at a time: two at once lock both their tables and
//!    can deadlock), triggers, policies, comments, ACLs, materialized views' data.
//!
//! Before each part, its session replays the per-object `SET`s in force there
//! (`search_path`, `default_tablespace`, `SESSION AUTHORIZATION`...). An entry of a type
//! the splitter does not know runs alone: everything before it finishes first, and
//! nothing after it starts before it finished. A header that is not pg_dump's (one
//! statement other than a `SET`) sends everything to session 0.
//!
//! The reader never waits for a session that is busy: what a session cannot take yet
//! goes to a temporary file of its own (unlinked from the start, so nothing is left
//! behind however the run ends, and 0600), which the session reads as it goes, punching
//! out what it loaded. The reader waits only while the temporary directory's free space
//! is below a reserve. A re-read of the backup file at the block's offset would spare
//! those writes for a plain file on disk, but it would load bytes the checking pass did
//! not see (a file changed in between), and compressed, encrypted and offsite backups
//! need the spill anyway; the pages mostly never reach the disk, being punched out
//! within seconds.
//!
//! The sessions commit as they go (other sessions must see the tables), so the scratch
//! database stands in for the single transaction: nothing is swapped in unless every
//! session ended well and every check passed, and on any failure every session is ended
//! and the caller's `Scratch` guard drops the database.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::ChildStdin,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use xshell::Shell;

use super::{
    Database,
    load::{self, Fed, Problem, Streamed, random_key},
};
use crate::{
    interrupt,
    output::{Progress, detail, human_bytes, step},
    process::{Failure, Feeding},
    stream::split::{Event, Kind, Object, Section, Settings, Splitter, qualified_name, settings_only, table_of},
};

/// What a session copies to psql at a time.
const CHUNK: usize = 256 * 1024;
/// Buffered towards psql: many short SQL lines become few writes.
const PIPE_BUF: usize = 1024 * 1024;
/// The most of an index or key build held until its table is known; pg_dump's are a few
/// hundred bytes.
const HOLD_MAX: usize = 64 * 1024;
/// The longest header replayed; pg_dump's is under 1 KiB.
const HEADER_MAX: usize = 64 * 1024;
/// The free space checked again after this many bytes written to the spill files.
const SPACE_CHECK_EVERY: u64 = 64 * 1024 * 1024;
/// While the temporary directory is short of space, a session is let fall this far behind.
const LAG_WHEN_SHORT: u64 = 8 * 1024 * 1024;
/// The most bytes one queued copy covers, so a session's spill is punched out as it goes.
const OP_MAX: u64 = 8 * 1024 * 1024;
/// A session waiting this long for its sync marker, while no session of the load is busy
/// on the server, is stuck in a statement that the splitter cut in two.
const STALL: Duration = Duration::from_secs(10);
/// How often a wait looks again whether another session failed or a signal came.
const TICK: Duration = Duration::from_millis(50);

impl Database {
    /// Loads the SQL of `backup` into `scratch` through `jobs` sessions; see the module's
    /// documentation. Checks as `stream` does: the pass's verdict before success, and
    /// every table's rows against the server's counts.
    pub(super) fn stream_parallel(
        &self,
        sh: &Shell,
        backup: &crate::store::catalogue::Candidate,
        scratch: &str,
        restrict: Option<&str>,
        jobs: usize,
    ) -> Result<Streamed> {
        let shared = Arc::new(Shared::default());
        let marker = format!("hindsight-sync {} ", random_key());
        let spill_dir = std::env::temp_dir();
        let mut sessions = Vec::with_capacity(jobs);
        let started = (0..jobs).try_for_each(|index| {
            sessions.push(SessionRun::start(self, sh, scratch, index, &marker, &shared)?);
            Ok::<_, anyhow::Error>(())
        });
        let lanes = sessions.iter().map(|session| session.lane.clone()).collect();
        let router = started.and_then(|()| Router::new(self, sh, scratch, lanes, restrict, &spill_dir, shared.clone()));
        let mut router = match router {
            Ok(router) => router,
            Err(err) => {
                // The feeders started so far wait for work that will not come.
                shared.fail(None);
                sessions.into_iter().for_each(|session| drop(session.end()));
                return Err(err);
            }
        };
        step!("loading through {jobs} sessions; table data they cannot take yet waits in {}", spill_dir.display());

        let mut splitter = Splitter::new();
        let mut ended = false;
        let pass = load::read_through(sh, backup, "read", &mut |bytes| {
            splitter.push(bytes, &mut |event| router.take(event));
            let state = router.failure();
            if state.is_err() && !std::mem::replace(&mut ended, true) {
                // At once: the pass may read on to the file's end for its checksum.
                let _ = self.end_sessions_in(sh, scratch);
            }
            state
        });
        let pass = pass.map(|mut pass| {
            if pass.fed.is_ok() {
                splitter.finish(&mut |event| router.take(event));
                pass.fed = router.failure().map_err(Fed::Sink);
            }
            pass
        });
        let problem = match &pass {
            Ok(pass) => load::verdict(backup, &pass.fed, &pass.sha256, pass.stored, &pass.scan),
            Err(err) => Some(Problem::Psql(format!("{err:#}"))),
        };
        interrupt::check()?;

        if problem.is_none() {
            router.finish();
            if router.failure().is_ok() {
                step!("read the whole file; waiting for the sessions to finish their share");
                router.wait_for_sessions(&sessions);
            }
        }
        if problem.is_some() || router.failure().is_err() {
            shared.fail(None);
            // A session building an index would finish it before reading its input's end.
            let _ = self.end_sessions_in(sh, scratch);
        }
        let router_error = router.error.clone();
        let streams = router.into_streams();
        let mut ended: Vec<Ended> = sessions.into_iter().map(SessionRun::end).collect();
        interrupt::check()?;
        let pass = pass?;

        if let Some(error) = router_error {
            return Err(anyhow!("{error}"));
        }
        // The session that failed first (the others were ended after it), else any that did.
        let culprit = shared.first_failed().or_else(|| ended.iter().position(|ended| ended.said.is_some()));
        let said = culprit.and_then(|index| {
            let failure = ended[index].said.take()?;
            Some(anyhow::Error::from(failure).context(format!("session {} of {jobs} failed", index + 1)))
        });
        match (problem, said) {
            // A damaged file is the cause of whatever psql said about it.
            (Some(Problem::File(fault)), Some(said)) => return Err(said.context(fault)),
            (Some(Problem::File(fault)), None) => return Err(fault.into()),
            (_, Some(said)) => return Err(said),
            (Some(Problem::Psql(message)), None) => bail!("{message}"),
            (None, None) if culprit.is_some() => bail!("session {} of {jobs} stopped", culprit.unwrap_or(0) + 1),
            (None, None) => {}
        }

        // The server's count of every COPY, session by session, against the dump's.
        let given: Vec<(Vec<&str>, Vec<u64>)> = streams
            .iter()
            .zip(&mut ended)
            .map(|(tables, ended)| (tables.iter().map(String::as_str).collect(), std::mem::take(&mut ended.tags)))
            .collect();
        load::compare_rows(pass.scan.tables(), &given)?;
        let summary = splitter.summary();
        detail!(
            "the SQL by where it loaded: {} pre-data, {} data, {} post-data, {} alone ({:.1}%)",
            human_bytes(summary.pre_data),
            human_bytes(summary.data),
            human_bytes(summary.post_data),
            human_bytes(summary.unknown),
            summary.fallback_share() * 100.0
        );
        Ok(Streamed { sql_bytes: pass.scan.bytes(), tables: pass.scan.tables().to_vec() })
    }
}

/// What every thread of the load sees: whether one failed, and which first.
#[derive(Default)]
struct Shared {
    failed: AtomicBool,
    /// The session that failed first, plus one (0: none, or not a session).
    first: AtomicUsize,
}

impl Shared {
    fn fail(&self, session: Option<usize>) {
        if let Some(index) = session {
            let _ = self.first.compare_exchange(0, index + 1, Ordering::SeqCst, Ordering::SeqCst);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || interrupt::received().is_some()
    }

    fn first_failed(&self) -> Option<usize> {
        self.first.load(Ordering::SeqCst).checked_sub(1)
    }
}

/// What a session does next, in order.
enum Op {
    /// Copy these bytes of a spill file to psql.
    Bytes { file: Arc<File>, at: u64, len: u64 },
    /// Wait until psql has run everything before, then until every session has.
    Barrier(Arc<Gate>),
    /// No more input: psql ends.
    End,
}

/// One session's queue, filled by the reader.
#[derive(Default)]
struct Lane {
    ops: Mutex<VecDeque<Op>>,
    ready: Condvar,
    /// Bytes queued and not yet copied to psql.
    pending: AtomicU64,
    /// The feeder took `End`: psql's output may end now.
    ending: AtomicBool,
    /// Since when the feeder waits for its sync marker, if it does.
    awaiting: Mutex<Option<Instant>>,
}

/// Clears `Lane::awaiting` however the wait for the marker ends.
struct Awaited<'a>(&'a Lane);

impl Drop for Awaited<'_> {
    fn drop(&mut self) {
        *self.0.awaiting.lock().expect("not poisoned") = None;
    }
}

impl Lane {
    fn push(&self, op: Op) {
        let mut ops = self.ops.lock().expect("not poisoned");
        if let Op::Bytes { len, .. } = &op {
            self.pending.fetch_add(*len, Ordering::SeqCst);
        }
        queue(&mut ops, op);
        self.ready.notify_all();
    }

    /// The next op, or `None` once the load failed. Waits while there is none.
    fn next(&self, shared: &Shared) -> Option<Op> {
        let mut ops = self.ops.lock().expect("not poisoned");
        loop {
            if shared.failed() {
                return None;
            }
            if let Some(op) = ops.pop_front() {
                return Some(op);
            }
            ops = self.ready.wait_timeout(ops, TICK).expect("not poisoned").0;
        }
    }

    fn is_empty(&self) -> bool {
        self.ops.lock().expect("not poisoned").is_empty()
    }
}

/// Queues `op`, as part of the last op when it is the bytes right after it in the same
/// file, up to `OP_MAX`: fewer, larger copies, each punched out of the spill once loaded.
fn queue(ops: &mut VecDeque<Op>, op: Op) {
    if let (Some(Op::Bytes { file: last, at: last_at, len: last_len }), Op::Bytes { file, at, len }) =
        (ops.back_mut(), &op)
        && Arc::ptr_eq(last, file)
        && *last_at + *last_len == *at
        && *last_len + *len <= OP_MAX
    {
        *last_len += len;
    } else {
        ops.push_back(op);
    }
}

/// A point every session reaches, each once psql ran all it was given before; the reader
/// may wait there too.
struct Gate {
    arrived: Mutex<usize>,
    all: Condvar,
    parties: usize,
}

impl Gate {
    fn new(parties: usize) -> Arc<Gate> {
        Arc::new(Gate { arrived: Mutex::new(0), all: Condvar::new(), parties })
    }

    /// Arrives and waits for the others; `false` when the load failed meanwhile.
    fn pass(&self, shared: &Shared) -> bool {
        self.pass_watching(shared, &mut || Ok(())).unwrap_or(false)
    }

    /// As `pass`, calling `watch` between looks; its error ends the wait.
    fn pass_watching(&self, shared: &Shared, watch: &mut dyn FnMut() -> Result<()>) -> Result<bool> {
        let mut arrived = self.arrived.lock().expect("not poisoned");
        *arrived += 1;
        self.all.notify_all();
        while *arrived < self.parties {
            if shared.failed() {
                return Ok(false);
            }
            arrived = self.all.wait_timeout(arrived, TICK).expect("not poisoned").0;
            drop(arrived);
            watch()?;
            arrived = self.arrived.lock().expect("not poisoned");
        }
        Ok(true)
    }
}

/// One psql session and the threads that feed it and read its output.
struct SessionRun {
    psql: Feeding,
    lane: Arc<Lane>,
    feeder: JoinHandle<()>,
    listener: Option<JoinHandle<Vec<u64>>>,
}

/// How a session ended: the server's row count of each COPY it ran, and psql's own
/// words if it failed.
struct Ended {
    tags: Vec<u64>,
    said: Option<Failure>,
}

impl SessionRun {
    fn start(
        db: &Database,
        sh: &Shell,
        scratch: &str,
        index: usize,
        marker: &str,
        shared: &Arc<Shared>,
    ) -> Result<SessionRun> {
        let mut psql = Feeding::start_reading("psql", db.load_cmd(sh, scratch))?;
        let stdin = psql.take_stdin().context("psql's stdin")?;
        let (synced, heard) = mpsc::channel();
        let lane = Arc::new(Lane::default());
        let listener = psql.stdout().map(|stdout| {
            let (marker, lane, shared) = (marker.to_owned(), lane.clone(), shared.clone());
            thread::spawn(move || {
                let tags = listen(stdout, &marker, synced);
                // psql ended before its input did: it failed (or was ended). Say so at
                // once, so that the other sessions stop instead of loading on.
                if !lane.ending.load(Ordering::SeqCst) {
                    shared.fail(Some(index));
                }
                tags
            })
        });
        let feeder = {
            let (lane, shared, marker) = (lane.clone(), shared.clone(), marker.to_owned());
            thread::spawn(move || {
                if feed(stdin, &lane, &heard, &marker, &shared).is_err() {
                    shared.fail(Some(index));
                }
            })
        };
        Ok(SessionRun { psql, lane, feeder, listener })
    }

    /// Waits for the feeder (which ends psql's input) and psql.
    fn end(self) -> Ended {
        let _ = self.feeder.join();
        let said = self.psql.close();
        let tags = self.listener.and_then(|listener| listener.join().ok()).unwrap_or_default();
        Ended { tags, said }
    }
}

/// A session's feeder: copies what its lane says to psql until `End`, or until the load
/// failed. Dropping stdin is the end of psql's input.
fn feed(stdin: ChildStdin, lane: &Lane, heard: &Receiver<u64>, marker: &str, shared: &Shared) -> io::Result<()> {
    let mut pipe = BufWriter::with_capacity(PIPE_BUF, stdin);
    let mut buf = vec![0u8; CHUNK];
    let mut syncs = 0u64;
    loop {
        if lane.is_empty() {
            // psql must have the end of the statement before the wait for more.
            pipe.flush()?;
        }
        let Some(op) = lane.next(shared) else { return Err(io::Error::other("the load failed")) };
        match op {
            Op::Bytes { file, at, len } => {
                let mut done = 0;
                while done < len {
                    if shared.failed() {
                        return Err(io::Error::other("the load failed"));
                    }
                    let want = (len - done).min(CHUNK as u64) as usize;
                    file.read_exact_at(&mut buf[..want], at + done)?;
                    pipe.write_all(&buf[..want])?;
                    lane.pending.fetch_sub(want as u64, Ordering::SeqCst);
                    done += want as u64;
                }
                // Loaded: its disk space back. A file system without holes keeps it until the end.
                let _ = rustix::fs::fallocate(
                    &*file,
                    rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                    at,
                    len,
                );
            }
            Op::Barrier(gate) => {
                syncs += 1;
                // A query, not `\echo`: under `\restrict` psql takes no other backslash command.
                writeln!(pipe, "SELECT '{marker}{syncs}';")?;
                pipe.flush()?;
                *lane.awaiting.lock().expect("not poisoned") = Some(Instant::now());
                let _awaited = Awaited(lane);
                loop {
                    match heard.recv_timeout(TICK) {
                        Ok(n) if n == syncs => break,
                        Ok(_) => {}
                        Err(RecvTimeoutError::Timeout) if !shared.failed() => {}
                        Err(_) => return Err(io::Error::other("psql ended")),
                    }
                }
                if !gate.pass(shared) {
                    return Err(io::Error::other("the load failed"));
                }
            }
            Op::End => {
                lane.ending.store(true, Ordering::SeqCst);
                return pipe.flush();
            }
        }
    }
}

/// Reads psql's output: the server's count of each COPY (`COPY 1000`), in order, and the
/// sync markers, passed on as they come. Reading it also keeps psql from blocking.
fn listen(stdout: std::process::ChildStdout, marker: &str, synced: Sender<u64>) -> Vec<u64> {
    let mut tags = Vec::new();
    let mut lines = BufReader::new(stdout);
    let mut line = Vec::new();
    while matches!(lines.read_until(b'\n', &mut line), Ok(1..)) {
        let synced_n =
            line.strip_prefix(marker.as_bytes()).and_then(|n| std::str::from_utf8(n).ok()?.trim().parse().ok());
        match synced_n {
            Some(n) => drop(synced.send(n)),
            None => tags.extend(load::copy_tag(&line)),
        }
        line.clear();
    }
    tags
}

/// Where the current part of the dump goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Session(usize),
    /// The post-data that waits for the index and key builds.
    Deferred,
    /// An index or key build, held until its table is known.
    Held,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    PreData,
    Data,
    PostData,
}

/// A stream of bytes for a session (or the deferred post-data): its spill file, the
/// settings it last replayed, and the tables whose COPY blocks it was given.
struct Stream {
    file: Arc<File>,
    end: u64,
    /// Ops written for the deferred stream, handed to session 0 later.
    ops: VecDeque<Op>,
    settings: Option<u64>,
    tables: Vec<String>,
}

/// The reader's side: takes the splitter's events and routes them.
struct Router<'a> {
    db: &'a Database,
    sh: &'a Shell,
    scratch: &'a str,
    lanes: Vec<Arc<Lane>>,
    streams: Vec<Stream>,
    deferred: Stream,
    route: Route,
    held: Vec<u8>,
    phase: Phase,
    settings: Settings,
    version: u64,
    restrict: Option<String>,
    /// The header was not pg_dump's: everything on session 0.
    serial: bool,
    /// The header so far, which every other session replays.
    header: Vec<u8>,
    /// The workers got the header.
    started: bool,
    /// The next entry waits for everything before (one that ran alone).
    settle_next: bool,
    families: BTreeSet<(String, String)>,
    /// The session that loaded each table's rows; `None`: more than one.
    loaded_by: BTreeMap<(String, String), Option<usize>>,
    spill_dir: PathBuf,
    written: u64,
    /// When `watch` last asked the server.
    watched: Option<Instant>,
    next_space_check: u64,
    short_of_space: bool,
    shared: Arc<Shared>,
    error: Option<String>,
}

impl<'a> Router<'a> {
    fn new(
        db: &'a Database,
        sh: &'a Shell,
        scratch: &'a str,
        lanes: Vec<Arc<Lane>>,
        restrict: Option<&str>,
        spill_dir: &Path,
        shared: Arc<Shared>,
    ) -> Result<Router<'a>> {
        let stream = || -> Result<Stream> {
            let file = spill_file(spill_dir)?;
            Ok(Stream { file: Arc::new(file), end: 0, ops: VecDeque::new(), settings: None, tables: Vec::new() })
        };
        let streams = lanes.iter().map(|_| stream()).collect::<Result<Vec<_>>>()?;
        let mut router = Router {
            db,
            sh,
            scratch,
            lanes,
            streams,
            deferred: stream()?,
            route: Route::Session(0),
            held: Vec::new(),
            phase: Phase::PreData,
            settings: Settings::default(),
            version: 0,
            restrict: restrict.map(str::to_owned),
            serial: false,
            header: Vec::new(),
            started: false,
            settle_next: false,
            families: BTreeSet::new(),
            loaded_by: BTreeMap::new(),
            spill_dir: spill_dir.to_owned(),
            written: 0,
            watched: None,
            next_space_check: 0,
            short_of_space: false,
            shared,
            error: None,
        };
        if let Some(key) = restrict {
            router.write(Route::Session(0), format!("\\restrict {key}\n").as_bytes());
        }
        Ok(router)
    }

    /// The reader's own failure. After a session's, the reader stops too, and the session's
    /// words (psql's) are the error, not the reader's.
    fn fail(&mut self, err: anyhow::Error) {
        if !self.shared.failed() {
            self.error = Some(format!("{err:#}"));
        }
        self.shared.fail(None);
    }

    /// `Err` once the load failed: a session, the reader, or a signal.
    fn failure(&self) -> io::Result<()> {
        if let Some(error) = &self.error {
            return Err(io::Error::other(error.clone()));
        }
        if self.shared.failed() {
            return Err(io::Error::other("a session stopped"));
        }
        Ok(())
    }

    fn take(&mut self, event: Event<'_>) {
        if self.error.is_some() || self.shared.failed() {
            return;
        }
        if let Err(err) = self.route_event(event) {
            self.fail(err);
        }
    }

    fn route_event(&mut self, event: Event<'_>) -> Result<()> {
        match event {
            Event::Header(bytes) => {
                if self.header.len() <= HEADER_MAX {
                    self.header.extend_from_slice(bytes);
                }
                self.write(Route::Session(0), bytes)
            }
            Event::ObjectStart(object) => {
                self.end_part();
                self.start_workers_once();
                self.route = self.place(&object)?;
                if let (Route::Session(index), "TABLE DATA", Some(schema)) =
                    (self.route, object.desc.as_str(), &object.schema)
                {
                    // Also for rows as INSERTs (`pg_dump --inserts`), which have no COPY.
                    self.loaded_in((schema.clone(), object.name.clone()), index);
                }
                self.replay_settings(self.route);
            }
            Event::Setting(line) => {
                self.end_part();
                if self.serial {
                    self.write(Route::Session(0), line);
                } else {
                    self.settings.apply(line);
                    self.version += 1;
                }
            }
            Event::DataStart { table, copy_line } => {
                if self.route == Route::Held {
                    // Not pg_dump's shape: kept in order.
                    self.decide_held(Some(Route::Deferred));
                }
                if let Route::Session(index) = self.route
                    && let Some(name) = qualified_name(&table)
                {
                    self.loaded_in(name, index);
                }
                match self.route {
                    Route::Session(index) => self.streams[index].tables.push(table.to_owned()),
                    Route::Deferred => self.deferred.tables.push(table.to_owned()),
                    Route::Held => unreachable!("decided above"),
                }
                self.write(self.route, copy_line);
            }
            Event::Bytes(bytes) | Event::DataEnd(bytes) => self.write(self.route, bytes),
            // The completion marker and what follows run last, on session 0.
            Event::Footer => {
                self.end_part();
                self.settle();
                self.route = Route::Session(0);
            }
        }
        Ok(())
    }

    /// The session (or the deferred stream) for an entry, waiting as its place needs.
    fn place(&mut self, object: &Object) -> Result<Route> {
        if self.serial {
            return Ok(Route::Session(0));
        }
        if std::mem::take(&mut self.settle_next) {
            self.settle();
        }
        let out_of_order = match (self.phase, object.section) {
            (_, Section::Unknown) => true,
            (Phase::PreData, _) => false,
            (Phase::Data, Section::PreData) => true,
            (Phase::PostData, Section::PreData | Section::Data) => true,
            _ => false,
        };
        if out_of_order {
            // Alone: after everything before, before everything after.
            self.settle();
            self.settle_next = true;
            return Ok(Route::Session(0));
        }
        if self.phase == Phase::PreData && object.section != Section::PreData {
            self.end_pre_data()?;
        }
        match object.section {
            Section::PreData => Ok(Route::Session(0)),
            Section::Data if object.desc == "TABLE DATA" => Ok(Route::Session(self.least_loaded())),
            Section::Data => Ok(Route::Session(0)),
            Section::PostData => {
                // No barrier: a build waits only for its own table's rows (`decide_held`),
                // so it overlaps the loading of the others.
                self.phase = Phase::PostData;
                Ok(match object.kind {
                    Kind::Index | Kind::Constraint => Route::Held,
                    _ => Route::Deferred,
                })
            }
            Section::Unknown => unreachable!("out of order above"),
        }
    }

    /// The pre-data has run (the reader waits for it): the tables exist, and the server
    /// can say which are in inheritance trees.
    fn end_pre_data(&mut self) -> Result<()> {
        let gate = Gate::new(self.lanes.len() + 1);
        for lane in &self.lanes {
            lane.push(Op::Barrier(gate.clone()));
        }
        let shared = self.shared.clone();
        if !gate.pass_watching(&shared, &mut || self.watch())? {
            bail!("a session stopped during the pre-data");
        }
        self.phase = Phase::Data;
        self.families = self.db.inheritance_tables(self.sh, self.scratch)?;
        Ok(())
    }

    /// Where a held build goes: to the session that loaded its table's rows, after them in
    /// that session's order; to the least loaded one for a table without rows. A table in
    /// an inheritance tree, rows loaded by several sessions, or no table found: with the
    /// rest of the post-data, after every session has finished.
    fn decide_held(&mut self, forced: Option<Route>) {
        let route = forced.unwrap_or_else(|| match table_of(&self.held) {
            Some(table) if !self.families.contains(&table) => match self.loaded_by.get(&table) {
                Some(Some(index)) => Route::Session(*index),
                Some(None) => Route::Deferred,
                None => Route::Session(self.least_loaded()),
            },
            _ => Route::Deferred,
        });
        self.replay_settings(route);
        let held = std::mem::take(&mut self.held);
        self.write(route, &held);
        self.route = route;
    }

    /// Session `index` loads rows of `table`. A second session loading the same table
    /// makes its builds wait for both.
    fn loaded_in(&mut self, table: (String, String), index: usize) {
        let by = self.loaded_by.entry(table).or_insert(Some(index));
        if *by != Some(index) {
            *by = None;
        }
    }

    /// The current part has ended.
    fn end_part(&mut self) {
        if self.route == Route::Held {
            self.decide_held(None);
        }
    }

    /// The workers replay the header once it is known; a header with more than pg_dump's
    /// settings in it sends everything to session 0.
    fn start_workers_once(&mut self) {
        if std::mem::replace(&mut self.started, true) || self.serial {
            return;
        }
        if self.header.len() > HEADER_MAX || !settings_only(&self.header) {
            step!("the dump's header holds more than settings: loading it through one session");
            self.serial = true;
            return;
        }
        let mut start =
            self.restrict.as_ref().map(|key| format!("\\restrict {key}\n").into_bytes()).unwrap_or_default();
        start.extend_from_slice(&std::mem::take(&mut self.header));
        for index in 1..self.lanes.len() {
            self.write(Route::Session(index), &start);
        }
    }

    /// Everything queued finishes before anything queued after; the deferred post-data
    /// then runs on session 0, and finishes before anything after it.
    fn settle(&mut self) {
        self.barrier();
        let ops = std::mem::take(&mut self.deferred.ops);
        if !ops.is_empty() {
            for op in ops {
                self.lanes[0].push(op);
            }
            self.streams[0].tables.append(&mut self.deferred.tables);
            self.streams[0].settings = self.deferred.settings.take();
            self.barrier();
        }
    }

    fn barrier(&mut self) {
        let gate = Gate::new(self.lanes.len());
        for lane in &self.lanes {
            lane.push(Op::Barrier(gate.clone()));
        }
    }

    /// The session with the least still to load; the first of those.
    fn least_loaded(&self) -> usize {
        (0..self.lanes.len()).min_by_key(|&index| self.lanes[index].pending.load(Ordering::SeqCst)).unwrap_or(0)
    }

    /// The per-object settings in force, for a stream that has not had them.
    fn replay_settings(&mut self, route: Route) {
        if self.serial || route == Route::Held {
            return;
        }
        let seen = match route {
            Route::Session(index) => self.streams[index].settings,
            _ => self.deferred.settings,
        };
        if seen == Some(self.version) {
            return;
        }
        let lines: Vec<u8> = self.settings.replay().flat_map(|line| line.iter().copied()).collect();
        self.write(route, &lines);
        match route {
            Route::Session(index) => self.streams[index].settings = Some(self.version),
            _ => self.deferred.settings = Some(self.version),
        }
    }

    /// Appends `bytes` to a stream's spill file and queues them.
    fn write(&mut self, route: Route, bytes: &[u8]) {
        if bytes.is_empty() || self.error.is_some() {
            return;
        }
        if route == Route::Held {
            self.held.extend_from_slice(bytes);
            if self.held.len() > HOLD_MAX {
                self.decide_held(Some(Route::Deferred));
            }
            return;
        }
        if let Err(err) = self.append(route, bytes) {
            self.fail(err);
        }
    }

    fn append(&mut self, route: Route, bytes: &[u8]) -> Result<()> {
        self.make_room(route)?;
        let stream = match route {
            Route::Session(index) => &mut self.streams[index],
            _ => &mut self.deferred,
        };
        stream
            .file
            .write_all_at(bytes, stream.end)
            .with_context(|| format!("cannot write table data to a temporary file in {}", self.spill_dir.display()))?;
        let op = Op::Bytes { file: stream.file.clone(), at: stream.end, len: bytes.len() as u64 };
        stream.end += bytes.len() as u64;
        self.written += bytes.len() as u64;
        match route {
            Route::Session(index) => self.lanes[index].push(op),
            _ => queue(&mut stream.ops, op),
        }
        Ok(())
    }

    /// While the temporary directory is short of space, waits for the session to catch up
    /// instead of spilling more.
    fn make_room(&mut self, route: Route) -> Result<()> {
        if self.written >= self.next_space_check {
            self.short_of_space = short_of_space(&self.spill_dir)?;
            self.next_space_check = self.written + SPACE_CHECK_EVERY;
        }
        let Route::Session(index) = route else { return Ok(()) };
        while self.short_of_space && self.lanes[index].pending.load(Ordering::SeqCst) > LAG_WHEN_SHORT {
            if self.shared.failed() {
                bail!("a session stopped");
            }
            self.watch()?;
            thread::sleep(TICK);
        }
        Ok(())
    }

    /// Fails a load that is stuck: a session has waited for its sync marker longer than
    /// `STALL` while none of the load's sessions has been busy on the server for 5 s. psql
    /// then holds the marker inside an unfinished statement: the splitter took a line in a
    /// function body or string for one of pg_dump's own. The server is asked at most once
    /// per `STALL`.
    fn watch(&mut self) -> Result<()> {
        let overdue = self
            .lanes
            .iter()
            .position(|lane| lane.awaiting.lock().expect("not poisoned").is_some_and(|since| since.elapsed() > STALL));
        let Some(index) = overdue else { return Ok(()) };
        if self.watched.is_some_and(|at| at.elapsed() < STALL) {
            return Ok(());
        }
        self.watched = Some(Instant::now());
        if self.db.busy_sessions_in(self.sh, self.scratch)? > 0 {
            return Ok(());
        }
        bail!(
            "session {} of {} is stuck inside a statement: the dump holds, in a function body or a string, a line \
             shaped like one of pg_dump's own comment blocks, which the parallel load took for a boundary; nothing \
             was swapped in: restore this backup with --jobs 1",
            index + 1,
            self.lanes.len()
        )
    }

    /// Waits for the sessions once the reader is done, showing their progress: the bytes
    /// they have taken of all that was queued for them. Returns when every feeder has
    /// ended, or the load failed (then the sessions are ended at once).
    fn wait_for_sessions(&mut self, sessions: &[SessionRun]) {
        let queued = self.written;
        let mut progress = Progress::with_total("loaded", queued, false);
        let mut shown = 0;
        loop {
            let pending: u64 = self.lanes.iter().map(|lane| lane.pending.load(Ordering::SeqCst)).sum();
            let done = queued.saturating_sub(pending);
            if done > shown {
                progress.add((done - shown) as usize);
                shown = done;
            }
            if sessions.iter().all(|session| session.feeder.is_finished()) || self.shared.failed() {
                break;
            }
            if let Err(err) = self.watch() {
                self.fail(err);
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        progress.finish();
    }

    /// Queues the end of input for every session.
    fn finish(&mut self) {
        self.end_part();
        self.settle();
        for lane in &self.lanes {
            lane.push(Op::End);
        }
    }

    /// The tables each session was given, in order.
    fn into_streams(self) -> Vec<Vec<String>> {
        self.streams.into_iter().map(|stream| stream.tables).collect()
    }
}

/// A temporary file nobody else can open and nothing has to remove: unlinked from the
/// start (`O_TMPFILE`), or created 0600 and unlinked at once where the file system lacks it.
fn spill_file(dir: &Path) -> Result<File> {
    use rustix::fs::{Mode, OFlags};
    let mode = Mode::from_raw_mode(0o600);
    if let Ok(fd) = rustix::fs::open(dir, OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, mode) {
        return Ok(File::from(fd));
    }
    let path = dir.join(format!(".hindsight-load-{}-{}", std::process::id(), random_key()));
    let fd = rustix::fs::open(&path, OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC, mode)
        .with_context(|| {
            format!("cannot create a temporary file in {}: set TMPDIR to a writable directory", dir.display())
        })?;
    let _ = std::fs::remove_file(&path);
    Ok(File::from(fd))
}

/// Whether `dir`'s file system has less than its reserve free: 1 GiB, or 5% of it if more.
fn short_of_space(dir: &Path) -> Result<bool> {
    let stat = rustix::fs::statvfs(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    let (free, size) = (stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize);
    Ok(free < (1u64 << 30).max(size / 20))
}
