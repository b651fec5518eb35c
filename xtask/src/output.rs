//! What the tasks print on stderr: timestamped step lines a cron log can be read by, and
//! on a terminal a progress line with bytes and rate.

use std::{
    fmt,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

/// Prints one timestamped line: `step!("dumping {db}")`.
macro_rules! step {
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}
pub(crate) use step;

/// Prints one timestamped `warning:` line.
macro_rules! warning {
    ($($arg:tt)*) => { $crate::output::line(format_args!("warning: {}", format_args!($($arg)*))) };
}
pub(crate) use warning;

pub fn line(message: fmt::Arguments<'_>) {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    eprintln!("[{now}] {message}");
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

/// A progress line, redrawn at most every quarter second, and only on a terminal:
/// a cron log gets the step lines alone.
pub struct Progress {
    verb: &'static str,
    started: Instant,
    last_draw: Instant,
    bytes: u64,
    on_terminal: bool,
}

impl Progress {
    const EVERY: Duration = Duration::from_millis(250);

    pub fn new(verb: &'static str) -> Progress {
        let now = Instant::now();
        Progress { verb, started: now, last_draw: now, bytes: 0, on_terminal: std::io::stderr().is_terminal() }
    }

    pub fn add(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
        if self.on_terminal && self.last_draw.elapsed() >= Self::EVERY {
            self.last_draw = Instant::now();
            self.draw();
        }
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

    fn draw(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = human_bytes((self.bytes as f64 / secs) as u64);
        eprint!("\r\x1b[2K  {} {} ({rate}/s)", self.verb, human_bytes(self.bytes));
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, table};

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
}
