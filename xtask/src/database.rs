//! The database's door: where `pg_dump` and `psql` run. Today that is `exec -T` in the
//! Compose service; a `kubectl exec` or a direct connection would be another variant of
//! this one type, and no task spells `docker` itself.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell};

use crate::{
    backup_file::Revision,
    cli::DbArgs,
    compose::Compose,
    output::{step, warning},
    process,
};

pub struct Database {
    compose: Compose,
    service: String,
    pub name: String,
    user: String,
}

impl Database {
    /// Finds Compose for the service; nothing runs yet.
    pub fn open(sh: &Shell, args: &DbArgs, task: &str) -> Result<Database> {
        Ok(Database {
            compose: Compose::find(sh, args.compose, &args.compose_file, task)?,
            service: args.service.clone(),
            name: args.db_name.clone(),
            user: args.db_user.clone(),
        })
    }

    /// Starts the service when it is not running and waits until PostgreSQL accepts connections.
    pub fn ensure_ready(&self, sh: &Shell, wait: Duration) -> Result<()> {
        let service = &self.service;
        let running = process::read("compose ps", self.compose.cmd(sh).args(["ps", "--services", "--filter", "status=running"]))
            .context("Compose cannot reach the Docker engine: start it (e.g. `sudo systemctl start docker`) and try again")?;
        if !running.lines().any(|line| line.trim() == service) {
            step!("service `{service}` is not running: starting it");
            process::run(
                "compose up",
                self.compose.cmd(sh).args(["up", "-d", service]),
            )
            .with_context(|| {
                format!(
                    "cannot start service `{service}`: see `{} logs {service}`",
                    self.compose.spelled()
                )
            })?;
        }
        // Over TCP: on a fresh volume the image first runs a socket-only server, which the
        // socket check would mistake for the real one just before it restarts.
        let deadline = Instant::now() + wait;
        let user = &self.user;
        loop {
            if process::succeeds(self.exec(sh).args([
                "pg_isready",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                user,
            ])) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "service `{service}` did not accept connections within {} s: see `{} logs {service}`, or raise --wait-secs",
                    wait.as_secs(),
                    self.compose.spelled()
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// The Alembic revision recorded in the database, or `Unknown` with a warning saying why.
    pub fn alembic_revision(&self, sh: &Shell) -> Result<Revision> {
        let has_table = self.query(sh, "SELECT to_regclass('alembic_version') IS NOT NULL")?;
        let rows = if has_table.trim() == "t" {
            Some(self.query(sh, "SELECT version_num FROM alembic_version")?)
        } else {
            None
        };
        Ok(Revision::from_rows(rows.as_deref()).unwrap_or_else(|why| {
            warning!("Alembic revision unknown ({why}): the backup is named `unknown`");
            Revision::Unknown
        }))
    }

    /// `pg_dump` of the database as plain SQL on stdout; never a TTY, which would corrupt it.
    pub fn dump<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        self.exec(sh).args([
            "pg_dump",
            "--no-password",
            "-U",
            &self.user,
            "-d",
            &self.name,
        ])
    }

    fn query(&self, sh: &Shell, sql: &str) -> Result<String> {
        let (user, name) = (&self.user, &self.name);
        let psql = self.exec(sh).args([
            "psql",
            "-X",
            "-q",
            "-t",
            "-A",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        process::read("psql", psql.args(["-U", user, "-d", name, "-c", sql])).with_context(|| {
            format!(
                "cannot query database `{name}` in service `{}`",
                self.service
            )
        })
    }

    fn exec<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        self.compose.cmd(sh).args(["exec", "-T", &self.service])
    }
}
