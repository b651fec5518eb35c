//! `cargo xtask db-list`: the backups, newest first, as a table or as JSON. Files named
//! like backups that are not complete are listed too, marked `incomplete`, so a person
//! sees what `db-prune --incomplete` would remove.

use anyhow::Result;
use xshell::Shell;

use crate::{
    cli::DbList,
    json,
    store::{backup_file::Backup, catalogue},
};

impl DbList {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let dir = sh.current_dir().join(&self.dir.backup_dir);
        let backups = if dir.exists() { catalogue::scan(&dir, &self.name.db_name)? } else { Vec::new() };
        let dumps = if dir.exists() { catalogue::prerestore_dumps(&dir, &self.name.db_name)? } else { Vec::new() };
        let now = chrono::Local::now().naive_local();
        if self.json {
            let item = |backup: &Backup| {
                json::Object::new()
                    .str("file", &backup.path.file_name().unwrap_or_default().to_string_lossy())
                    .str("path", &backup.path.to_string_lossy())
                    .str("taken", &backup.name.taken.format("%Y-%m-%dT%H:%M:%S").to_string())
                    .raw("age_secs", (now - backup.name.taken).num_seconds())
                    .str("revision", &backup.name.revision.to_string())
                    // The ids one by one: several while branches were unmerged, none when unknown.
                    .raw("revision_ids", json::array(backup.name.revision.ids().iter().map(|id| json::string(id))))
                    .str("compression", backup.name.compression.name())
                    .raw("size", backup.size)
                    .raw("complete", backup.complete)
                    .raw("checksum_file", backup.sidecar().exists())
                    .opt_str("verified", catalogue::verified_record(backup).as_deref())
                    .build()
            };
            let report = json::Object::new()
                .str("database", &self.name.db_name)
                .str("backup_dir", &dir.to_string_lossy())
                .raw("backups", json::array(backups.iter().map(item)))
                .raw("prerestore_dumps", json::array(dumps.iter().map(item)));
            println!("{}", report.build());
            return Ok(());
        }
        if !dumps.is_empty() {
            println!(
                "dumps of databases that restores replaced, kept until you remove them (restore one by its name):"
            );
            for dump in &dumps {
                let status = dump.why_incomplete().map_or("complete".to_owned(), |why| format!("incomplete ({why})"));
                println!("  {}  {status}", catalogue::describe(dump, now));
            }
        }
        if backups.is_empty() {
            println!("no backups of `{}` in {}", self.name.db_name, dir.display());
            return Ok(());
        }
        println!("backups of `{}` in {}, newest first:", self.name.db_name, dir.display());
        for backup in &backups {
            let status = match (backup.why_incomplete(), catalogue::verified_record(backup)) {
                (Some(why), _) => format!("incomplete ({why})"),
                (None, Some(record)) => {
                    record.split_whitespace().nth(1).map_or("verified".to_owned(), |at| format!("verified {at}"))
                }
                (None, None) => "not verified".to_owned(),
            };
            println!("  {}  {status}", catalogue::describe(backup, now));
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
