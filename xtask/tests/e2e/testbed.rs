//! The real test bed: the `xtask` binary, the Docker Engine, Compose (v1 or v2), and a
//! PostgreSQL container from the project's own compose file, one Compose project, host
//! port and backup directory per test, torn down with `down -v`.
//!
//! Nothing here is mocked, and nothing skips: without a Docker Engine every test fails,
//! saying to run `cargo xtask test`, which provisions one.
//!
//! The helpers reach the database through the xtask's own door (`xtask::db::Database`),
//! as the tasks do: psql into any database, the sessions and databases on the server.

use std::{
    fmt::Debug,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard, Once},
    thread,
    time::{Duration, Instant},
};

use xtask::db::{Database, Start, Target, compose::ComposeFlavor};

pub const DB: &str = "hindsight_db";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    V2,
    V1,
}

pub struct Bed {
    pub project: String,
    pub port: u16,
    pub password: String,
    pub backup_dir: PathBuf,
    pub flavor: Flavor,
    /// The compose file's `POSTGRES_IMAGE`: which PostgreSQL this bed runs.
    pub image: String,
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The project's test Alembic project (alembic, sqlalchemy, psycopg, two migrations).
pub fn alembic_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alembic")
}

/// The second test Alembic project: the application's kinds of revision ids, two
/// branches and their merge.
pub fn alembic_app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alembic_app")
}

pub const HEAD: &str = "7c8d9e0f1a2b";
pub const FIRST: &str = "1a2b3c4d5e6f";

/// One `uv run` at a time in the shared fixture directories: uv creates its `.venv` and
/// `uv.lock` there on first use.
pub fn uv_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn compose_file() -> PathBuf {
    repo_root().join("infra/postgres/docker-compose.yml")
}

fn require_docker() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let ok = Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "no Docker Engine answers `docker info`: run the tests with `cargo xtask test`, which provisions one"
        );
    });
}

/// Without the image, Compose would try a registry the test bed does not have, and fail
/// in a way that says nothing about provisioning.
fn require_image(image: &str) {
    let ok =
        Command::new("docker").args(["image", "inspect", image]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "no image {image}: run `bash infra/testbed/provision.sh` (or `cargo xtask test`), which builds it"
    );
}

/// A program of the test bed (`age`, `age-keygen`), checked to be installed: a test that
/// cannot run it fails, naming provision.sh.
pub fn program(name: &str) -> Command {
    let found = Command::new(name).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "`{name}` is not installed: run infra/testbed/provision.sh (or `apt-get install age`)"
    );
    Command::new(name)
}

/// The real binary without a test bed, started in `cwd`, for what needs no database (db-list,
/// a directory that is not there, a reference that names nothing): none of the caller's
/// `HINDSIGHT_*`, `POSTGRES_*`, Compose or `AWS_*` settings leak in.
pub fn xtask_in(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("HINDSIGHT_")
            || key.starts_with("POSTGRES_")
            || key.starts_with("COMPOSE_")
            || key.starts_with("AWS_")
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

impl Bed {
    pub fn new(name: &str, flavor: Flavor) -> Bed {
        Bed::with_image(name, flavor, "postgres:15")
    }

    /// A bed running `image` (one provision.sh builds: postgres:13, :13.16, :15, :17-pgvector).
    pub fn with_image(name: &str, flavor: Flavor, image: &str) -> Bed {
        require_docker();
        require_image(image);
        let project = format!("hsdbt_{name}_{}", std::process::id());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let backup_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&project);
        let _ = std::fs::remove_dir_all(&backup_dir);
        let password = format!("pw-{name}-{}", std::process::id());
        let bed = Bed { project, port, password, backup_dir, flavor, image: image.to_owned() };
        bed.compose(&["down", "-v", "--remove-orphans"]);
        bed
    }

    /// The environment every process of this bed sees: its own Compose project and port.
    fn env(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars() {
            // The offsite store's settings and key too: a test names its own store.
            if key.starts_with("HINDSIGHT_")
                || key.starts_with("POSTGRES_")
                || key == "COMPOSE_PROJECT_NAME"
                || key.starts_with("AWS_")
            {
                cmd.env_remove(key);
            }
        }
        cmd.env("COMPOSE_PROJECT_NAME", &self.project)
            .env("HINDSIGHT_DB_PORT", self.port.to_string())
            .env("POSTGRES_PASSWORD", &self.password)
            .env("POSTGRES_IMAGE", &self.image)
            .env("HINDSIGHT_BACKUP_DIR", &self.backup_dir)
            .env("HINDSIGHT_COMPOSE", if self.flavor == Flavor::V2 { "v2" } else { "v1" })
            .env("HINDSIGHT_LOCK_WAIT_SECS", "0");
    }

    /// The real binary, as `cargo xtask ARGS` runs it.
    pub fn xtask(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args).current_dir(std::env::temp_dir()).stdin(Stdio::null());
        self.env(&mut cmd);
        cmd
    }

    /// `sh -c SCRIPT` in this bed's environment, from the temporary directory: a line the
    /// xtask printed, pasted into a shell.
    pub fn shell(&self, script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]).current_dir(std::env::temp_dir()).stdin(Stdio::null());
        self.env(&mut cmd);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.xtask(args).output().expect("the xtask binary runs");
        Run::from(out)
    }

    pub fn run_ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert!(run.code == Some(0), "xtask {args:?} failed ({:?}):\n{}", run.code, run.stderr);
        run
    }

    /// `xtask ARGS` on a real terminal, a pseudo-terminal from `script`, in this bed's
    /// environment, typing `answers`: its exit code and what the terminal showed.
    pub fn on_a_terminal(&self, args: &str, answers: &str) -> (Option<i32>, String) {
        use std::io::{Read, Write};
        let command = format!("'{}' {args}", env!("CARGO_BIN_EXE_xtask"));
        let mut script = Command::new("script");
        script.args(["-q", "-e", "-c", &command, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped());
        for (key, value) in self.xtask(&[]).get_envs() {
            match value {
                Some(value) => script.env(key, value),
                None => script.env_remove(key),
            };
        }
        let mut child = script.spawn().expect("script (bsdutils) runs");
        // Open until the end: a terminal whose input closed would read as "quit".
        let mut input = child.stdin.take().unwrap();
        input.write_all(answers.as_bytes()).unwrap();
        let mut screen = String::new();
        child.stdout.take().unwrap().read_to_string(&mut screen).unwrap();
        let status = child.wait().unwrap();
        drop(input);
        (status.code(), screen)
    }

    pub fn compose_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = match self.flavor {
            Flavor::V2 => {
                let mut c = Command::new("docker");
                c.arg("compose");
                c
            }
            Flavor::V1 => Command::new("docker-compose"),
        };
        cmd.arg("-f").arg(compose_file()).args(args).stdin(Stdio::null());
        self.env(&mut cmd);
        cmd
    }

    pub fn compose(&self, args: &[&str]) -> Output {
        self.compose_cmd(args).output().expect("compose runs")
    }

    /// Starts the service and waits for it over TCP, as a person would before loading data.
    pub fn start(&self) {
        let door = self.door();
        door.db
            .ensure_ready(&door.sh, Duration::from_secs(90), Start::IfStopped)
            .expect("the database comes up within 90 s");
    }

    /// The xtask's own door to this bed's database, and the shell its commands run in.
    pub fn door(&self) -> Door {
        let sh = xshell::Shell::new().unwrap();
        sh.set_var("COMPOSE_PROJECT_NAME", &self.project);
        sh.set_var("HINDSIGHT_DB_PORT", self.port.to_string());
        sh.set_var("POSTGRES_PASSWORD", &self.password);
        sh.set_var("POSTGRES_IMAGE", &self.image);
        let target = Target {
            flavor: if self.flavor == Flavor::V2 { ComposeFlavor::V2 } else { ComposeFlavor::V1 },
            files: vec![compose_file()],
            env_file: None,
            service: "db".to_owned(),
            user: Some("user".to_owned()),
            db_name: DB.to_owned(),
        };
        let db = Database::open_observer(&sh, &target).expect("the door opens");
        Door { sh, db }
    }

    fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_in(DB, sql)
    }

    fn try_psql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        let door = self.door();
        door.db.script_in(&door.sh, db, sql).map_err(|err| format!("{err:#}"))
    }

    /// Runs SQL in database `db`; panics on an error.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        self.try_psql_in(db, sql).unwrap_or_else(|err| panic!("psql failed: {err}\nSQL: {sql}"))
    }

    /// The sessions of any xtask run on the server: (application_name, query).
    pub fn xtask_sessions(&self) -> Vec<(String, String)> {
        let rows = self.psql_in(
            "postgres",
            "SELECT application_name || '|' || left(regexp_replace(query, '\\s+', ' ', 'g'), 80) \
             FROM pg_stat_activity WHERE application_name LIKE 'hindsight-xtask:%'",
        );
        rows.lines().filter_map(|l| l.split_once('|')).map(|(a, q)| (a.to_owned(), q.to_owned())).collect()
    }

    /// Runs SQL in the database through psql inside the container; panics on an error.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|err| panic!("psql failed: {err}\nSQL: {sql}"))
    }

    /// `uv run alembic upgrade TARGET` against this bed's database, as the Python service would.
    pub fn migrate(&self, target: &str) {
        self.migrate_with(&alembic_dir(), target);
    }

    /// `migrate` with the Alembic project in `dir`.
    pub fn migrate_with(&self, dir: &Path, target: &str) {
        let _turn = uv_turn();
        let url = format!("postgresql://user:{}@127.0.0.1:{}/{DB}", self.password, self.port);
        let out = Command::new("uv")
            .args(["run", "--quiet", "alembic", "upgrade", target])
            .current_dir(dir)
            .env("DATABASE_URL", url)
            .output()
            .expect("uv runs");
        assert!(out.status.success(), "alembic upgrade {target}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Another client, connected over TCP as an application would be, busy in
    /// `SELECT pg_sleep(120)` until a swap ends its session; returned once the server sees it.
    pub fn hold_connection(&self) -> std::process::Child {
        let client = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "user",
                "-d",
                DB,
                "-c",
                "SELECT pg_sleep(120)",
            ])
            .env("PGPASSWORD", &self.password)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the host's psql runs");
        let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'";
        wait_for("the held connection to show in pg_stat_activity", 30, || {
            (self.psql(sleeping).trim() == "1").then_some(())
        });
        client
    }

    /// One psql session on the host, connected over TCP as an application would be and
    /// kept open: each `Client::query` is a round trip on it, not a new process, so a test
    /// can look at the server every few milliseconds while a run works.
    pub fn client(&self, db: &str) -> Client {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "user", "-d", db])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the host's psql runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Client { child, stdin, stdout }
    }

    /// The databases on the server, sorted.
    pub fn databases(&self) -> Vec<String> {
        let out = self.try_psql_in("postgres", "SELECT datname FROM pg_database ORDER BY datname").unwrap_or_default();
        out.lines().map(str::to_owned).collect()
    }

    /// The scratch databases on the server (restores' and verifications').
    pub fn scratch_databases(&self) -> Vec<String> {
        self.databases().into_iter().filter(|d| d.contains("__restore_") || d.contains("__verify_")).collect()
    }

    /// The database's whole content and schema as pg_dump sees it, less the random
    /// `\restrict` keys, for comparing before and after.
    pub fn dump_text(&self) -> String {
        let door = self.door();
        let dump = door.db.dump(&door.sh, DB, Duration::from_secs(60));
        xtask::process::read("pg_dump", dump)
            .expect("pg_dump runs")
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The complete backups' paths (`*.sql`), sorted by name, i.e. oldest first.
    pub fn backups(&self) -> Vec<PathBuf> {
        let plain_backup = |p: &PathBuf| {
            let name = xtask::store::backup_file::BackupName::of_path(p);
            name.is_some_and(|n| n.compression == xtask::store::backup_file::Compression::None)
        };
        self.files().into_iter().filter(plain_backup).collect()
    }

    /// Every file in the backup directory but the lock and the run record (every run
    /// rewrites it, failed or not: it is no backup), sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.backup_dir) else {
            return Vec::new();
        };
        let ours = |p: &PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != ".hindsight.lock" && !name.ends_with(xtask::monitor::record::SUFFIX)
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(ours).collect();
        files.sort();
        files
    }

    /// (name, sha256) of every file, to show that a failed run changed nothing.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.files()
            .iter()
            .map(|p| {
                let out = Command::new("sha256sum").arg(p).output().unwrap();
                let sum = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_owned();
                (p.file_name().unwrap().to_string_lossy().into_owned(), sum)
            })
            .collect()
    }
}

/// Values that break naive dumps and loads: empty and NULL, every byte, quoting and
/// escapes, Unicode, a multi-megabyte value, sequences moved by hand. Needs `head`.
pub const AWKWARD: &str = r#"
INSERT INTO memories (body, note, meta, tags, blob) VALUES
  ('', NULL, '{}', '{}', ''),
  (NULL, '', 'null', NULL, NULL),
  (E'unicode: h\u00e9llo w\u00f6rld \u4f60\u597d \U0001F980 \u05e2\u05d1\u05e8\u05d9\u05ea e\u0301',
   E'tab\tand\nnewline\r\nand a backslash \\ and quotes '' " \\N',
   '{"k": "v\n\"q\"", "n": [1, 2.5, null, true], "u": "\u00e9\ud83e\udd80", "deep": {"a": [{"b": null}]}}',
   ARRAY['a', NULL, 'with space', 'quote"d', 'comma,', '', E'back\\slash', 'NULL'],
   (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex') FROM generate_series(0, 255) g));
INSERT INTO memories (body, meta, tags) SELECT repeat('multi-megabyte value ', 300000), '{"big": true}', ARRAY['big'];
SELECT setval('memories_id_seq', 1000);
INSERT INTO memories (body, tags) SELECT 'row ' || g, ARRAY['bulk', 'n' || (g % 7)] FROM generate_series(1, 5000) g;
CREATE SEQUENCE standalone START 42;
SELECT nextval('standalone'), nextval('standalone');
"#;

/// What must be identical after a restore: pg_dump's view of everything, plus checks
/// computed by the server itself.
pub fn fingerprint(bed: &Bed) -> (String, String) {
    let checks = bed.psql(
        "SELECT (SELECT md5(string_agg(m::text, E'\\n' ORDER BY id)) FROM memories m),
                (SELECT md5(string_agg(c::text, E'\\n' ORDER BY tag)) FROM memory_counts c),
                (SELECT count(*) FROM memories WHERE body = ''), (SELECT count(*) FROM memories WHERE body IS NULL),
                (SELECT max(length(body)) FROM memories), (SELECT md5(blob) FROM memories WHERE length(blob) = 256),
                (SELECT last_value FROM memories_id_seq), (SELECT last_value FROM standalone),
                (SELECT version_num FROM alembic_version),
                (SELECT count(*) FROM recent_memories)",
    );
    (bed.dump_text(), checks)
}

/// A Compose v2 bed on postgres:15, migrated to `head`, holding `AWKWARD`.
pub fn migrated_with_data(name: &str) -> Bed {
    migrated_with_data_on(name, "postgres:15")
}

/// A Compose v2 bed on `image`, migrated to `head`, holding `AWKWARD`.
pub fn migrated_with_data_on(name: &str, image: &str) -> Bed {
    let bed = Bed::with_image(name, Flavor::V2, image);
    bed.start();
    bed.migrate("head");
    bed.psql(AWKWARD);
    bed
}

/// `db-restore ARGS` with the fixture's Alembic project, one uv at a time.
pub fn restore(bed: &Bed, args: &[&str]) -> Run {
    let _turn = uv_turn();
    let alembic = alembic_dir();
    let out = bed.xtask(&[&["db-restore"], args].concat()).env("HINDSIGHT_ALEMBIC_DIR", alembic).output().unwrap();
    Run::from(out)
}

/// A host psql session of `Bed::client`; it ends when dropped.
pub struct Client {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Client {
    /// Runs one statement that returns exactly one row of one line, and returns it.
    pub fn query(&mut self, sql: &str) -> String {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{};", sql.trim_end().trim_end_matches(';')).expect("psql reads its input");
        self.stdin.flush().expect("psql reads its input");
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line).expect("psql answers");
        // psql stops at an error (ON_ERROR_STOP), and its message went to stderr.
        assert!(read > 0, "psql ended instead of answering: {sql}");
        line.trim_end_matches('\n').to_owned()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The xtask's door to a bed's database.
pub struct Door {
    pub sh: xshell::Shell,
    pub db: Database,
}

/// Polls `probe` until it gives a value, failing the test after `secs` with `what`.
pub fn wait_for<T: Debug>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Parses JSON with Python's own parser and returns the value as Python's repr, so the
/// test checks real JSON, not our idea of it.
pub fn python_json(text: &str, expression: &str) -> String {
    let program = format!("import json, sys\nd = json.loads(sys.stdin.read())\nprint({expression})");
    let mut child = Command::new("python3")
        .args(["-c", &program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not valid JSON ({}):\n{text}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Checks a dump file's `.sha256` sidecar against its bytes, with the xtask's own reader.
pub fn assert_sidecar_matches(path: &Path) {
    let expected = xtask::store::catalogue::sidecar_sum(path)
        .unwrap()
        .unwrap_or_else(|| panic!("{} has no .sha256 sidecar", path.display()));
    let mut hashing = xtask::stream::codec::Hashing::new(std::fs::File::open(path).unwrap());
    std::io::copy(&mut hashing, &mut std::io::sink()).unwrap();
    assert_eq!(hashing.finish().1, expected, "{} matches its sidecar", path.display());
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "1"]);
        let _ = std::fs::remove_dir_all(&self.backup_dir);
    }
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The last line on stderr, which is the summary or the error.
    pub fn last_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }
}
