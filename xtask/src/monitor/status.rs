//! db-status's judgement, apart from the files it reads: the facts of a backup directory
//! (and its offsite copies) in, a Nagios state with its reasons out.

use std::time::Duration;

use super::record::{OffsiteEnd, RunRecord};

/// A Nagios plugin's states, worst last; the exit code is the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// What db-status found. Times are Unix seconds.
#[derive(Debug, Clone)]
pub struct Facts {
    pub db: String,
    pub now: i64,
    /// The newest complete backup: its file name, time and size.
    pub newest: Option<(String, i64, u64)>,
    pub backups: usize,
    /// The run record; Err says why it cannot be read.
    pub last_run: Result<Option<RunRecord>, String>,
    /// Whether a "started" record's run is gone (`RunRecord::died`).
    pub run_died: bool,
    pub last_verify: Option<i64>,
    pub offsite: Option<Offsite>,
}

/// What is known of the offsite copies: the newest complete one's time (from the store
/// with --offsite, else from the run record), or why the store could not be listed.
#[derive(Debug, Clone)]
pub enum Offsite {
    Newest(Option<i64>),
    Unreachable(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_age: Duration,
    /// Zero: not checked.
    pub max_verify_age: Duration,
}

/// One finding: its state and its words.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub state: State,
    pub what: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Assessment {
    pub state: State,
    /// The first line: the state's name, the database, then what is wrong (or, when
    /// nothing is, the good news in short).
    pub summary: String,
    pub checks: Vec<Check>,
}

/// An age as a person reads it on a monitoring screen: `45 s`, `12 min`, `3 h 05 min`, `9 d 2 h`.
pub fn age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        ..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// `--max-age`'s value as given: `2h`, `8d`.
fn limit(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

pub fn assess(facts: &Facts, limits: Limits) -> Assessment {
    let mut checks = Vec::new();
    let mut check = |state, what, message: String| checks.push(Check { state, what, message });
    let max_age = limits.max_age.as_secs() as i64;

    match &facts.newest {
        None => check(State::Critical, "backup", "no complete backup".to_owned()),
        Some((name, taken, _)) if facts.now - taken > max_age => check(
            State::Critical,
            "backup",
            format!(
                "the newest backup is {} old, over --max-age {}: {name}",
                age(facts.now - taken),
                limit(limits.max_age)
            ),
        ),
        Some((name, taken, _)) => {
            check(State::Ok, "backup", format!("newest backup {} old: {name}", age(facts.now - taken)))
        }
    }

    match &facts.last_run {
        Err(why) => check(State::Warning, "last_run", format!("the run record cannot be read: {why}")),
        Ok(None) => check(State::Ok, "last_run", "no db-backup run recorded yet".to_owned()),
        Ok(Some(run)) => {
            let started = run.started.timestamp();
            match &run.end {
                None if facts.run_died => check(
                    State::Critical,
                    "last_run",
                    format!(
                        "the last run (pid {}, started {} ago) died without finishing: see its log",
                        run.pid,
                        age(facts.now - started)
                    ),
                ),
                None if facts.now - started > max_age => check(
                    State::Warning,
                    "last_run",
                    format!(
                        "a run (pid {} on {}) has been going for {}: it may hang",
                        run.pid,
                        run.host,
                        age(facts.now - started)
                    ),
                ),
                None => check(
                    State::Ok,
                    "last_run",
                    format!("a run is in progress, started {} ago", age(facts.now - started)),
                ),
                Some(end) => {
                    let ago = age(facts.now - end.finished.timestamp());
                    let (state, message) = match end.exit_code {
                        0 => (State::Ok, format!("last run ok {ago} ago")),
                        3 => (State::Warning, format!("the last run, {ago} ago, was busy (exit 3): {}", end.message)),
                        6 => (
                            State::Warning,
                            format!(
                                "the last run's offsite copy failed, {ago} ago (exit 6): {}",
                                offsite_why(&end.offsite, &end.message)
                            ),
                        ),
                        129 | 130 | 143 => (
                            State::Warning,
                            format!("the last run, {ago} ago, was stopped by a signal (exit {})", end.exit_code),
                        ),
                        code => {
                            (State::Critical, format!("the last run failed {ago} ago (exit {code}): {}", end.message))
                        }
                    };
                    check(state, "last_run", message);
                }
            }
        }
    }

    // A later run found this one holding the lock: it ended busy, and this record is
    // still the holder's.
    if let Ok(Some(RunRecord { busy: Some((at, message)), .. })) = &facts.last_run {
        let ago = age(facts.now - at.timestamp());
        check(State::Warning, "last_run", format!("a run {ago} ago was busy (exit 3): {message}"));
    }

    if !limits.max_verify_age.is_zero() {
        let max = limits.max_verify_age.as_secs() as i64;
        match facts.last_verify {
            None => check(
                State::Warning,
                "verify",
                "no backup kept has passed db-verify: run `cargo xtask db-verify`".to_owned(),
            ),
            Some(at) if facts.now - at > max => check(
                State::Warning,
                "verify",
                format!(
                    "the newest passing db-verify is {} old, over --max-verify-age {}",
                    age(facts.now - at),
                    limit(limits.max_verify_age)
                ),
            ),
            Some(at) => check(State::Ok, "verify", format!("verified {} ago", age(facts.now - at))),
        }
    }

    match (&facts.offsite, &facts.newest) {
        (None, _) => {}
        (Some(Offsite::Unreachable(why)), _) => {
            check(State::Warning, "offsite", format!("cannot list the offsite copies: {why}"))
        }
        (Some(Offsite::Newest(None)), Some(_)) => check(State::Warning, "offsite", "no offsite copy yet".to_owned()),
        (Some(Offsite::Newest(Some(copy))), Some((_, local, _))) if local - copy > max_age => check(
            State::Warning,
            "offsite",
            format!(
                "the offsite copies lag {} behind the local backups, over --max-age {}",
                age(local - copy),
                limit(limits.max_age)
            ),
        ),
        (Some(Offsite::Newest(Some(copy))), Some((_, local, _))) => check(
            State::Ok,
            "offsite",
            match local - copy {
                ..=0 => "offsite copy of the newest backup".to_owned(),
                lag => format!("offsite copies {} behind", age(lag)),
            },
        ),
        (Some(Offsite::Newest(_)), None) => {}
    }

    let state = checks.iter().map(|c| c.state).max().unwrap_or(State::Ok);
    let shown: Vec<&str> = match state {
        State::Ok => checks.iter().map(|c| c.message.as_str()).collect(),
        _ => checks.iter().filter(|c| c.state == state).map(|c| c.message.as_str()).collect(),
    };
    let summary = format!("{}: {}: {}", state.name(), facts.db, shown.join("; "));
    Assessment { state, summary, checks }
}

fn offsite_why(offsite: &OffsiteEnd, message: &str) -> String {
    match offsite {
        OffsiteEnd::Failed(why) => why.clone(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::monitor::record::End;

    const NOW: i64 = 1_764_064_800;
    const HOUR: i64 = 3600;
    const LIMITS: Limits =
        Limits { max_age: Duration::from_secs(2 * 3600), max_verify_age: Duration::from_secs(8 * 86_400) };

    fn at(secs: i64) -> DateTime<chrono::FixedOffset> {
        DateTime::from_timestamp(secs, 0).unwrap().fixed_offset()
    }

    fn run(started: i64, code: Option<u8>) -> RunRecord {
        RunRecord {
            pid: 7,
            host: "h".to_owned(),
            boot: String::new(),
            started: at(started),
            end: code.map(|exit_code| End {
                finished: at(started + 60),
                exit_code,
                message: if exit_code == 0 { "ok".to_owned() } else { "pg_dump failed: boom".to_owned() },
                duration_secs: 60.0,
                backup: None,
                size: None,
                revision: None,
                offsite: OffsiteEnd::None,
            }),
            offsite_newest: None,
            busy: None,
        }
    }

    fn healthy() -> Facts {
        Facts {
            db: "hindsight_db".to_owned(),
            now: NOW,
            newest: Some(("hindsight_db_backup_x.sql".to_owned(), NOW - 600, 10)),
            backups: 3,
            last_run: Ok(Some(run(NOW - 660, Some(0)))),
            run_died: false,
            last_verify: Some(NOW - 86_400),
            offsite: None,
        }
    }

    #[test]
    fn a_fresh_backup_a_good_run_and_a_recent_verify_are_ok() {
        let assessment = assess(&healthy(), LIMITS);
        assert_eq!(assessment.state, State::Ok);
        assert!(assessment.summary.starts_with("OK: hindsight_db: newest backup 10 min old"), "{}", assessment.summary);
    }

    #[test]
    fn stale_missing_or_failed_is_critical() {
        let stale = Facts { newest: Some(("old.sql".to_owned(), NOW - 3 * HOUR, 10)), ..healthy() };
        let assessment = assess(&stale, LIMITS);
        assert_eq!(assessment.state, State::Critical);
        assert!(
            assessment
                .summary
                .starts_with("CRITICAL: hindsight_db: the newest backup is 3 h 00 min old, over --max-age 2h")
        );
        assert_eq!(assess(&Facts { newest: None, backups: 0, ..healthy() }, LIMITS).state, State::Critical);
        for code in [1, 2, 5] {
            let failed = Facts { last_run: Ok(Some(run(NOW - 60, Some(code)))), ..healthy() };
            let assessment = assess(&failed, LIMITS);
            assert_eq!(assessment.state, State::Critical, "exit {code}");
            assert!(assessment.summary.contains("pg_dump failed: boom"), "{}", assessment.summary);
        }
        let died = Facts { last_run: Ok(Some(run(NOW - 60, None))), run_died: true, ..healthy() };
        assert_eq!(assess(&died, LIMITS).state, State::Critical);
    }

    #[test]
    fn busy_offsite_signals_old_verifies_lag_and_hangs_warn() {
        for code in [3, 6, 130, 143] {
            let run = Facts { last_run: Ok(Some(run(NOW - 60, Some(code)))), ..healthy() };
            assert_eq!(assess(&run, LIMITS).state, State::Warning, "exit {code}");
        }
        assert_eq!(assess(&Facts { last_verify: None, ..healthy() }, LIMITS).state, State::Warning);
        assert_eq!(assess(&Facts { last_verify: Some(NOW - 9 * 86_400), ..healthy() }, LIMITS).state, State::Warning);
        let off = Limits { max_verify_age: Duration::ZERO, ..LIMITS };
        assert_eq!(assess(&Facts { last_verify: None, ..healthy() }, off).state, State::Ok, "0 turns the check off");
        let lag = Facts { offsite: Some(Offsite::Newest(Some(NOW - 600 - 3 * HOUR))), ..healthy() };
        assert_eq!(assess(&lag, LIMITS).state, State::Warning);
        let current = Facts { offsite: Some(Offsite::Newest(Some(NOW - 600))), ..healthy() };
        assert_eq!(assess(&current, LIMITS).state, State::Ok);
        assert_eq!(assess(&Facts { offsite: Some(Offsite::Newest(None)), ..healthy() }, LIMITS).state, State::Warning);
        let down = Facts { offsite: Some(Offsite::Unreachable("connection refused".to_owned())), ..healthy() };
        assert_eq!(assess(&down, LIMITS).state, State::Warning);
        let hangs = Facts { last_run: Ok(Some(run(NOW - 3 * HOUR, None))), ..healthy() };
        assert_eq!(assess(&hangs, LIMITS).state, State::Warning);
        let running = Facts { last_run: Ok(Some(run(NOW - 60, None))), ..healthy() };
        assert_eq!(assess(&running, LIMITS).state, State::Ok);
        let mut holder = run(NOW - 60, None);
        holder.busy = Some((at(NOW - 30), "another run holds the lock".to_owned()));
        let busy = Facts { last_run: Ok(Some(holder)), ..healthy() };
        assert_eq!(assess(&busy, LIMITS).state, State::Warning, "busy while a run is in progress");
        let unreadable = Facts { last_run: Err("nonsense".to_owned()), ..healthy() };
        assert_eq!(assess(&unreadable, LIMITS).state, State::Warning);
    }

    #[test]
    fn the_summary_names_the_worst_and_ages_read_well() {
        let both = Facts { newest: None, last_verify: None, ..healthy() };
        let assessment = assess(&both, LIMITS);
        assert_eq!(assessment.summary, "CRITICAL: hindsight_db: no complete backup");
        assert_eq!(age(45), "45 s");
        assert_eq!(age(12 * 60 + 5), "12 min");
        assert_eq!(age(3 * 3600 + 300), "3 h 05 min");
        assert_eq!(age(9 * 86_400 + 2 * 3600), "9 d 2 h");
        assert_eq!(limit(Duration::from_secs(8 * 86_400)), "8d");
        assert_eq!(limit(Duration::from_secs(90 * 60)), "90m");
    }
}
