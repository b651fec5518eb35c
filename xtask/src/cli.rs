//! The command line: every task, its flags, and their `HINDSIGHT_*` environment fallbacks.
//!
//! The `///` comments here are the `--help` text.

use std::{
    num::NonZeroUsize,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use xshell::Shell;

use crate::{
    cron_entry::Schedule,
    db::{Target, compose::ComposeFlavor},
    output::Level,
    store::{backup_file::Compression, retention::Policy},
};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
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

#[derive(Debug, Subcommand)]
pub enum Task {
    /// Dump the database into a new, verified backup file, then apply the retention policy.
    DbBackup(DbBackup),
    /// Restore a backup into a new database, swap it in, keep the old one, then run Alembic.
    DbRestore(DbRestore),
    /// Register the backup job in the user's crontab (hourly by default), or show or remove it.
    InstallCron(InstallCron),
    /// List the backups, newest first: date, age, revision, compression, size, verification.
    DbList(DbList),
    /// Prove backups restore: checksum, marker, then a real restore into a scratch database.
    DbVerify(DbVerify),
    /// Apply the retention policy now (the one db-backup applies after each backup).
    DbPrune(DbPrune),
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
            Task::Test(task) => task.run(sh),
        }
    }
}

/// Where the database runs and how to reach it.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Compose file defining the database service, relative to the repository root; give it
    /// several times, in Compose's order, for a service defined across files. Default:
    /// `COMPOSE_FILE` as Compose reads it, else `infra/postgres/docker-compose.yml`.
    #[arg(long, env = "HINDSIGHT_COMPOSE_FILE", value_delimiter = ':')]
    pub compose_file: Vec<PathBuf>,

    /// An env file for Compose's variable substitution, as `docker compose --env-file`;
    /// without it Compose reads the project directory's `.env` itself.
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
    #[arg(long, env = "HINDSIGHT_WAIT_SECS", default_value = "60", value_parser = parse_secs)]
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
    /// The compose files, absolute, in order: the flags, else `COMPOSE_FILE` split as
    /// Compose splits it (`COMPOSE_PATH_SEPARATOR`, `:` by default), else the project's.
    pub fn compose_files(&self, root: &Path) -> Vec<PathBuf> {
        let files = if !self.compose_file.is_empty() {
            self.compose_file.clone()
        } else if let Some(list) = std::env::var("COMPOSE_FILE").ok().filter(|l| !l.is_empty()) {
            let separator = std::env::var("COMPOSE_PATH_SEPARATOR").unwrap_or_else(|_| ":".to_owned());
            list.split(separator.as_str()).filter(|f| !f.is_empty()).map(PathBuf::from).collect()
        } else {
            vec![PathBuf::from("infra/postgres/docker-compose.yml")]
        };
        files.into_iter().map(|file| root.join(file)).collect()
    }

    /// The door's settings: where pg_dump and psql run.
    pub fn target(&self, root: &Path) -> Target {
        Target {
            flavor: self.compose,
            files: self.compose_files(root),
            env_file: self.env_file.as_ref().map(|file| root.join(file)),
            service: self.service.clone(),
            user: self.db_user.clone(),
            db_name: self.name.db_name.clone(),
        }
    }
}

/// Where the backups live, and how long to wait for another run holding them.
#[derive(Debug, Args)]
pub struct BackupDirArgs {
    /// Directory of the backup files, relative to the repository root; created with mode 0700.
    #[arg(long, env = "HINDSIGHT_BACKUP_DIR", default_value = "hindsight_db_backups/data")]
    pub backup_dir: PathBuf,

    /// Seconds to wait for another backup or restore to release the backup directory's lock.
    #[arg(long, env = "HINDSIGHT_LOCK_WAIT_SECS", default_value = "60", value_parser = parse_secs)]
    pub lock_wait_secs: Duration,
}

/// Which backups to keep. Without age rules: the newest --max-backups. With them: every
/// backup one of them keeps, at most --max-backups. The newest is always kept.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// How many complete backups to keep at most.
    #[arg(long, env = "HINDSIGHT_MAX_BACKUPS", default_value = "100")]
    pub max_backups: NonZeroUsize,

    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, env = "HINDSIGHT_KEEP_HOURLY", default_value = "0")]
    pub keep_hourly: usize,

    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long, env = "HINDSIGHT_KEEP_DAILY", default_value = "0")]
    pub keep_daily: usize,

    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, env = "HINDSIGHT_KEEP_WEEKLY", default_value = "0")]
    pub keep_weekly: usize,

    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, env = "HINDSIGHT_KEEP_MONTHLY", default_value = "0")]
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

#[derive(Debug, Args)]
pub struct DbBackup {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub retention: RetentionArgs,

    /// Compress on the host while the dump streams: `.sql`, `.sql.gz` or `.sql.zst`.
    #[arg(long, env = "HINDSIGHT_BACKUP_COMPRESS", value_enum, default_value_t = Compression::None)]
    pub compress: Compression,

    /// Seconds pg_dump waits for a table's lock (held by an `ALTER TABLE`, a `VACUUM FULL`)
    /// before it gives up with exit 3, naming the session that holds it.
    #[arg(long, env = "HINDSIGHT_DB_LOCK_WAIT_SECS", default_value = "120", value_parser = parse_secs)]
    pub db_lock_wait_secs: Duration,

    /// Print the result as one JSON object on stdout, for scripts and monitoring.
    #[arg(long)]
    pub json: bool,
}

impl DbBackup {
    /// These settings as db-backup's command line again, `db-backup` first: every setting
    /// spelled out (the job must not depend on an environment it may not have), paths made
    /// absolute from `root`, `--json` left out (a log wants lines). The one place that
    /// knows db-backup's flags besides clap: install-cron writes this into the job, and a
    /// unit test round-trips it through clap and checks that no flag is missing. The
    /// destructuring has no `..`: a new field does not compile until it is handled here.
    pub fn to_args(&self, root: &std::path::Path) -> Vec<String> {
        let DbBackup { db, dir, retention, compress, db_lock_wait_secs, json: _ } = self;
        let DbArgs { compose_file: _, env_file, service, name: DbName { db_name }, db_user, compose, wait_secs } = db;
        let BackupDirArgs { backup_dir, lock_wait_secs } = dir;
        let RetentionArgs { max_backups, keep_hourly, keep_daily, keep_weekly, keep_monthly } = retention;
        // As clap spells the values: what it parses back.
        let spelled =
            |value: Option<clap::builder::PossibleValue>| value.expect("no skipped variants").get_name().to_owned();
        // The files as resolved now (flags, else COMPOSE_FILE, else the default): the job
        // must not depend on an environment cron does not give it.
        let files = db.compose_files(root).into_iter().map(|file| ("--compose-file", file.display().to_string()));
        let env_file = env_file.iter().map(|file| ("--env-file", root.join(file).display().to_string()));
        // No --db-user means the container's POSTGRES_USER, at every run.
        let user = db_user.iter().map(|user| ("--db-user", user.clone()));
        let flags = [
            ("--service", service.clone()),
            ("--db-name", db_name.clone()),
            ("--compose", spelled(compose.to_possible_value())),
            ("--wait-secs", wait_secs.as_secs().to_string()),
            ("--backup-dir", root.join(backup_dir).display().to_string()),
            ("--lock-wait-secs", lock_wait_secs.as_secs().to_string()),
            ("--max-backups", max_backups.to_string()),
            ("--keep-hourly", keep_hourly.to_string()),
            ("--keep-daily", keep_daily.to_string()),
            ("--keep-weekly", keep_weekly.to_string()),
            ("--keep-monthly", keep_monthly.to_string()),
            ("--compress", spelled(compress.to_possible_value())),
            ("--db-lock-wait-secs", db_lock_wait_secs.as_secs().to_string()),
        ];
        let flags = files.chain(env_file).chain(user).chain(flags).flat_map(|(flag, value)| [flag.to_owned(), value]);
        std::iter::once("db-backup".to_owned()).chain(flags).collect()
    }
}

#[derive(Debug, Args)]
pub struct DbList {
    #[command(flatten)]
    pub name: DbName,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    /// Print JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DbVerify {
    /// The backup: a path, a file name in the backup directory, or `latest` (the default).
    pub backup: Option<String>,

    /// Verify every backup in the directory.
    #[arg(long, conflicts_with = "backup")]
    pub all: bool,

    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Load the file even where the container's psql cannot disable its backslash
    /// commands (`\restrict`, before 13.22, 14.19, 15.14, 16.10, 17.6). Only for files you made.
    #[arg(long)]
    pub trust_file: bool,
}

#[derive(Debug, Args)]
pub struct DbPrune {
    #[command(flatten)]
    pub name: DbName,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    #[command(flatten)]
    pub retention: RetentionArgs,

    /// Show what would be kept and removed, and why; remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove only the incomplete files named like backups (empty, cut short, compressed
    /// without a .sha256), which retention never counts nor removes; no complete backup is touched.
    #[arg(long)]
    pub incomplete: bool,
}

#[derive(Debug, Args)]
pub struct DbRestore {
    /// The backup: a path, a file name in the backup directory, or `latest`. Without it, a
    /// terminal gets a list to pick from.
    pub backup: Option<String>,

    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub dir: BackupDirArgs,

    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long, short)]
    pub yes: bool,

    /// How many replaced databases (`<db>__pre_restore_<timestamp>`) to keep; older ones are dropped.
    #[arg(long, env = "HINDSIGHT_KEEP_PREVIOUS", default_value = "1")]
    pub keep_previous: NonZeroUsize,

    /// Directory holding `alembic.ini`, relative to the repository root. Without it, the
    /// repository is searched for exactly one `alembic.ini`; none found skips the migration.
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

    /// Load the file even where the container's psql cannot disable its backslash
    /// commands (`\restrict`, before 13.22, 14.19, 15.14, 16.10, 17.6). Only for files you made.
    #[arg(long)]
    pub trust_file: bool,

    /// Seconds the swap waits for a lock on the database before giving up (exit 3).
    #[arg(long, env = "HINDSIGHT_DB_LOCK_WAIT_SECS", default_value = "120", value_parser = parse_secs)]
    pub db_lock_wait_secs: Duration,
}

#[derive(Debug, Args)]
pub struct InstallCron {
    /// When the job runs: five cron fields (minute hour day-of-month month day-of-week).
    #[arg(long, env = "HINDSIGHT_CRON_SCHEDULE", default_value = "0 * * * *", value_parser = Schedule::parse)]
    pub schedule: Schedule,

    /// File the job appends its output to, relative to the repository root.
    #[arg(long, env = "HINDSIGHT_CRON_LOG", default_value = "hindsight_db_backups/logs/backup.log")]
    pub log_file: PathBuf,

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

#[derive(Debug, Args)]
pub struct Bench {
    /// Size to fill the scratch database to, in MB: pgbench tables for half, memories for the rest.
    #[arg(long, default_value = "1000")]
    pub size_mb: u64,

    /// Rounds of every measurement; the report gives medians.
    #[arg(long, default_value = "3")]
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

fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<u64>().map(Duration::from_secs).map_err(|_| format!("`{text}` is not a whole number of seconds"))
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
    pub(crate) const EVERY_DB_BACKUP_FLAG: [&str; 35] = [
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
        let args = parsed.to_args(Path::new("/repo"));
        // Debug shows every field: what clap parses back is exactly what it parsed.
        assert_eq!(format!("{:?}", parse_db_backup(&args)), format!("{parsed:?}"));

        // Relative paths are taken from the root; --json is for a person, not the job.
        let mut relative = EVERY_DB_BACKUP_FLAG.to_vec();
        let at = |flag: &str| relative.iter().position(|arg| *arg == flag).expect("in the list") + 1;
        let (compose_file, backup_dir) = (at("--compose-file"), at("--backup-dir"));
        relative[compose_file] = "infra/compose.yml";
        relative[backup_dir] = "backups";
        relative.push("--json");
        let args = parse_db_backup(&relative).to_args(Path::new("/repo"));
        let value = |flag: &str| &args[args.iter().position(|arg| arg == flag).expect("passed") + 1];
        assert_eq!(value("--compose-file"), "/repo/infra/compose.yml");
        assert_eq!(value("--backup-dir"), "/repo/backups");
        assert!(!args.contains(&"--json".to_owned()));
    }

    #[test]
    fn to_args_spells_out_every_db_backup_flag() {
        let command = Cli::command();
        let backup = command.find_subcommand("db-backup").expect("a db-backup task");
        let flags: Vec<String> = backup
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| !["json", "help"].contains(long))
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
