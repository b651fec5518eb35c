//! Just enough JSON for `--json` output: strings escaped, objects and arrays built in
//! order, times in RFC 3339 with their offset; and the one envelope every task's `--json`
//! prints: exactly one object on stdout, `{"ok":true,...}` or
//! `{"ok":false,"error":...,"code":N,...}`, whatever happens.
//!
//! The tasks never print JSON themselves: they register their fields with [`report`], and
//! `exit::report` (or the signal thread, or the panic hook, or `main` for a command-line
//! error) prints the envelope through [`print_envelope`], which prints once per process.
//! So no task can print two objects, or none.

use std::{
    fmt::{self, Write as _},
    io::Write as _,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use chrono::{DateTime, Local, NaiveDateTime, SecondsFormat, TimeZone};

/// A JSON string literal.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn array(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(","))
}

/// An array of strings.
pub fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    array(items.into_iter().map(|item| string(item.as_ref())))
}

/// A time as RFC 3339 with its offset (`2026-11-25T11:46:00+01:00`): a time without a
/// zone means something else on every machine that reads it.
pub fn time<Tz: TimeZone>(at: &DateTime<Tz>) -> String
where
    Tz::Offset: fmt::Display,
{
    at.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A local wall-clock time, as the backups' names hold it, with this machine's offset at
/// that moment. An hour that daylight saving repeats gives its first occurrence; one it
/// skips (no name can hold it, `Local::now` never gives it) is read as UTC.
pub fn local_time(naive: NaiveDateTime) -> String {
    time(&local_instant(naive))
}

/// The moment a local wall-clock time names here (see [`local_time`]).
pub fn local_instant(naive: NaiveDateTime) -> DateTime<chrono::FixedOffset> {
    match Local.from_local_datetime(&naive).earliest() {
        Some(at) => at.fixed_offset(),
        None => naive.and_utc().fixed_offset(),
    }
}

/// An object whose fields keep the order they were added in.
#[derive(Default, Debug)]
pub struct Object {
    fields: Vec<String>,
}

impl Object {
    pub fn new() -> Object {
        Object::default()
    }

    /// A field whose value is already JSON (a number, `true`, an array, an object).
    pub fn raw(mut self, key: &str, value: impl ToString) -> Object {
        self.fields.push(format!("{}:{}", string(key), value.to_string()));
        self
    }

    pub fn str(self, key: &str, value: &str) -> Object {
        self.raw(key, string(value))
    }

    pub fn opt_str(self, key: &str, value: Option<&str>) -> Object {
        self.raw(key, value.map_or("null".to_owned(), string))
    }

    /// A local wall-clock time, with its offset (see [`local_time`]).
    pub fn local_time(self, key: &str, naive: NaiveDateTime) -> Object {
        self.raw(key, string(&local_time(naive)))
    }

    /// `other`'s fields after this one's.
    pub fn extend(mut self, other: Object) -> Object {
        self.fields.extend(other.fields);
        self
    }

    pub fn build(self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

/// Whether `--json` was given: set once by `main`, before the task runs.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The task's fields, registered as it goes, printed in the envelope at exit.
static FIELDS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Whether the envelope was printed: the lock is held while it is written, so a second
/// caller (the signal thread racing `main`) waits, finds it done, and prints nothing.
static PRINTED: Mutex<bool> = Mutex::new(false);

/// Stdout belongs to one JSON object from here on.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Adds a task's fields to the object printed at exit: on success after `"ok":true`, on
/// failure after `"ok":false,"error":...,"code":N` (db-verify's per-backup reports, what a
/// restore had swapped in before a later step failed). Keys must not repeat.
pub fn report(fields: Object) {
    FIELDS.lock().unwrap_or_else(|p| p.into_inner()).extend(fields.fields);
}

/// The envelope for exit code `code` (0: success) with `error` (the one-line message)
/// and the registered `fields`.
pub fn envelope(code: u8, error: Option<&str>, fields: Vec<String>) -> String {
    let head = match code {
        0 => Object::new().raw("ok", true),
        _ => Object::new().raw("ok", false).str("error", error.unwrap_or("failed")).raw("code", code),
    };
    head.extend(Object { fields }).build()
}

/// clap's error as the envelope's one-line `error`: its first line, without `error: `
/// (the usage and the `--help` hint that follow are for a person, on stderr).
pub fn clap_message(rendered: &str) -> String {
    let first = rendered.lines().find(|line| !line.trim().is_empty()).unwrap_or("bad command line");
    first.strip_prefix("error: ").unwrap_or(first).trim().to_owned()
}

/// Prints the envelope on stdout when `--json` was given, once per process: every way
/// out calls this, and only the first prints.
pub fn print_envelope(code: u8, error: Option<&str>) {
    if !requested() {
        return;
    }
    let mut printed = PRINTED.lock().unwrap_or_else(|p| p.into_inner());
    if *printed {
        return;
    }
    *printed = true;
    let fields = std::mem::take(&mut *FIELDS.lock().unwrap_or_else(|p| p.into_inner()));
    let mut stdout = std::io::stdout().lock();
    // No panic here (a closed pipe): this also runs inside the panic hook.
    let _ = writeln!(stdout, "{}", envelope(code, error, fields));
    let _ = stdout.flush();
}

/// Prints a line meant for a person on stdout, or on stderr while `--json` owns stdout.
pub fn human_line(line: fmt::Arguments<'_>) {
    if requested() {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// `println!` for lines meant for a person: on stderr when `--json` owns stdout.
macro_rules! human {
    ($($arg:tt)*) => { $crate::json::human_line(format_args!($($arg)*)) };
}
pub(crate) use human;

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, NaiveDate};

    use super::*;

    #[test]
    fn escapes_and_builds() {
        assert_eq!(string("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\u0001é""#);
        let object = Object::new().str("path", "/x y").raw("size", 12).raw("ok", true).opt_str("rev", None);
        assert_eq!(object.build(), r#"{"path":"/x y","size":12,"ok":true,"rev":null}"#);
        assert_eq!(array(["1".to_owned(), string("x")]), r#"[1,"x"]"#);
        assert_eq!(array(Vec::new()), "[]");
        assert_eq!(strings(["a", "b\""]), r#"["a","b\""]"#);
    }

    #[test]
    fn times_carry_their_offset() {
        let naive = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap().and_hms_opt(11, 46, 0).unwrap();
        let east = FixedOffset::east_opt(3600).unwrap().from_local_datetime(&naive).unwrap();
        assert_eq!(time(&east), "2026-11-25T11:46:00+01:00");
        assert_eq!(time(&naive.and_utc()), "2026-11-25T11:46:00+00:00", "UTC as +00:00, not Z");
        // The wall-clock time stays as named; the offset is this machine's then.
        let local = local_time(naive);
        let parsed = DateTime::parse_from_rfc3339(&local).expect("RFC 3339");
        assert_eq!(parsed.naive_local(), naive, "{local}");
        assert_eq!(local.len(), "2026-11-25T11:46:00+01:00".len(), "{local}");
    }

    #[test]
    fn the_envelope_says_ok_and_the_exit_code() {
        let fields = Object::new().str("path", "/b/x.sql").raw("size", 3).fields;
        assert_eq!(envelope(0, None, fields.clone()), r#"{"ok":true,"path":"/b/x.sql","size":3}"#);
        assert_eq!(
            envelope(3, Some("busy: \"db-backup\" holds the lock"), Vec::new()),
            r#"{"ok":false,"error":"busy: \"db-backup\" holds the lock","code":3}"#
        );
        assert_eq!(
            clap_message(
                "error: invalid value '0 * * *' for '--schedule <SCHEDULE>': 4 fields\n\nFor more information, try '--help'.\n"
            ),
            "invalid value '0 * * *' for '--schedule <SCHEDULE>': 4 fields"
        );
        assert_eq!(
            envelope(1, Some("1 of 1 failed"), fields),
            r#"{"ok":false,"error":"1 of 1 failed","code":1,"path":"/b/x.sql","size":3}"#
        );
    }
}
