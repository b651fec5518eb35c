//! A scratch database: a restore or a verification loads into one, never into the live
//! database. Like a `Partial` file, it is dropped on every way out (an error, a failed
//! check, a signal) unless it was swapped in; one a killed run left is dropped by the next
//! run that holds the database lock (`DbLock::clean_dead_runs`), since its name carries
//! the run's id.

use anyhow::Result;
use xshell::Shell;

use super::{Database, ident, session::Session};
use crate::output::{detail, warning};

pub struct Scratch<'a> {
    sh: &'a Shell,
    db: &'a Database,
    name: String,
    keep: bool,
}

impl Database {
    /// Creates `<db>__<kind>_<run>[_<n>]`: the run's id tells a live run's scratch
    /// database from a dead one's.
    /// Created through the run's session: one program fewer to start.
    pub fn scratch<'a>(
        &'a self,
        sh: &'a Shell,
        session: &mut Session,
        kind: &str,
        n: Option<usize>,
    ) -> Result<Scratch<'a>> {
        let prefix = self.scratch_prefix(kind);
        let name = match n {
            Some(n) => format!("{prefix}{}_{n}", self.run),
            None => format!("{prefix}{}", self.run),
        };
        session.query(&format!("CREATE DATABASE {} TEMPLATE template0;", ident(&name)))?;
        Ok(Scratch { sh, db: self, name, keep: false })
    }
}

impl Database {
    /// `<db>__<kind>_`: what every scratch database of `kind` is named after, the run's id next.
    pub fn scratch_prefix(&self, kind: &str) -> String {
        format!("{}__{kind}_", self.name)
    }
}

impl Scratch<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// It is not scratch any more (it was swapped in under another name): keep it.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        match self.db.drop_database(self.sh, &self.name) {
            Ok(()) => detail!("dropped scratch database `{}`", self.name),
            Err(err) => warning!(
                "could not drop scratch database `{}` ({err:#}): the next db-restore or db-verify drops it",
                self.name
            ),
        }
    }
}
