//! Compose as applications use it: the database service defined across several files,
//! `COMPOSE_FILE`, a `.env` that sets the password, a user other than `user` that only the
//! container knows, and a run whose files would make Compose start an empty twin of the
//! application's database.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use crate::testbed::{Run, alembic_dir, compose_file, uv_turn, wait_for};

/// A project directory of its own: its name is the Compose project's, as Compose derives it
/// from the first file's directory. No `COMPOSE_PROJECT_NAME` anywhere.
struct App {
    dir: PathBuf,
    port: u16,
    backup_dir: PathBuf,
    /// Every file set ever started, for the teardown.
    started: Vec<Vec<PathBuf>>,
}

impl App {
    fn new(name: &str) -> App {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hsdbt{name}{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let override_dir = dir.join("infra").join(format!("hsdbt{name}db{}", std::process::id()));
        fs::create_dir_all(&override_dir).unwrap();
        // The base file defines the service; the override, in a directory of its own, sets
        // the image and a user other than `user`.
        fs::copy(compose_file(), dir.join("docker-compose.yml")).unwrap();
        let override_yml = "services:\n  db:\n    image: postgres:15\n    environment:\n      POSTGRES_USER: appuser\n";
        fs::write(override_dir.join("docker-compose.override.yml"), override_yml).unwrap();
        // The password comes from the project's .env, as deployments set it.
        fs::write(dir.join(".env"), format!("POSTGRES_PASSWORD=from-dotenv-{}\n", std::process::id())).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let backup_dir = dir.join("backups");
        App { dir, port, backup_dir, started: Vec::new() }
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.dir.join("docker-compose.yml"), self.override_file()]
    }

    fn override_file(&self) -> PathBuf {
        let infra = self.dir.join("infra");
        fs::read_dir(&infra).unwrap().next().unwrap().unwrap().path().join("docker-compose.override.yml")
    }

    fn env(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars() {
            if key.starts_with("HINDSIGHT_") || key.starts_with("POSTGRES_") || key.starts_with("COMPOSE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("HINDSIGHT_DB_PORT", self.port.to_string()).env("HINDSIGHT_LOCK_WAIT_SECS", "0");
    }

    /// `docker compose -f ... ARGS` in the application's directory, as its people run it.
    fn compose(&mut self, files: &[PathBuf], args: &[&str]) -> Output {
        if !self.started.iter().any(|started| started == files) {
            self.started.push(files.to_vec());
        }
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        for file in files {
            cmd.arg("-f").arg(file);
        }
        cmd.args(args).current_dir(&self.dir).stdin(Stdio::null());
        self.env(&mut cmd);
        cmd.output().unwrap()
    }

    /// The xtask with `COMPOSE_FILE` naming `files` and no flag about Compose or the user.
    fn xtask(&mut self, files: &[PathBuf], args: &[&str]) -> Run {
        if !self.started.iter().any(|started| started == files) {
            self.started.push(files.to_vec());
        }
        let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args).current_dir(&self.dir).stdin(Stdio::null());
        self.env(&mut cmd);
        cmd.env("COMPOSE_FILE", list.join(":")).env("HINDSIGHT_BACKUP_DIR", &self.backup_dir);
        Run::from(cmd.output().unwrap())
    }

    fn psql(&mut self, sql: &str) -> String {
        let files = self.files();
        let out = self.compose(
            &files,
            &["exec", "-T", "db", "psql", "-X", "-q", "-t", "-A", "-U", "appuser", "-d", "hindsight_db", "-c", sql],
        );
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn containers_of(project: &str) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={project}");
        let out = Command::new("docker").args(["ps", "-a", "-q", "--filter", &filter]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    fn start(&mut self) {
        let files = self.files();
        let up = self.compose(&files, &["up", "-d", "db"]);
        assert!(up.status.success(), "compose up: {}", String::from_utf8_lossy(&up.stderr));
        wait_for("the application's database", 90, || {
            let ready = self.compose(&files, &["exec", "-T", "db", "pg_isready", "-q", "-h", "127.0.0.1"]);
            ready.status.success().then_some(())
        });
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for files in self.started.clone() {
            let _ = self.compose(&files, &["down", "-v", "-t", "1"]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn several_compose_files_a_dotenv_password_and_the_containers_user_work_with_no_flags() {
    let mut app = App::new("files");
    app.start();
    app.psql("CREATE TABLE notes (v text); INSERT INTO notes VALUES ('kept by appuser');");
    let files = app.files();

    // No --compose-file, no --db-user: COMPOSE_FILE, and the container's POSTGRES_USER.
    // -v: the commands, which show the user psql and pg_dump connect as.
    let backup = app.xtask(&files, &["db-backup", "-v"]);
    assert_eq!(backup.code, Some(0), "{}", backup.stderr);
    assert!(backup.stderr.contains("-U appuser"), "the container's user: {}", backup.stderr);
    let dumped = fs::read_dir(&app.backup_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| xtask::store::backup_file::BackupName::of_path(p).is_some());
    let dumped = fs::read_to_string(dumped.expect("a backup")).unwrap();
    assert!(dumped.contains("kept by appuser"));

    // The restore's Alembic step connects over TCP with the password from .env.
    app.psql("DELETE FROM notes;");
    let _turn = uv_turn();
    let alembic = alembic_dir();
    let restore = app.xtask(&files, &["db-restore", "latest", "--yes", "--alembic-dir", alembic.to_str().unwrap()]);
    assert_eq!(restore.code, Some(0), "{}", restore.stderr);
    assert_eq!(app.psql("SELECT v FROM notes"), "kept by appuser");
    assert!(!app.psql("SELECT version_num FROM alembic_version").is_empty(), "Alembic reached it with .env's password");

    // install-cron writes the files as they were resolved, in order.
    let cron = app.xtask(&files, &["install-cron", "--print"]);
    assert_eq!(cron.code, Some(0), "{}", cron.stderr);
    let first = cron.stdout.find(&files[0].display().to_string()).expect("the first file in the job");
    let second = cron.stdout.find(&files[1].display().to_string()).expect("the second file in the job");
    assert!(first < second, "in Compose's order: {}", cron.stdout);
}

#[test]
fn a_run_with_other_files_never_starts_an_empty_twin_of_the_running_database() {
    let mut app = App::new("twin");
    app.start();
    app.psql("CREATE TABLE notes (v text); INSERT INTO notes VALUES ('the real data');");
    // Only the override: Compose would derive another project name from its directory,
    // and start a new, empty database there.
    let db_only = vec![app.override_file()];
    let twin_project = name_of(db_only[0].parent().unwrap());
    let run = app.xtask(&db_only, &["db-backup", "--db-user", "appuser"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("would start a new, empty one"), "{}", run.last_line());
    assert!(run.last_line().contains(&name_of(&app.dir)), "names the running project: {}", run.last_line());
    assert!(App::containers_of(&twin_project).is_empty(), "no twin was started");
    assert!(
        !app.backup_dir.exists()
            || fs::read_dir(&app.backup_dir).unwrap().all(|e| !name_of(&e.unwrap().path()).ends_with(".sql"))
    );

    // With the application's files, the same run reaches its database.
    let files = app.files();
    let run = app.xtask(&files, &["db-backup"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}
