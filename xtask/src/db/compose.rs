//! Finding Docker Compose, v2 (`docker compose`) or v1 (`docker-compose`), and building its commands.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell, cmd};

use crate::process;

/// Which Compose to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComposeFlavor {
    Auto,
    V2,
    V1,
}

#[derive(Clone)]
pub struct Compose {
    program: PathBuf,
    /// `compose` for v2, where Compose is a subcommand of `docker`; nothing for v1.
    subcommand: Option<&'static str>,
    /// In Compose's order: later files override earlier ones.
    files: Vec<PathBuf>,
    env_file: Option<PathBuf>,
}

impl Compose {
    pub fn find(
        sh: &Shell,
        flavor: ComposeFlavor,
        files: &[PathBuf],
        env_file: Option<&Path>,
        task: &str,
    ) -> Result<Compose> {
        let files: Vec<PathBuf> = files.iter().map(|file| sh.current_dir().join(file)).collect();
        for file in &files {
            if !file.is_file() {
                bail!(
                    "compose file {} not found: pass --compose-file (or set COMPOSE_FILE, HINDSIGHT_COMPOSE_FILE)",
                    file.display()
                );
            }
        }
        if let Some(env_file) = env_file.filter(|file| !file.is_file()) {
            bail!("env file {} not found: fix --env-file (HINDSIGHT_ENV_FILE)", env_file.display());
        }
        let env_file = env_file.map(Path::to_path_buf);
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
            Ok(Compose {
                program: docker,
                subcommand: Some("compose"),
                files: files.clone(),
                env_file: env_file.clone(),
            })
        };
        let v1 = || -> Result<Compose> {
            let program = which::which("docker-compose").context(format!(
                "`docker-compose` (Compose v1) is required for {task} with --compose v1: install it (Debian: apt-get install docker-compose)"
            ))?;
            Ok(Compose { program, subcommand: None, files: files.clone(), env_file: env_file.clone() })
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

    /// `docker compose [--env-file F] -f FILE...` (or `docker-compose ...`), ready for a
    /// subcommand. With the same files in the same order as the application's own
    /// commands, Compose derives the same project name and reads the same `.env`.
    pub fn cmd<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        let (program, subcommand) = (&self.program, self.subcommand);
        let env_file = self.env_file.iter().flat_map(|file| [OsString::from("--env-file"), file.into()]);
        let files = self.files.iter().flat_map(|file| [OsString::from("-f"), file.into()]);
        cmd!(sh, "{program} {subcommand...}").args(env_file).args(files)
    }

    /// How to say this Compose's commands to a person, for hints in messages.
    pub fn spelled(&self) -> String {
        let program = if self.subcommand.is_some() { "docker compose" } else { "docker-compose" };
        let mut spelled = program.to_owned();
        if let Some(file) = &self.env_file {
            spelled.push_str(&format!(" --env-file {}", file.display()));
        }
        for file in &self.files {
            spelled.push_str(&format!(" -f {}", file.display()));
        }
        spelled
    }

    /// The services these files define, for a message naming the ones there are.
    pub fn services(&self, sh: &Shell) -> Result<Vec<String>> {
        let out = process::read("compose config", self.cmd(sh).args(["config", "--services"]))
            .context("Compose cannot read the compose files: run `docker compose config` to see why")?;
        Ok(out.lines().map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned).collect())
    }

    /// The Compose project these commands act on, as Compose itself named it: the
    /// `com.docker.compose.project` label of the service's container, else
    /// `COMPOSE_PROJECT_NAME`, else the first file's directory as Compose normalises it.
    /// A command for a new shell needs it: that shell may lack the variable, or `.env`.
    pub fn project(&self, sh: &Shell, service: &str) -> String {
        let labelled = || -> Option<String> {
            let ids = process::read("compose ps", self.cmd(sh).args(["ps", "-a", "-q", service])).ok()?;
            let id = ids.lines().map(str::trim).find(|id| !id.is_empty())?.to_owned();
            let docker = which::which("docker").ok()?;
            let format = r#"{{index .Config.Labels "com.docker.compose.project"}}"#;
            let out = process::read("docker inspect", cmd!(sh, "{docker} inspect --format {format} {id}")).ok()?;
            Some(out.trim().to_owned()).filter(|project| !project.is_empty())
        };
        labelled()
            .or_else(|| std::env::var("COMPOSE_PROJECT_NAME").ok().filter(|name| !name.is_empty()))
            .unwrap_or_else(|| default_project(self.files.first().and_then(|file| file.parent())))
    }

    /// This Compose's command words for a person's new shell: `docker compose -p PROJECT
    /// [--env-file F] -f FILE...`, the program by name rather than by path.
    pub fn words_for(&self, project: &str) -> Vec<String> {
        let mut words: Vec<String> = match self.subcommand {
            Some(subcommand) => vec!["docker".to_owned(), subcommand.to_owned()],
            None => vec!["docker-compose".to_owned()],
        };
        words.extend(["-p".to_owned(), project.to_owned()]);
        if let Some(file) = &self.env_file {
            words.extend(["--env-file".to_owned(), file.display().to_string()]);
        }
        for file in &self.files {
            words.extend(["-f".to_owned(), file.display().to_string()]);
        }
        words
    }

    /// Whether `service` has a container in this project, in any state.
    pub fn has_container(&self, sh: &Shell, service: &str) -> Result<bool> {
        let ids = process::read("compose ps", self.cmd(sh).args(["ps", "-a", "-q", service]))?;
        Ok(!ids.trim().is_empty())
    }

    /// Other Compose projects with a container of `service` started from one of these
    /// files: (project, working directory). They are the application's database when this
    /// run's files or project name differ from the ones it was started with.
    pub fn other_projects(&self, sh: &Shell, service: &str) -> Result<Vec<(String, String)>> {
        let Ok(docker) = which::which("docker") else { return Ok(Vec::new()) };
        let filter = format!("label=com.docker.compose.service={service}");
        let format = r#"{{.Label "com.docker.compose.project"}}|{{.Label "com.docker.compose.project.working_dir"}}|{{.Label "com.docker.compose.project.config_files"}}"#;
        let out = process::read("docker ps", cmd!(sh, "{docker} ps -a --filter {filter} --format {format}"))?;
        let ours: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        let mut found: Vec<(String, String)> = out
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, '|');
                let (project, dir, files) = (fields.next()?, fields.next()?, fields.next()?);
                let shares = files.split(',').any(|file| ours.iter().any(|ours| ours == file.trim()));
                shares.then(|| (project.to_owned(), dir.to_owned()))
            })
            .collect();
        found.dedup();
        Ok(found)
    }
}

/// The project name Compose gives a directory: its name, lowercased, keeping letters,
/// digits, `_` and `-`.
fn default_project(dir: Option<&Path>) -> String {
    let name = dir.and_then(Path::file_name).map(|name| name.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
}

/// Whether the Compose v2 plugin is in one of the directories the docker CLI searches.
fn has_compose_plugin() -> bool {
    let config = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")));
    let system = ["/usr/local/lib/docker", "/usr/local/libexec/docker", "/usr/lib/docker", "/usr/libexec/docker"];
    config.into_iter().chain(system.map(PathBuf::from)).any(|dir| dir.join("cli-plugins/docker-compose").is_file())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::default_project;

    #[test]
    fn a_directory_names_the_project_as_compose_does() {
        assert_eq!(default_project(Some(Path::new("/repo/infra/postgres"))), "postgres");
        assert_eq!(default_project(Some(Path::new("/srv/My App.v2"))), "myappv2");
        assert_eq!(default_project(None), "");
    }
}
