//! `cargo xtask install-cron`: puts the backup job into the user's crontab through the
//! real `crontab` program, replacing this repository's entry and nothing else, and the
//! job's secrets into a 0600 file beside its binary, never into the cron line.

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
    monitor::secrets_file,
    offsite::remote::{self, Offsite},
    output::{done, warning},
    process,
    store::backup_dir::remove_if_exists,
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

/// The job's secrets file, beside its binary: every user can read a cron line (in `/proc`,
/// while the job runs), only this one reads this file (mode 0600).
const SECRETS_FILE: &str = "hindsight_db_backups/bin/xtask.secrets";

/// The offsite store's key as this shell may hold it: with --offsite, the job gets it
/// through its secrets file, as the shell running install-cron had it.
const AWS_KEY_ENV: [&str; 3] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

impl InstallCron {
    /// A job whose offsite settings cannot work would fail every hour: refused now (a
    /// recipient missing or mistyped). Without the key in its secrets file, the job reads
    /// it from the shared credentials file: a warning when there is none.
    fn check_offsite(&self, key_in_secrets: bool) -> Result<()> {
        if Offsite::settings(&self.backup.offsite)?.is_none() {
            return Ok(());
        }
        remote::recipients(&self.backup.upload)?;
        if key_in_secrets {
            return Ok(());
        }
        let file = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").filter(|f| !f.is_empty()) {
            Some(file) => Some(PathBuf::from(file)),
            None => std::env::var_os("HOME").map(|home| Path::new(&home).join(".aws/credentials")),
        };
        if !file.as_deref().is_some_and(Path::is_file) {
            warning!(
                "the job reads the offsite store's key from the shared credentials file (~/.aws/credentials, or \
                 AWS_SHARED_CREDENTIALS_FILE), and there is none: write aws_access_key_id and aws_secret_access_key \
                 under [default] (or AWS_PROFILE's) there, mode 0600, or run install-cron again with \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set, for the job's secrets file"
            );
        }
        Ok(())
    }

    /// What the job's secrets file holds, as `(variable, value)`: db-backup's settings that
    /// may hold a secret and, with --offsite, the store's key when `var` (this shell's
    /// environment) has it. With `to_args`, every setting the job needs.
    fn job_secrets(&self, var: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
        let key = AWS_KEY_ENV.iter().filter_map(|name| Some((*name, var(name).filter(|value| !value.is_empty())?)));
        // Without --offsite, a key this shell has is for something else: not copied to disk.
        let key = key.filter(|_| self.backup.offsite.offsite.is_some());
        self.backup.secrets().into_iter().chain(key).collect()
    }

    pub fn run(self, sh: &Shell) -> Result<()> {
        let root = sh.current_dir();
        let program = root.join(JOB_BINARY);
        let log = self.log_file(&root);
        // Every db-backup setting, from the one place that turns them back into flags. The
        // job never starts a stopped database unless --start says so, and opens (and
        // rotates) its log itself (--log-file).
        let args = self.backup.job_args(&root);
        let secrets = self.job_secrets(|key| std::env::var(key).ok());
        let secrets_path = root.join(SECRETS_FILE);
        let secrets_file = (!secrets.is_empty()).then_some(secrets_path.as_path());
        let names: Vec<&str> = secrets.iter().map(|(name, _)| *name).collect();
        if !self.uninstall {
            // A value the file cannot carry is refused before anything changes, --print too.
            secrets_file::render(&secrets)?;
            self.check_offsite(names.contains(&"AWS_ACCESS_KEY_ID"))?;
            if names.contains(&"AWS_SESSION_TOKEN") {
                warning!(
                    "AWS_SESSION_TOKEN is set: the job gets this temporary key, and its uploads fail once it expires; \
                     run install-cron again with a long-lived key (or without AWS_* set, for the shared credentials \
                     file)"
                );
            }
        }
        let path_dirs = job_path();
        let env = job_env(secrets_file, |key| std::env::var(key).ok());
        let entry = cron_entry::render(&Job {
            schedule: &self.schedule,
            root: &root,
            path_dirs: &path_dirs,
            env: &env,
            program: &program,
            args: &args,
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
                .opt_str("secrets_file", secrets_file.map(|file| file.to_string_lossy()).as_deref())
                .raw("secrets", json::strings(&names))
        };
        if self.print {
            if self.backup.json {
                eprint!("{entry}");
            } else {
                print!("{entry}");
            }
            if let Some(file) = secrets_file {
                done!(
                    "the job's secrets ({}) are written to {} (mode 0600) on install; --print writes nothing",
                    names.join(", "),
                    file.display()
                );
            }
            json::report(result("printed", Some(&entry)));
            return Ok(());
        }

        let crontab = which::which("crontab")
            .context("`crontab` is required for install-cron: install cron (Debian: apt-get install cron)")?;
        let table = read_table(sh, &crontab)?;
        if self.uninstall {
            let (without, found) = cron_entry::remove(&table, &root);
            remove_secrets(&secrets_path)?;
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
        // The file before the line that names it; a stale one after the line that no
        // longer does.
        if secrets_file.is_some() {
            secrets_file::write(&secrets_path, &secrets)?;
        }
        write_table(sh, &crontab, &cron_entry::merge(&table, &root, &entry))?;
        if secrets_file.is_none() {
            remove_secrets(&secrets_path)?;
        }
        let kept = match secrets_file {
            Some(file) => format!(", its secrets ({}) in {} (mode 0600)", names.join(", "), file.display()),
            None => String::new(),
        };
        done!("installed the backup job ({}), logging to {}{kept}:", self.schedule, log.display());
        eprint!("{entry}");
        json::report(result("installed", Some(&entry)));
        Ok(())
    }
}

/// The variables the cron line sets: those of `COMPOSE_ENV` that `var` (this shell's
/// environment) has, and where the job's secrets file is (a path, not a secret).
fn job_env(secrets_file: Option<&Path>, var: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let compose = COMPOSE_ENV.iter().filter_map(|key| Some((key.to_string(), var(key)?)));
    let secrets = secrets_file.map(|file| (secrets_file::VAR.to_owned(), file.display().to_string()));
    compose.chain(secrets).collect()
}

/// Removes the job's secrets file, if there is one: the job no longer reads it.
fn remove_secrets(path: &Path) -> Result<()> {
    remove_if_exists(path)
        .with_context(|| format!("the job's old secrets file stays: remove it by hand (`rm {}`)", path.display()))
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
        cli::tests::{EVERY_DB_BACKUP_FLAG, parse_db_backup, secrets_as_flags},
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

    /// install-cron with every db-backup flag of `EVERY_DB_BACKUP_FLAG`.
    fn every_install_cron_flag() -> InstallCron {
        use clap::Parser;
        let args = ["xtask", "install-cron"].into_iter().chain(EVERY_DB_BACKUP_FLAG.into_iter().skip(1));
        match crate::cli::Cli::try_parse_from(args) {
            Ok(crate::cli::Cli { task: crate::cli::Task::InstallCron(install), .. }) => install,
            Ok(other) => panic!("not install-cron: {other:?}"),
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn the_job_line_and_its_secrets_file_carry_exactly_the_parsed_db_backup_settings() {
        let install = every_install_cron_flag();
        let backup = parse_db_backup(&EVERY_DB_BACKUP_FLAG);
        let root = Path::new("/home/me/it's 100% mine");
        let args = install.backup.job_args(root);
        let program = root.join(JOB_BINARY);
        let secrets_path = root.join(SECRETS_FILE);
        // This shell's environment: the key is kept (--offsite is given), its empty token is not.
        let shell = |key: &str| match key {
            "COMPOSE_PROJECT_NAME" => Some("a 'b' %c".to_owned()),
            "AWS_ACCESS_KEY_ID" => Some("AKIA-secret-id".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret key".to_owned()),
            "AWS_SESSION_TOKEN" => Some(String::new()),
            _ => None,
        };
        let secrets = install.job_secrets(shell);
        let entry = cron_entry::render(&Job {
            schedule: &Schedule::parse("0 * * * *").unwrap(),
            root,
            path_dirs: &["/usr/bin".to_owned()],
            env: &job_env(Some(&secrets_path), shell),
            program: &program,
            args: &args,
        });
        let line = entry.lines().nth(1).expect("the job line");
        // The line names the secrets file (`xtask.secrets`), and holds none of its values.
        assert!(!line.replace("xtask.secrets", "").contains("secret"), "no secret in the cron line: {line}");
        assert!(secrets.iter().all(|(_, value)| !line.contains(value.as_str())), "{line}");
        let words = unquote(line);
        assert_eq!(words[..7], ["0", "*", "*", "*", "*", "cd", "/home/me/it's 100% mine"]);
        assert!(words.contains(&"COMPOSE_PROJECT_NAME=a 'b' %c".to_owned()), "{words:?}");
        let named = format!("HINDSIGHT_SECRETS_FILE={}", secrets_path.display());
        assert!(words.contains(&named), "the line names the secrets file: {words:?}");
        let start = words.iter().position(|w| Path::new(w) == program).expect("the program") + 1;
        // The job opens its log itself: nothing after its arguments.
        assert_eq!(words[start..], args);

        // What the job reads back: the file's variables, each the db-backup flag that reads it.
        let text = secrets_file::render(&secrets).unwrap();
        let parsed = secrets_file::parse(&text).unwrap();
        let names: Vec<&str> = parsed.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["HINDSIGHT_PING_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
        let flags: Vec<(&str, String)> = parsed
            .iter()
            .filter(|(name, _)| name.starts_with("HINDSIGHT_"))
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect();
        let mut job = words[start..].to_vec();
        job.extend(secrets_as_flags(&flags));
        assert_eq!(format!("{:?}", parse_db_backup(&job)), format!("{backup:?}"));
    }

    #[test]
    fn without_offsite_or_a_secret_there_is_no_secrets_file() {
        let mut install = every_install_cron_flag();
        install.backup.offsite.offsite = None;
        let shell = |key: &str| key.starts_with("AWS_").then(|| "a key for something else".to_owned());
        let names = |install: &InstallCron| install.job_secrets(shell).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(names(&install), ["HINDSIGHT_PING_URL"], "a key without --offsite is not copied");
        install.backup.monitor.ping_url = None;
        assert_eq!(names(&install), [] as [&str; 0]);
        assert!(!job_env(None, shell).iter().any(|(key, _)| key == secrets_file::VAR));
    }
}
