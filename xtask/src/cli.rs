//! The command line: every task, its flags, and their `HINDSIGHT_*` environment fallbacks.
//!
//! The `///` comments here are the `--help` text.

use std::{
    ffi::OsString,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use xshell::Shell;

use crate::{
    cron_entry::Schedule,
    db::{Start, Target, compose::ComposeFlavor},
    offsite::s3::Location,
    output::Level,
    paths,
    store::{backup_file::Compression, retention::Policy},
};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "Backup, restore and scheduling tasks for the hindsight_db PostgreSQL database"
)]
pub struct Cli {
    #[command(subcommand)]
    pub task: Task,

    /// Print only warnings, errors and the last line (the task's summary).
    #[arg(short, long, global = true, help_heading = "Output", conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also print every command run, shell-quoted so that it can be pasted into sh.
    #[arg(short, long, global = true, help_heading = "Output")]
    pub verbose: bool,
}

impl Cli {
    /// The output level the flags ask for; the cron job passes neither: the default.
    pub fn level(&self) -> Level {
        match (self.quiet, self.verbose) {
            (true, _) => Level::Quiet,
            (_, true) => Level::Verbose,
            _ => Level::Normal,
        }
    }
}

impl Cli {
    /// The command line of this process, parsed; a bad value that came from a `HINDSIGHT_*`
    /// variable rather than a flag is blamed on the variable, which is what the user set
    /// (clap names only the flag, which the user never typed).
    pub fn try_parse_args() -> Result<Cli, clap::Error> {
        let args: Vec<OsString> = std::env::args_os().collect();
        Cli::try_parse_from(&args).map_err(|err| blame_the_variable(err, &args))
    }
}

fn blame_the_variable(err: clap::Error, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(err.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return err;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else { return err };
    let Some(long) = arg.split_whitespace().next().and_then(|flag| flag.strip_prefix("--")) else { return err };
    let typed = args.iter().filter_map(|arg| arg.to_str()).any(|arg| {
        arg.strip_prefix("--")
            .is_some_and(|arg| arg == long || arg.strip_prefix(long).is_some_and(|r| r.starts_with('=')))
    });
    let command = Cli::command();
    let env = command
        .get_subcommands()
        .flat_map(|task| task.get_arguments())
        .find(|flag| flag.get_long() == Some(long))
        .and_then(|flag| flag.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    let Some(env) = env.filter(|_| !typed) else { return err };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => std::env::var(&env).unwrap_or_default(),
    };
    let reason = match (std::error::Error::source(&err), err.get(ContextKind::ValidValue)) {
        (Some(reason), _) => reason.to_string(),
        (None, Some(ContextValue::Strings(valid))) => format!("give one of {}", valid.join(", ")),
        (None, _) => "not a value it takes".to_owned(),
    };
    clap::Error::raw(
        err.kind(),
        format!("invalid value '{value}' in the environment variable {env} (read for --{long}): {reason}\n"),
    )
}

#[derive(Debug, Subcommand)]
pub enum Task {
    /// Dump the database into a new, verified backup file, then apply the retention policy.
    DbBackup(DbBackup),
    /// Restore a backup into a new database, swap it in, keep the old one, then run Alembic.
    DbRestore(DbRestore),
    /// Register the backup job in the user's crontab (hourly by default), or show or remove it.
    InstallCron(InstallCron),
    /// List the backups, newest first: the number db-restore and db-verify take, date, age,
    /// revision, format, size, verification.
    DbList(DbList),
    /// Prove backups restore: checksum, marker, then a real restore into a scratch database.
    DbVerify(DbVerify),
    /// Apply the retention policy now (the one db-backup applies after each backup).
    DbPrune(DbPrune),
    /// Bring the offsite copies up to date now: upload the local backups remote retention
    /// keeps and the store lacks, abort what dead runs left, apply remote retention.
    DbOffsite(DbOffsite),
    /// Say whether the backups are fresh, for monitoring: newest backup, last run, last
    /// verify, offsite lag. Exit codes as a Nagios plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    DbStatus(DbStatus),
    /// Measure db-backup and db-restore against a bare pg_dump pipe and psql, on a scratch database.
    Bench(Bench),
    /// Provision the Docker test bed (as root on Debian) and run the whole test suite against it.
    Test(Test),
}

impl Task {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self {
            Task::DbBackup(task) => task.run(sh),
            Task::DbRestore(task) => task.run(sh),
            Task::InstallCron(task) => task.run(sh),
            Task::Bench(task) => task.run(sh),
            Task::DbList(task) => task.run(sh),
            Task::DbVerify(task) => task.run(sh),
            Task::DbPrune(task) => task.run(sh),
            Task::DbOffsite(task) => task.run(sh),
            Task::DbStatus(task) => task.run(sh),
            Task::Test(task) => task.run(sh),
        }
    }
}

/// Where the database runs and how to reach it.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct DbArgs {
    /// Compose file defining the database service (a relative path is taken from the working
    /// directory); give it several times, in Compose's order, for a service defined across
    /// files. Default: `COMPOSE_FILE` as Compose reads it, else
    /// `infra/postgres/docker-compose.yml` in the repository.
    #[arg(long, env = "HINDSIGHT_COMPOSE_FILE", value_delimiter = ':')]
    pub compose_file: Vec<PathBuf>,

    /// An env file for Compose's variable substitution, as `docker compose --env-file` (a
    /// relative path is taken from the working directory); without it Compose reads the
    /// project directory's `.env` itself.
    #[arg(long, env = "HINDSIGHT_ENV_FILE")]
    pub env_file: Option<PathBuf>,

    /// Compose service that runs PostgreSQL.
    #[arg(long, env = "HINDSIGHT_DB_SERVICE", default_value = "db")]
    pub service: String,

    #[command(flatten)]
    pub name: DbName,

    /// PostgreSQL role that pg_dump and psql connect as, over the container's local
    /// socket. Default: the container's `POSTGRES_USER`, else `user`.
    #[arg(long, env = "HINDSIGHT_DB_USER")]
    pub db_user: Option<String>,

    /// Which Compose to run: `v2` (`docker compose`), `v1` (`docker-compose`), or `auto` (v2 when present).
    #[arg(long, env = "HINDSIGHT_COMPOSE", value_enum, default_value_t = ComposeFlavor::Auto)]
    pub compose: ComposeFlavor,

    /// Seconds to wait for the database to accept connections after starting its service.
    #[arg(long, env = "HINDSIGHT_WAIT_SECS", default_value = "60", allow_negative_numbers = true, value_parser = parse_secs)]
    pub wait_secs: Duration,
}

/// Which database: the tasks that only read the backup directory need nothing more.
#[derive(Debug, Args)]
pub struct DbName {
    /// Name of the database; it also prefixes the backup files' names.
    #[arg(long, env = "HINDSIGHT_DB_NAME", default_value = "hindsight_db", value_parser = parse_db_name)]
    pub db_name: String,
}

impl DbArgs {
    /// The compose files, absolute and normalised, in order: the flags, else `COMPOSE_FILE`
    /// split as Compose splits it (`COMPOSE_PATH_SEPARATOR`, `:` by default), both taken
    /// from the working directory as Compose takes them, else the project's, in `root`.
    pub fn compose_files(&self, root: &Path) -> Vec<PathBuf> {
        if !self.compose_file.is_empty() {
            return self.compose_file.iter().map(|file| paths::absolute(file)).collect();
        }
        if let Some(list) = std::env::var("COMPOSE_FILE").ok().filter(|l| !l.is_empty()) {
            let separator = std::env::var("COMPOSE_PATH_SEPARATOR").unwrap_or_else(|_| ":".to_owned());
            return list
                .split(separator.as_str())
                .filter(|f| !f.is_empty())
                .map(|f| paths::absolute(f.as_ref()))
                .collect();
        }
        vec![paths::absolute_from(root, Path::new(DEFAULT_COMPOSE_FILE))]
    }

    /// The env file, absolute and normalised: taken from the working directory.
    pub fn env_file(&self) -> Option<PathBuf> {
        self.env_file.as_deref().map(paths::absolute)
    }

    /// The door's settings: where pg_dump and psql run.
    pub fn target(&self, root: &Path) -> Target {
        Target {
            flavor: self.compose,
            files: self.compose_files(root),
            env_file: self.env_file(),
            service: self.service.clone(),
            user: self.db_user.clone(),
            db_name: self.name.db_name.clone(),
        }
    }
}

/// The project's compose file, in the repository.
pub const DEFAULT_COMPOSE_FILE: &str = "infra/postgres/docker-compose.yml";
/// The backup directory when none is given, in the repository.
pub const DEFAULT_BACKUP_DIR: &str = "hindsight_db_backups/data";
/// The cron job's log when none is given (db-backup's `--log-file`), in the repository.
pub const DEFAULT_CRON_LOG: &str = "hindsight_db_backups/logs/backup.log";

/// Where the backups live.
#[derive(Debug, Args)]
#[command(next_help_heading = "Backup directory")]
pub struct BackupDirArgs {
    /// Directory of the backup files (a relative path is taken from the working directory).
    /// Default: `hindsight_db_backups/data` in the repository. db-backup and db-restore
    /// create it (mode 0700); the other tasks need it to exist.
    #[arg(long, env = "HINDSIGHT_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
}

impl BackupDirArgs {
    /// The directory, absolute and normalised: the one given, from the working directory,
    /// else the default in `root`, the repository.
    pub fn path(&self, root: &Path) -> PathBuf {
        match &self.backup_dir {
            Some(dir) => paths::absolute(dir),
            None => paths::absolute_from(root, Path::new(DEFAULT_BACKUP_DIR)),
        }
    }
}

/// How long to wait for another run: only for the tasks that take the directory's lock.
#[derive(Debug, Args)]
#[command(next_help_heading = "Locks")]
pub struct LockArgs {
    /// Seconds to wait for another backup or restore to release the backup directory's lock.
    #[arg(long, env = "HINDSIGHT_LOCK_WAIT_SECS", default_value = "60", allow_negative_numbers = true, value_parser = parse_secs)]
    pub lock_wait_secs: Duration,
}

/// Which backups to keep. Without age rules: the newest --max-backups. With them: every
/// backup one of them keeps, at most --max-backups. The newest is always kept.
#[derive(Debug, Args)]
#[command(next_help_heading = "Retention")]
pub struct RetentionArgs {
    /// How many complete backups to keep at most.
    #[arg(long, env = "HINDSIGHT_MAX_BACKUPS", default_value = "100", value_name = "N", allow_negative_numbers = true, value_parser = parse_at_least_one)]
    pub max_backups: NonZeroUsize,

    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, env = "HINDSIGHT_KEEP_HOURLY", default_value = "0", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub keep_hourly: usize,

    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long, env = "HINDSIGHT_KEEP_DAILY", default_value = "0", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub keep_daily: usize,

    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, env = "HINDSIGHT_KEEP_WEEKLY", default_value = "0", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub keep_weekly: usize,

    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, env = "HINDSIGHT_KEEP_MONTHLY", default_value = "0", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub keep_monthly: usize,
}

impl RetentionArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            max: self.max_backups.get(),
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
        }
    }
}

/// Where the offsite copies live: S3, or a store that speaks its API. The credentials
/// come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), or
/// from the shared credentials file, never from a flag.
#[derive(Debug, Args)]
#[command(next_help_heading = "Offsite")]
pub struct OffsiteArgs {
    /// Where the offsite copies of the backups live: `s3://BUCKET/PREFIX`. db-backup
    /// uploads each backup there; the other tasks read the copies there.
    #[arg(long, env = "HINDSIGHT_OFFSITE", value_name = "s3://BUCKET/PREFIX", value_parser = Location::parse)]
    pub offsite: Option<Location>,

    /// The store's endpoint, for stores other than AWS (Garage, MinIO, Ceph, R2):
    /// `https://HOST[:PORT]`. Without it: AWS S3 in --s3-region.
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// The store's region; it must match the store's own (Garage: its `s3_region`).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1", value_name = "REGION")]
    pub s3_region: String,

    /// How requests name the bucket: `path` (`HOST/BUCKET/KEY`, what self-hosted stores
    /// answer), `virtual` (`BUCKET.HOST/KEY`, AWS), or `auto`: path with --s3-endpoint,
    /// else virtual.
    #[arg(long, env = "HINDSIGHT_S3_ADDRESSING", value_enum, default_value_t = S3Addressing::Auto)]
    pub s3_addressing: S3Addressing,
}

/// `--s3-addressing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum S3Addressing {
    Auto,
    Path,
    Virtual,
}

/// How offsite copies are written: encrypted to whom, and how many are kept. db-backup and
/// db-offsite.
#[derive(Debug, Args)]
#[command(next_help_heading = "Offsite")]
pub struct UploadArgs {
    /// Encrypt the offsite copies with age to this public key (`age1...`); give it again,
    /// or comma-separate, for more. Only public keys are needed here: the server cannot
    /// read its own offsite copies.
    #[arg(long, env = "HINDSIGHT_AGE_RECIPIENTS", value_delimiter = ',', value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,

    /// A file of age recipients, one a line, as `age -R` reads it (a relative path is
    /// taken from the working directory).
    #[arg(long, env = "HINDSIGHT_AGE_RECIPIENTS_FILE", value_name = "FILE")]
    pub encrypt_to_file: Option<PathBuf>,

    /// Upload the offsite copies unencrypted. Needed with --offsite and no recipient, so
    /// that no database leaves the host readable by accident.
    #[arg(long)]
    pub offsite_plaintext: bool,

    /// How many offsite copies to keep at most. Default: --max-backups.
    #[arg(long, env = "HINDSIGHT_OFFSITE_MAX_BACKUPS", value_name = "N", allow_negative_numbers = true, value_parser = parse_at_least_one)]
    pub offsite_max_backups: Option<NonZeroUsize>,

    /// Offsite: keep the newest copy of each of the last N hours. Default: --keep-hourly.
    #[arg(long, env = "HINDSIGHT_OFFSITE_KEEP_HOURLY", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub offsite_keep_hourly: Option<usize>,

    /// Offsite: keep the newest copy of each of the last N days. Default: --keep-daily.
    #[arg(long, env = "HINDSIGHT_OFFSITE_KEEP_DAILY", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub offsite_keep_daily: Option<usize>,

    /// Offsite: keep the newest copy of each of the last N ISO weeks. Default: --keep-weekly.
    #[arg(long, env = "HINDSIGHT_OFFSITE_KEEP_WEEKLY", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub offsite_keep_weekly: Option<usize>,

    /// Offsite: keep the newest copy of each of the last N months. Default: --keep-monthly.
    #[arg(long, env = "HINDSIGHT_OFFSITE_KEEP_MONTHLY", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub offsite_keep_monthly: Option<usize>,
}

impl UploadArgs {
    /// The offsite retention policy: each setting given, else the local one.
    pub fn policy(&self, local: &RetentionArgs) -> Policy {
        let local = local.policy();
        Policy {
            max: self.offsite_max_backups.map_or(local.max, NonZeroUsize::get),
            hourly: self.offsite_keep_hourly.unwrap_or(local.hourly),
            daily: self.offsite_keep_daily.unwrap_or(local.daily),
            weekly: self.offsite_keep_weekly.unwrap_or(local.weekly),
            monthly: self.offsite_keep_monthly.unwrap_or(local.monthly),
        }
    }

    /// `--encrypt-to-file`, absolute and normalised: taken from the working directory.
    pub fn recipients_file(&self) -> Option<PathBuf> {
        self.encrypt_to_file.as_deref().map(paths::absolute)
    }
}

/// How a backup is loaded into the scratch database.
#[derive(Debug, Args)]
#[command(next_help_heading = "Load")]
pub struct LoadArgs {
    /// Load the file even where the container's psql cannot disable its backslash
    /// commands (`\restrict`, before 13.22, 14.19, 15.14, 16.10, 17.6). Only for files you made.
    #[arg(long)]
    pub trust_file: bool,

    /// psql sessions that load the dump in parallel: the table data spread over them, then
    /// the index and key builds. `1`: one session, one transaction, as `psql < file`.
    /// Default: the CPUs the database's container may use.
    #[arg(long, env = "HINDSIGHT_JOBS", value_name = "N", allow_negative_numbers = true, value_parser = parse_at_least_one)]
    pub jobs: Option<NonZeroUsize>,
}

impl LoadArgs {
    pub fn options(&self) -> crate::db::load::Options {
        crate::db::load::Options { trust_file: self.trust_file, jobs: self.jobs }
    }
}

/// Where a backup is read from, and the key that opens an encrypted offsite copy.
#[derive(Debug, Args)]
#[command(next_help_heading = "Offsite")]
pub struct ReadArgs {
    /// Where to find the backup: `local`, the backup directory (a file name found only
    /// offsite is read from there), or `offsite`, the copies under --offsite.
    #[arg(long, value_enum, default_value_t = From::Local)]
    pub from: From,

    /// The age identity file (private key) that opens encrypted offsite copies, as
    /// `age -d -i` takes it (a relative path is taken from the working directory).
    #[arg(long, env = "HINDSIGHT_AGE_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl ReadArgs {
    /// `--identity`, absolute and normalised: taken from the working directory.
    pub fn identity(&self) -> Option<PathBuf> {
        self.identity.as_deref().map(paths::absolute)
    }
}

/// `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum From {
    Local,
    Offsite,
}

/// How a db-backup run is watched from outside: its log, a metrics file, a ping.
#[derive(Debug, Args)]
#[command(next_help_heading = "Monitoring")]
pub struct MonitorArgs {
    /// After every run, ok or not, write Prometheus gauges (last success, last run, size,
    /// duration, backups, last verify, last offsite copy) to this file, for node_exporter's
    /// textfile collector: its name must end in `.prom`; written atomically.
    #[arg(long, env = "HINDSIGHT_METRICS_FILE", value_name = "FILE.prom", value_parser = parse_metrics_file)]
    pub metrics_file: Option<PathBuf>,

    /// Ping a dead-man's switch (healthchecks.io's convention): `URL/start` when a run
    /// begins, `URL` when it succeeds, `URL/fail` with the error when it fails. The URL may
    /// hold a token: only its host is ever printed, and install-cron keeps it out of the
    /// cron line (in the job's 0600 secrets file).
    #[arg(long, env = "HINDSIGHT_PING_URL", value_name = "URL", hide_env_values = true)]
    pub ping_url: Option<String>,

    /// Append this run's output to FILE (mode 0600) instead of stderr, first rotating it
    /// when it has passed --log-max-bytes (FILE.1 ... FILE.3 are kept). The installed
    /// job's default: `hindsight_db_backups/logs/backup.log` in the repository.
    #[arg(long, env = "HINDSIGHT_LOG_FILE", value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Rotate --log-file before a run once it is this many bytes or more; 0: never.
    #[arg(long, env = "HINDSIGHT_LOG_MAX_BYTES", default_value = "10485760", value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_bytes)]
    pub log_max_bytes: u64,
}

impl MonitorArgs {
    /// `--metrics-file`, absolute and normalised: taken from the working directory.
    pub fn metrics_file(&self) -> Option<PathBuf> {
        self.metrics_file.as_deref().map(paths::absolute)
    }

    /// `--log-file`, absolute and normalised: taken from the working directory.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.log_file.as_deref().map(paths::absolute)
    }
}

#[derive(Debug, Args)]
pub struct DbStatus {
    #[command(flatten)]
    pub name: DbName,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub offsite: OffsiteArgs,

    /// CRITICAL when the newest complete backup is older than this (`90m`, `2h`, `1d`,
    /// or seconds). The default suits an hourly job.
    #[arg(long, env = "HINDSIGHT_STATUS_MAX_AGE", default_value = "2h", value_name = "AGE", value_parser = parse_age)]
    pub max_age: Duration,

    /// WARNING when the newest passing db-verify is older than this, or there is none; 0:
    /// do not check.
    #[arg(long, env = "HINDSIGHT_STATUS_MAX_VERIFY_AGE", default_value = "8d", value_name = "AGE", value_parser = parse_age)]
    pub max_verify_age: Duration,

    /// Print the state and what it is based on as one JSON object on stdout.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DbOffsite {
    #[command(flatten)]
    pub name: DbName,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    #[command(flatten)]
    pub offsite: OffsiteArgs,

    #[command(flatten)]
    pub upload: UploadArgs,

    #[command(flatten)]
    pub retention: RetentionArgs,

    /// Print what was uploaded, aborted and removed as one JSON object on stdout.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DbBackup {
    /// Compress on the host while the dump streams: `.sql`, `.sql.gz` or `.sql.zst`.
    #[arg(long, env = "HINDSIGHT_BACKUP_COMPRESS", value_enum, default_value_t = Compression::None)]
    pub compress: Compression,

    /// Start the database's service when it is stopped, as `docker compose up -d` would.
    /// db-backup does by default; the job install-cron writes does not, unless given this.
    #[arg(long, conflicts_with = "no_start")]
    pub start: bool,

    /// Fail (exit 1) when the database's service is stopped, instead of starting it: a
    /// stopped database may be under maintenance. The installed cron job's default.
    #[arg(long)]
    pub no_start: bool,

    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    /// Seconds pg_dump waits for a table's lock (held by an `ALTER TABLE`, a `VACUUM FULL`)
    /// before it gives up with exit 3, naming the session that holds it.
    #[arg(long, help_heading = "Locks", env = "HINDSIGHT_DB_LOCK_WAIT_SECS", default_value = "120", allow_negative_numbers = true, value_parser = parse_secs)]
    pub db_lock_wait_secs: Duration,

    #[command(flatten)]
    pub retention: RetentionArgs,

    #[command(flatten)]
    pub offsite: OffsiteArgs,

    #[command(flatten)]
    pub upload: UploadArgs,

    /// Each run also uploads up to N complete local backups that remote retention keeps and
    /// the store lacks, newest first: an outage of the store heals by itself. 0: none.
    #[arg(long, help_heading = "Offsite", env = "HINDSIGHT_OFFSITE_CATCH_UP", default_value = "3", value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    pub offsite_catch_up: usize,

    #[command(flatten)]
    pub monitor: MonitorArgs,

    /// Print the result as one JSON object on stdout, for scripts and monitoring (for
    /// install-cron: its own result; the job never gets this flag).
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

impl DbBackup {
    /// Whether this run may start a stopped service: yes unless `--no-start`.
    pub fn start_policy(&self) -> Start {
        const WHY: &str =
            "this run does not start it (--no-start; --start would): a stopped database may be under maintenance";
        if self.no_start { Start::Never(WHY) } else { Start::IfStopped }
    }

    /// `to_args` for the cron job, whose default is not to start a stopped service:
    /// `--no-start` unless `--start` was given.
    /// The job also logs into its own file, `DEFAULT_CRON_LOG` unless --log-file says.
    pub fn job_args(&self, root: &Path) -> Vec<String> {
        let mut args = self.to_args(root);
        if !self.start && !self.no_start {
            args.push("--no-start".to_owned());
        }
        if self.monitor.log_file.is_none() {
            args.extend(["--log-file".to_owned(), self.job_log(root).display().to_string()]);
        }
        args
    }

    /// The job's log: --log-file, else `DEFAULT_CRON_LOG` in `root`, the repository.
    pub fn job_log(&self, root: &Path) -> PathBuf {
        self.monitor.log_file().unwrap_or_else(|| paths::absolute_from(root, Path::new(DEFAULT_CRON_LOG)))
    }

    /// These settings as db-backup's command line again, `db-backup` first: every setting
    /// spelled out (the job must not depend on an environment it may not have), paths made
    /// absolute (given ones from the working directory, defaults in `root`), `--json` left
    /// out (a log wants lines). The one place that knows db-backup's flags besides clap:
    /// install-cron writes this into the job, and a unit test round-trips it through clap
    /// and checks that no flag is missing. The destructuring has no `..`: a new field does
    /// not compile until it is handled here.
    pub fn to_args(&self, root: &std::path::Path) -> Vec<String> {
        let DbBackup {
            db,
            dir,
            lock,
            retention,
            compress,
            db_lock_wait_secs,
            start,
            no_start,
            offsite,
            upload,
            offsite_catch_up,
            monitor,
            json: _,
        } = self;
        let DbArgs { compose_file: _, env_file: _, service, name: DbName { db_name }, db_user, compose, wait_secs } =
            db;
        let BackupDirArgs { backup_dir: _ } = dir;
        let LockArgs { lock_wait_secs } = lock;
        let RetentionArgs { max_backups, keep_hourly, keep_daily, keep_weekly, keep_monthly } = retention;
        // As clap spells the values: what it parses back.
        let spelled =
            |value: Option<clap::builder::PossibleValue>| value.expect("no skipped variants").get_name().to_owned();
        // The files as resolved now (flags, else COMPOSE_FILE, else the default): the job
        // must not depend on an environment cron does not give it.
        let files = db.compose_files(root).into_iter().map(|file| ("--compose-file", file.display().to_string()));
        let env_file = db.env_file().into_iter().map(|file| ("--env-file", file.display().to_string()));
        // No --db-user means the container's POSTGRES_USER, at every run.
        let user = db_user.iter().map(|user| ("--db-user", user.clone()));
        let flags = [
            ("--service", service.clone()),
            ("--db-name", db_name.clone()),
            ("--compose", spelled(compose.to_possible_value())),
            ("--wait-secs", wait_secs.as_secs().to_string()),
            ("--backup-dir", dir.path(root).display().to_string()),
            ("--lock-wait-secs", lock_wait_secs.as_secs().to_string()),
            ("--max-backups", max_backups.to_string()),
            ("--keep-hourly", keep_hourly.to_string()),
            ("--keep-daily", keep_daily.to_string()),
            ("--keep-weekly", keep_weekly.to_string()),
            ("--keep-monthly", keep_monthly.to_string()),
            ("--compress", spelled(compress.to_possible_value())),
            ("--db-lock-wait-secs", db_lock_wait_secs.as_secs().to_string()),
        ];
        let offsite_flags = offsite_args(offsite, upload, *offsite_catch_up, &spelled);
        // The ping URL may hold a token: never a flag, see `secrets`.
        let MonitorArgs { metrics_file: _, ping_url: _, log_file: _, log_max_bytes } = monitor;
        let monitor_flags = monitor
            .metrics_file()
            .map(|file| ("--metrics-file", file.display().to_string()))
            .into_iter()
            .chain(monitor.log_file().map(|file| ("--log-file", file.display().to_string())))
            .chain([("--log-max-bytes", log_max_bytes.to_string())]);
        let flags = files
            .chain(env_file)
            .chain(user)
            .chain(flags)
            .chain(offsite_flags)
            .chain(monitor_flags)
            .flat_map(|(flag, value)| [flag.to_owned(), value]);
        let switches =
            [(*start, "--start"), (*no_start, "--no-start"), (upload.offsite_plaintext, "--offsite-plaintext")];
        let switches = switches.into_iter().filter(|(on, _)| *on).map(|(_, flag)| flag.to_owned());
        std::iter::once("db-backup".to_owned()).chain(flags).chain(switches).collect()
    }

    /// The settings that may hold a secret, as the variables clap reads them from: what
    /// install-cron writes into the job's secrets file (mode 0600) instead of the cron
    /// line, which every user can read in `/proc`. With `to_args`, every setting.
    pub fn secrets(&self) -> Vec<(&'static str, String)> {
        self.monitor.ping_url.iter().map(|url| ("HINDSIGHT_PING_URL", url.clone())).collect()
    }
}

/// The offsite settings as db-backup's flags, for `DbBackup::to_args`: none without
/// --offsite. Credentials are no flags and never appear here; the recipients are public keys.
fn offsite_args(
    offsite: &OffsiteArgs,
    upload: &UploadArgs,
    catch_up: usize,
    spelled: &dyn Fn(Option<clap::builder::PossibleValue>) -> String,
) -> Vec<(&'static str, String)> {
    let OffsiteArgs { offsite, s3_endpoint, s3_region, s3_addressing } = offsite;
    let UploadArgs {
        encrypt_to,
        encrypt_to_file: _,
        offsite_plaintext: _,
        offsite_max_backups,
        offsite_keep_hourly,
        offsite_keep_daily,
        offsite_keep_weekly,
        offsite_keep_monthly,
    } = upload;
    let Some(location) = offsite else { return Vec::new() };
    let mut flags = vec![("--offsite", location.to_string())];
    flags.extend(s3_endpoint.iter().map(|endpoint| ("--s3-endpoint", endpoint.clone())));
    flags.push(("--s3-region", s3_region.clone()));
    flags.push(("--s3-addressing", spelled(s3_addressing.to_possible_value())));
    flags.extend(encrypt_to.iter().map(|recipient| ("--encrypt-to", recipient.clone())));
    flags.extend(upload.recipients_file().map(|file| ("--encrypt-to-file", file.display().to_string())));
    flags.extend(offsite_max_backups.map(|n| ("--offsite-max-backups", n.to_string())));
    flags.extend(offsite_keep_hourly.map(|n| ("--offsite-keep-hourly", n.to_string())));
    flags.extend(offsite_keep_daily.map(|n| ("--offsite-keep-daily", n.to_string())));
    flags.extend(offsite_keep_weekly.map(|n| ("--offsite-keep-weekly", n.to_string())));
    flags.extend(offsite_keep_monthly.map(|n| ("--offsite-keep-monthly", n.to_string())));
    flags.push(("--offsite-catch-up", catch_up.to_string()));
    flags
}

#[derive(Debug, Args)]
pub struct DbList {
    #[command(flatten)]
    pub name: DbName,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub offsite: OffsiteArgs,

    /// Print one JSON object on stdout instead of a table.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DbVerify {
    /// The backup (default `latest`): `latest` or `latest~N` (the Nth before it), its number
    /// in db-list, a unique prefix of its time (`20261125_0710`), a file name in the backup
    /// directory, or a path.
    pub backup: Option<String>,

    /// Verify every backup in the directory.
    #[arg(long, conflicts_with = "backup")]
    pub all: bool,

    #[command(flatten)]
    pub load: LoadArgs,

    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    #[command(flatten)]
    pub offsite: OffsiteArgs,

    #[command(flatten)]
    pub read: ReadArgs,

    /// Print the report as one JSON object on stdout, also when nothing got verified.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DbPrune {
    /// Show what would be kept and removed, and why; remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove only the incomplete files named like backups (empty, cut short, compressed
    /// without a .sha256), which retention never counts nor removes; no complete backup is touched.
    #[arg(long)]
    pub incomplete: bool,

    #[command(flatten)]
    pub name: DbName,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    #[command(flatten)]
    pub retention: RetentionArgs,

    /// Print what was kept (and why) and removed as one JSON object on stdout; the
    /// per-backup lines go to stderr.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DbRestore {
    /// The backup: `latest` or `latest~N` (the Nth before it), its number in db-list, a
    /// unique prefix of its time (`20261125_0710`), a file name in the backup directory, or
    /// a path. Without it, a terminal gets a list to pick from.
    pub backup: Option<String>,

    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short)]
    pub yes: bool,

    /// Check the backup completely (every byte read: checksum, completion marker, COPY
    /// blocks, versions, room, roles) and print what a real run would do; change nothing,
    /// start nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// How many replaced databases (`<db>__pre_restore_<timestamp>`) to keep; older ones are dropped.
    #[arg(long, env = "HINDSIGHT_KEEP_PREVIOUS", default_value = "1", value_name = "N", allow_negative_numbers = true, value_parser = parse_at_least_one)]
    pub keep_previous: NonZeroUsize,

    /// Directory holding `alembic.ini` (a relative path is taken from the working directory).
    /// Without it, the repository is searched for exactly one `alembic.ini`; none found
    /// skips the migration.
    #[arg(long, env = "HINDSIGHT_ALEMBIC_DIR")]
    pub alembic_dir: Option<PathBuf>,

    /// Alembic revision to migrate to after the restore, or `head`. Default: the revision in
    /// the backup's name, each of its heads in turn when it has several (`head` when it is
    /// `unknown`).
    #[arg(long, env = "HINDSIGHT_MIGRATE_TO", value_parser = parse_migration_target, conflicts_with = "no_migrate")]
    pub migrate_to: Option<String>,

    /// Skip the Alembic migration after the restore.
    #[arg(long)]
    pub no_migrate: bool,

    #[command(flatten)]
    pub load: LoadArgs,

    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    /// Seconds the swap waits for a lock on the database before giving up (exit 3).
    #[arg(long, help_heading = "Locks", env = "HINDSIGHT_DB_LOCK_WAIT_SECS", default_value = "120", allow_negative_numbers = true, value_parser = parse_secs)]
    pub db_lock_wait_secs: Duration,

    #[command(flatten)]
    pub offsite: OffsiteArgs,

    #[command(flatten)]
    pub read: ReadArgs,

    /// Print what the restore did as one JSON object on stdout. The picker and the
    /// question, on a terminal, stay on stderr.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InstallCron {
    /// When the job runs: five cron fields (minute hour day-of-month month day-of-week), or
    /// one of cron's nicknames (`@hourly`, `@daily`, `@weekly`, `@monthly`, ...).
    #[arg(long, env = "HINDSIGHT_CRON_SCHEDULE", default_value = "0 * * * *", value_parser = Schedule::parse)]
    pub schedule: Schedule,

    /// Print the entry and change nothing.
    #[arg(long, conflicts_with = "uninstall")]
    pub print: bool,

    /// Remove this repository's entry, and nothing else.
    #[arg(long)]
    pub uninstall: bool,

    /// The job's db-backup settings, written into the entry as flags.
    #[command(flatten)]
    pub backup: DbBackup,
}

impl InstallCron {
    /// The job's log (db-backup's --log-file), absolute and normalised: the one given,
    /// from the working directory, else the default in `root`, the repository.
    pub fn log_file(&self, root: &Path) -> PathBuf {
        self.backup.job_log(root)
    }
}

impl DbRestore {
    /// `--alembic-dir`, absolute and normalised: taken from the working directory.
    pub fn alembic_dir(&self) -> Option<PathBuf> {
        self.alembic_dir.as_deref().map(paths::absolute)
    }
}

#[derive(Debug, Args)]
pub struct Bench {
    /// Size to fill the scratch database to, in MB: pgbench tables for half, memories for the rest.
    #[arg(long, default_value = "1000")]
    pub size_mb: u64,

    /// Rounds of every measurement; the report gives medians.
    #[arg(long, default_value = "3", allow_negative_numbers = true, value_parser = parse_at_least_one)]
    pub rounds: NonZeroUsize,

    /// Compose project of the scratch database, destroyed with its volume at the end.
    #[arg(long, default_value = "hindsight_bench", value_parser = parse_db_name)]
    pub project: String,

    /// Host port of the scratch database.
    #[arg(long, default_value = "55499")]
    pub port: u16,

    /// Keep the scratch database (and its data, for the next run) instead of destroying it.
    #[arg(long)]
    pub keep: bool,

    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Args)]
pub struct Test {
    /// Arguments passed on to `cargo test` (test name filters, `--nocapture`, ...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_test_args: Vec<String>,
}

/// The longest wait a flag takes: 24 days, under PostgreSQL's largest `lock_timeout`
/// (2^31 - 1 ms), which `--db-lock-wait-secs` becomes.
const MAX_SECS: u64 = 24 * 24 * 3600;

/// A whole number as a person types it, or what is wrong with it, for the parsers below
/// to say in words (Rust's own messages, "number would be zero for non-zero type", are not).
fn whole_number(text: &str) -> Result<u64, NotCount> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(NotCount::NotANumber);
    }
    if text.starts_with('-') && digits.chars().any(|c| c != '0') {
        return Err(NotCount::Negative);
    }
    digits.parse::<u64>().map_err(|_| NotCount::TooLarge)
}

/// Why a value is not a whole number of the kind a flag takes.
enum NotCount {
    NotANumber,
    Negative,
    TooLarge,
}

/// A count: 0 or more.
fn parse_count(text: &str) -> Result<usize, String> {
    match whole_number(text) {
        Ok(count) => usize::try_from(count).map_err(|_| format!("far too large: give at most {}", usize::MAX)),
        Err(NotCount::Negative) => Err("a count cannot be negative: give 0 or more (0 turns the rule off)".to_owned()),
        Err(NotCount::TooLarge) => Err(format!("far too large: give at most {}", usize::MAX)),
        Err(NotCount::NotANumber) => Err("not a whole number: give one such as 0, 7 or 24".to_owned()),
    }
}

/// A count of 1 or more: keeping none would destroy what the tool exists to keep.
fn parse_at_least_one(text: &str) -> Result<NonZeroUsize, String> {
    match whole_number(text) {
        Ok(0) => Err("must be 1 or more: 0 would keep nothing".to_owned()),
        Ok(count) => usize::try_from(count)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| format!("far too large: give at most {}", usize::MAX)),
        Err(NotCount::Negative) => Err("cannot be negative: give 1 or more".to_owned()),
        Err(NotCount::TooLarge) => Err(format!("far too large: give at most {}", usize::MAX)),
        Err(NotCount::NotANumber) => Err("not a whole number: give one such as 1, 24 or 100".to_owned()),
    }
}

/// Whole seconds, 0 to `MAX_SECS`.
fn parse_secs(text: &str) -> Result<Duration, String> {
    match whole_number(text) {
        Ok(secs) if secs <= MAX_SECS => Ok(Duration::from_secs(secs)),
        Ok(_) | Err(NotCount::TooLarge) => Err(format!("too long: give at most {MAX_SECS} seconds (24 days)")),
        Err(NotCount::Negative) => Err("a wait cannot be negative: give 0 or more seconds (0: do not wait)".to_owned()),
        Err(NotCount::NotANumber) => Err("not a whole number of seconds: give one such as 0, 60 or 120".to_owned()),
    }
}

/// A size in bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    match whole_number(text) {
        Ok(bytes) => Ok(bytes),
        Err(NotCount::Negative) => Err("a size cannot be negative: give 0 or more bytes".to_owned()),
        Err(NotCount::TooLarge) => Err(format!("far too large: give at most {}", u64::MAX)),
        Err(NotCount::NotANumber) => Err("not a whole number of bytes: give one such as 10485760".to_owned()),
    }
}

/// An age: a whole number with a unit, `s`, `m`, `h`, `d` or `w` (`90m`, `2h`, `8d`), or
/// bare seconds; several add up (`1h30m`).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    const HELP: &str = "give a whole number and a unit: `90m`, `2h`, `8d`, `1w` (s, m, h, d, w), or seconds";
    let text = text.trim();
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| format!("`{text}` is not an age: {HELP}"))?;
        let (unit, after) = match after.chars().next() {
            Some(c) => after.split_at(c.len_utf8()),
            None if text.len() == digits => ("s", after),
            None => return Err(format!("`{text}` is not an age: {HELP}")),
        };
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(format!("`{text}` is not an age: {HELP}")),
        };
        total = number.checked_mul(secs).and_then(|s| total.checked_add(s)).ok_or("far too long")?;
        rest = after;
    }
    if text.is_empty() {
        return Err(format!("an empty age: {HELP}"));
    }
    Ok(Duration::from_secs(total))
}

/// node_exporter's textfile collector reads only `*.prom` files.
fn parse_metrics_file(text: &str) -> Result<PathBuf, String> {
    if !text.ends_with(".prom") || text.ends_with("/.prom") || text == ".prom" {
        return Err(format!(
            "`{text}`: node_exporter's textfile collector reads only files named `*.prom` (e.g. hindsight_db.prom)"
        ));
    }
    Ok(PathBuf::from(text))
}

/// One revision as `alembic upgrade` takes it: an id of ASCII letters, digits, `_` and `-`
/// (`1a2b3c4d5e6f`, `20240915_merge_heads`), `head`, `branch@head`, `ae10+2`; never
/// something `alembic` would read as an option.
fn parse_migration_target(text: &str) -> Result<String, String> {
    let ok = text.chars().all(|c| c.is_ascii_alphanumeric() || "_-+@".contains(c));
    if text.is_empty() || text.starts_with('-') || !ok {
        return Err(format!(
            "`{text}` is not an Alembic revision (for example `head`, `1a2b3c4d5e6f` or `20240915_merge_heads`)"
        ));
    }
    Ok(text.to_owned())
}

/// The name goes into file names and into `<name>__pre_restore_YYYYMMDD_HHMMSS` (29 more
/// bytes), which must fit PostgreSQL's 63-byte identifiers: longer ones are cut, and
/// two cut names would collide.
fn parse_db_name(text: &str) -> Result<String, String> {
    let ok_chars = text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if text.is_empty() || !ok_chars || text.len() > 34 {
        return Err(format!("`{text}`: use 1 to 34 ASCII letters, digits, `_` or `-`"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use clap::CommandFactory;

    use super::*;

    /// A db-backup command line with a value other than the default for every flag, some
    /// needing quotes in a crontab. Every flag is given, so no `HINDSIGHT_*` variable of the
    /// test's environment leaks into the parse (removing them is not thread safe).
    pub(crate) const EVERY_DB_BACKUP_FLAG: [&str; 71] = [
        "db-backup",
        "--compose-file",
        "/srv/it's 100% here/compose.yml",
        "--compose-file",
        "/srv/override.yml",
        "--env-file",
        "/srv/app.env",
        "--service",
        "pg main",
        "--db-name",
        "other_db",
        "--db-user",
        "back'up",
        "--compose",
        "v1",
        "--wait-secs",
        "7",
        "--backup-dir",
        "/var/backups/hindsight db",
        "--lock-wait-secs",
        "9",
        "--max-backups",
        "24",
        "--keep-hourly",
        "1",
        "--keep-daily",
        "2",
        "--keep-weekly",
        "3",
        "--keep-monthly",
        "4",
        "--compress",
        "zstd",
        "--db-lock-wait-secs",
        "11",
        "--offsite",
        "s3://backups/hindsight db/",
        "--s3-endpoint",
        "https://s3.example.org:3900",
        "--s3-region",
        "garage",
        "--s3-addressing",
        "virtual",
        "--encrypt-to",
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        "--encrypt-to",
        "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg",
        "--encrypt-to-file",
        "/etc/hindsight/recipients.txt",
        "--offsite-max-backups",
        "30",
        "--offsite-keep-hourly",
        "5",
        "--offsite-keep-daily",
        "6",
        "--offsite-keep-weekly",
        "7",
        "--offsite-keep-monthly",
        "8",
        "--offsite-catch-up",
        "2",
        "--metrics-file",
        "/var/lib/node_exporter/it's 100%.prom",
        "--ping-url",
        "https://hc-ping.com/0f3c-secret token?x=1",
        "--log-file",
        "/var/log/hindsight backup.log",
        "--log-max-bytes",
        "1000",
        "--no-start",
        "--offsite-plaintext",
    ];

    /// `args` (starting with `db-backup`) as clap parses them.
    pub(crate) fn parse_db_backup<S: AsRef<str>>(args: &[S]) -> DbBackup {
        let argv = std::iter::once("xtask").chain(args.iter().map(AsRef::as_ref));
        match Cli::try_parse_from(argv) {
            Ok(Cli { task: Task::DbBackup(backup), .. }) => backup,
            Ok(other) => panic!("not db-backup: {other:?}"),
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn db_backup_settings_round_trip_through_to_args() {
        let parsed = parse_db_backup(&EVERY_DB_BACKUP_FLAG);
        let mut args = parsed.to_args(Path::new("/repo"));
        assert!(!args.iter().any(|arg| arg.contains("secret")), "no secret on the command line: {args:?}");
        // The secrets come back through the flags whose variables carry them.
        args.extend(secrets_as_flags(&parsed.secrets()));
        // Debug shows every field: what clap parses back is exactly what it parsed.
        assert_eq!(format!("{:?}", parse_db_backup(&args)), format!("{parsed:?}"));

        // Relative paths given are taken from the working directory, made absolute and
        // normalised for the job; --json is for a person, not the job.
        let mut relative = EVERY_DB_BACKUP_FLAG.to_vec();
        let at = |flag: &str| relative.iter().position(|arg| *arg == flag).expect("in the list") + 1;
        let (compose_file, backup_dir, env_file) = (at("--compose-file"), at("--backup-dir"), at("--env-file"));
        relative[compose_file] = "infra/compose.yml";
        relative[backup_dir] = "./x/../backups";
        relative[env_file] = "app.env";
        relative.push("--json");
        let args = parse_db_backup(&relative).to_args(Path::new("/repo"));
        let value = |flag: &str| &args[args.iter().position(|arg| arg == flag).expect("passed") + 1];
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(value("--compose-file"), &cwd.join("infra/compose.yml").display().to_string());
        assert_eq!(value("--backup-dir"), &cwd.join("backups").display().to_string());
        assert_eq!(value("--env-file"), &cwd.join("app.env").display().to_string());
        assert!(!args.contains(&"--json".to_owned()));
    }

    /// `secrets` as the db-backup flags that read the same variables (clap's own table,
    /// not a list of ours): a variable no flag reads fails the test.
    pub(crate) fn secrets_as_flags(secrets: &[(&str, String)]) -> Vec<String> {
        let command = Cli::command();
        let backup = command.find_subcommand("db-backup").expect("a db-backup task");
        secrets
            .iter()
            .flat_map(|(env, value)| {
                let arg = backup
                    .get_arguments()
                    .find(|arg| arg.get_env().is_some_and(|e| e == *env))
                    .unwrap_or_else(|| panic!("no db-backup flag reads {env}"));
                [format!("--{}", arg.get_long().expect("a long flag")), value.clone()]
            })
            .collect()
    }

    #[test]
    fn defaults_are_in_the_repository_whatever_the_working_directory() {
        let root = Path::new("/repo");
        assert_eq!(BackupDirArgs { backup_dir: None }.path(root), Path::new("/repo/hindsight_db_backups/data"));
        let given = BackupDirArgs { backup_dir: Some(PathBuf::from("b")) };
        assert_eq!(given.path(root), std::env::current_dir().unwrap().join("b"));
        let no_files = parse_db_backup(&["db-backup", "--compose-file", "/srv/c.yml"]).db;
        assert_eq!(no_files.compose_files(root), [PathBuf::from("/srv/c.yml")]);
    }

    #[test]
    fn to_args_spells_out_every_db_backup_flag() {
        let command = Cli::command();
        let backup = command.find_subcommand("db-backup").expect("a db-backup task");
        let flags: Vec<String> = backup
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            // --start is the other half of --no-start, which the list gives.
            // --ping-url goes into the secrets file instead: see the test below.
            .filter(|long| !["json", "help", "start", "ping-url"].contains(long))
            .map(|long| format!("--{long}"))
            .collect();
        assert!(flags.len() >= 14, "clap introspection found the flags: {flags:?}");
        let args = parse_db_backup(&EVERY_DB_BACKUP_FLAG).to_args(Path::new("/repo"));
        for flag in &flags {
            // As often as the command line gave it (--compose-file is repeatable).
            let given = EVERY_DB_BACKUP_FLAG.iter().filter(|arg| *arg == flag).count().max(1);
            let times = args.iter().filter(|arg| *arg == flag).count();
            assert_eq!(times, given, "DbBackup::to_args must pass {flag}: a new db-backup flag goes there too");
            assert!(
                EVERY_DB_BACKUP_FLAG.contains(&flag.as_str()),
                "EVERY_DB_BACKUP_FLAG must give {flag} a value other than its default, for the round trip"
            );
        }
        let given: Vec<&String> = args.iter().filter(|arg| arg.starts_with("--")).collect();
        assert!(given.iter().all(|arg| flags.contains(arg)), "only db-backup's own flags: {given:?}");
    }

    #[test]
    fn the_job_starts_a_stopped_service_only_when_told() {
        let plain = parse_db_backup(&["db-backup"]);
        assert_eq!(plain.start_policy(), Start::IfStopped, "a backup by hand starts the service");
        let job = plain.job_args(Path::new("/repo"));
        assert!(job.contains(&"--no-start".to_owned()) && !job.contains(&"--start".to_owned()), "{job:?}");
        assert!(matches!(parse_db_backup(&job).start_policy(), Start::Never(_)));
        let told = parse_db_backup(&["db-backup", "--start"]).job_args(Path::new("/repo"));
        assert!(told.contains(&"--start".to_owned()) && !told.contains(&"--no-start".to_owned()), "{told:?}");
        assert_eq!(parse_db_backup(&told).start_policy(), Start::IfStopped);
        assert!(Cli::try_parse_from(["xtask", "db-backup", "--start", "--no-start"]).is_err());
    }

    #[test]
    fn values_are_refused_in_words() {
        let message = |args: &[&str]| Cli::try_parse_from(args).expect_err("refused").to_string();
        let zero = message(&["xtask", "db-backup", "--max-backups", "0"]);
        assert!(zero.contains("--max-backups") && zero.contains("1 or more"), "{zero}");
        assert!(!zero.contains("non-zero type"), "{zero}");
        let negative = message(&["xtask", "db-prune", "--keep-daily", "-1"]);
        assert!(negative.contains("--keep-daily") && negative.contains("cannot be negative"), "{negative}");
        let long = message(&["xtask", "db-restore", "--db-lock-wait-secs", "99999999999"]);
        assert!(long.contains("at most"), "{long}");
        assert_eq!(parse_count("-0"), Ok(0));
        assert!(parse_count("1e3").is_err());
        assert_eq!(parse_at_least_one(" 7 ").map(NonZeroUsize::get), Ok(7));
        let schedule = Cli::try_parse_from(["xtask", "install-cron", "--print", "--schedule", "@daily"]);
        assert!(schedule.is_ok(), "cron's own nicknames are schedules");
    }

    /// The README's settings table says, for every flag of every task: its env variable,
    /// its default, and exactly which tasks take it. Checked against the parser, so that
    /// the two cannot drift.
    #[test]
    fn the_readme_settings_table_matches_the_parser() {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
        let rows: Vec<Vec<String>> = readme
            .lines()
            .skip_while(|line| !line.starts_with("| flag | env | default | used by |"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| line.trim_matches('|').split(" | ").map(|cell| cell.trim().to_owned()).collect())
            .collect();
        assert!(rows.len() > 20, "the README has a settings table: `| flag | env | default | used by |`");
        // The flags a row names: the backquoted words of its first cell that start with `--`.
        let flags_of = |row: &Vec<String>| -> Vec<String> {
            row[0].split('`').skip(1).step_by(2).filter(|word| word.starts_with("--")).map(str::to_owned).collect()
        };
        let row_of = |long: &str| {
            let flag = format!("--{long}");
            let found: Vec<&Vec<String>> = rows.iter().filter(|row| flags_of(row).contains(&flag)).collect();
            assert_eq!(found.len(), 1, "the README's settings table needs exactly one row for --{long}");
            found[0].clone()
        };
        let command = Cli::command();
        let mut documented = Vec::new();
        // Global flags are on the top-level command; every task takes them.
        let tasks = command.get_subcommands().map(|task| (task.get_name(), task.get_arguments().collect::<Vec<_>>()));
        let global = command.get_arguments().filter(|arg| arg.is_global_set()).collect::<Vec<_>>();
        let mut users: Vec<(String, Vec<String>)> = Vec::new();
        let mut note = |arg: &clap::Arg, task: &str| {
            let Some(long) = arg.get_long() else { return };
            if ["help", "version"].contains(&long) {
                return;
            }
            match users.iter_mut().find(|(flag, _)| flag == long) {
                Some((_, tasks)) => tasks.push(task.to_owned()),
                None => users.push((long.to_owned(), vec![task.to_owned()])),
            }
            let row = row_of(long);
            match arg.get_env() {
                Some(env) => assert!(
                    row[1].contains(&format!("`{}`", env.to_string_lossy())),
                    "README: --{long} falls back to {}, the table says `{}`",
                    env.to_string_lossy(),
                    row[1]
                ),
                None => assert!(!row[1].contains("HINDSIGHT_"), "README: --{long} has no env fallback: `{}`", row[1]),
            }
            for default in arg.get_default_values() {
                let default = format!("`{}`", default.to_string_lossy());
                assert!(
                    row[2].contains(&default),
                    "README: --{long} defaults to {default}; the table says `{}`",
                    row[2]
                );
            }
        };
        for arg in &global {
            note(arg, "every task");
        }
        for (task, args) in tasks {
            for arg in args {
                note(arg, task);
            }
        }
        for (long, tasks) in &users {
            let row = row_of(long);
            let mut listed: Vec<&str> = row[3].split(", ").collect();
            listed.sort();
            let mut tasks = tasks.clone();
            tasks.sort();
            assert_eq!(listed, tasks, "README: the tasks that take --{long}");
            documented.push(format!("--{long}"));
        }
        for row in &rows {
            for flag in flags_of(row) {
                assert!(documented.contains(&flag), "README lists {flag}, which no task takes");
            }
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn typed_parsers_reject_bad_values() {
        assert_eq!(parse_secs("15"), Ok(Duration::from_secs(15)));
        assert!(parse_secs("1.5").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_db_name("hindsight_db").is_ok());
        assert!(parse_db_name("").is_err());
        assert!(parse_db_name("a b").is_err());
        assert!(parse_db_name("x;drop").is_err());
        assert!(parse_db_name(&"a".repeat(34)).is_ok());
        assert!(parse_db_name(&"a".repeat(35)).is_err());
        assert!(parse_migration_target("head").is_ok());
        for id in ["1a2b3c4d5e6f", "2026050201", "20240915_merge_heads", "rls_policies_20240915", "a-b", "ae10+2"] {
            assert_eq!(parse_migration_target(id).as_deref(), Ok(id), "the application's ids and Alembic's own forms");
        }
        assert!(parse_migration_target("--sql").is_err());
        assert!(parse_migration_target("a b").is_err());
    }

    #[test]
    fn output_levels_are_global_flags_that_exclude_each_other() {
        let level = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.level());
        assert_eq!(level(&["xtask", "db-backup"]).unwrap(), Level::Normal);
        assert_eq!(level(&["xtask", "-q", "db-backup"]).unwrap(), Level::Quiet);
        assert_eq!(level(&["xtask", "db-backup", "--quiet"]).unwrap(), Level::Quiet);
        assert_eq!(level(&["xtask", "db-restore", "latest", "-v"]).unwrap(), Level::Verbose);
        assert_eq!(level(&["xtask", "--verbose", "db-list"]).unwrap(), Level::Verbose);
        assert!(level(&["xtask", "db-backup", "-q", "-v"]).is_err(), "-q and -v conflict");
    }

    #[test]
    fn max_backups_must_be_positive() {
        assert!(Cli::try_parse_from(["xtask", "db-backup", "--max-backups", "0"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "db-backup", "--max-backups", "3"]).unwrap();
        let Task::DbBackup(backup) = cli.task else { panic!("expected db-backup") };
        assert_eq!(backup.retention.max_backups.get(), 3);
    }
}
