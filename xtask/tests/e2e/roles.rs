//! Roles: a backup carries the cluster's roles beside it, and a restore into a new
//! cluster (after `docker compose down -v`) creates the missing ones before the load, so
//! owners, grants, memberships and row-level security policies that name them survive;
//! never an administrator from a file.

use std::{os::unix::fs::PermissionsExt, process::Command};

use crate::testbed::{Bed, Flavor};

#[test]
fn owners_grants_and_policies_of_application_roles_survive_down_v() {
    let bed = Bed::new("roles", Flavor::V2);
    bed.start();
    bed.psql(
        "CREATE ROLE app LOGIN PASSWORD 'app-secret';
         CREATE ROLE reader NOLOGIN;
         GRANT reader TO app;
         CREATE ROLE admin2 SUPERUSER;
         CREATE TABLE notes (owner_name text, body text);
         INSERT INTO notes VALUES ('app', 'hello');
         ALTER TABLE notes OWNER TO app;
         GRANT SELECT ON notes TO reader;
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON notes TO app USING (owner_name = current_user);",
    );
    bed.run_ok(&["db-backup"]);
    let backup = bed.backups().pop().unwrap();
    let roles = backup.with_file_name(format!("{}.roles.sql", backup.file_name().unwrap().to_string_lossy()));
    assert_eq!(std::fs::metadata(&roles).unwrap().permissions().mode() & 0o777, 0o600, "private");
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{}.sha256", backup.display()))
        .current_dir(&bed.backup_dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "both checksums hold: {}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).contains(".roles.sql: OK"));

    // A new cluster: none of the application's roles.
    bed.compose(&["down", "-v"]);
    bed.start();
    assert_eq!(bed.psql("SELECT count(*) FROM pg_roles WHERE rolname IN ('app', 'reader', 'admin2')").trim(), "0");

    let run = bed.run_ok(&["db-restore", "latest", "--yes", "--no-migrate", "-v"]);
    assert!(run.stderr.contains("created the roles the backup needs"), "{}", run.stderr);
    // The hash is a credential: on psql's stdin, never in an argv or the verbose echo.
    assert!(!run.stderr.contains("SCRAM-SHA-256$") && !run.stderr.contains("PASSWORD '"), "{}", run.stderr);
    assert!(
        run.stderr.contains("role `admin2` is not created (SUPERUSER)"),
        "an administrator is reported: {}",
        run.stderr
    );
    assert_eq!(bed.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'").trim(), "app");
    assert_eq!(bed.psql("SELECT has_table_privilege('reader', 'notes', 'SELECT')").trim(), "t");
    assert_eq!(bed.psql("SELECT pg_has_role('app', 'reader', 'MEMBER')").trim(), "t");
    assert_eq!(bed.psql("SELECT roles::text FROM pg_policies WHERE policyname = 'mine'").trim(), "{app}");
    assert_eq!(bed.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'admin2'").trim(), "0");

    // The password hash came along: the application logs in as before.
    let login = Command::new("psql")
        .args(["-X", "-At", "-h", "127.0.0.1", "-p", &bed.port.to_string(), "-U", "app", "-d", "hindsight_db"])
        .args(["-c", "SELECT body FROM notes"])
        .env("PGPASSWORD", "app-secret")
        .output()
        .unwrap();
    assert!(login.status.success(), "app logs in: {}", String::from_utf8_lossy(&login.stderr));
    assert_eq!(String::from_utf8_lossy(&login.stdout).trim(), "hello");

    // Retention takes the roles file with its backup.
    bed.run_ok(&["db-backup"]);
    bed.run_ok(&["db-prune", "--max-backups", "1"]);
    assert!(!roles.exists(), "the roles file went with its backup");
}
