//! `cargo xtask db-list`: the backups, newest first, as a table or as JSON. Files named
//! like backups that are not complete are listed too, marked `incomplete`, so a person
//! sees what `db-prune --incomplete` would remove. The complete ones carry the numbers
//! that db-restore and db-verify take (`catalogue::numbers`, as the picker counts them).

use anyhow::Result;
use xshell::Shell;

use crate::{
    cli::DbList,
    json,
    offsite::remote::{Offsite, RemoteBackup},
    output::{table, warning},
    store::{backup_dir, backup_file::Backup, catalogue},
};

use std::path::Path;

impl DbList {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let dir = self.dir.path(&sh.current_dir());
        // A wrong directory is an error, not an empty list.
        backup_dir::require_existing(&dir)?;
        let mut backups = catalogue::scan(&dir, &self.name.db_name)?;
        let dumps = catalogue::prerestore_dumps(&dir, &self.name.db_name)?;
        let now = chrono::Local::now().naive_local();
        // The numbers db-restore and db-verify take count the local backups alone.
        let numbers: Vec<(std::path::PathBuf, Option<usize>)> =
            backups.iter().map(|b| b.path.clone()).zip(catalogue::numbers(&backups)).collect();
        let offsite = self.offsite_copies()?;
        let location = |backup: &Backup| -> Option<&'static str> {
            let (url, copies) = offsite.as_ref()?;
            let file_name = backup.path.file_name().unwrap_or_default().to_string_lossy();
            let offsite = copies.iter().any(|c| c.file_name == file_name);
            Some(match (backup.path.starts_with(url.as_str()), offsite && backup.complete) {
                (true, _) => "offsite",
                (false, true) => "both",
                (false, false) => "local",
            })
        };
        if let Some((url, copies)) = &offsite {
            // One row per backup: the copies that exist only offsite join the list.
            for copy in copies {
                if !backups.iter().any(|b| b.complete && b.path.file_name() == Some(copy.file_name.as_ref())) {
                    backups.push(Backup { path: Path::new(url).join(&copy.file_name), ..copy.as_backup() });
                }
            }
            backups.sort_by_key(|b| std::cmp::Reverse(b.name.taken));
        }
        if self.json {
            let item = |backup: &Backup| {
                let local = !offsite.as_ref().is_some_and(|(url, _)| backup.path.starts_with(url.as_str()));
                let object = json::Object::new()
                    .str("file", &backup.path.file_name().unwrap_or_default().to_string_lossy())
                    .raw("path", if local { json::string(&backup.path.to_string_lossy()) } else { "null".to_owned() });
                // Only with an offsite, as the README says: without one, the shape is as before.
                let object = match location(backup) {
                    Some(location) => object.str("location", location),
                    None => object,
                };
                object
                    .local_time("taken", backup.name.taken)
                    .raw("age_secs", (now - backup.name.taken).num_seconds())
                    .str("revision", &backup.name.revision.to_string())
                    // The ids one by one: several while branches were unmerged, none when unknown.
                    .raw("revision_ids", json::strings(backup.name.revision.ids()))
                    .str("compression", backup.name.compression.name())
                    .raw("size", backup.size)
                    .raw("complete", backup.complete)
                    .raw("checksum_file", !local || backup.sidecar().exists())
                    .raw("verified", catalogue::verified_record(backup).map_or("null".to_owned(), |r| verified(&r)))
                    .build()
            };
            json::report(
                json::Object::new()
                    .str("database", &self.name.db_name)
                    .str("backup_dir", &dir.to_string_lossy())
                    .raw("backups", json::array(backups.iter().map(item)))
                    .raw("prerestore_dumps", json::array(dumps.iter().map(item))),
            );
            return Ok(());
        }
        if !dumps.is_empty() {
            println!(
                "dumps of databases that restores replaced, kept until you remove them (restore one by its name):"
            );
            let mut rows = vec![header(false, false)];
            for dump in &dumps {
                let status = dump.why_incomplete().map_or("complete".to_owned(), |why| format!("incomplete ({why})"));
                rows.push([catalogue::columns(dump, now), vec![status]].concat());
            }
            for line in table(&rows, &right_aligned(false, false)) {
                println!("  {line}");
            }
        }
        if backups.is_empty() {
            println!("no backups of `{}` in {}", self.name.db_name, dir.display());
            return Ok(());
        }
        match &offsite {
            Some((url, _)) => {
                println!("backups of `{}` in {} and {url}, newest first:", self.name.db_name, dir.display())
            }
            None => println!("backups of `{}` in {}, newest first:", self.name.db_name, dir.display()),
        }
        let mut rows = vec![header(true, offsite.is_some())];
        for backup in &backups {
            let number = numbers.iter().find(|(path, _)| *path == backup.path).and_then(|(_, n)| *n);
            let status = match (backup.why_incomplete(), catalogue::verified_record(backup)) {
                (Some(why), _) => format!("incomplete ({why})"),
                (None, Some(record)) => {
                    record.split_whitespace().nth(1).map_or("verified".to_owned(), |at| format!("verified {at}"))
                }
                (None, None) => "not verified".to_owned(),
            };
            // Incomplete files have no number: nothing takes them by one.
            let number = number.map_or(String::new(), |n| n.to_string());
            let location = location(backup).map(str::to_owned);
            rows.push(
                [vec![number], catalogue::columns(backup, now), location.into_iter().collect(), vec![status]].concat(),
            );
        }
        for line in table(&rows, &right_aligned(true, offsite.is_some())) {
            println!("  {line}");
        }
        let incomplete = backups.iter().filter(|b| !b.complete).count();
        if incomplete > 0 {
            println!(
                "{incomplete} incomplete: never counted as backups (nor as the newest); \
                 `cargo xtask db-prune --incomplete` removes them"
            );
        }
        Ok(())
    }
}

impl DbList {
    /// With --offsite: the store's URL and its complete copies, newest first.
    /// A store that cannot be listed must not hide the local backups, which are what a
    /// person needs most while it is down: a warning, and the local list alone.
    fn offsite_copies(&self) -> Result<Option<(String, Vec<RemoteBackup>)>> {
        let Some(config) = Offsite::settings(&self.offsite)? else { return Ok(None) };
        let url = config.location.to_string();
        let listed = Offsite::connect(config, None).and_then(|offsite| Ok(offsite.list(&self.name.db_name)?));
        match listed {
            Ok(copies) => Ok(Some((url, copies))),
            Err(err) => {
                warning!("cannot list the offsite copies in {url} ({err:#}): showing the local backups only");
                Ok(None)
            }
        }
    }
}

/// The header row: the number (which db-restore and db-verify take), the backup's
/// columns, where it lives (with --offsite), its status.
fn header(numbered: bool, located: bool) -> Vec<String> {
    let number = numbered.then_some("#");
    let location = located.then_some("location");
    let names =
        number.into_iter().chain(catalogue::COLUMNS.iter().map(|(name, _)| *name)).chain(location).chain(["status"]);
    names.map(str::to_owned).collect()
}

fn right_aligned(numbered: bool, located: bool) -> Vec<bool> {
    let number = numbered.then_some(true);
    let location = located.then_some(false);
    number
        .into_iter()
        .chain(catalogue::COLUMNS.iter().map(|(_, right)| *right))
        .chain(location)
        .chain([false])
        .collect()
}

/// A `NAME.verified` record (`verified 2026-11-25T11:46:00+01:00 revision=R tables=N
/// rows=N`) as JSON: `at` with its offset (older records hold a local time without one,
/// read in this machine's zone), and each `key=value` as written; `record` as it is.
fn verified(record: &str) -> String {
    let mut words = record.split_whitespace().skip(1);
    let at = words.next().and_then(|at| {
        chrono::DateTime::parse_from_rfc3339(at)
            .map(|at| json::time(&at))
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S").map(json::local_time))
            .ok()
    });
    let value = |key: &str| record.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('='));
    let count = |key: &str| value(key).and_then(|n| n.parse::<u64>().ok()).map_or("null".to_owned(), |n| n.to_string());
    json::Object::new()
        .opt_str("at", at.as_deref())
        .opt_str("revision", value("revision"))
        .raw("tables", count("tables"))
        .raw("rows", count("rows"))
        .str("record", record)
        .build()
}

#[cfg(test)]
mod tests {
    use super::verified;

    #[test]
    fn verified_records_read_with_their_offset() {
        let new = verified("verified 2026-11-25T11:46:00+01:00 revision=7c8d9e0f1a2b tables=3 rows=5004");
        assert_eq!(
            new,
            r#"{"at":"2026-11-25T11:46:00+01:00","revision":"7c8d9e0f1a2b","tables":3,"rows":5004,"record":"verified 2026-11-25T11:46:00+01:00 revision=7c8d9e0f1a2b tables=3 rows=5004"}"#
        );
        // Written before times had a zone: this machine's offset is added.
        let old = verified("verified 2026-11-24T11:46:00 revision=a+b tables=1 rows=2");
        assert!(
            old.starts_with(r#"{"at":"2026-11-24T11:46:00+"#) || old.starts_with(r#"{"at":"2026-11-24T11:46:00-"#),
            "{old}"
        );
        assert!(old.contains(r#""revision":"a+b","tables":1,"rows":2"#), "{old}");
        let odd = verified("verified");
        assert!(odd.starts_with(r#"{"at":null,"revision":null,"tables":null,"rows":null"#), "{odd}");
    }
}
