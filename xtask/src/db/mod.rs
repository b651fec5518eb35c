//! The database's door: where `pg_dump` and `psql` run. Today that is `exec -T` in the
//! Compose service, as the container's `postgres` user; a `kubectl exec` or a direct
//! connection would be another variant of this one type, and no task spells `docker`
//! itself. The SQL the tasks need lives here too.
//!
//! Every session a run opens carries the run's own `application_name`
//! (`hindsight-xtask:<run>:<task>`), so a signal can end exactly this run's work on the
//! server, and a later run can tell a dead run's leftovers from a live run's work.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, OnceLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell};

pub mod compose;
pub mod load;
mod parallel;
pub mod scratch;
pub mod session;

use crate::{
    exit::{Code, Coded},
    interrupt::{self, OnStop, Stage},
    output::{count, step, warning},
    process::{self, Failure},
    store::backup_file::Revision,
};
use compose::{Compose, ComposeFlavor};

/// Every session of this tool has an application name starting with this.
pub const APP_PREFIX: &str = "hindsight-xtask:";

/// What a backup needs to know before it starts.
pub struct Inspection {
    pub size: u64,
    /// The recorded revision, or why there is none.
    pub revision: Result<Revision, String>,
}

pub struct Database {
    door: Door,
    pub name: String,
    /// This run's id: random, so two runs (or two machines) never share one.
    run: String,
    task: String,
    /// The application name of this run's working sessions.
    app: String,
    _on_stop: OnStop,
}

/// Whether a run may start the database's service when it finds it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A person's run: start it, as `docker compose up -d` would.
    IfStopped,
    /// Fail instead, saying why (the words go after "and"): the cron job's choice, since a
    /// stopped database may be under maintenance (a volume copy, an upgrade), and a dry
    /// run's, which changes nothing.
    Never(&'static str),
}

/// The door's own settings, built from the flags (`cli::DbArgs::target`): where the
/// database runs. Compose is the only kind today; `kubectl exec` or a direct URL would be
/// other variants.
#[derive(Debug, Clone)]
pub struct Target {
    pub flavor: ComposeFlavor,
    /// Absolute, in Compose's order.
    pub files: Vec<PathBuf>,
    pub env_file: Option<PathBuf>,
    pub service: String,
    /// The PostgreSQL role; `None`: the container's `POSTGRES_USER`, else `user`.
    pub user: Option<String>,
    pub db_name: String,
}

/// How a program reaches the server: `exec` in the Compose service, as its `postgres`
/// user (a dump is code, and root in the container is more than psql needs).
#[derive(Clone)]
struct Door {
    compose: Compose,
    service: String,
    /// The role, once known: given, or read from the container when first needed.
    user: Arc<OnceLock<String>>,
}

impl Door {
    /// The PostgreSQL role to connect as. Unless given, the container's `POSTGRES_USER`
    /// (the role the image created), else `user`. A container that is not up yet is asked
    /// again next time.
    fn user(&self, sh: &Shell) -> String {
        if let Some(user) = self.user.get() {
            return user.clone();
        }
        let asked = process::read_quiet(self.exec(sh).args(["printenv", "POSTGRES_USER"]));
        match asked {
            Ok(user) if !user.trim().is_empty() => self.user.get_or_init(|| user.trim().to_owned()).clone(),
            // printenv says nothing when the variable is not set: the image's default.
            Err(failure) if failure.stderr.trim().is_empty() && failure.code == Some(1) => {
                self.user.get_or_init(|| "user".to_owned()).clone()
            }
            _ => "user".to_owned(),
        }
    }

    fn exec<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        self.compose.cmd(sh).args(["exec", "-T", "-u", "postgres", &self.service])
    }

    /// psql into `db` as session `app`, stopped by the first error (without
    /// `ON_ERROR_STOP`, psql exits 0 through SQL errors).
    fn psql<'a>(&self, sh: &'a Shell, db: &str, app: &str) -> Cmd<'a> {
        let (conninfo, user) = (conninfo(db, app), self.user(sh));
        let args = ["psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-U", &user, "-d", &conninfo];
        self.exec(sh).args(args)
    }
}

impl Database {
    /// Finds Compose for the service; nothing runs yet. From here on, a signal ends this
    /// run's sessions on the server.
    pub fn open(sh: &Shell, target: &Target, task: &str) -> Result<Database> {
        let run = run_id();
        Database::open_as(sh, target, task, app_name(&run, task), run)
    }

    /// A door for looking on, as the end-to-end tests do: its sessions are not a run's,
    /// so no run's cleanup ends them.
    pub fn open_observer(sh: &Shell, target: &Target) -> Result<Database> {
        let run = run_id();
        Database::open_as(sh, target, "observer", format!("hindsight-observer:{run}"), run)
    }

    fn open_as(sh: &Shell, target: &Target, task: &str, app: String, run: String) -> Result<Database> {
        let compose = Compose::find(sh, target.flavor, &target.files, target.env_file.as_deref(), task)?;
        let user = Arc::new(OnceLock::new());
        if let Some(given) = &target.user {
            let _ = user.set(given.clone());
        }
        let door = Door { compose, service: target.service.clone(), user };
        let stopper = Stopper { door: door.clone(), app: app.clone() };
        Ok(Database {
            door,
            name: target.db_name.clone(),
            run,
            task: task.to_owned(),
            app,
            _on_stop: interrupt::on_stop(Stage::Sessions, move || stopper.stop()),
        })
    }

    /// The application name of this run's working sessions.
    fn app(&self) -> String {
        self.app.clone()
    }

    /// Starts the service when it is not running and waits until PostgreSQL accepts connections.
    pub fn ensure_ready(&self, sh: &Shell, wait: Duration, start: Start) -> Result<()> {
        // The hourly case, in one exec: already up and ready.
        if self.is_ready(sh) {
            return Ok(());
        }
        let (compose, service) = (&self.door.compose, &self.door.service);
        let running = process::read(
            "compose ps",
            compose.cmd(sh).args(["ps", "--services", "--filter", "status=running"]),
        )
        .context(
            "Compose cannot reach the Docker engine: start it (e.g. `sudo systemctl start docker`) and try again",
        )?;
        if !running.lines().any(|line| line.trim() == service) {
            let defined = compose.services(sh)?;
            if !defined.iter().any(|name| name == service) {
                bail!(
                    "the compose files define no service `{service}`: they define {}; pass one of them with --service \
                     (HINDSIGHT_DB_SERVICE), or the files that define `{service}` with --compose-file",
                    if defined.is_empty() { "none".to_owned() } else { defined.join(", ") }
                );
            }
            if let Start::Never(why) = start {
                bail!(
                    "service `{service}` is not running, and {why}: start it with `{} up -d {service}` when it may \
                     run again",
                    compose.spelled()
                );
            }
            self.refuse_an_empty_twin(sh)?;
            step!("service `{service}` is not running: starting it");
            process::run("compose up", compose.cmd(sh).args(["up", "-d", service])).with_context(|| {
                format!("cannot start service `{service}`: see `{} logs {service}`", compose.spelled())
            })?;
        }
        let deadline = Instant::now() + wait;
        loop {
            interrupt::check()?;
            if self.is_ready(sh) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "service `{service}` did not accept connections within {} s: see `{} logs {service}`, or raise --wait-secs",
                    wait.as_secs(),
                    self.door.compose.spelled()
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Refuses to start the service in a project that never ran it while another project
    /// runs it from the same files: with other files or another project name, Compose
    /// would start a new, empty database beside the application's, and an hourly backup
    /// of that would push the good backups out of retention.
    /// A project named by `COMPOSE_PROJECT_NAME` was chosen, not derived: it is left alone.
    fn refuse_an_empty_twin(&self, sh: &Shell) -> Result<()> {
        if sh.var("COMPOSE_PROJECT_NAME").is_ok_and(|name| !name.is_empty()) {
            return Ok(());
        }
        let (compose, service) = (&self.door.compose, &self.door.service);
        if compose.has_container(sh, service)? {
            return Ok(());
        }
        let others = compose.other_projects(sh, service)?;
        let Some((project, dir)) = others.first() else { return Ok(()) };
        bail!(
            "service `{service}` of these compose files already runs in Compose project `{project}` (started in {dir}), \
             and this run would start a new, empty one beside it: pass the same compose files, in the same order, as \
             that project was started with (--compose-file, or COMPOSE_FILE), or set COMPOSE_PROJECT_NAME={project}"
        )
    }

    /// Over TCP: on a fresh volume the image first runs a socket-only server, which a
    /// socket check would mistake for the real one just before it restarts.
    fn is_ready(&self, sh: &Shell) -> bool {
        process::succeeds(self.exec(sh).args(["pg_isready", "-q", "-h", "127.0.0.1"]))
    }

    /// `db`'s size and Alembic revision, in one round trip: `query_to_xml` runs the
    /// revision query only when the table exists (`CASE` decides at run time, and the
    /// function is volatile, so the planner cannot run it early).
    pub fn inspect(&self, sh: &Shell, db: &str) -> Result<Inspection> {
        const SQL: &str = "SELECT pg_database_size(current_database()), \
            CASE WHEN to_regclass('alembic_version') IS NULL THEN 'no table' ELSE 'rows:' || coalesce(array_to_string(\
            xpath('/table/row/version_num/text()', query_to_xml('SELECT version_num FROM alembic_version', false, false, '')), \
            E'\\n'), '') END";
        let out = self.query_in(sh, db, SQL)?;
        let (size, revision) =
            out.trim_end_matches('\n').split_once('|').with_context(|| format!("unexpected psql output `{out}`"))?;
        Ok(Inspection {
            size: size.parse().with_context(|| format!("unexpected database size `{size}`"))?,
            revision: Revision::from_rows(revision.strip_prefix("rows:")),
        })
    }

    /// `pg_dump` of `db` as plain SQL on stdout; never a TTY, which would corrupt it. It
    /// waits at most `lock_wait` for each table's lock: a table held by an `ALTER TABLE`
    /// or `VACUUM FULL` fails the dump instead of hanging it, and `lock_conflict` says who.
    pub fn dump<'a>(&self, sh: &'a Shell, db: &str, lock_wait: Duration) -> Cmd<'a> {
        let timeout = format!("--lock-wait-timeout={}ms", lock_wait.as_millis().max(1));
        let user = self.door.user(sh);
        self.exec(sh).args(["pg_dump", "--no-password", &timeout, "-U", &user, "-d", &self.conninfo(db)])
    }

    /// psql reading SQL on stdin into `into`, stopped by the first error (without
    /// `ON_ERROR_STOP`, psql exits 0 through SQL errors). Not quiet: its command tags on
    /// stdout (`COPY 1000`) are the server's own count of every table's rows. The
    /// transaction is the caller's: see `load`, which commits only after every check.
    pub fn load_cmd<'a>(&self, sh: &'a Shell, into: &str) -> Cmd<'a> {
        let conninfo = self.conninfo(into);
        let user = self.door.user(sh);
        let args = ["psql", "-X", "-t", "-A", "--no-password", "-v", "ON_ERROR_STOP=1", "-U", &user];
        self.exec(sh).args(args).args(["-d", &conninfo])
    }

    /// The CPUs the database's container may use: `nproc` there (which follows a cpuset but
    /// not a `--cpus` quota), capped by the cgroup's quota (`cpu.max` in cgroup v2,
    /// `cpu.cfs_quota_us`/`cpu.cfs_period_us` in v1), rounded up. At least 1.
    pub fn cpus(&self, sh: &Shell) -> Result<usize> {
        let online = process::read("nproc", self.exec(sh).arg("nproc"))?;
        let online: usize =
            online.trim().parse().with_context(|| format!("unexpected `nproc` output `{}`", online.trim()))?;
        let read = |path: &str| process::read_quiet(self.exec(sh).args(["cat", path])).ok();
        let quota = match read("/sys/fs/cgroup/cpu.max") {
            Some(max) => cpu_quota(&max),
            None => match (read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")) {
                (Some(quota), Some(period)) => cpu_quota(&format!("{} {}", quota.trim(), period.trim())),
                _ => None,
            },
        };
        Ok(quota.map_or(online, |quota| quota.min(online)).max(1))
    }

    /// The tables of `db` in an inheritance or partition tree, as (schema, name): a key
    /// or index build on one may lock the others, so the loader keeps those in order.
    pub fn inheritance_tables(&self, sh: &Shell, db: &str) -> Result<BTreeSet<(String, String)>> {
        // Hex: a name may hold any character, `|` and line ends included.
        const SQL: &str = "SELECT DISTINCT encode(convert_to(n.nspname, 'UTF8'), 'hex') || ' ' || \
            encode(convert_to(c.relname, 'UTF8'), 'hex') FROM pg_inherits i \
            JOIN pg_class c ON c.oid IN (i.inhrelid, i.inhparent) JOIN pg_namespace n ON n.oid = c.relnamespace";
        let rows = self.query_in(sh, db, SQL)?;
        rows.lines()
            .filter(|row| !row.is_empty())
            .map(|row| {
                let (schema, name) = row.split_once(' ').context("unexpected pg_inherits row")?;
                Ok((unhex(schema)?, unhex(name)?))
            })
            .collect()
    }

    /// How many of this run's other sessions in database `db` are busy, or were within
    /// the last 5 seconds: none, while a load waits, means it is stuck.
    pub fn busy_sessions_in(&self, sh: &Shell, db: &str) -> Result<u64> {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND application_name = {} \
             AND pid <> pg_backend_pid() AND (state = 'active' OR state_change > now() - interval '5 seconds')",
            literal(db),
            literal(&self.app)
        );
        let count = self.query_in(sh, db, &sql)?;
        count.trim().parse().with_context(|| format!("unexpected count `{}`", count.trim()))
    }

    /// Ends this run's sessions in database `db` (a load's, after one of them failed): a
    /// session building an index would otherwise finish before it read the end of its input.
    pub fn end_sessions_in(&self, sh: &Shell, db: &str) -> Result<()> {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = {} AND application_name = {}",
            literal(db),
            literal(&self.app)
        );
        let cmd = self.door.psql(sh, "postgres", &format!("{}:cleanup", self.app)).args(["-t", "-A", "-c", &sql]);
        process::read_cleanup("psql", cmd).map(drop)
    }

    /// `pg_dumpall --roles-only`: the cluster's roles and memberships, password hashes
    /// included, which a dump of one database leaves out.
    pub fn roles_dump<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        let user = self.door.user(sh);
        let conninfo = self.conninfo("postgres");
        self.exec(sh).args(["pg_dumpall", "--roles-only", "--no-password", "-U", &user, "-d", &conninfo])
    }

    /// `pg_dump` with no options of ours: the floor a backup is measured against.
    pub fn bare_dump<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        let user = self.door.user(sh);
        self.exec(sh).args(["pg_dump", "-U", &user, "-d", &self.name])
    }

    /// psql reading SQL on stdin into `db` with no options of ours: the floor a restore
    /// is measured against.
    pub fn bare_load<'a>(&self, sh: &'a Shell, db: &str) -> Cmd<'a> {
        let user = self.door.user(sh);
        self.exec(sh).args(["psql", "-X", "-q", "-o", "/dev/null", "-U", &user, "-d", db])
    }

    /// `pg_dump -Fc` of the database into `file` inside the container, with no options
    /// of ours: what `pg_restore -j` reads, the reference a parallel load is set beside.
    /// The file stays in the container, so neither timing includes a copy to the host.
    pub fn bare_custom_dump<'a>(&self, sh: &'a Shell, file: &str) -> Cmd<'a> {
        let user = self.door.user(sh);
        self.exec(sh).args(["pg_dump", "-Fc", "-U", &user, "-d", &self.name, "-f", file])
    }

    /// `pg_restore -j jobs` of the container's `file` into `db`, with no options of ours.
    pub fn bare_custom_restore<'a>(&self, sh: &'a Shell, db: &str, jobs: usize, file: &str) -> Cmd<'a> {
        let (user, jobs) = (self.door.user(sh), jobs.to_string());
        self.exec(sh).args(["pg_restore", "-j", &jobs, "-U", &user, "-d", db, file])
    }

    /// Removes `file` inside the container, if it is there. It cleans up, so it runs
    /// also on the way out of a failed run.
    pub fn remove_container_file(&self, sh: &Shell, file: &str) -> Result<()> {
        process::read_cleanup("rm", self.exec(sh).args(["rm", "-f", file])).map(drop)
    }

    /// Runs SQL in the database and returns its unaligned rows.
    pub fn sql(&self, sh: &Shell, sql: &str) -> Result<String> {
        self.query_in(sh, &self.name, sql)
    }

    /// Free bytes on the volume that holds `data_dir` (the server's data directory), as
    /// `df` inside the container sees it: a scratch load that fills it would stop
    /// PostgreSQL itself.
    pub fn volume_free(&self, sh: &Shell, data_dir: &str) -> Result<u64> {
        let out = process::read("df", self.exec(sh).args(["df", "-P", "-k", data_dir]))?;
        parse_df_available(&out).with_context(|| format!("unexpected `df` output `{}`", out.trim()))
    }

    /// After pg_dump gave up waiting for a table's lock: the sessions holding that table,
    /// with their pid, state, since when and query, for a message a person can act on.
    pub fn lock_conflict(&self, sh: &Shell, db: &str, failure: &Failure) -> Option<String> {
        // pg_dump enforces --lock-wait-timeout with a statement timeout around its LOCK TABLE.
        if !failure.said("timeout") && !failure.said("could not obtain lock") {
            return None;
        }
        let table = locked_table(&failure.stderr)?;
        let sql = format!(
            "SELECT 'pid ' || a.pid || ' (' || coalesce(a.state, '?') || ' since ' || \
             to_char(coalesce(a.xact_start, a.query_start), 'YYYY-MM-DD HH24:MI:SS TZ') || '): ' || \
             left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 200) \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.relation = to_regclass({}) AND l.granted AND a.pid <> pg_backend_pid() \
             AND a.application_name NOT LIKE {}",
            literal(&table),
            literal(&format!("{APP_PREFIX}%"))
        );
        let holders = self.query_in(sh, db, &sql).ok()?;
        let holders: Vec<&str> = holders.lines().filter(|l| !l.is_empty()).collect();
        Some(if holders.is_empty() {
            format!("table {table} was locked (the holder has gone since)")
        } else {
            format!("table {table} is locked by {}", holders.join("; "))
        })
    }

    /// `pgbench -i` at `scale` (about 15 MB of tables and indexes per unit).
    pub fn pgbench_init(&self, sh: &Shell, scale: u32) -> Result<()> {
        let scale = scale.to_string();
        process::run(
            "pgbench",
            self.exec(sh).args(["pgbench", "-i", "-q", "-s", &scale, "-U", &self.door.user(sh), &self.name]),
        )
    }

    /// The databases whose names start with `prefix`, sorted by name.
    pub fn databases_with_prefix(&self, sh: &Shell, prefix: &str) -> Result<Vec<String>> {
        let sql =
            format!("SELECT datname FROM pg_database WHERE starts_with(datname, {}) ORDER BY datname", literal(prefix));
        Ok(self.admin(sh, &[&sql])?.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }

    /// An empty database for a plain dump: from template0, so nothing in template1 collides.
    pub fn create_database(&self, sh: &Shell, name: &str) -> Result<()> {
        self.admin(sh, &[&format!("CREATE DATABASE {} TEMPLATE template0", ident(name))]).map(drop)
    }

    /// Drops `name`, ending its sessions. It cleans up, so it runs also after a signal,
    /// in a session of its own name that the signal's stopper leaves alone.
    pub fn drop_database(&self, sh: &Shell, name: &str) -> Result<()> {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name));
        let cmd = self.door.psql(sh, "postgres", &format!("{}:cleanup", self.app)).args(["-t", "-A", "-c", &sql]);
        process::read_cleanup("psql", cmd).map(drop)
    }

    /// Puts `restored` in the live database's place and keeps the live one as `previous`.
    /// A database in use cannot be renamed: the other sessions are ended in the same psql
    /// call as the renames, and again if an application reconnected in between. The two
    /// renames are one transaction, so either both happen or neither does, and a killed
    /// run leaves nothing half-done. A live database that is gone (dropped by accident) is
    /// simply replaced.
    /// `live_exists` says whether there is a live database to keep. A lock the renames
    /// wait for longer than `lock_wait` fails the swap with exit 3, nothing renamed.
    pub fn swap_in(
        &self,
        sh: &Shell,
        restored: &str,
        previous: &str,
        lock_wait: Duration,
        live_exists: bool,
    ) -> Result<()> {
        let (live, restored, previous) = (ident(&self.name), ident(restored), ident(previous));
        let lock_timeout = format!("SET lock_timeout = '{}ms'", lock_wait.as_millis().max(1));
        if !live_exists {
            self.admin(sh, &[&lock_timeout, &format!("ALTER DATABASE {restored} RENAME TO {live}")])
                .map_err(busy_on_lock_timeout)?;
            return Ok(());
        }
        // The one-argument form: the timeout argument exists only from PostgreSQL 14.
        let terminate = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
            literal(&self.name)
        );
        let renames = format!("ALTER DATABASE {live} RENAME TO {previous}; ALTER DATABASE {restored} RENAME TO {live}");
        for attempt in 1.. {
            match self.admin(sh, &[&lock_timeout, &terminate, &renames]) {
                Ok(_) => break,
                Err(err)
                    if attempt < 10
                        && Failure::in_chain(&err).is_some_and(|f| f.said("is being accessed by other users")) =>
                {
                    thread::sleep(Duration::from_millis(100 * attempt));
                }
                Err(err) => return Err(busy_on_lock_timeout(err)),
            }
        }
        Ok(())
    }

    /// `postgresql://USER:PASSWORD@127.0.0.1:PORT/DB` for a program on this host, such as
    /// Alembic: the port Compose published, the password the container was started with.
    pub fn host_url(&self, sh: &Shell) -> Result<String> {
        let service = &self.door.service;
        let published = process::read("compose port", self.door.compose.cmd(sh).args(["port", service, "5432"]))
            .with_context(|| format!("cannot find the host port of service `{service}`: does it publish 5432?"))?;
        let port = parse_published_port(&published)
            .with_context(|| format!("unexpected `port` output `{}` for service `{service}`", published.trim()))?;
        let password = process::read("printenv", self.exec(sh).args(["printenv", "POSTGRES_PASSWORD"]))
            .context("cannot read POSTGRES_PASSWORD from the database container")?;
        Ok(format!(
            "postgresql://{}:{}@127.0.0.1:{port}/{}",
            percent_encode(&self.door.user(sh)),
            percent_encode(password.trim_end_matches('\n')),
            self.name
        ))
    }

    /// Stops the service and destroys its volume: for the benchmark's scratch project only.
    pub fn remove_with_volumes(&self, sh: &Shell) -> Result<()> {
        process::run("compose down", self.door.compose.cmd(sh).args(["down", "-v"]))
    }

    /// How a person would run these statements by hand, from a new shell: Compose with
    /// the project, the env file and the compose files spelled out, every word quoted for
    /// sh. No password is in it: psql connects over the container's local socket.
    pub fn psql_command(&self, sh: &Shell, sql: &str) -> String {
        let project = self.door.compose.project(sh, &self.door.service);
        let mut words = self.door.compose.words_for(&project);
        let user = self.door.user(sh);
        let psql = ["exec", "-T", "-u", "postgres", &self.door.service, "psql", "-X", "-U", &user, "-d", "postgres"];
        words.extend(psql.map(str::to_owned));
        words.extend(["-c".to_owned(), sql.to_owned()]);
        words.iter().map(|word| process::quote(word.as_ref())).collect::<Vec<_>>().join(" ")
    }

    /// The statements that undo a swap: the restored database aside as `<db>__unwanted_`,
    /// `previous` back in its place.
    pub fn swap_back_sql(&self, previous: &str, stamp: &str) -> String {
        let (live, unwanted) = (ident(&self.name), ident(&format!("{}__unwanted_{stamp}", self.name)));
        format!("ALTER DATABASE {live} RENAME TO {unwanted}; ALTER DATABASE {} RENAME TO {live}", ident(previous))
    }

    /// The revision recorded in `db`, or `unknown` with a warning saying why.
    pub fn revision_of(&self, sh: &Shell, db: &str) -> Result<Revision> {
        Ok(self.inspect(sh, db)?.revision.unwrap_or_else(|why| {
            warning!("Alembic revision of `{db}` unknown ({why})");
            Revision::Unknown
        }))
    }

    /// Runs an SQL script in `db` as psql reads a file (every statement's rows printed,
    /// unaligned, stopping at the first error) and returns what it printed.
    pub fn script_in(&self, sh: &Shell, db: &str, sql: &str) -> Result<String> {
        let cmd = self.psql(sh, db).args(["-t", "-A"]);
        process::read_fed("psql", cmd, sql.as_bytes())
            .with_context(|| format!("cannot run SQL in database `{db}` in service `{}`", self.door.service))
    }

    /// Runs SQL in `db` and returns its unaligned rows.
    pub fn query_in(&self, sh: &Shell, db: &str, sql: &str) -> Result<String> {
        let cmd = self.psql(sh, db).args(["-t", "-A", "-c", sql]);
        process::read("psql", cmd)
            .with_context(|| format!("cannot query database `{db}` in service `{}`", self.door.service))
    }

    /// Statements run one by one in the maintenance database, stopping at the first error.
    fn admin(&self, sh: &Shell, statements: &[&str]) -> Result<String> {
        let mut cmd = self.psql(sh, "postgres").args(["-t", "-A"]);
        for sql in statements {
            cmd = cmd.args(["-c", sql]);
        }
        process::read("psql", cmd)
    }

    fn psql<'a>(&self, sh: &'a Shell, db: &str) -> Cmd<'a> {
        self.door.psql(sh, db, &self.app)
    }

    fn psql_as<'a>(&self, sh: &'a Shell, db: &str, app: &str) -> Cmd<'a> {
        self.door.psql(sh, db, app)
    }

    fn conninfo(&self, db: &str) -> String {
        conninfo(db, &self.app)
    }

    fn exec<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        self.door.exec(sh)
    }
}

/// What a signal runs: ends this run's working sessions on the server (never its lock
/// session, which goes last, after the cleanup it protects, nor its cleanup's).
struct Stopper {
    door: Door,
    app: String,
}

impl Stopper {
    fn stop(&self) {
        let Ok(sh) = Shell::new() else { return };
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = {}",
            literal(&self.app)
        );
        let cmd = self.door.psql(&sh, "postgres", &format!("{}:stop", self.app)).args(["-t", "-A", "-c", &sql]);
        match process::read_cleanup("psql", cmd) {
            Ok(n) => match n.trim().parse::<u64>() {
                Ok(n) => step!("ended {} of this run in the database", count(n, "session")),
                Err(_) => warning!("ending this run's sessions in the database said `{}`", n.trim()),
            },
            Err(err) => warning!("could not end this run's sessions in the database: {err:#}"),
        }
    }
}

/// `dbname='DB' application_name='APP'`, quoted as libpq reads it: names read back from
/// the server (a replaced database renamed by hand) may hold anything.
fn conninfo(db: &str, app: &str) -> String {
    let quoted = |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    format!("dbname={} application_name={}", quoted(db), quoted(app))
}

fn app_name(run: &str, task: &str) -> String {
    format!("{APP_PREFIX}{run}:{task}")
}

/// Six random base-36 characters.
fn run_id() -> String {
    let mut bytes = [0u8; 6];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    let pid = std::process::id();
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let n = (*b as u32 ^ (pid >> (i * 4))) % 36;
            char::from_digit(n, 36).expect("below 36")
        })
        .collect()
}

/// A lock timeout is "busy" (exit 3), like a lock not granted in time.
fn busy_on_lock_timeout(err: anyhow::Error) -> anyhow::Error {
    match Failure::in_chain(&err) {
        Some(failure) if failure.said("lock timeout") => {
            let message = format!("{err:#}: another session held a lock the swap needs; retry when it is gone");
            Coded { code: Code::Busy, message }.into()
        }
        _ => err,
    }
}

/// The table in pg_dump's `LOCK TABLE public.t IN ACCESS SHARE MODE` that timed out.
fn locked_table(stderr: &str) -> Option<String> {
    let at = stderr.rfind("LOCK TABLE ")? + "LOCK TABLE ".len();
    let rest = &stderr[at..];
    let end = rest.find(" IN ")?;
    Some(rest[..end].trim().to_owned())
}

/// The CPUs a cgroup quota allows, from `cpu.max` (`200000 100000`, or `max 100000` for
/// none), rounded up; v1's `-1 100000` is none too.
fn cpu_quota(max: &str) -> Option<usize> {
    let mut fields = max.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?;
    let period: u64 = fields.next()?.parse().ok().filter(|&period| period > 0)?;
    Some(quota.div_ceil(period).max(1) as usize)
}

/// Text from hex digits (`encode(..., 'hex')`).
fn unhex(hex: &str) -> Result<String> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| hex.get(at..at + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .with_context(|| format!("`{hex}` is not hex"))?;
    String::from_utf8(bytes).context("a name that is not UTF-8")
}

/// The available bytes from POSIX `df -P -k DIR` output.
fn parse_df_available(out: &str) -> Option<u64> {
    let line = out.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The port from `compose port` output such as `127.0.0.1:5432` or `[::1]:5432`.
fn parse_published_port(output: &str) -> Option<u16> {
    output.lines().next()?.trim().rsplit_once(':')?.1.parse().ok().filter(|&port| port != 0)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a URL's user and password.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_quoting() {
        assert_eq!(ident("hindsight_db"), "\"hindsight_db\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn published_port() {
        assert_eq!(parse_published_port("127.0.0.1:55432\n"), Some(55432));
        assert_eq!(parse_published_port("[::1]:5432"), Some(5432));
        assert_eq!(parse_published_port(":0"), None);
        assert_eq!(parse_published_port(""), None);
    }

    #[test]
    fn tool_output_is_parsed() {
        let df = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n/dev/vda  263174212 11468688  81350268      13% /var/lib/postgresql/data\n";
        assert_eq!(parse_df_available(df), Some(81350268 * 1024));
        assert_eq!(parse_df_available("garbage"), None);
        let stderr = "pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout\n\
                      pg_dump: detail: Query was: LOCK TABLE public.\"My Table\" IN ACCESS SHARE MODE\n";
        assert_eq!(locked_table(stderr).as_deref(), Some("public.\"My Table\""));
        assert_eq!(locked_table("pg_dump: error: connection refused"), None);
    }

    #[test]
    fn cgroup_quotas() {
        assert_eq!(cpu_quota("max 100000\n"), None);
        assert_eq!(cpu_quota("200000 100000\n"), Some(2));
        assert_eq!(cpu_quota("150000 100000"), Some(2));
        assert_eq!(cpu_quota("50000 100000"), Some(1));
        assert_eq!(cpu_quota("-1 100000"), None);
        assert_eq!(unhex("4d7920537c0a").unwrap(), "My S|\n");
        assert!(unhex("4g").is_err() && unhex("4").is_err());
    }

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(conninfo("hindsight_db", "a:b"), "dbname='hindsight_db' application_name='a:b'");
        assert_eq!(conninfo("it's x=1", r"a\b"), r"dbname='it\'s x=1' application_name='a\\b'");
    }

    #[test]
    fn run_ids_are_short_and_distinct() {
        let (a, b) = (run_id(), run_id());
        assert_eq!(a.len(), 6);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert_eq!(app_name(&a, "db-verify"), format!("hindsight-xtask:{a}:db-verify"));
    }

    #[test]
    fn url_userinfo_is_encoded() {
        assert_eq!(percent_encode("password"), "password");
        assert_eq!(percent_encode("p@ss:w/rd é"), "p%40ss%3Aw%2Frd%20%C3%A9");
    }
}
