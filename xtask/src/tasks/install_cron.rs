//! `cargo xtask install-cron`: puts the backup job into the user's crontab through the
//! real `crontab` program, replacing this repository's entry and nothing else.

use std::{
    fs::{self, DirBuilder, Permissions},
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::{
    cli::InstallCron,
    cron_entry::{self, Job},
    json,
    offsite::remote::{self, Offsite},
    output::{done, warning},
    process,
};

/// Variables that decide which containers Compose talks to: the job must see what this
/// shell sees. Passwords are not among them: they would be in `sh -c`'s argv.
/// The credentials' file and profile are names, not secrets: the job reads the key where
/// this shell would.
const COMPOSE_ENV: [&str; 7] = [
    "COMPOSE_PROJECT_NAME",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "HINDSIGHT_DB_PORT",
    "POSTGRES_IMAGE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_PROFILE",
];

/// Where the job's own copy of this binary lives, relative to the repository root.
const JOB_BINARY: &str = "hindsight_db_backups/bin/xtask";

impl InstallCron {
    /// A job whose offsite settings cannot work would fail every hour: refused now (a
    /// recipient missing or mistyped). Its key is never in the entry, so the job reads it
    /// from the shared credentials file: a warning when there is none.
    fn check_offsite(&self) -> Result<()> {
        if Offsite::settings(&self.backup.offsite)?.is_none() {
            return Ok(());
        }
        remote::recipients(&self.backup.upload)?;
        let file = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").filter(|f| !f.is_empty()) {
            Some(file) => Some(PathBuf::from(file)),
            None => std::env::var_os("HOME").map(|home| Path::new(&home).join(".aws/credentials")),
        };
        if !file.as_deref().is_some_and(Path::is_file) {
            warning!(
                "the job reads the offsite store's key from the shared credentials file (~/.aws/credentials, or \
                 AWS_SHARED_CREDENTIALS_FILE; cron passes no secret), and there is none: write aws_access_key_id and \
                 aws_secret_access_key under [default] (or AWS_PROFILE's) there, mode 0600"
            );
        }
        Ok(())
    }

    pub fn run(self, sh: &Shell) -> Result<()> {
        let root = sh.current_dir();
        let program = root.join(JOB_BINARY);
        let log = self.log_file(&root);
        // Every db-backup setting, from the one place that turns them back into flags. The
        // job never starts a stopped database unless --start says so.
        let args = self.backup.job_args(&root);
        if !self.uninstall {
            self.check_offsite()?;
        }
        let path_dirs = job_path();
        let env: Vec<(String, String)> =
            COMPOSE_ENV.iter().filter_map(|key| Some((key.to_string(), std::env::var(key).ok()?))).collect();
        let entry = cron_entry::render(&Job {
            schedule: &self.schedule,
            root: &root,
            path_dirs: &path_dirs,
            env: &env,
            program: &program,
            args: &args,
            log: &log,
        });
        // With --json, what happened and the entry itself, in the envelope `exit::report`
        // prints; the entry's text as a person sees it goes to stderr.
        let result = |action: &str, entry: Option<&str>| {
            json::Object::new()
                .str("action", action)
                .opt_str("entry", entry)
                .opt_str("line", entry.and_then(|e| e.lines().find(|l| !l.starts_with('#'))))
                .str("schedule", &self.schedule.to_string())
                .str("binary", &program.to_string_lossy())
                .str("log", &log.to_string_lossy())
        };
        if self.print {
            if self.backup.json {
                eprint!("{entry}");
            } else {
                print!("{entry}");
            }
            json::report(result("printed", Some(&entry)));
            return Ok(());
        }

        let crontab = which::which("crontab")
            .context("`crontab` is required for install-cron: install cron (Debian: apt-get install cron)")?;
        let table = read_table(sh, &crontab)?;
        if self.uninstall {
            let (without, found) = cron_entry::remove(&table, &root);
            if !found {
                done!("no backup job for {} in the crontab: nothing to remove", root.display());
                json::report(result("uninstalled", None).raw("found", false));
                return Ok(());
            }
            write_table(sh, &crontab, &without)?;
            done!("removed the backup job for {}; every other crontab line is unchanged", root.display());
            json::report(result("uninstalled", None).raw("found", true));
            return Ok(());
        }
        if !cron_daemon_runs() {
            bail!(
                "no cron daemon is running, so the job would never run: start it (`sudo systemctl start cron`, or `cron`), then run install-cron again"
            );
        }

        let log_dir = log.parent().unwrap_or(&root);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(log_dir)
            .with_context(|| format!("cannot create log directory {}", log_dir.display()))?;
        install_binary(&program)?;
        write_table(sh, &crontab, &cron_entry::merge(&table, &root, &entry))?;
        done!("installed the backup job ({}), logging to {}:", self.schedule, log.display());
        eprint!("{entry}");
        json::report(result("installed", Some(&entry)));
        Ok(())
    }
}

/// The directories where `which` finds the job's tools now, then the usual system ones.
fn job_path() -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    let found = ["docker", "docker-compose", "cargo", "uv"].into_iter().filter_map(|tool| which::which(tool).ok());
    let system = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from);
    for dir in found.filter_map(|path| path.parent().map(Path::to_path_buf)).chain(system) {
        let dir = dir.to_string_lossy().into_owned();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// The job runs its own copy of this binary: a `cargo clean` or a half-edited checkout
/// cannot stop the hourly backups. Replaced atomically; running install-cron again
/// updates it.
fn install_binary(program: &Path) -> Result<()> {
    let current = std::env::current_exe().context("cannot find this program's own path")?;
    let dir = program.parent().expect("JOB_BINARY has a directory");
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let staged = dir.join(".xtask.partial");
    fs::copy(&current, &staged)
        .with_context(|| format!("cannot copy {} to {}", current.display(), staged.display()))?;
    fs::set_permissions(&staged, Permissions::from_mode(0o700))?;
    fs::File::open(&staged)?.sync_all()?;
    fs::rename(&staged, program).with_context(|| format!("cannot install {}", program.display()))?;
    Ok(())
}

/// The user's table; "no crontab for USER" is an empty one.
fn read_table(sh: &Shell, crontab: &Path) -> Result<String> {
    match process::read("crontab -l", cmd!(sh, "{crontab} -l")) {
        Ok(table) => Ok(table),
        Err(err) if format!("{err:#}").contains("no crontab for") => Ok(String::new()),
        Err(err) => Err(err.context("cannot read the crontab")),
    }
}

fn write_table(sh: &Shell, crontab: &Path, table: &str) -> Result<()> {
    process::stream_in("crontab", cmd!(sh, "{crontab} -"), &mut table.as_bytes())
        .context("cannot install the new crontab; the old one is unchanged")
}

/// Whether a cron daemon (Debian's `cron`, cronie's or busybox's `crond`) is running.
fn cron_daemon_runs() -> bool {
    let Ok(procs) = fs::read_dir("/proc") else { return false };
    procs.filter_map(Result::ok).any(|entry| {
        fs::read_to_string(entry.path().join("comm")).is_ok_and(|comm| matches!(comm.trim(), "cron" | "crond"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cli::tests::{EVERY_DB_BACKUP_FLAG, parse_db_backup},
        cron_entry::Schedule,
    };

    /// The words of a job line as cron and then `sh` see them: cron turns `\%` into `%` (a
    /// bare `%` would end the command), `sh` drops the single quotes and reads `\'` as `'`,
    /// so `'\''` is a quote inside a quoted word.
    fn unquote(line: &str) -> Vec<String> {
        assert!(!line.replace(r"\%", "").contains('%'), "a bare % would cut the command: {line}");
        let line = line.replace(r"\%", "%");
        let (mut words, mut word, mut chars) = (Vec::new(), None::<String>, line.chars());
        while let Some(c) = chars.next() {
            match c {
                ' ' => words.extend(word.take()),
                '\'' => {
                    let word = word.get_or_insert_with(String::new);
                    loop {
                        match chars.next().expect("an unclosed quote") {
                            '\'' => break,
                            c => word.push(c),
                        }
                    }
                }
                '\\' => word.get_or_insert_with(String::new).push(chars.next().expect("a character after \\")),
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        words.extend(word);
        words
    }

    #[test]
    fn the_job_line_carries_exactly_the_parsed_db_backup_settings() {
        let backup = parse_db_backup(&EVERY_DB_BACKUP_FLAG);
        let root = Path::new("/home/me/it's 100% mine");
        let args = backup.to_args(root);
        let program = root.join(JOB_BINARY);
        let entry = cron_entry::render(&Job {
            schedule: &Schedule::parse("0 * * * *").unwrap(),
            root,
            path_dirs: &["/usr/bin".to_owned()],
            env: &[("COMPOSE_PROJECT_NAME".to_owned(), "a 'b' %c".to_owned())],
            program: &program,
            args: &args,
            log: &root.join("backup.log"),
        });
        let words = unquote(entry.lines().nth(1).expect("the job line"));
        assert_eq!(words[..7], ["0", "*", "*", "*", "*", "cd", "/home/me/it's 100% mine"]);
        assert!(words.contains(&"COMPOSE_PROJECT_NAME=a 'b' %c".to_owned()), "{words:?}");
        let start = words.iter().position(|w| Path::new(w) == program).expect("the program") + 1;
        let end = words.iter().position(|w| w == ">>").expect("the log redirection");
        assert_eq!(words[start..end], args);
        assert_eq!(format!("{:?}", parse_db_backup(&words[start..end])), format!("{backup:?}"));
    }
}
