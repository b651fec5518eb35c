//! The database's door: where `pg_dump` and `psql` run. Today that is `exec -T` in the
//! Compose service; a `kubectl exec` or a direct connection would be another variant of
//! this one type, and no task spells `docker` itself.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell};

pub mod compose;

use crate::{cli::DbArgs, output::step, process, store::backup_file::Revision};
use compose::Compose;

/// What a backup needs to know before it starts.
pub struct Inspection {
    pub size: u64,
    /// The recorded revision, or why there is none.
    pub revision: Result<Revision, String>,
}

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
            name: args.name.db_name.clone(),
            user: args.db_user.clone(),
        })
    }

    /// Starts the service when it is not running and waits until PostgreSQL accepts connections.
    pub fn ensure_ready(&self, sh: &Shell, wait: Duration) -> Result<()> {
        // The hourly case, in one exec: already up and ready.
        if self.is_ready(sh) {
            return Ok(());
        }
        let service = &self.service;
        let running = process::read(
            "compose ps",
            self.compose.cmd(sh).args(["ps", "--services", "--filter", "status=running"]),
        )
        .context(
            "Compose cannot reach the Docker engine: start it (e.g. `sudo systemctl start docker`) and try again",
        )?;
        if !running.lines().any(|line| line.trim() == service) {
            step!("service `{service}` is not running: starting it");
            process::run("compose up", self.compose.cmd(sh).args(["up", "-d", service])).with_context(|| {
                format!("cannot start service `{service}`: see `{} logs {service}`", self.compose.spelled())
            })?;
        }
        let deadline = Instant::now() + wait;
        loop {
            if self.is_ready(sh) {
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

    /// Over TCP: on a fresh volume the image first runs a socket-only server, which a
    /// socket check would mistake for the real one just before it restarts.
    fn is_ready(&self, sh: &Shell) -> bool {
        process::succeeds(self.exec(sh).args(["pg_isready", "-q", "-h", "127.0.0.1", "-U", &self.user]))
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

    /// `pg_dump` of the database as plain SQL on stdout; never a TTY, which would corrupt it.
    pub fn dump<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        self.exec(sh).args(["pg_dump", "--no-password", "-U", &self.user, "-d", &self.name])
    }

    /// psql reading a plain dump on stdin into `into`: one transaction, stopped by the first
    /// error (without `ON_ERROR_STOP`, psql exits 0 through SQL errors).
    pub fn load<'a>(&self, sh: &'a Shell, into: &str) -> Cmd<'a> {
        self.psql(sh, into).args(["--single-transaction", "-o", "/dev/null"])
    }

    /// psql reading SQL on stdin into `db` with no options of ours: the floor a restore
    /// is measured against.
    pub fn bare_load<'a>(&self, sh: &'a Shell, db: &str) -> Cmd<'a> {
        self.exec(sh).args(["psql", "-X", "-q", "-o", "/dev/null", "-U", &self.user, "-d", db])
    }

    /// Runs SQL in the database and returns its unaligned rows.
    pub fn sql(&self, sh: &Shell, sql: &str) -> Result<String> {
        self.query_in(sh, &self.name, sql)
    }

    /// `pgbench -i` at `scale` (about 15 MB of tables and indexes per unit).
    pub fn pgbench_init(&self, sh: &Shell, scale: u32) -> Result<()> {
        let scale = scale.to_string();
        process::run("pgbench", self.exec(sh).args(["pgbench", "-i", "-q", "-s", &scale, "-U", &self.user, &self.name]))
    }

    /// The databases whose names start with `prefix`, sorted by name.
    pub fn databases_with_prefix(&self, sh: &Shell, prefix: &str) -> Result<Vec<String>> {
        let sql =
            format!("SELECT datname FROM pg_database WHERE starts_with(datname, {}) ORDER BY datname", literal(prefix));
        Ok(self.admin(sh, &[&sql])?.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }

    /// Drops the scratch databases an interrupted `task` left: nothing else has names
    /// starting with `prefix`. Call with the task's lock held.
    pub fn drop_leftovers(&self, sh: &Shell, prefix: &str, task: &str) -> Result<()> {
        for leftover in self.databases_with_prefix(sh, prefix)? {
            step!("dropping `{leftover}`, left by an interrupted {task}");
            self.drop_database(sh, &leftover)?;
        }
        Ok(())
    }

    /// An empty database for a plain dump: from template0, so nothing in template1 collides.
    pub fn create_database(&self, sh: &Shell, name: &str) -> Result<()> {
        self.admin(sh, &[&format!("CREATE DATABASE {} TEMPLATE template0", ident(name))]).map(drop)
    }

    pub fn drop_database(&self, sh: &Shell, name: &str) -> Result<()> {
        self.admin(sh, &[&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name))]).map(drop)
    }

    /// Puts `restored` in the live database's place and keeps the live one as `previous`.
    /// A database in use cannot be renamed: the other sessions are ended in the same psql
    /// call as the renames, and again if an application reconnected in between. The two
    /// renames are one transaction, so either both happen or neither does, and a killed
    /// run leaves nothing half-done. A live database that is gone (dropped by accident) is
    /// simply replaced.
    pub fn swap_in(&self, sh: &Shell, restored: &str, previous: &str) -> Result<()> {
        let (live, restored, previous) = (ident(&self.name), ident(restored), ident(previous));
        if !self.databases_with_prefix(sh, &self.name)?.contains(&self.name) {
            return self.admin(sh, &[&format!("ALTER DATABASE {restored} RENAME TO {live}")]).map(drop);
        }
        let terminate = format!(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
            literal(&self.name)
        );
        let renames = format!("ALTER DATABASE {live} RENAME TO {previous}; ALTER DATABASE {restored} RENAME TO {live}");
        for attempt in 1.. {
            match self.admin(sh, &[&terminate, &renames]) {
                Ok(_) => break,
                Err(err) if attempt < 5 && format!("{err:#}").contains("is being accessed by other users") => {
                    thread::sleep(Duration::from_millis(200 * attempt));
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// `postgresql://USER:PASSWORD@127.0.0.1:PORT/DB` for a program on this host, such as
    /// Alembic: the port Compose published, the password the container was started with.
    pub fn host_url(&self, sh: &Shell) -> Result<String> {
        let service = &self.service;
        let published = process::read("compose port", self.compose.cmd(sh).args(["port", service, "5432"]))
            .with_context(|| format!("cannot find the host port of service `{service}`: does it publish 5432?"))?;
        let port = parse_published_port(&published)
            .with_context(|| format!("unexpected `port` output `{}` for service `{service}`", published.trim()))?;
        let password = process::read("printenv", self.exec(sh).args(["printenv", "POSTGRES_PASSWORD"]))
            .context("cannot read POSTGRES_PASSWORD from the database container")?;
        Ok(format!(
            "postgresql://{}:{}@127.0.0.1:{port}/{}",
            percent_encode(&self.user),
            percent_encode(password.trim_end_matches('\n')),
            self.name
        ))
    }

    /// Stops the service and destroys its volume: for the benchmark's scratch project only.
    pub fn remove_with_volumes(&self, sh: &Shell) -> Result<()> {
        process::run("compose down", self.compose.cmd(sh).args(["down", "-v"]))
    }

    /// How a person would run these statements by hand, for messages.
    pub fn psql_hint(&self, sql: &str) -> String {
        format!("{} exec {} psql -U {} -d postgres -c '{sql}'", self.compose.spelled(), self.service, self.user)
    }

    /// Runs SQL in `db` and returns its unaligned rows.
    pub fn query_in(&self, sh: &Shell, db: &str, sql: &str) -> Result<String> {
        let cmd = self.psql(sh, db).args(["-t", "-A", "-c", sql]);
        process::read("psql", cmd)
            .with_context(|| format!("cannot query database `{db}` in service `{}`", self.service))
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
        let args = ["psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-U", &self.user, "-d", db];
        self.exec(sh).args(args)
    }

    fn exec<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        self.compose.cmd(sh).args(["exec", "-T", &self.service])
    }
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
    fn url_userinfo_is_encoded() {
        assert_eq!(percent_encode("password"), "password");
        assert_eq!(percent_encode("p@ss:w/rd é"), "p%40ss%3Aw%2Frd%20%C3%A9");
    }
}
