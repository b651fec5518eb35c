//! What the tasks print on stderr: timestamped lines a cron log can be read by, at one of
//! three levels set once in `main` (`-q`, default, `-v`), and on a terminal a progress
//! line with bytes, rate, and, when the total is known, a percentage and the time left.
//!
//! The levels: `done!` (a task's last line, its summary) and `warning!` print always,
//! as do errors (`exit::report`); `step!` prints by default, one line per step a person
//! needs; `detail!` and the command echo print only with `-v`.

use std::{
    fmt,
    io::{IsTerminal, Write},
    sync::atomic::{AtomicU8, Ordering},
    time::{Duration, Instant},
};

/// How much a run prints on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Warnings, errors and the last line.
    Quiet = 0,
    /// Also one line per step.
    Normal = 1,
    /// Also every command, shell-quoted, and the steps only a curious person needs.
    Verbose = 2,
}

/// Process-wide: set once in `main`, before any task runs; `Normal` until then (the
/// end-to-end tests' own use of the door).
static LEVEL: AtomicU8 = AtomicU8::new(Level::Normal as u8);

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Level::Quiet,
        1 => Level::Normal,
        _ => Level::Verbose,
    }
}

/// Whether lines of `level` are printed.
pub fn shows(level: Level) -> bool {
    self::level() >= level
}

/// Prints one timestamped line by default (not with `-q`): `step!("dumping {db}")`.
macro_rules! step {
    ($($arg:tt)*) => { $crate::output::line_at($crate::output::Level::Normal, format_args!($($arg)*)) };
}
pub(crate) use step;

/// Prints one timestamped line only with `-v`: housekeeping a person rarely needs.
macro_rules! detail {
    ($($arg:tt)*) => { $crate::output::line_at($crate::output::Level::Verbose, format_args!($($arg)*)) };
}
pub(crate) use detail;

/// Prints a task's last line, its summary, at every level (also with `-q`).
macro_rules! done {
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}
pub(crate) use done;

/// Prints one timestamped `warning:` line, at every level.
macro_rules! warning {
    ($($arg:tt)*) => { $crate::output::line(format_args!("warning: {}", format_args!($($arg)*))) };
}
pub(crate) use warning;

/// Prints one timestamped line whatever the level.
pub fn line(message: fmt::Arguments<'_>) {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    eprintln!("[{now}] {message}");
}

/// Prints one timestamped line when `level` is shown.
pub fn line_at(level: Level, message: fmt::Arguments<'_>) {
    if shows(level) {
        line(message);
    }
}

/// `n thing` or `n things`: `count(1, "table")` is `1 table`.
pub fn count(n: u64, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

/// Bytes in binary units, one decimal: `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Rows as aligned columns, two spaces apart, each as wide as its widest cell (header
/// included): `right[i]` aligns column `i` to the right. The last column is not padded, so
/// no line ends in spaces.
pub fn table(rows: &[Vec<String>], right: &[bool]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|row| row.get(i)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells = row.iter().enumerate().map(|(i, cell)| {
                let pad = " ".repeat(widths[i] - cell.chars().count());
                match (right.get(i).copied().unwrap_or(false), i + 1 == row.len()) {
                    (true, _) => format!("{pad}{cell}"),
                    (false, true) => cell.clone(),
                    (false, false) => format!("{cell}{pad}"),
                }
            });
            cells.collect::<Vec<_>>().join("  ")
        })
        .collect()
}

/// This process's peak resident memory (the kernel's VmHWM), for the summary line.
pub fn peak_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib =
        status.lines().find_map(|line| line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok());
    kib.map_or_else(|| "unknown".to_owned(), |kib: u64| human_bytes(kib * 1024))
}

/// What a progress line measures its way against: `done` bytes of `of`. An estimate (a
/// backup's database size) is said as "about" and never shown past 99%.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    pub done: u64,
    pub of: u64,
    pub estimate: bool,
}

/// A progress line, redrawn at most every quarter second, and only on a terminal and not
/// with `-q`: a cron log gets the step lines alone.
pub struct Progress {
    verb: &'static str,
    started: Instant,
    last_draw: Instant,
    bytes: u64,
    total: Option<Total>,
    on_terminal: bool,
}

impl Progress {
    const EVERY: Duration = Duration::from_millis(250);

    /// Bytes and rate only: nothing says how much is to come.
    pub fn new(verb: &'static str) -> Progress {
        let now = Instant::now();
        let on_terminal = std::io::stderr().is_terminal() && shows(Level::Normal);
        Progress { verb, started: now, last_draw: now, bytes: 0, total: None, on_terminal }
    }

    /// With a percentage and the time left: `done` (given with `add` or `add_with_done`) out of `of`.
    pub fn with_total(verb: &'static str, of: u64, estimate: bool) -> Progress {
        Progress { total: Some(Total { done: 0, of, estimate }), ..Progress::new(verb) }
    }

    /// `bytes` more went through, counted towards the total too.
    pub fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
        if let Some(total) = &mut self.total {
            total.done += bytes as u64;
        }
        self.maybe_draw();
    }

    /// `bytes` more went through, and `done` of the total, when that is measured apart
    /// from the bytes shown (a compressed file: the stored bytes read, the SQL shown).
    pub fn add_with_done(&mut self, bytes: usize, done: u64) {
        self.bytes += bytes as u64;
        if let Some(total) = &mut self.total {
            total.done = done;
        }
        self.maybe_draw();
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Clears the progress line so the next step line starts clean.
    pub fn finish(&self) {
        if self.on_terminal {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }

    fn maybe_draw(&mut self) {
        if self.on_terminal && self.last_draw.elapsed() >= Self::EVERY {
            self.last_draw = Instant::now();
            eprint!("\r\x1b[2K  {}", describe(self.verb, self.bytes, self.started.elapsed(), self.total));
            let _ = std::io::stderr().flush();
        }
    }
}

/// The progress line's text: `loaded 1.0 GiB (40%, 1 min 30 s left, 11.4 MiB/s)`.
pub fn describe(verb: &str, bytes: u64, elapsed: Duration, total: Option<Total>) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = format!("{}/s", human_bytes((bytes as f64 / secs) as u64));
    let Some(Total { done, of, estimate }) = total.filter(|t| t.of > 0) else {
        return format!("{verb} {} ({rate})", human_bytes(bytes));
    };
    let about = if estimate { "about " } else { "" };
    let percent = (done.saturating_mul(100) / of).min(if estimate { 99 } else { 100 });
    // The time left at the rate so far; none before anything moved, nor past an estimate.
    let left = match done {
        0 => None,
        done if done >= of => None,
        done => Some(Duration::from_secs_f64(secs * (of - done) as f64 / done as f64)),
    };
    let left = left.map_or(String::new(), |left| format!(", {about}{} left", human_duration(left)));
    format!("{verb} {} ({about}{percent}%{left}, {rate})", human_bytes(bytes))
}

/// A duration as a person reads a time left: `45 s`, `2 min 05 s`, `1 h 02 min`.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64().round() as u64;
    match secs {
        ..60 => format!("{secs} s"),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_a_person_would() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn table_columns_line_up_whatever_the_cell_widths() {
        let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let rows = [
            row(&["#", "size", "file", "status"]),
            row(&["1", "43 B", "a.sql.zst", "ok"]),
            row(&["12", "1.5 KiB", "b.sql", "x"]),
        ];
        let lines = table(&rows, &[true, true, false, false]);
        assert_eq!(
            lines,
            [" #     size  file       status", " 1     43 B  a.sql.zst  ok", "12  1.5 KiB  b.sql      x"]
        );
        // Every column starts at the same place on every line.
        let starts = |line: &str| line.find("status").or(line.find("ok")).or(line.find(" x").map(|i| i + 1));
        assert_eq!(starts(&lines[0]), starts(&lines[1]));
        assert_eq!(starts(&lines[1]), starts(&lines[2]));
    }

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(count(1, "table"), "1 table");
        assert_eq!(count(0, "table"), "0 tables");
        assert_eq!(count(2, "incomplete file"), "2 incomplete files");
    }

    #[test]
    fn durations_read_as_a_person_would() {
        assert_eq!(human_duration(Duration::from_millis(400)), "0 s");
        assert_eq!(human_duration(Duration::from_secs(59)), "59 s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2 min 05 s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1 h 02 min");
    }

    #[test]
    fn progress_shows_a_percentage_and_the_time_left_when_the_total_is_known() {
        let mib = 1024 * 1024;
        let ten_secs = Duration::from_secs(10);
        // Bytes only: no total, no percentage.
        assert_eq!(describe("dumped", 10 * mib, ten_secs, None), "dumped 10.0 MiB (1.0 MiB/s)");
        // A quarter of a file in 10 s: 30 s to go at that rate.
        let file = Total { done: 25 * mib, of: 100 * mib, estimate: false };
        assert_eq!(describe("loaded", 25 * mib, ten_secs, Some(file)), "loaded 25.0 MiB (25%, 30 s left, 2.5 MiB/s)");
        // A compressed file: the SQL shown, the stored bytes counted.
        let file = Total { done: 50 * mib, of: 100 * mib, estimate: false };
        assert_eq!(
            describe("loaded", 400 * mib, ten_secs, Some(file)),
            "loaded 400.0 MiB (50%, 10 s left, 40.0 MiB/s)"
        );
        let whole = Total { done: 100 * mib, of: 100 * mib, estimate: false };
        assert_eq!(describe("loaded", 100 * mib, ten_secs, Some(whole)), "loaded 100.0 MiB (100%, 10.0 MiB/s)");
        // Nothing read yet: no time left to say.
        let none = Total { done: 0, of: 100, estimate: false };
        assert_eq!(describe("loaded", 0, ten_secs, Some(none)), "loaded 0 B (0%, 0 B/s)");
    }

    #[test]
    fn an_estimate_says_about_and_stops_at_99_percent() {
        let mib = 1024 * 1024;
        let ten_secs = Duration::from_secs(10);
        let estimate = Total { done: 10 * mib, of: 40 * mib, estimate: true };
        assert_eq!(
            describe("dumped", 10 * mib, ten_secs, Some(estimate)),
            "dumped 10.0 MiB (about 25%, about 30 s left, 1.0 MiB/s)"
        );
        let exceeded = Total { done: 50 * mib, of: 40 * mib, estimate: true };
        assert_eq!(describe("dumped", 50 * mib, ten_secs, Some(exceeded)), "dumped 50.0 MiB (about 99%, 5.0 MiB/s)");
        // An empty database's size is no total at all.
        let zero = Total { done: 5, of: 0, estimate: true };
        assert_eq!(describe("dumped", 5, ten_secs, Some(zero)), "dumped 5 B (0 B/s)");
    }
}
