//! The record of the last db-backup run: `DB.last-run` in the backup directory, written
//! "started" when a run begins and replaced when it ends, atomically each time, so that
//! db-status tells "the last run failed" from "no run happened" from "a run hangs".
//!
//! `key=value` lines, one value a line: a person reads it with `cat`, and a key this
//! version does not know is ignored by it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, FixedOffset, SecondsFormat};

/// What follows the database's name in the record's file name.
pub const SUFFIX: &str = ".last-run";

/// One run, started and maybe ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub pid: u32,
    /// The machine the run is on, and its boot: whether its pid can be checked here (a
    /// pid from before a reboot names another process, or none).
    pub host: String,
    pub boot: String,
    pub started: DateTime<FixedOffset>,
    /// None while it runs (or when it died without ending).
    pub end: Option<End>,
    /// The newest backup (its file name) whose offsite copy a run completed, carried from
    /// record to record: the offsite lag without asking the store.
    pub offsite_newest: Option<String>,
    /// When a later run found this one holding the lock (exit 3), and its message: added
    /// by that run, which does not replace the holder's record.
    pub busy: Option<(DateTime<FixedOffset>, String)>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    pub finished: DateTime<FixedOffset>,
    pub exit_code: u8,
    /// `ok`, or the error's first line.
    pub message: String,
    pub duration_secs: f64,
    /// The backup it wrote (its file name), with its size and revision.
    pub backup: Option<String>,
    pub size: Option<u64>,
    pub revision: Option<String>,
    pub offsite: OffsiteEnd,
}

/// What happened to the run's offsite copy.
#[derive(Debug, Clone, PartialEq)]
pub enum OffsiteEnd {
    /// No --offsite.
    None,
    Ok,
    Failed(String),
}

/// Where `db`'s record lives in `dir`.
pub fn path(dir: &Path, db: &str) -> PathBuf {
    dir.join(format!("{db}{SUFFIX}"))
}

impl RunRecord {
    /// This run, just started.
    pub fn started(offsite_newest: Option<String>) -> RunRecord {
        RunRecord {
            pid: std::process::id(),
            host: host_name(),
            boot: boot_id(),
            started: chrono::Local::now().fixed_offset(),
            end: None,
            offsite_newest,
            busy: None,
        }
    }

    pub fn render(&self) -> String {
        let time = |at: &DateTime<FixedOffset>| at.to_rfc3339_opts(SecondsFormat::Secs, false);
        let mut lines = vec![
            ("state", if self.end.is_some() { "finished" } else { "started" }.to_owned()),
            ("pid", self.pid.to_string()),
            ("host", self.host.clone()),
            ("boot", self.boot.clone()),
            ("started", time(&self.started)),
        ];
        if let Some(end) = &self.end {
            lines.push(("finished", time(&end.finished)));
            lines.push(("exit_code", end.exit_code.to_string()));
            lines.push(("outcome", end.message.clone()));
            lines.push(("duration_secs", format!("{:.3}", end.duration_secs)));
            lines.extend(end.backup.clone().map(|b| ("backup", b)));
            lines.extend(end.size.map(|s| ("size", s.to_string())));
            lines.extend(end.revision.clone().map(|r| ("revision", r)));
            match &end.offsite {
                OffsiteEnd::None => {}
                OffsiteEnd::Ok => lines.push(("offsite", "ok".to_owned())),
                OffsiteEnd::Failed(why) => {
                    lines.push(("offsite", "failed".to_owned()));
                    lines.push(("offsite_error", why.clone()));
                }
            }
        }
        lines.extend(self.offsite_newest.clone().map(|n| ("offsite_newest", n)));
        if let Some((at, message)) = &self.busy {
            lines.push(("busy_at", time(at)));
            lines.push(("busy", message.clone()));
        }
        // One value a line, whatever an error message holds.
        lines.iter().map(|(key, value)| format!("{key}={}\n", one_line(value))).collect()
    }

    /// A record as `render` wrote it; unknown keys are skipped.
    pub fn parse(text: &str) -> Result<RunRecord> {
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| anyhow!("`{line}` is not key=value"))?;
            fields.push((key.trim(), value));
        }
        let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let need = |key: &str| get(key).ok_or_else(|| anyhow!("no `{key}`"));
        let time = |key: &str| -> Result<DateTime<FixedOffset>> {
            let text = need(key)?;
            DateTime::parse_from_rfc3339(text).with_context(|| format!("`{key}={text}` is not a time"))
        };
        let number = |key: &str, text: &str| -> Result<u64> {
            text.parse().with_context(|| format!("`{key}={text}` is not a number"))
        };
        let end = match need("state")? {
            "started" => None,
            "finished" => Some(End {
                finished: time("finished")?,
                exit_code: number("exit_code", need("exit_code")?)?.try_into().context("exit_code is too large")?,
                message: need("outcome")?.to_owned(),
                duration_secs: get("duration_secs").and_then(|d| d.parse().ok()).unwrap_or(0.0),
                backup: get("backup").map(str::to_owned),
                size: get("size").map(|s| number("size", s)).transpose()?,
                revision: get("revision").map(str::to_owned),
                offsite: match get("offsite") {
                    None => OffsiteEnd::None,
                    Some("ok") => OffsiteEnd::Ok,
                    Some(_) => OffsiteEnd::Failed(get("offsite_error").unwrap_or("failed").to_owned()),
                },
            }),
            other => return Err(anyhow!("`state={other}` is neither started nor finished")),
        };
        Ok(RunRecord {
            pid: number("pid", need("pid")?)?.try_into().context("pid is too large")?,
            host: need("host")?.to_owned(),
            boot: get("boot").unwrap_or_default().to_owned(),
            started: time("started")?,
            end,
            offsite_newest: get("offsite_newest").map(str::to_owned),
            busy: match get("busy_at") {
                Some(_) => Some((time("busy_at")?, get("busy").unwrap_or_default().to_owned())),
                None => None,
            },
        })
    }

    /// Whether the run that wrote this "started" record is gone: same machine, and no such
    /// process, or the machine rebooted since. On another machine (a shared directory)
    /// nobody can tell: not gone.
    pub fn died(&self) -> bool {
        let here = !self.host.is_empty() && self.host == host_name();
        let rebooted = !self.boot.is_empty() && self.boot != boot_id();
        self.end.is_none() && here && (rebooted || !Path::new("/proc").join(self.pid.to_string()).exists())
    }
}

/// `db`'s record in `dir`: None when there is none. Err when it cannot be read or makes
/// no sense (written by hand, cut by a full disk before the atomic rename existed).
pub fn read(dir: &Path, db: &str) -> Result<Option<RunRecord>> {
    let path = path(dir, db);
    match fs::read_to_string(&path) {
        Ok(text) => RunRecord::parse(&text).map(Some).with_context(|| format!("{} makes no sense", path.display())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces `db`'s record in `dir`, atomically (mode 0600, like every file there).
pub fn write(dir: &Path, db: &str, record: &RunRecord) -> Result<()> {
    super::write_atomically(&path(dir, db), record.render().as_bytes(), 0o600)
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// This boot's id, as the kernel has it: a new one after every reboot.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|id| id.trim().to_owned()).unwrap_or_default()
}

/// This machine's name, as the kernel has it.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    #[test]
    fn records_round_trip() {
        let started = RunRecord {
            pid: 42,
            host: "db1".to_owned(),
            boot: "b00t".to_owned(),
            started: at("2026-11-25T10:00:00+01:00"),
            end: None,
            offsite_newest: Some("hindsight_db_backup_20261125_090000_unknown.sql".to_owned()),
            busy: Some((at("2026-11-25T10:00:30+01:00"), "busy: another run holds the lock".to_owned())),
        };
        assert_eq!(RunRecord::parse(&started.render()).unwrap(), started);
        let finished = RunRecord {
            end: Some(End {
                finished: at("2026-11-25T10:01:30+01:00"),
                exit_code: 6,
                message: "the offsite copy failed:\nline two".to_owned(),
                duration_secs: 90.25,
                backup: Some("hindsight_db_backup_20261125_100000_abc.sql".to_owned()),
                size: Some(123),
                revision: Some("abc".to_owned()),
                offsite: OffsiteEnd::Failed("store down = yes".to_owned()),
            }),
            ..started
        };
        let text = finished.render();
        assert!(text.contains("outcome=the offsite copy failed: line two\n"), "one line: {text}");
        let parsed = RunRecord::parse(&text).unwrap();
        assert_eq!(parsed.end.as_ref().unwrap().offsite, OffsiteEnd::Failed("store down = yes".to_owned()));
        assert_eq!(parsed.end.as_ref().unwrap().size, Some(123));
        assert_eq!(parsed.end.as_ref().unwrap().exit_code, 6);
    }

    #[test]
    fn nonsense_is_an_error_and_unknown_keys_are_skipped() {
        assert!(RunRecord::parse("garbage").is_err());
        assert!(RunRecord::parse("state=finished\npid=1\nhost=x\nstarted=2026-11-25T10:00:00Z\n").is_err());
        let later = "state=started\npid=1\nhost=x\nstarted=2026-11-25T10:00:00Z\nnew_key=1\n";
        assert_eq!(RunRecord::parse(later).unwrap().pid, 1);
    }

    #[test]
    fn a_dead_run_is_one_whose_pid_is_gone_here() {
        let mut record = RunRecord::started(None);
        assert!(!record.died(), "this process is alive");
        record.boot = "another boot".to_owned();
        assert!(record.died(), "a pid from before a reboot is not this run");
        record.boot = boot_id();
        record.pid = u32::MAX - 1;
        assert!(record.died());
        record.host = "elsewhere".to_owned();
        assert!(!record.died(), "another machine's pid cannot be checked");
    }
}
