//! Which backups to keep, and why: the newest `--max-backups`, or, with age rules, the
//! newest backup of each of the last N hours, days, ISO weeks and months (restic's
//! `forget`), capped at `--max-backups`. The newest backup and the one just written are
//! always kept. Only complete backups are counted: an incomplete file neither takes a
//! slot nor is newest, and retention never removes it (`db-prune --incomplete` does).

use std::path::Path;

use chrono::{Datelike, NaiveDateTime, Timelike};

use crate::store::backup_file::Backup;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub max: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Policy {
    fn by_age(&self) -> bool {
        self.hourly + self.daily + self.weekly + self.monthly > 0
    }
}

/// One backup and the rules that keep it; no reasons means it goes.
#[derive(Debug)]
pub struct Decision<'a> {
    pub backup: &'a Backup,
    pub reasons: Vec<String>,
}

impl Decision<'_> {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

type Bucket = fn(NaiveDateTime) -> (i32, u32, u32, u32);

const RULES: [(&str, Bucket); 4] = [
    ("hourly", |t| (t.year(), t.ordinal(), t.hour(), 0)),
    ("daily", |t| (t.year(), t.ordinal(), 0, 0)),
    ("weekly", |t| (t.iso_week().year(), t.iso_week().week(), 0, 0)),
    ("monthly", |t| (t.year(), t.month(), 0, 0)),
];

/// Decisions for every complete backup, newest first; incomplete ones get none.
pub fn decide<'a>(backups: &'a [Backup], policy: &Policy, just_written: Option<&Path>) -> Vec<Decision<'a>> {
    let mut decisions: Vec<Decision<'a>> =
        backups.iter().filter(|b| b.complete).map(|backup| Decision { backup, reasons: Vec::new() }).collect();
    decisions
        .sort_by(|a, b| b.backup.name.taken.cmp(&a.backup.name.taken).then_with(|| b.backup.path.cmp(&a.backup.path)));
    let Some(newest) = decisions.first_mut() else { return decisions };
    newest.reasons.push("newest".to_owned());
    for decision in &mut decisions {
        if Some(decision.backup.path.as_path()) == just_written {
            decision.reasons.push("just written".to_owned());
        }
    }

    if policy.by_age() {
        let counts = [policy.hourly, policy.daily, policy.weekly, policy.monthly];
        for ((rule, bucket), count) in RULES.into_iter().zip(counts) {
            let mut last = None;
            let mut kept = 0;
            for decision in &mut decisions {
                let this = bucket(decision.backup.name.taken);
                if kept < count && last != Some(this) {
                    kept += 1;
                    decision.reasons.push(format!("{rule} #{kept}"));
                }
                last = Some(this);
            }
        }
    } else {
        for (i, decision) in decisions.iter_mut().enumerate().take(policy.max) {
            decision.reasons.push(format!("newest {} #{}", policy.max, i + 1));
        }
    }

    // The cap: past it, the oldest kept ones go, but never the newest or the one just written.
    let mut kept = decisions.iter().filter(|d| d.keep()).count();
    for decision in decisions.iter_mut().rev() {
        if kept <= policy.max.max(1) {
            break;
        }
        let pinned = decision.reasons.iter().any(|r| r == "newest" || r == "just written");
        if decision.keep() && !pinned {
            decision.reasons.clear();
            kept -= 1;
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate};

    use super::*;
    use crate::store::backup_file::{BackupName, Compression, Kind, Revision};

    fn at(taken: NaiveDateTime) -> Backup {
        let name = BackupName {
            kind: Kind::Backup,
            db: "hindsight_db".into(),
            taken,
            revision: Revision::Unknown,
            compression: Compression::None,
        };
        Backup { path: format!("/b/{}", name.file_name()).into(), name, size: 1, complete: true }
    }

    fn broken(taken: NaiveDateTime) -> Backup {
        Backup { complete: false, ..at(taken) }
    }

    fn time(day: u32, hour: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap().and_hms_opt(hour, 0, 0).unwrap()
    }

    fn kept(decisions: &[Decision<'_>]) -> Vec<NaiveDateTime> {
        decisions.iter().filter(|d| d.keep()).map(|d| d.backup.name.taken).collect()
    }

    fn count(max: usize) -> Policy {
        Policy { max, ..Policy::default() }
    }

    #[test]
    fn by_count_keeps_the_newest_whatever_the_listing_order() {
        let backups = vec![at(time(3, 0)), at(time(5, 0)), at(time(1, 0)), at(time(4, 0)), at(time(2, 0))];
        assert_eq!(kept(&decide(&backups, &count(3), None)), [time(5, 0), time(4, 0), time(3, 0)]);
        assert_eq!(kept(&decide(&backups, &count(100), None)).len(), 5);
        assert_eq!(kept(&decide(&backups, &count(1), None)), [time(5, 0)]);
        assert!(decide(&[], &count(3), None).is_empty());
    }

    #[test]
    fn never_removes_the_backup_just_written() {
        // The clock went back: the new backup is named older than the rest.
        let backups = vec![at(time(9, 0)), at(time(8, 0)), at(time(7, 0)), at(time(1, 0))];
        let just = backups[3].path.clone();
        let decisions = decide(&backups, &count(2), Some(&just));
        assert_eq!(kept(&decisions), [time(9, 0), time(1, 0)]);
    }

    #[test]
    fn incomplete_files_take_no_slot_are_never_newest_and_are_never_removed() {
        // A killed run's files named newer than every good backup, as db-backup then sees them.
        let backups = vec![broken(time(9, 0)), broken(time(8, 0)), at(time(7, 0)), at(time(6, 0)), at(time(5, 0))];
        let decisions = decide(&backups, &count(2), Some(&backups[2].path));
        assert_eq!(kept(&decisions), [time(7, 0), time(6, 0)]);
        assert_eq!(decisions[0].reasons, ["newest", "just written", "newest 2 #1"]);
        let removed: Vec<NaiveDateTime> = decisions.iter().filter(|d| !d.keep()).map(|d| d.backup.name.taken).collect();
        assert_eq!(removed, [time(5, 0)], "only the oldest good one; the broken ones are not retention's");
        let age = Policy { max: 100, daily: 1, ..Policy::default() };
        assert_eq!(kept(&decide(&backups, &age, None)), [time(7, 0)], "the daily slot goes to a good backup");
        assert!(decide(&[broken(time(9, 0))], &count(1), None).is_empty());
    }

    /// Hourly backups from Sep 1 to Nov 24 2026, 00:00 to 23:00 each day.
    fn three_months_hourly() -> Vec<Backup> {
        let start = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
        let end = time(24, 23);
        let mut backups = Vec::new();
        let mut t = start;
        while t <= end {
            backups.push(at(t));
            t += Duration::hours(1);
        }
        backups
    }

    #[test]
    fn age_rules_keep_exactly_the_expected_set() {
        let backups = three_months_hourly();
        let policy = Policy { max: 1000, hourly: 24, daily: 7, weekly: 4, monthly: 3 };
        let decisions = decide(&backups, &policy, None);
        let mut expected: Vec<NaiveDateTime> = (0..24).map(|h| time(24, 23 - h)).collect(); // the last 24 hours
        expected.extend((18..=23).rev().map(|d| time(d, 23))); // 7 days: the 24th is already kept
        // ISO weeks end on Sundays: Nov 22, 15 (Nov 22 is kept as a day), 8; the 24th's week is kept.
        expected.extend([time(15, 23), time(8, 23)]);
        // Months: November (kept), October 31, September 30.
        let end_of = |m: u32, d: u32| NaiveDate::from_ymd_opt(2026, m, d).unwrap().and_hms_opt(23, 0, 0).unwrap();
        expected.extend([end_of(10, 31), end_of(9, 30)]);
        assert_eq!(kept(&decisions), expected);

        let reasons = |t: NaiveDateTime| decisions.iter().find(|d| d.backup.name.taken == t).unwrap().reasons.clone();
        assert_eq!(reasons(time(24, 23)), ["newest", "hourly #1", "daily #1", "weekly #1", "monthly #1"]);
        assert_eq!(reasons(time(22, 23)), ["daily #3", "weekly #2"]);
        assert_eq!(reasons(end_of(9, 30)), ["monthly #3"]);
        assert!(reasons(time(24, 0)).contains(&"hourly #24".to_owned()));
    }

    #[test]
    fn max_backups_caps_the_age_rules_from_the_oldest() {
        let backups = three_months_hourly();
        let policy = Policy { max: 10, hourly: 24, daily: 7, weekly: 4, monthly: 3 };
        let decisions = decide(&backups, &policy, None);
        let kept = kept(&decisions);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept, (0..10).map(|h| time(24, 23 - h)).collect::<Vec<_>>(), "the newest ten kept ones");
    }

    #[test]
    fn a_rule_counts_buckets_that_have_backups() {
        // Gaps: daily backups on days 1, 5 and 9 only; --keep-daily 2 keeps 9 and 5.
        let backups = vec![at(time(1, 3)), at(time(5, 3)), at(time(9, 3)), at(time(9, 1))];
        let policy = Policy { max: 100, daily: 2, ..Policy::default() };
        assert_eq!(kept(&decide(&backups, &policy, None)), [time(9, 3), time(5, 3)]);
    }
}
