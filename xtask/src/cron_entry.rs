//! The crontab entry of the backup job, as text: the schedule, the job line with its
//! quoting, and merging it into or removing it from a user's table without touching any
//! other line.

use std::{fmt, path::Path};

/// Five validated cron fields (minute, hour, day of month, month, day of week), or one of
/// the nicknames cron itself accepts (`@hourly`, `@daily`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(String);

/// The nicknames Debian's cron (Vixie cron) reads, as it spells them: lower case only.
const NICKNAMES: [&str; 8] =
    ["@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if text.starts_with('@') {
            return match NICKNAMES.iter().find(|nickname| **nickname == text) {
                Some(nickname) => Ok(Schedule((*nickname).to_owned())),
                None => Err(format!("`{text}` is not a cron nickname; cron knows {}", NICKNAMES.join(", "))),
            };
        }
        const FIELDS: [(&str, u32, u32, &[&str]); 5] = [
            ("minute", 0, 59, &[]),
            ("hour", 0, 23, &[]),
            ("day of month", 1, 31, &[]),
            ("month", 1, 12, &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]),
            ("day of week", 0, 7, &["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
        ];
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "`{text}` has {} fields; a schedule is five: minute hour day-of-month month day-of-week, e.g. `0 * * * *`",
                fields.len()
            ));
        }
        for (field, (what, min, max, names)) in fields.iter().zip(FIELDS) {
            let ok = field.split(',').all(|part| {
                let (range, step) = match part.split_once('/') {
                    Some((range, step)) => (range, Some(step)),
                    None => (part, None),
                };
                let value = |v: &str| {
                    v.parse::<u32>().ok().filter(|n| (min..=max).contains(n)).is_some()
                        || names.contains(&v.to_ascii_lowercase().as_str())
                };
                let range_ok = range == "*"
                    || match range.split_once('-') {
                        Some((from, to)) => value(from) && value(to),
                        None => value(range),
                    };
                range_ok && step.is_none_or(|s| s.parse::<u32>().is_ok_and(|s| (1..=max.max(1)).contains(&s)))
            });
            if !ok {
                return Err(format!(
                    "`{field}` is not a valid {what} field ({min}-{max}, `*`, lists, ranges, `/step`)"
                ));
            }
        }
        Ok(Schedule(fields.join(" ")))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the job line says.
pub struct Job<'a> {
    pub schedule: &'a Schedule,
    pub root: &'a Path,
    /// `PATH` for the job: cron's own is `/usr/bin:/bin`.
    pub path_dirs: &'a [String],
    /// Other variables the job needs, such as `COMPOSE_PROJECT_NAME`.
    pub env: &'a [(String, String)],
    pub program: &'a Path,
    /// db-backup's arguments, `--log-file` among them: the job opens and rotates its log
    /// itself, where a shell's `>> LOG` would keep writing into the rotated file.
    pub args: &'a [String],
}

/// The comment line that marks this repository's entry: one per checkout.
pub fn marker(root: &Path) -> String {
    format!("# hindsight_db backup job for {} (managed by cargo xtask install-cron)", root.display())
}

/// The marker line and the job line, each ending in a newline.
pub fn render(job: &Job<'_>) -> String {
    let mut line = format!("{} cd {} && PATH={}", job.schedule, quote(job.root), quote(job.path_dirs.join(":")));
    for (key, value) in job.env {
        line.push_str(&format!(" {key}={}", quote(value)));
    }
    line.push_str(&format!(" {}", quote(job.program)));
    for arg in job.args {
        line.push_str(&format!(" {}", quote(arg)));
    }
    format!("{}\n{line}\n", marker(job.root))
}

/// `table` without this repository's entry, then the entry: every other line as it was.
pub fn merge(table: &str, root: &Path, entry: &str) -> String {
    let mut merged = remove(table, root).0;
    if !merged.is_empty() && !merged.ends_with('\n') {
        // cron needs every line ended; this is the only byte added to the user's lines.
        merged.push('\n');
    }
    merged.push_str(entry);
    merged
}

/// `table` without this repository's entry (its marker and the job line after it), and
/// whether there was one.
pub fn remove(table: &str, root: &Path) -> (String, bool) {
    let marker = marker(root);
    // The job line names the same root; a user's own line after our marker is theirs.
    let job_cd = format!(" cd {} && ", quote(root));
    let mut kept = String::with_capacity(table.len());
    let mut found = false;
    let mut skip_job_line = false;
    for line in table.split_inclusive('\n') {
        let text = line.trim_end_matches('\n');
        if text == marker {
            found = true;
            skip_job_line = true;
            continue;
        }
        if skip_job_line {
            skip_job_line = false;
            if !text.starts_with('#') && text.contains(&job_cd) {
                continue;
            }
        }
        kept.push_str(line);
    }
    (kept, found)
}

/// A word for `/bin/sh`, in single quotes, with cron's `%` (a newline to cron) escaped.
fn quote(word: impl AsRef<std::ffi::OsStr>) -> String {
    let word = word.as_ref().to_string_lossy();
    format!("'{}'", word.replace('\'', r"'\''").replace('%', r"\%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_for<'a>(root: &'a Path, schedule: &'a Schedule, env: &'a [(String, String)]) -> Job<'a> {
        static DIRS: [String; 0] = [];
        Job { schedule, root, path_dirs: &DIRS, env, program: Path::new("/x/xtask"), args: &[] }
    }

    #[test]
    fn schedules() {
        for ok in ["0 * * * *", "*/15 * * * *", "0 9-17 * * mon-fri", "5,35 */2 1 jan *", "* * * * 7"] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Schedule::parse("  0  *  * * * ").unwrap().to_string(), "0 * * * *");
        for nickname in ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually", "@reboot"] {
            assert_eq!(Schedule::parse(nickname).map(|s| s.to_string()).as_deref(), Ok(nickname));
        }
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "x * * * *",
            "@hour",
            "@HOURLY",
            "@hourly 5",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_a_quoted_entry_with_its_marker() {
        let schedule = Schedule::parse("0 * * * *").unwrap();
        let root = Path::new("/home/me/my repo");
        let env = [("COMPOSE_PROJECT_NAME".to_owned(), "it's".to_owned())];
        let dirs = ["/usr/local/bin".to_owned(), "/usr/bin".to_owned()];
        let args = ["db-backup", "--backup-dir", "/b/100%", "--log-file", "/home/me/my repo/logs/backup.log"]
            .map(str::to_owned);
        let job = Job {
            schedule: &schedule,
            root,
            path_dirs: &dirs,
            env: &env,
            program: &root.join("bin/xtask"),
            args: &args,
        };
        assert_eq!(
            render(&job),
            "# hindsight_db backup job for /home/me/my repo (managed by cargo xtask install-cron)\n\
             0 * * * * cd '/home/me/my repo' && PATH='/usr/local/bin:/usr/bin' COMPOSE_PROJECT_NAME='it'\\''s' \
             '/home/me/my repo/bin/xtask' 'db-backup' '--backup-dir' '/b/100\\%' '--log-file' '/home/me/my repo/logs/backup.log'\n"
        );
    }

    #[test]
    fn merging_is_idempotent_and_keeps_every_other_line() {
        let root = Path::new("/repo");
        let other_root = Path::new("/other checkout");
        let hourly = Schedule::parse("0 * * * *").unwrap();
        let minutely = Schedule::parse("* * * * *").unwrap();
        let theirs = "MAILTO=me\n# my comment\n*/5 * * * * echo 'hi'   \n\n";
        let ours = render(&job_for(root, &hourly, &[]));
        let other = render(&job_for(other_root, &hourly, &[]));

        let once = merge(theirs, root, &ours);
        assert_eq!(once, format!("{theirs}{ours}"));
        assert_eq!(merge(&once, root, &ours), once, "twice is once");

        let both = merge(&once, other_root, &other);
        let replaced = merge(&both, root, &render(&job_for(root, &minutely, &[])));
        assert_eq!(replaced.matches("* * * * * cd '/repo'").count(), 1);
        assert!(!replaced.contains("0 * * * * cd '/repo'"), "the old schedule is gone");
        assert!(replaced.contains(&other), "another checkout's entry stays");
        assert!(replaced.starts_with(theirs));

        let (without, found) = remove(&replaced, root);
        assert!(found);
        assert_eq!(without, format!("{theirs}{other}"));
        assert_eq!(remove(&without, other_root), (theirs.to_owned(), true));
        assert_eq!(remove(theirs, root), (theirs.to_owned(), false));

        // An entry from before the job opened its own log, with the shell's `>> LOG 2>&1`,
        // has the same marker: it is replaced too.
        let older = format!("{}\n0 * * * * cd '/repo' && PATH='/usr/bin' '/x/xtask' >> '/l' 2>&1\n", marker(root));
        assert_eq!(merge(&format!("{theirs}{older}"), root, &ours), format!("{theirs}{ours}"));
    }

    #[test]
    fn an_empty_table_or_one_without_a_final_newline() {
        let root = Path::new("/repo");
        let schedule = Schedule::parse("0 * * * *").unwrap();
        let ours = render(&job_for(root, &schedule, &[]));
        assert_eq!(merge("", root, &ours), ours);
        assert_eq!(merge("* * * * * true", root, &ours), format!("* * * * * true\n{ours}"));
    }
}
