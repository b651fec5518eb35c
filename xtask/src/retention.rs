//! Which backups to remove: all but the newest `keep`, by the time in their names, and
//! never the one just written, whatever its name says.

use std::path::Path;

use crate::catalogue::Backup;

pub fn to_remove<'a>(backups: &'a [Backup], keep: usize, just_written: &Path) -> Vec<&'a Backup> {
    let mut by_age: Vec<&Backup> = backups.iter().collect();
    by_age.sort_by(|a, b| b.name.taken.cmp(&a.name.taken).then_with(|| b.path.cmp(&a.path)));
    let protected = by_age.iter().position(|b| b.path == just_written);
    // The new backup counts towards `keep` even when a clock jump named older files newer.
    let mut kept = usize::from(protected.is_some());
    let mut removed = Vec::new();
    for (i, backup) in by_age.into_iter().enumerate() {
        if Some(i) == protected {
            continue;
        }
        if kept < keep {
            kept += 1;
        } else {
            removed.push(backup);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::backup_file::{BackupName, Compression, Revision};

    fn backup(day: u32, hour: u32) -> Backup {
        let taken = NaiveDate::from_ymd_opt(2026, 11, day).unwrap().and_hms_opt(hour, 0, 0).unwrap();
        let name = BackupName {
            db: "hindsight_db".into(),
            taken,
            revision: Revision::Unknown,
            compression: Compression::None,
        };
        Backup { path: format!("/b/{}", name.file_name()).into(), name, size: 1 }
    }

    fn days(removed: Vec<&Backup>) -> Vec<(u32, u32)> {
        use chrono::{Datelike, Timelike};
        removed.iter().map(|b| (b.name.taken.day(), b.name.taken.hour())).collect()
    }

    #[test]
    fn keeps_the_newest_whatever_the_listing_order() {
        let backups = vec![backup(3, 0), backup(5, 0), backup(1, 0), backup(4, 0), backup(2, 0)];
        let newest = backups[1].path.clone();
        assert_eq!(days(to_remove(&backups, 3, &newest)), [(2, 0), (1, 0)]);
        assert!(to_remove(&backups, 5, &newest).is_empty());
        assert!(to_remove(&backups, 100, &newest).is_empty());
        assert_eq!(to_remove(&backups, 1, &newest).len(), 4);
    }

    #[test]
    fn never_removes_the_backup_just_written() {
        // The clock went back: the new backup is named older than the rest.
        let backups = vec![backup(9, 0), backup(8, 0), backup(7, 0), backup(1, 0)];
        let just_written = backups[3].path.clone();
        let removed = days(to_remove(&backups, 2, &just_written));
        assert_eq!(removed, [(8, 0), (7, 0)]);
        assert!(to_remove(&backups, 1, &just_written).iter().all(|b| b.path != just_written));
    }
}
