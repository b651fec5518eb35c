//! `cargo xtask install-cron` with the real `crontab` and the real cron daemon: the job
//! runs from cron's own bare environment, reads its secrets from its 0600 file, writes
//! its own log and makes a real backup.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use crate::testbed::{Bed, Flavor};

#[test]
fn print_shows_the_entry_and_changes_nothing() {
    let bed = Bed::new("cronprint", Flavor::V2);
    let run = bed.run_ok(&["install-cron", "--print", "--schedule", "*/5 * * * *"]);
    let root = crate::testbed::repo_root();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert_eq!(
        lines[0],
        format!("# hindsight_db backup job for {} (managed by cargo xtask install-cron)", root.display())
    );
    let job = lines[1];
    assert!(job.starts_with(&format!("*/5 * * * * cd '{}' && PATH='", root.display())), "{job}");
    assert!(
        job.contains(&format!("COMPOSE_PROJECT_NAME='{}'", bed.project)),
        "the job sees this Compose project: {job}"
    );
    assert!(
        job.contains("'db-backup'") && job.contains(&format!("'--backup-dir' '{}'", bed.backup_dir.display())),
        "{job}"
    );
    // The job opens (and rotates) its log itself: no shell redirection.
    assert!(job.ends_with(&format!("'--log-file' '{}/hindsight_db_backups/logs/backup.log'", root.display())), "{job}");
    assert!(!job.contains(">>") && !job.contains("2>&1"), "{job}");
    assert!(!job.contains(&bed.password), "no password in the entry");
    assert!(!job.contains("HINDSIGHT_SECRETS_FILE"), "no secrets, no secrets file: {job}");
}

#[test]
fn print_keeps_the_ping_url_out_of_the_entry_and_writes_nothing() {
    let bed = Bed::new("cronsecret", Flavor::V2);
    let token = "e2e-print-secret-token";
    let out = bed
        .xtask(&["install-cron", "--print", "--json"])
        .env("HINDSIGHT_PING_URL", format!("https://hc-ping.com/{token}"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let secrets = crate::testbed::repo_root().join("hindsight_db_backups/bin/xtask.secrets");
    assert!(!stdout.contains(token) && !stderr.contains(token), "the token is printed:\n{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("HINDSIGHT_SECRETS_FILE='{}'", secrets.display())), "{stderr}");
    assert!(stderr.contains("written to") && stderr.contains("on install"), "--print says when: {stderr}");
    assert!(stdout.contains(r#""secrets":["HINDSIGHT_PING_URL"]"#), "{stdout}");
    assert!(stdout.contains(&format!(r#""secrets_file":"{}""#, secrets.display())), "{stdout}");
}

#[test]
fn a_bad_schedule_is_a_usage_error() {
    let bed = Bed::new("cronbad", Flavor::V2);
    let run = bed.run(&["install-cron", "--print", "--schedule", "0 * * *"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("a schedule is five"), "{}", run.stderr);
}

/// A user made for this test and removed after it, with its crontab.
struct ThrowawayUser {
    name: String,
    home: PathBuf,
}

impl ThrowawayUser {
    fn create() -> ThrowawayUser {
        let name = format!("hsdbcron{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").args(["-r", &name]).output();
        let out = Command::new("useradd").args(["-m", "-G", "docker", "-s", "/bin/sh", &name]).output().unwrap();
        assert!(out.status.success(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
        ThrowawayUser { home: PathBuf::from("/home").join(&name), name }
    }

    /// Runs a program as this user with a minimal environment plus `env`.
    fn run(&self, program: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", &self.name, "--regid", &self.name, "--init-groups", "env", "-i"])
            .arg(format!("HOME={}", self.home.display()))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(program)
            .args(args)
            .current_dir(&self.home);
        cmd.output().unwrap()
    }

    fn crontab(&self) -> String {
        let out = Command::new("crontab").args(["-l", "-u", &self.name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn set_crontab(&self, table: &str) {
        use std::io::Write;
        let mut child =
            Command::new("crontab").args(["-u", &self.name, "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(table.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let _ = Command::new("crontab").args(["-r", "-u", &self.name]).output();
        let _ = Command::new("pkill").args(["-u", &self.name]).output();
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

#[test]
#[ignore = "creates a throwaway user and its crontab: runs in CI, or with HINDSIGHT_CRON_E2E=1 (`cargo xtask test` does both)"]
fn cron_runs_the_job_from_its_own_environment_and_makes_a_real_backup() {
    assert_eq!(current_uid(), 0, "the cron end-to-end test needs root, to create its throwaway user");
    let bed = Bed::new("cron", Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE from_cron (v text); INSERT INTO from_cron VALUES ('made by cron');");

    let user = ThrowawayUser::create();
    // The user's own checkout: the compose file, and a copy of the binary it runs.
    let repo = user.home.join("repo");
    fs::create_dir_all(repo.join("xtask")).unwrap();
    fs::create_dir_all(repo.join("infra/postgres")).unwrap();
    fs::copy(crate::testbed::compose_file(), repo.join("infra/postgres/docker-compose.yml")).unwrap();
    let program = user.home.join("xtask");
    fs::copy(env!("CARGO_BIN_EXE_xtask"), &program).unwrap();
    let chown = Command::new("chown").args(["-R", &format!("{0}:{0}", user.name)]).arg(&user.home).status().unwrap();
    assert!(chown.success());

    let theirs = "# the user's own lines, kept byte for byte\nMAILTO=\"\"\n*/30 * * * * true   # another job\n";
    user.set_crontab(theirs);
    let backups = user.home.join("backups");
    let env = [
        ("CARGO_MANIFEST_DIR", repo.join("xtask").display().to_string()),
        ("COMPOSE_PROJECT_NAME", bed.project.clone()),
        ("HINDSIGHT_DB_PORT", bed.port.to_string()),
        ("HINDSIGHT_BACKUP_DIR", backups.display().to_string()),
        // Nothing listens there (port 9, discard): the job only has to read it from its
        // secrets file, never from the cron line.
        ("HINDSIGHT_PING_URL", "http://127.0.0.1:9/ping/e2e-secret-token".to_owned()),
    ];
    let install = ["install-cron", "--schedule", "* * * * *"];
    for _ in 0..2 {
        let out = user.run(&program, &install, &env);
        assert!(out.status.success(), "install-cron: {}", String::from_utf8_lossy(&out.stderr));
    }

    let table = user.crontab();
    assert!(table.starts_with(theirs), "the user's lines come first, unchanged:\n{table}");
    let ours = &table[theirs.len()..];
    assert_eq!(ours.lines().count(), 2, "installing twice leaves one entry:\n{table}");
    let line = ours.lines().nth(1).unwrap();
    assert!(line.starts_with("* * * * * cd "), "{ours}");
    let secrets = repo.join("hindsight_db_backups/bin/xtask.secrets");
    assert!(line.contains(&format!(" HINDSIGHT_SECRETS_FILE='{}' ", secrets.display())), "{line}");
    assert!(!table.contains("e2e-secret-token"), "the token is in the crontab:\n{table}");
    let meta = fs::metadata(&secrets).expect("the job's secrets file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    use std::os::unix::fs::MetadataExt;
    let owner = Command::new("id").args(["-u", &user.name]).output().unwrap();
    assert_eq!(meta.uid().to_string(), String::from_utf8_lossy(&owner.stdout).trim(), "the user's own file");
    let kept = fs::read_to_string(&secrets).unwrap();
    assert!(kept.lines().any(|l| l == "HINDSIGHT_PING_URL=http://127.0.0.1:9/ping/e2e-secret-token"), "{kept}");

    // Cron starts jobs at the top of a minute: wait for one to finish. The job writes the
    // log itself (--log-file), as cron's line no longer redirects anything.
    let log = repo.join("hindsight_db_backups/logs/backup.log");
    let deadline = Instant::now() + Duration::from_secs(200);
    let made = loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("backup complete:") || text.contains("error:") {
            break text;
        }
        assert!(Instant::now() < deadline, "cron did not run the job within 200 s; log:\n{text}");
        thread::sleep(Duration::from_secs(2));
    };
    assert!(made.contains("backup complete:"), "the job failed under cron:\n{made}");
    assert!(
        made.lines().next().unwrap().contains("db-backup of `hindsight_db` started"),
        "a header opens the run:\n{made}"
    );
    let last = made.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.contains("backup complete:"), "the run's last line says it completed:\n{made}");
    assert_eq!(fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600, "the log is private");

    let files: Vec<PathBuf> = fs::read_dir(&backups).unwrap().map(|e| e.unwrap().path()).collect();
    let is_backup = |p: &&PathBuf| xtask::store::backup_file::BackupName::of_path(p).is_some();
    let dump = files.iter().find(is_backup).expect("a backup from cron");
    assert!(files.iter().any(|p| p.to_string_lossy().ends_with(".roles.sql")), "its roles beside it: {files:?}");
    assert_eq!(fs::metadata(dump).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(fs::read_to_string(dump).unwrap().contains("made by cron"));
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{}.sha256", dump.file_name().unwrap().to_string_lossy()))
        .current_dir(&backups)
        .status()
        .unwrap();
    assert!(check.success(), "sha256sum -c on the cron backup");

    let out = user.run(&program, &["install-cron", "--uninstall"], &env);
    assert!(out.status.success(), "uninstall: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(user.crontab(), theirs, "uninstall removes ours and nothing else");
    assert!(!secrets.exists(), "uninstall removes the secrets file");
}

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
