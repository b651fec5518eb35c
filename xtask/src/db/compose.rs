//! Finding Docker Compose, v2 (`docker compose`) or v1 (`docker-compose`), and building its commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell, cmd};

use crate::{cli::ComposeFlavor, process};

#[derive(Clone)]
pub struct Compose {
    program: PathBuf,
    /// `compose` for v2, where Compose is a subcommand of `docker`; nothing for v1.
    subcommand: Option<&'static str>,
    file: PathBuf,
}

impl Compose {
    pub fn find(sh: &Shell, flavor: ComposeFlavor, file: &Path, task: &str) -> Result<Compose> {
        let file = sh.current_dir().join(file);
        if !file.is_file() {
            bail!("compose file {} not found: pass --compose-file or set HINDSIGHT_COMPOSE_FILE", file.display());
        }
        let v2 = || -> Result<Compose> {
            let docker = which::which("docker").context(format!(
                "`docker` is required for {task}: install Docker (Debian: apt-get install docker.io) or fix PATH"
            ))?;
            // The plugin where the docker CLI looks for it spares a `docker compose version`
            // (a tenth of a second, every hour); elsewhere, ask the CLI itself.
            if !has_compose_plugin() && !process::succeeds(cmd!(sh, "{docker} compose version")) {
                bail!(
                    "`docker compose` (Compose v2) is required for {task}: install the Compose plugin, or pass --compose v1"
                );
            }
            Ok(Compose { program: docker, subcommand: Some("compose"), file: file.clone() })
        };
        let v1 = || -> Result<Compose> {
            let program = which::which("docker-compose").context(format!(
                "`docker-compose` (Compose v1) is required for {task} with --compose v1: install it (Debian: apt-get install docker-compose)"
            ))?;
            Ok(Compose { program, subcommand: None, file: file.clone() })
        };
        match flavor {
            ComposeFlavor::V2 => v2(),
            ComposeFlavor::V1 => v1(),
            ComposeFlavor::Auto => v2().or_else(|v2_err| {
                v1().map_err(|_| {
                    v2_err.context(format!("neither `docker compose` nor `docker-compose` was found; {task} needs one"))
                })
            }),
        }
    }

    /// `docker compose -f FILE` (or `docker-compose -f FILE`), ready for a subcommand.
    pub fn cmd<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        let (program, subcommand, file) = (&self.program, self.subcommand, &self.file);
        cmd!(sh, "{program} {subcommand...} -f {file}")
    }

    /// How to say this Compose's commands to a person, for hints in messages.
    pub fn spelled(&self) -> String {
        let program = if self.subcommand.is_some() { "docker compose" } else { "docker-compose" };
        format!("{program} -f {}", self.file.display())
    }
}

/// Whether the Compose v2 plugin is in one of the directories the docker CLI searches.
fn has_compose_plugin() -> bool {
    let config = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")));
    let system = ["/usr/local/lib/docker", "/usr/local/libexec/docker", "/usr/lib/docker", "/usr/libexec/docker"];
    config.into_iter().chain(system.map(PathBuf::from)).any(|dir| dir.join("cli-plugins/docker-compose").is_file())
}
