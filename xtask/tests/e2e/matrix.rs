//! The PostgreSQL versions beyond the suite's 15: the whole restore pipeline on 13 and
//! on 17 with pgvector, backups carried across majors (older into newer loads, newer
//! into older is refused untouched), and a psql too old for `\restrict`.
//!
//! The images are provision.sh's: postgres:13 (13.23), postgres:13.16, postgres:17-pgvector.

use std::time::{Duration, Instant};

use crate::testbed::{Bed, Flavor, HEAD, fingerprint, migrated_with_data_on, restore};

/// pgvector's type, with values that must come back digit for digit.
const VECTORS: &str = "CREATE EXTENSION vector;
CREATE TABLE embeddings (id int PRIMARY KEY, v vector(3));
INSERT INTO embeddings VALUES (1, '[1,2,3]'), (2, '[-0.5,0.25,1e-07]'), (3, NULL);";

fn vectors(bed: &Bed) -> String {
    bed.psql("SELECT string_agg(id || '=' || coalesce(v::text, 'null'), ' ' ORDER BY id) FROM embeddings")
}

/// Backup, `down -v`, restore; the swap under a held connection; db-verify; Alembic to
/// the file's revision each time.
fn whole_pipeline_on(image: &str, name: &str, with_vectors: bool) {
    let started = Instant::now();
    let bed = migrated_with_data_on(name, image);
    if with_vectors {
        bed.psql(VECTORS);
    }
    let before = fingerprint(&bed);
    let vectors_before = with_vectors.then(|| vectors(&bed));
    bed.run_ok(&["db-backup"]);
    let verify = bed.run_ok(&["db-verify"]);
    assert!(verify.stderr.contains("checksum matches"), "{image}: {}", verify.stderr);

    let down = bed.compose(&["down", "-v"]);
    assert!(down.status.success(), "{image}: {}", String::from_utf8_lossy(&down.stderr));
    let run = restore(&bed, &["latest", "--yes"]);
    assert_eq!(run.code, Some(0), "{image}: {}", run.stderr);
    assert!(run.stderr.contains(&format!("alembic upgrade {HEAD}")), "{image}: {}", run.stderr);
    let after = fingerprint(&bed);
    assert_eq!(after.1, before.1, "{image}: values, sequences and revision");
    assert!(after.0 == before.0, "{image}: pg_dump sees a different database after the round trip");
    assert_eq!(with_vectors.then(|| vectors(&bed)), vectors_before, "{image}: the vector column");

    // The swap, with an application's session in the way.
    bed.psql("DELETE FROM memories WHERE id > 1000");
    let mut client = bed.hold_connection();
    let run = restore(&bed, &["latest", "--yes"]);
    assert_eq!(run.code, Some(0), "{image}: {}", run.stderr);
    let ended = Instant::now();
    let status = client.wait().unwrap();
    assert!(!status.success() && ended.elapsed() < Duration::from_secs(60), "{image}: the other session was ended");
    assert_eq!(fingerprint(&bed).1, before.1, "{image}: the backup's rows are back");
    assert!(bed.scratch_databases().is_empty(), "{image}: {:?}", bed.scratch_databases());
    eprintln!("{image}: the whole pipeline in {:.0?}", started.elapsed());
}

#[test]
fn the_whole_pipeline_on_postgres_13() {
    whole_pipeline_on("postgres:13", "m13", false);
}

#[test]
fn the_whole_pipeline_on_postgres_17_with_a_vector_column() {
    whole_pipeline_on("postgres:17-pgvector", "m17", true);
}

/// The dump-and-restore upgrade path, and its refusal the other way round.
#[test]
fn backups_restore_into_newer_majors_and_are_refused_by_older_ones_untouched() {
    let started = Instant::now();
    let old = migrated_with_data_on("x13", "postgres:13");
    let checks = fingerprint(&old).1;
    old.run_ok(&["db-backup"]);
    let from_13 = old.backups().pop().unwrap();
    let new = migrated_with_data_on("x17", "postgres:17-pgvector");
    new.psql(VECTORS);
    new.run_ok(&["db-backup"]);
    let from_17 = new.backups().pop().unwrap();
    let middle = migrated_with_data_on("x15", "postgres:15");
    middle.psql("DELETE FROM memories WHERE id > 2000");

    // 17 into 15: refused before anything is touched.
    let before = (fingerprint(&middle), middle.databases());
    let run = restore(&middle, &[from_17.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let error = run.last_line();
    assert!(
        error.contains("pg_dump 17.") && error.contains("PostgreSQL 15.") && error.contains("nothing was touched"),
        "names both versions: {error}"
    );
    assert!(error.contains("PostgreSQL 17 or newer") && error.contains("pg_dump 15"), "says what to do: {error}");
    assert_eq!((fingerprint(&middle), middle.databases()), before, "the 15 database is untouched");
    assert!(middle.scratch_databases().is_empty());

    // 13 into 15 and into 17: every value arrives.
    for bed in [&middle, &new] {
        let run = restore(bed, &[from_13.to_str().unwrap(), "--yes"]);
        assert_eq!(run.code, Some(0), "{}: {}", bed.image, run.stderr);
        assert_eq!(fingerprint(bed).1, checks, "13's data in {}", bed.image);
        assert!(bed.scratch_databases().is_empty());
    }
    eprintln!("across versions in {:.0?}", started.elapsed());
}

/// 13.16's psql cannot disable a file's backslash commands: refused, unless vouched for.
#[test]
fn a_psql_that_predates_restrict_is_refused_unless_trust_file() {
    let started = Instant::now();
    let bed = Bed::with_image("m1316", Flavor::V2, "postgres:13.16");
    bed.start();
    bed.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('backed up');");
    bed.run_ok(&["db-backup"]);
    bed.psql("UPDATE t SET v = 'changed';");
    let databases = bed.databases();

    for args in [&["db-restore", "latest", "--yes", "--no-migrate"][..], &["db-verify"]] {
        let run = bed.run(args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        // db-verify's last line is its summary; the reason is above it.
        assert!(
            run.stderr.contains("psql 13.16") && run.stderr.contains("predates") && run.stderr.contains("--trust-file"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(bed.psql("SELECT v FROM t").trim(), "changed");
    assert_eq!(bed.databases(), databases, "nothing created, nothing left");

    let run = bed.run(&["db-verify", "--trust-file"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let run = bed.run(&["db-restore", "latest", "--yes", "--no-migrate", "--trust-file"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("predates \\restrict"), "warns: {}", run.stderr);
    assert_eq!(bed.psql("SELECT v FROM t").trim(), "backed up");
    eprintln!("postgres:13.16 in {:.0?}", started.elapsed());
}
