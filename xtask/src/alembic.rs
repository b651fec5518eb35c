//! Alembic through uv: finding the project's `alembic.ini` and migrating a database to a revision.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use walkdir::WalkDir;
use xshell::{Shell, cmd};

use crate::process;

pub struct Alembic {
    uv: PathBuf,
    dir: PathBuf,
}

impl Alembic {
    /// The configured directory, else the repository's one `alembic.ini`; `None` when there
    /// is none. `uv` is checked here, before anything is changed.
    pub fn find(sh: &Shell, configured: Option<&Path>, task: &str) -> Result<Option<Alembic>> {
        let root = sh.current_dir();
        let dir = match configured {
            Some(dir) => {
                let dir = root.join(dir);
                if !dir.join("alembic.ini").is_file() {
                    bail!("no alembic.ini in {}: fix --alembic-dir (HINDSIGHT_ALEMBIC_DIR)", dir.display());
                }
                dir
            }
            None => match discover(&root)?.as_slice() {
                [] => return Ok(None),
                [one] => one.clone(),
                several => bail!(
                    "several alembic.ini files found ({}): choose one with --alembic-dir",
                    several.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                ),
            },
        };
        let uv = which::which("uv").context(format!(
            "`uv` is required for {task}'s migration step in {}: install it (pip install uv)",
            dir.display()
        ))?;
        Ok(Some(Alembic { uv, dir }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `uv run alembic upgrade TARGET` with `DATABASE_URL` set for that process only: the
    /// URL holds the password, which must never be in an argv.
    pub fn upgrade(&self, sh: &Shell, target: &str, database_url: &str) -> Result<()> {
        let uv = &self.uv;
        let _dir = sh.push_dir(&self.dir);
        process::run("alembic", cmd!(sh, "{uv} run --quiet alembic upgrade {target}").env("DATABASE_URL", database_url))
    }
}

/// Directories with an `alembic.ini`, three levels deep at most, outside build output,
/// virtual environments and this crate (whose test fixture is not the project's schema).
fn discover(root: &Path) -> Result<Vec<PathBuf>> {
    const SKIP: [&str; 6] = ["target", ".git", ".venv", "node_modules", "xtask", "hindsight_db_backups"];
    let mut found = Vec::new();
    let walk = WalkDir::new(root).max_depth(4).into_iter().filter_entry(|entry| {
        entry.depth() == 0
            || !entry.file_type().is_dir()
            || !SKIP.contains(&entry.file_name().to_string_lossy().as_ref())
    });
    for entry in walk {
        let entry = entry.with_context(|| format!("searching {} for alembic.ini", root.display()))?;
        if entry.file_type().is_file() && entry.file_name() == "alembic.ini" {
            found.push(entry.path().parent().unwrap_or(root).to_path_buf());
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::discover;

    #[test]
    fn discovery_skips_build_output_and_the_test_fixture() {
        let root = std::env::temp_dir().join(format!("hindsight-alembic-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for dir in ["services/api", "target/x", "xtask/tests/fixtures/alembic", "services/api/.venv/lib"] {
            fs::create_dir_all(root.join(dir)).unwrap();
            fs::write(root.join(dir).join("alembic.ini"), "").unwrap();
        }
        assert_eq!(discover(&root).unwrap(), [root.join("services/api")]);
        fs::remove_dir_all(&root).unwrap();
    }
}
