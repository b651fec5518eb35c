//! The database's own lock: a PostgreSQL advisory lock held by a psql session of the run,
//! in the maintenance database, keyed by the database's name. Every backup directory and
//! checkout that points at the same server meets the same lock, and the lock dies with the
//! run: when this process goes, however it goes, the session's stdin closes and psql ends.
//!
//! db-restore holds it exclusively; db-backup and db-verify hold it shared, so they run
//! together but never during a restore. Holding it, a run may clean what dead runs left:
//! their sessions and scratch databases. A run is alive exactly while its lock session
//! (`hindsight-xtask:<run>:<task>:lock`) is connected, waiting or holding.

use std::{
    collections::BTreeSet,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use xshell::Shell;

use super::{APP_PREFIX, Database, literal};
use crate::{
    exit::{Code, Coded},
    output::step,
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

/// Held until dropped; dropping ends the session, which releases the lock.
pub struct DbLock {
    session: Option<Conversation>,
    key: u32,
}

impl Database {
    /// Takes the database's lock, waiting up to `wait` for runs that hold it; exit 3 when
    /// it is not granted in time, naming them.
    pub fn lock(&self, sh: &Shell, mode: Mode, wait: Duration) -> Result<DbLock> {
        let app = format!("{}:lock", self.app());
        let cmd = self.psql_as(sh, "postgres", &app).args(["-t", "-A"]);
        let session = Conversation::start("psql (lock)", cmd)?;
        let mut lock = DbLock { session: Some(session), key: key(&self.name) };
        let function = match mode {
            Mode::Shared => "pg_try_advisory_lock_shared",
            Mode::Exclusive => "pg_try_advisory_lock",
        };
        let take = format!("SELECT {function}({CLASS}, {});", lock.key as i32);
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            let answer = lock.ask(&take).context("cannot take the database lock")?;
            if answer.first().map(String::as_str) == Some("t") {
                return Ok(lock);
            }
            let holders = lock.holders().unwrap_or_default();
            let holders = if holders.is_empty() { "another run".to_owned() } else { holders.join(", ") };
            if Instant::now() >= deadline {
                return Err(Coded {
                    code: Code::Busy,
                    message: format!(
                        "{holders} holds the lock on database `{}`, so this {} did not run: try again when it has \
                         finished, or raise --lock-wait-secs",
                        self.name, self.task
                    ),
                }
                .into());
            }
            if !said {
                step!("waiting up to {} s for {holders} to release database `{}`", wait.as_secs(), self.name);
                said = true;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl DbLock {
    fn ask(&mut self, sql: &str) -> Result<Vec<String>> {
        let session = self.session.as_mut().expect("held until dropped");
        session.ask(&format!("{sql}\nSELECT {};\n", literal(END)), END)
    }

    /// The runs holding the lock, by their session's application name.
    fn holders(&mut self) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT a.application_name || ' (pid ' || a.pid || ')' FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.classid = {CLASS} AND l.objid = {} AND l.objsubid = 2 AND l.granted \
             AND a.pid <> pg_backend_pid();",
            self.key
        );
        self.ask(&sql)
    }

    /// Ends the sessions and drops the scratch databases of `db` that runs no longer alive
    /// left (killed with SIGKILL, or a machine that went down). A run that is alive keeps
    /// its own: its lock session says so.
    pub fn clean_dead_runs(&mut self, sh: &Shell, db: &Database) -> Result<()> {
        let prefix = literal(&format!("{APP_PREFIX}%"));
        let alive = self.ask(&format!(
            "SELECT DISTINCT split_part(application_name, ':', 2) FROM pg_stat_activity \
             WHERE application_name LIKE {prefix} AND application_name LIKE '%:lock';"
        ))?;
        let alive: BTreeSet<String> = alive.into_iter().filter(|id| !id.is_empty()).collect();
        // Never empty: this run holds the lock.
        let alive_list = alive.iter().map(|id| literal(id)).chain([literal("")]).collect::<Vec<_>>().join(", ");
        let ended = self.ask(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE {prefix} \
             AND application_name NOT LIKE '%:lock' AND split_part(application_name, ':', 2) NOT IN ({alive_list});"
        ))?;
        if !ended.is_empty() {
            step!("ended {} session(s) left by runs that died", ended.len());
        }
        for kind in ["restore", "verify"] {
            let prefix = format!("{}__{kind}_", db.name);
            for name in db.databases_with_prefix(sh, &prefix)? {
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

impl Drop for DbLock {
    fn drop(&mut self) {
        // Ending the input ends psql, and with its session the lock.
        if let Some(session) = self.session.take() {
            session.end();
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
