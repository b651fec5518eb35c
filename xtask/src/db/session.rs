//! The run's own session: one psql, connected to the maintenance database for the whole
//! run (`hindsight-xtask:<run>:<task>:lock`). It holds the database's lock and answers the
//! run's small questions (sizes, database lists, psql's version) without starting a
//! program for each: every `docker exec` costs a tenth of a second.
//!
//! The lock is a PostgreSQL advisory lock keyed by the database's name. Every backup
//! directory and checkout that points at the same server meets it, and it dies with the
//! run: when this process goes, however it goes, the session's stdin closes and psql ends.
//! db-restore holds it exclusively; db-backup and db-verify hold it shared, so they run
//! together but never during a restore. Holding it, a run may clean what dead runs left:
//! their sessions and scratch databases. A run is alive exactly while this session is
//! connected, which it is before the run makes anything.

use std::{
    collections::BTreeSet,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use xshell::Shell;

use super::{APP_PREFIX, Database, Start, literal};
use crate::{
    exit::{Code, Coded},
    interrupt,
    output::{count, step},
    process::Conversation,
};

/// The advisory lock's first key, the same for every database: "HSDB".
const CLASS: i32 = 0x4853_4442;
/// What ends every answer of the lock session.
const END: &str = "-- hindsight end --";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// db-backup, db-verify: together, never during a restore.
    Shared,
    /// db-restore: alone.
    Exclusive,
}

/// Open until dropped; dropping ends the session, which releases the lock.
pub struct Session {
    psql: Option<Conversation>,
    key: u32,
    db: String,
    task: String,
    /// The release of the container's psql (this session's own), as (major, minor).
    psql_version: (u32, u32),
}

impl Database {
    /// The run's session, starting the service and waiting for it when it does not answer
    /// at once. The usual case costs no probe: a server that answers is up.
    pub fn session_when_ready(&self, sh: &Shell, wait: Duration, start: Start) -> Result<Session> {
        match self.session(sh) {
            Ok(session) => Ok(session),
            Err(_) => {
                self.ensure_ready(sh, wait, start)?;
                self.session(sh)
            }
        }
    }

    /// Opens the run's session, and fails unless the server answers. Call it before the run
    /// makes anything on the server: from then on the run counts as alive.
    pub fn session(&self, sh: &Shell) -> Result<Session> {
        let app = format!("{}:lock", self.app());
        let cmd = self.psql_as(sh, "postgres", &app).args(["-t", "-A"]);
        let mut psql = Conversation::start("psql (session)", cmd)?;
        // psql's own release, which also proves the server answers.
        let rows = psql.ask(&format!("\\echo :VERSION_NUM\n\\echo '{END}'\n"), END)?;
        let number: u32 = rows.first().and_then(|n| n.trim().parse().ok()).context("psql has no VERSION_NUM")?;
        Ok(Session {
            psql: Some(psql),
            key: key(&self.name),
            db: self.name.clone(),
            task: self.task.clone(),
            psql_version: (number / 10000, number % 100),
        })
    }
}

impl Session {
    /// Takes the database's lock, waiting up to `wait` for runs that hold it; exit 3 when
    /// it is not granted in time, naming them.
    pub fn lock(&mut self, mode: Mode, wait: Duration) -> Result<()> {
        let function = match mode {
            Mode::Shared => "pg_try_advisory_lock_shared",
            Mode::Exclusive => "pg_try_advisory_lock",
        };
        let take = format!("SELECT {function}({CLASS}, {});", self.key as i32);
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            interrupt::check()?;
            let answer = self.query(&take).context("cannot take the database lock")?;
            if answer.first().map(String::as_str) == Some("t") {
                return Ok(());
            }
            let holders = self.holders().unwrap_or_default();
            let holders = if holders.is_empty() { "another run".to_owned() } else { holders.join(", ") };
            if Instant::now() >= deadline {
                return Err(Coded {
                    code: Code::Busy,
                    message: format!(
                        "{holders} holds the lock on database `{}`, so this {} did not run: try again when it has \
                         finished, or raise --lock-wait-secs",
                        self.db, self.task
                    ),
                }
                .into());
            }
            if !said {
                step!("waiting up to {} s for {holders} to release database `{}`", wait.as_secs(), self.db);
                said = true;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The rows `sql` returns, one string each (unaligned, `|` between columns).
    pub fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        let psql = self.psql.as_mut().expect("open until dropped");
        psql.ask(&format!("{sql}\nSELECT {};\n", literal(END)), END)
    }

    /// The size of database `db`, if it exists.
    pub fn size_of(&mut self, db: &str) -> Result<Option<u64>> {
        let rows =
            self.query(&format!("SELECT pg_database_size(datname) FROM pg_database WHERE datname = {};", literal(db)))?;
        Ok(rows.first().and_then(|size| size.trim().parse().ok()))
    }

    /// The databases whose names start with `prefix`, sorted by name.
    pub fn databases_with_prefix(&mut self, prefix: &str) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT datname FROM pg_database WHERE starts_with(datname, {}) ORDER BY datname;",
            literal(prefix)
        );
        Ok(self.query(&sql)?.into_iter().filter(|name| !name.is_empty()).collect())
    }

    /// The roles the cluster has.
    pub fn roles(&mut self) -> Result<BTreeSet<String>> {
        Ok(self.query("SELECT rolname FROM pg_roles;")?.into_iter().collect())
    }

    /// The comment on database `db`, if it has one.
    pub fn database_comment(&mut self, db: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = {};",
            literal(db)
        );
        Ok(self.query(&sql)?.into_iter().next().filter(|comment| !comment.is_empty()))
    }

    /// The server's data directory, whose volume a scratch load fills.
    pub fn data_directory(&mut self) -> Result<String> {
        let rows = self.query("SELECT current_setting('data_directory');")?;
        rows.into_iter().next().context("no data_directory setting")
    }

    /// The release of the container's psql (this session's own), as (major, minor).
    pub fn psql_version(&self) -> (u32, u32) {
        self.psql_version
    }

    /// The runs holding the lock, by their session's application name.
    fn holders(&mut self) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT a.application_name || ' (pid ' || a.pid || ')' FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.classid = {CLASS} AND l.objid = {} AND l.objsubid = 2 AND l.granted \
             AND a.pid <> pg_backend_pid();",
            self.key
        );
        self.query(&sql)
    }

    /// Ends the sessions and drops the scratch databases of `db` that runs no longer alive
    /// left (killed with SIGKILL, or a machine that went down). A run that is alive keeps
    /// its own: its lock session says so.
    pub fn clean_dead_runs(&mut self, sh: &Shell, db: &Database) -> Result<()> {
        let prefix = literal(&format!("{APP_PREFIX}%"));
        let alive = self.query(&format!(
            "SELECT DISTINCT split_part(application_name, ':', 2) FROM pg_stat_activity \
             WHERE application_name LIKE {prefix} AND application_name LIKE '%:lock';"
        ))?;
        let alive: BTreeSet<String> = alive.into_iter().filter(|id| !id.is_empty()).collect();
        // `''` keeps the list well-formed; this run's own id is in it anyway.
        let alive_list = alive.iter().map(|id| literal(id)).chain([literal("")]).collect::<Vec<_>>().join(", ");
        let ended = self.query(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE {prefix} \
             AND application_name NOT LIKE '%:lock' AND split_part(application_name, ':', 2) NOT IN ({alive_list});"
        ))?;
        if !ended.is_empty() {
            step!("ended {} left by runs that died", count(ended.len() as u64, "session"));
        }
        for kind in ["restore", "verify"] {
            let prefix = db.scratch_prefix(kind);
            for name in self.databases_with_prefix(&prefix)? {
                let owner = name[prefix.len()..].split('_').next().unwrap_or_default();
                if !alive.contains(owner) {
                    step!("dropping `{name}`, a scratch database left by a db-{kind} that died");
                    db.drop_database(sh, &name)?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Ending the input ends psql, and with its session the lock.
        if let Some(psql) = self.psql.take() {
            psql.end();
        }
    }
}

/// The advisory lock's second key: the database's name hashed (FNV-1a), 31 bits so it
/// reads the same as an int4 and as pg_locks' oid.
fn key(db: &str) -> u32 {
    let hash = db.bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ byte as u32).wrapping_mul(0x0100_0193));
    hash & 0x7fff_ffff
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn keys_are_stable_and_positive() {
        assert_eq!(key("hindsight_db"), key("hindsight_db"));
        assert_ne!(key("hindsight_db"), key("hindsight_db2"));
        assert!(key("hindsight_db") <= i32::MAX as u32);
    }
}
