//! `--metrics-file`: the gauges of a db-backup run in Prometheus' text format, for
//! node_exporter's textfile collector. Written after every run, good or not, atomically
//! (the collector must never read half a file), with no sample timestamps (which the
//! collector rejects).

use std::{fmt::Write as _, path::Path};

use anyhow::Result;

/// What a run knows when it ends. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub database: String,
    /// The newest complete backup's time (its name's): none at all is 0.
    pub last_success: Option<i64>,
    /// When this run started.
    pub last_run: i64,
    /// Exit 0: the backup and, with --offsite, its copy.
    pub last_run_success: bool,
    pub last_duration_secs: f64,
    /// The newest complete backup's size.
    pub last_size: Option<u64>,
    /// Complete backups in the directory.
    pub backups: usize,
    /// The newest passing db-verify of a backup still kept: none is 0.
    pub last_verify: Option<i64>,
    /// The time of the newest backup whose offsite copy is complete; the outer None: no
    /// --offsite, and no such gauge.
    pub offsite_last_success: Option<Option<i64>>,
}

/// The gauges as the text format has them: `# HELP`, `# TYPE`, then the sample.
pub fn render(snapshot: &Snapshot) -> String {
    let label = format!("{{database=\"{}\"}}", escape(&snapshot.database));
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{label} {value}\n");
    };
    let time = |at: Option<i64>| at.unwrap_or(0).to_string();
    gauge(
        "hindsight_backup_last_success_timestamp_seconds",
        "Time of the newest complete backup (0: none).",
        time(snapshot.last_success),
    );
    gauge(
        "hindsight_backup_last_run_timestamp_seconds",
        "Time the last db-backup run started.",
        time(Some(snapshot.last_run)),
    );
    gauge(
        "hindsight_backup_last_run_success",
        "1 when the last db-backup run exited 0 (backup, and offsite copy if any), else 0.",
        u8::from(snapshot.last_run_success).to_string(),
    );
    gauge(
        "hindsight_backup_last_duration_seconds",
        "How long the last db-backup run took.",
        format!("{:.3}", snapshot.last_duration_secs),
    );
    gauge(
        "hindsight_backup_last_size_bytes",
        "Size of the newest complete backup as stored.",
        snapshot.last_size.unwrap_or(0).to_string(),
    );
    gauge("hindsight_backups", "Complete backups in the backup directory.", snapshot.backups.to_string());
    gauge(
        "hindsight_backup_last_verify_timestamp_seconds",
        "Time of the newest passing db-verify of a backup still kept (0: none).",
        time(snapshot.last_verify),
    );
    if let Some(offsite) = snapshot.offsite_last_success {
        gauge(
            "hindsight_offsite_last_success_timestamp_seconds",
            "Time of the newest backup whose offsite copy is complete (0: none known).",
            time(offsite),
        );
    }
    text
}

/// A label value as the text format quotes it.
fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// Replaces `path` with the snapshot, atomically. Mode 0644: node_exporter usually runs
/// as another user, and nothing here is secret.
pub fn write(path: &Path, snapshot: &Snapshot) -> Result<()> {
    super::write_atomically(path, render(snapshot).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gauge_once_with_its_label_and_no_timestamp() {
        let snapshot = Snapshot {
            database: "hindsight_db".to_owned(),
            last_success: Some(1_764_000_000),
            last_run: 1_764_000_100,
            last_run_success: true,
            last_duration_secs: 12.5,
            last_size: Some(4096),
            backups: 3,
            last_verify: None,
            offsite_last_success: Some(Some(1_764_000_000)),
        };
        let text = render(&snapshot);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples.len(), 8, "{text}");
        for sample in &samples {
            // Name{labels} value: two fields, no third (a timestamp).
            assert_eq!(sample.split(' ').count(), 2, "{sample}");
            assert!(sample.contains("{database=\"hindsight_db\"}"), "{sample}");
        }
        assert!(text.contains("hindsight_backup_last_verify_timestamp_seconds{database=\"hindsight_db\"} 0\n"));
        assert!(text.contains("hindsight_backup_last_duration_seconds{database=\"hindsight_db\"} 12.500\n"));
        let local = render(&Snapshot { offsite_last_success: None, ..snapshot });
        assert!(!local.contains("hindsight_offsite"), "no offsite gauge without --offsite");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
