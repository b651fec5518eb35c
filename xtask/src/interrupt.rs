//! Ctrl-C, SIGTERM and SIGHUP. A signal does not end the process on the spot: a thread
//! notes it, ends this run's work inside the container (its server sessions), then the
//! programs it started; the task's own code sees its step fail, and every guard on the
//! way out cleans up (the `.partial` file, the scratch database) before the lock is
//! released and the process exits 128 + the signal's number (130, 143, 129). A second
//! signal ends the programs and exits at once, leaving the cleanup to the next run; a
//! signal while a question waits for its answer exits at once, nothing having started.
//!
//! The programs run in their own process group (see `process`), so a terminal's Ctrl-C
//! reaches this process only, and it ends them in that order: a `docker exec` client
//! killed first would leave its pg_dump or psql running inside the container.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::output;

static RECEIVED: AtomicI32 = AtomicI32::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// A question waits for its answer: nothing has been started that needs cleaning.
static ASKING: AtomicBool = AtomicBool::new(false);
/// How long ending the run's sessions may take before the programs are ended anyway
/// (a hung Docker daemon must not keep the run from stopping).
const SESSIONS_TIMEOUT: Duration = Duration::from_secs(15);

type Stop = Arc<dyn Fn() + Send + Sync>;

/// What to run when a signal arrives, by stage: server sessions are ended before the
/// programs that carry them.
static STOPPERS: Mutex<Vec<(Stage, u64, Stop)>> = Mutex::new(Vec::new());

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// End this run's sessions on the server (pg_terminate_backend by application name).
    Sessions,
    /// Then the programs still running, after a short grace for them to exit on their own.
    Programs,
}

/// Handles SIGINT, SIGTERM and SIGHUP from here on.
pub fn install() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    thread::spawn(move || {
        for signal in signals.forever() {
            match RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) if ASKING.load(Ordering::SeqCst) => {
                    output::line(format_args!("{}: nothing was changed", name(signal)));
                    exit_now(Stopped(signal), "nothing was changed");
                }
                Ok(_) => {
                    output::line(format_args!(
                        "{}: stopping this run's work in the database, then cleaning up (this takes a few \
                         seconds; a second signal exits at once and leaves the cleanup to the next run)",
                        name(signal)
                    ));
                    stop_work();
                }
                Err(first) => {
                    output::line(format_args!(
                        "{}: exiting now; the next db-backup, db-restore or db-verify cleans up what is left",
                        name(signal)
                    ));
                    for stop in stoppers(Stage::Programs) {
                        stop();
                    }
                    exit_now(Stopped(first), "exited at once on a second signal; the next run cleans up");
                }
            }
        }
    });
    Ok(())
}

/// Exits on the spot, `--json`'s object first: no way out leaves stdout without one.
fn exit_now(stopped: Stopped, what: &str) -> ! {
    crate::json::print_envelope(stopped.exit_code(), Some(&format!("{stopped}: {what}")));
    std::process::exit(stopped.exit_code().into());
}

/// Runs `ask` (a question on the terminal) so that a signal meanwhile exits at once.
pub fn asking<T>(ask: impl FnOnce() -> T) -> T {
    ASKING.store(true, Ordering::SeqCst);
    let answer = ask();
    ASKING.store(false, Ordering::SeqCst);
    answer
}

/// The signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Fails once a signal has arrived: call between steps, so no new work starts.
pub fn check() -> Result<(), Stopped> {
    received().map_or(Ok(()), |signal| Err(Stopped(signal)))
}

/// The run was stopped by a signal; its exit code is 128 + the signal's number.
#[derive(Debug)]
pub struct Stopped(pub i32);

impl Stopped {
    pub fn exit_code(&self) -> u8 {
        128u8.saturating_add(self.0 as u8)
    }
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stopped by {}", name(self.0))
    }
}

impl std::error::Error for Stopped {}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP (the terminal went away)",
        _ => "a signal",
    }
}

/// Registers `stop` until the returned guard is dropped. If a signal has already arrived,
/// `stop` runs at once: work that started in the race is ended all the same.
#[must_use = "the stopper is removed when the guard drops"]
pub fn on_stop(stage: Stage, stop: impl Fn() + Send + Sync + 'static) -> OnStop {
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    let stop: Stop = Arc::new(stop);
    STOPPERS.lock().unwrap_or_else(|p| p.into_inner()).push((stage, id, stop.clone()));
    if received().is_some() {
        stop();
    }
    OnStop { id }
}

pub struct OnStop {
    id: u64,
}

impl Drop for OnStop {
    fn drop(&mut self) {
        STOPPERS.lock().unwrap_or_else(|p| p.into_inner()).retain(|(_, id, _)| *id != self.id);
    }
}

fn stoppers(stage: Stage) -> Vec<Stop> {
    let all = STOPPERS.lock().unwrap_or_else(|p| p.into_inner());
    all.iter().filter(|(s, _, _)| *s == stage).map(|(_, _, stop)| stop.clone()).collect()
}

/// Runs the stoppers, sessions first (each given `SESSIONS_TIMEOUT`); programs get a
/// moment to exit by themselves once their sessions are gone, then are sent SIGTERM.
fn stop_work() {
    for stop in stoppers(Stage::Sessions) {
        let (done, finished) = mpsc::channel();
        thread::spawn(move || {
            stop();
            let _ = done.send(());
        });
        if finished.recv_timeout(SESSIONS_TIMEOUT).is_err() {
            output::line(format_args!("ending the run's sessions takes too long: ending its programs"));
        }
    }
    let grace = Instant::now() + Duration::from_secs(3);
    while Instant::now() < grace && !stoppers(Stage::Programs).is_empty() {
        thread::sleep(Duration::from_millis(50));
    }
    for stop in stoppers(Stage::Programs) {
        stop();
    }
}
