//! `--jobs N` (issue 15) end to end: a backup loaded through N psql sessions gives the
//! database one session gives (the schema as `pg_dump -s` prints it, every table's rows,
//! every sequence), for a plain and a zstd backup of a schema with the objects a parallel
//! loader has to order (partitions and their index attaches, foreign keys both ways, RLS,
//! triggers, a materialized view, comments, grants); the sessions really copy at the same
//! time; db-verify loads the same way and leaves nothing behind; a statement or a row the
//! server refuses in any session leaves the live database as it was; `--jobs 0` is refused.

use std::{
    collections::BTreeMap,
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use xtask::store::backup_file::{SHA256_SUFFIX, VERIFIED_SUFFIX, beside, sidecar_line};

use crate::testbed::{Bed, DB, Run, migrated_with_data};

/// Rows in each of the two big tables: enough that their COPYs last a few hundred
/// milliseconds each on the 2-core test machine, so two sessions loading them overlap
/// for many 20 ms polls, and few enough that a restore takes seconds.
const BIG_ROWS: u32 = 300_000;

/// Objects a parallel loader must build in the right wave, on top of the awkward data
/// set: each is named in the module doc. The big tables sort next to each other
/// (`big_a`, `big_b`), so their data comes one after the other in the dump.
const RICH: &str = r#"
CREATE ROLE hindsight_reader NOLOGIN;

CREATE TABLE kinds (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL CONSTRAINT kinds_name_key UNIQUE,
    weight numeric(6, 2) CONSTRAINT kinds_weight_check CHECK (weight >= 0)
);
INSERT INTO kinds (name, weight) SELECT 'kind ' || g, g * 1.5 FROM generate_series(1, 5) g;
COMMENT ON TABLE kinds IS 'what an event is';
COMMENT ON CONSTRAINT kinds_weight_check ON kinds IS 'no negative weights';

CREATE TABLE events (
    id bigint NOT NULL,
    at date NOT NULL,
    kind_id int NOT NULL REFERENCES kinds (id),
    payload jsonb,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_rest PARTITION OF events DEFAULT;
CREATE INDEX events_kind_at_idx ON events (kind_id, at);
COMMENT ON INDEX events_kind_at_idx IS 'events by kind';
INSERT INTO events SELECT g, date '2024-01-01' + (g % 900), 1 + g % 5, jsonb_build_object('g', g)
    FROM generate_series(1, 3000) g;

CREATE TABLE event_notes (
    id serial PRIMARY KEY,
    event_id bigint NOT NULL,
    event_at date NOT NULL,
    note text CONSTRAINT event_notes_not_blank CHECK (note <> ''),
    FOREIGN KEY (event_id, event_at) REFERENCES events (id, at) ON DELETE CASCADE
);
INSERT INTO event_notes (event_id, event_at, note)
    SELECT id, at, 'note on ' || id FROM events WHERE id % 10 = 0;

-- Each references the other: neither foreign key can exist before both tables' data.
CREATE TABLE owners (id int PRIMARY KEY, name text NOT NULL, favourite_pet int);
CREATE TABLE pets (id int PRIMARY KEY, name text NOT NULL, owner_id int NOT NULL REFERENCES owners (id));
ALTER TABLE owners ADD CONSTRAINT owners_favourite_pet_fkey FOREIGN KEY (favourite_pet) REFERENCES pets (id);
INSERT INTO owners SELECT g, 'owner ' || g FROM generate_series(1, 200) g;
INSERT INTO pets SELECT g, 'pet ' || g, 1 + g % 200 FROM generate_series(1, 500) g;
UPDATE owners SET favourite_pet = id * 2;

CREATE TABLE audit (id bigserial PRIMARY KEY, tbl text NOT NULL, op text NOT NULL);
CREATE FUNCTION note_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit (tbl, op) VALUES (TG_TABLE_NAME, TG_OP);
    RETURN NEW;
END $$;
CREATE TRIGGER pets_audit AFTER INSERT OR UPDATE ON pets FOR EACH ROW EXECUTE FUNCTION note_audit();
UPDATE pets SET name = name || '!' WHERE id <= 20;

CREATE TABLE secrets (id int PRIMARY KEY, holder text NOT NULL, secret text);
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY secrets_own ON secrets USING (holder = current_user);
INSERT INTO secrets SELECT g, CASE WHEN g % 2 = 0 THEN 'user' ELSE 'hindsight_reader' END, md5(g::text)
    FROM generate_series(1, 100) g;
GRANT SELECT ON secrets, kinds TO hindsight_reader;

CREATE TABLE bookings (id int PRIMARY KEY, during tstzrange NOT NULL,
    CONSTRAINT bookings_no_overlap EXCLUDE USING gist (during WITH &&));
INSERT INTO bookings SELECT g, tstzrange(timestamptz '2025-01-01' + g * interval '1 hour',
    timestamptz '2025-01-01' + (g + 1) * interval '1 hour') FROM generate_series(1, 300) g;

CREATE VIEW pet_owners AS SELECT p.name AS pet, o.name AS owner FROM pets p JOIN owners o ON o.id = p.owner_id;
CREATE MATERIALIZED VIEW kind_counts AS SELECT kind_id, count(*) AS n FROM events GROUP BY kind_id;
CREATE UNIQUE INDEX kind_counts_kind_idx ON kind_counts (kind_id);

CREATE SEQUENCE tickets START 10;
SELECT setval('tickets', 777, false);

CREATE TABLE big_a (id bigint PRIMARY KEY, n int NOT NULL, body text NOT NULL);
CREATE TABLE big_b (id bigint PRIMARY KEY, n int NOT NULL, body text NOT NULL);
INSERT INTO big_a SELECT g, g % 9973, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, BIG_ROWS) g;
INSERT INTO big_b SELECT g, g % 7919, md5((g * 7)::text) || md5(g::text) FROM generate_series(1, BIG_ROWS) g;
CREATE INDEX big_a_n_idx ON big_a (n);
CREATE INDEX big_b_n_idx ON big_b (n);
COMMENT ON INDEX big_a_n_idx IS 'the big table by n';
ALTER TABLE event_notes ADD CONSTRAINT event_notes_id_big_a_fkey FOREIGN KEY (id) REFERENCES big_a (id);
"#;

/// The awkward data set (migrated by the fixture's Alembic project) plus `RICH`, backed up
/// once as plain SQL.
fn rich_bed(name: &str) -> Bed {
    let started = Instant::now();
    let bed = migrated_with_data(name);
    bed.psql(&RICH.replace("BIG_ROWS", &BIG_ROWS.to_string()));
    bed.psql("ANALYZE");
    bed.run_ok(&["db-backup"]);
    eprintln!("[{name}] bed with data and a backup in {:.1} s", started.elapsed().as_secs_f64());
    bed
}

/// What a restore must reproduce, as the server itself reports it.
#[derive(PartialEq, Eq)]
struct State {
    /// `pg_dump -s`, less the random `\restrict` lines.
    schema: String,
    /// Every table, partition and materialized view: its row count and an md5 of its
    /// rows in a fixed order; every sequence: `last_value` and `is_called`.
    relations: BTreeMap<String, String>,
}

fn capture(bed: &Bed) -> State {
    let out = bed.compose(&["exec", "-T", "db", "pg_dump", "-s", "-U", "user", "-d", DB]);
    assert!(out.status.success(), "pg_dump -s: {}", String::from_utf8_lossy(&out.stderr));
    let schema = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n");

    let listed = bed.psql(
        "SELECT format('%I.%I', n.nspname, c.relname) || '|' || c.relkind::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
    );
    let probes: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(name, kind)| {
            let quoted = name.replace('\'', "''");
            if kind == "S" {
                format!("SELECT '{quoted}' || '|' || last_value || '|' || is_called FROM {name}")
            } else {
                format!(
                    "SELECT '{quoted}' || '|' || count(*) || '|' || \
                     coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '-') FROM {name} t"
                )
            }
        })
        .collect();
    assert!(probes.len() > 20, "the rich schema is there: {listed}");
    let relations = bed
        .psql(&probes.join("\nUNION ALL\n"))
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(name, rest)| (name.to_owned(), rest.to_owned()))
        .collect();
    State { schema, relations }
}

/// Panics with what differs: `diff -u` of the schemas, and the relations that differ.
fn assert_same(what: &str, expected: &State, actual: &State) {
    if expected == actual {
        return;
    }
    let mut report = String::new();
    if expected.schema != actual.schema {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let a = dir.join(format!("parallel-{}-expected.sql", std::process::id()));
        let b = dir.join(format!("parallel-{}-actual.sql", std::process::id()));
        fs::write(&a, &expected.schema).unwrap();
        fs::write(&b, &actual.schema).unwrap();
        let diff = Command::new("diff").arg("-u").arg(&a).arg(&b).output().unwrap();
        let diff = String::from_utf8_lossy(&diff.stdout);
        let short: Vec<&str> = diff.lines().take(80).collect();
        report += &format!("pg_dump -s differs:\n{}\n", short.join("\n"));
    }
    let names: std::collections::BTreeSet<&String> = expected.relations.keys().chain(actual.relations.keys()).collect();
    for name in names {
        let (e, a) = (expected.relations.get(name), actual.relations.get(name));
        if e != a {
            report += &format!("{name}: expected {e:?}, got {a:?}\n");
        }
    }
    panic!("{what}: the database differs\n{report}");
}

/// `db-restore ARGS --yes --no-migrate`: the migration is not what is compared, and
/// without it no uv runs.
fn restore(bed: &Bed, args: &[&str]) -> Run {
    let run = bed.run(&[&["db-restore"], args, &["--yes", "--no-migrate"]].concat());
    eprintln!("db-restore {args:?}: {}", run.last_line());
    run
}

/// The load said it used `jobs` sessions, and did not fall back to one: else the
/// comparison would compare the serial path with itself.
fn assert_loaded_through(run: &Run, jobs: usize) {
    let said =
        if jobs == 1 { "loading through 1 session".to_owned() } else { format!("loading through {jobs} sessions") };
    assert!(run.stderr.contains(&said), "expected {said:?}:\n{}", run.stderr);
    assert!(!run.stderr.contains("loading it through one session"), "fell back to one session:\n{}", run.stderr);
}

#[test]
fn a_parallel_restore_gives_what_a_serial_one_gives() {
    let bed = rich_bed("parequal");
    bed.run_ok(&["db-backup", "--compress", "zstd"]);
    let plain = bed.backups().pop().unwrap();
    let zstd = bed.files().into_iter().find(|p| p.to_string_lossy().ends_with(".sql.zst")).unwrap();
    let original = capture(&bed);

    let started = Instant::now();
    let run = restore(&bed, &[plain.to_str().unwrap(), "--jobs", "1"]);
    assert_eq!(run.code, Some(0), "--jobs 1: {}", run.stderr);
    assert_loaded_through(&run, 1);
    eprintln!("--jobs 1 restore: {:.1} s", started.elapsed().as_secs_f64());
    let serial = capture(&bed);
    // The old path against the database that was dumped: what "the same" means here.
    assert_same("--jobs 1 against the original", &original, &serial);

    let started = Instant::now();
    let run = restore(&bed, &[plain.to_str().unwrap(), "--jobs", "3"]);
    assert_eq!(run.code, Some(0), "--jobs 3: {}", run.stderr);
    assert_loaded_through(&run, 3);
    eprintln!("--jobs 3 restore: {:.1} s", started.elapsed().as_secs_f64());
    assert_same("--jobs 3 against --jobs 1", &serial, &capture(&bed));

    let started = Instant::now();
    let run = restore(&bed, &[zstd.to_str().unwrap(), "--jobs", "2"]);
    assert_eq!(run.code, Some(0), "zstd, --jobs 2: {}", run.stderr);
    assert_loaded_through(&run, 2);
    eprintln!("zstd --jobs 2 restore: {:.1} s", started.elapsed().as_secs_f64());
    assert_same("zstd with --jobs 2 against plain with --jobs 1", &serial, &capture(&bed));
    assert!(bed.scratch_databases().is_empty(), "{:?}", bed.scratch_databases());
}

/// Runs `cmd` to its end while calling `each` every ~20 ms, from this thread.
fn run_while(mut cmd: Command, mut each: impl FnMut()) -> Run {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the xtask binary runs");
    // Read by another thread: a full stderr pipe must not stop the run.
    let waiting = thread::spawn(move || Run::from(child.wait_with_output().unwrap()));
    while !waiting.is_finished() {
        each();
        thread::sleep(Duration::from_millis(20));
    }
    waiting.join().unwrap()
}

/// The most `COPY` statements of any xtask run the server showed active at once while
/// `cmd` ran, polled through a session of the test's own.
fn most_copies_at_once(bed: &Bed, cmd: Command) -> (Run, u32, u32) {
    let mut client = bed.client("postgres");
    let (mut most, mut polls) = (0, 0);
    let run = run_while(cmd, || {
        let copies = client.query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'hindsight-xtask:%' \
             AND state = 'active' AND query LIKE 'COPY %'",
        );
        most = most.max(copies.parse::<u32>().expect("a count"));
        polls += 1;
    });
    (run, most, polls)
}

#[test]
fn the_sessions_of_a_parallel_restore_copy_at_the_same_time() {
    let bed = rich_bed("parconc");
    let cmd = bed.xtask(&["db-restore", "latest", "--yes", "--no-migrate", "--jobs", "3"]);
    let started = Instant::now();
    let (run, most, polls) = most_copies_at_once(&bed, cmd);
    eprintln!(
        "--jobs 3 restore: {:.1} s, {polls} polls, at most {most} COPY sessions at once",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(polls >= 20, "the poll saw the load: {polls} polls");
    // One session at a time is what the serial loader does: this is what --jobs adds.
    assert!(most >= 2, "at most {most} COPY ran at once in {polls} polls of a --jobs 3 restore");
    assert_eq!(bed.psql("SELECT count(*) FROM big_a").trim(), BIG_ROWS.to_string());
}

#[test]
fn db_verify_with_jobs_loads_the_backup_and_leaves_nothing_behind() {
    let bed = rich_bed("parverify");
    let databases = bed.databases();
    let (run, most, polls) = most_copies_at_once(&bed, bed.xtask(&["db-verify", "--jobs", "3"]));
    eprintln!("db-verify --jobs 3: {} ({polls} polls, at most {most} COPY sessions at once)", run.last_line());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(polls > 0 && most >= 1, "the poll saw the load: {most} in {polls} polls");
    assert!(bed.scratch_databases().is_empty(), "{:?}", bed.scratch_databases());
    assert!(bed.xtask_sessions().is_empty(), "{:?}", bed.xtask_sessions());
    assert_eq!(bed.databases(), databases);
    let record = beside(&bed.backups().pop().unwrap(), VERIFIED_SUFFIX);
    assert!(record.exists(), "db-verify recorded its pass: {}", record.display());
}

/// `text` (a backup's SQL) with `edit` applied, written into the backup directory as
/// `name` with a `.sha256` that matches it: a complete backup, which only the server refuses.
fn edited_backup(bed: &Bed, text: &str, name: &str, edit: impl FnOnce(&str) -> String) -> String {
    let edited = edit(text);
    assert_ne!(edited, text, "the edit changed the backup");
    let path = bed.backup_dir.join(name);
    fs::write(&path, edited).unwrap();
    let sum = Command::new("sha256sum").arg(&path).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_owned();
    fs::write(beside(&path, SHA256_SUFFIX), sidecar_line(&sum, name)).unwrap();
    name.to_owned()
}

/// `before` (a capture and the database list) is what the server holds now.
fn assert_unchanged(bed: &Bed, what: &str, before: &(State, Vec<String>)) {
    assert_same(what, &before.0, &capture(bed));
    assert_eq!(bed.databases(), before.1, "{what}: the databases");
}

#[test]
fn a_failing_parallel_load_changes_nothing() {
    let bed = rich_bed("parfail");
    let before = (capture(&bed), bed.databases());
    let text = fs::read_to_string(bed.backups().pop().unwrap()).unwrap();

    // Post-data: an index on a column that does not exist, refused once the data is in.
    let index = "CREATE INDEX big_a_n_idx ON public.big_a USING btree (n);";
    let bad_index = edited_backup(&bed, &text, "hindsight_db_backup_20990101_000000_unknown.sql", |text| {
        text.replace(index, "CREATE INDEX big_a_n_idx ON public.big_a USING btree (no_such_column);")
    });
    let run = restore(&bed, &[&bad_index, "--jobs", "3"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.last_line().contains("column \"no_such_column\" does not exist"), "psql's words: {}", run.last_line());
    assert!(bed.scratch_databases().is_empty(), "{:?}", bed.scratch_databases());
    assert!(bed.xtask_sessions().is_empty(), "{:?}", bed.xtask_sessions());
    assert_unchanged(&bed, "after a failed index build", &before);

    // Data: a row big_a's COPY refuses near its end, while big_b's may be loading.
    let bad_row = edited_backup(&bed, &text, "hindsight_db_backup_20990101_000001_unknown.sql", |text| {
        let copy = text.find("COPY public.big_a (id, n, body) FROM stdin;\n").expect("big_a's COPY");
        let row = format!("\n{}\t", BIG_ROWS - 100);
        let at = copy + text[copy..].find(&row).expect("a row near the end") + row.len();
        let tab = at + text[at..].find('\t').unwrap();
        format!("{}not-a-number{}", &text[..at], &text[tab..])
    });
    let cmd = bed.xtask(&["db-restore", &bad_row, "--yes", "--no-migrate", "--jobs", "3"]);
    let (run, most, polls) = most_copies_at_once(&bed, cmd);
    eprintln!("a refused row, --jobs 3: at most {most} COPY sessions at once in {polls} polls");
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.last_line().contains("invalid input syntax for type integer: \"not-a-number\""),
        "psql's words: {}",
        run.last_line()
    );
    assert!(bed.scratch_databases().is_empty(), "{:?}", bed.scratch_databases());
    assert!(bed.xtask_sessions().is_empty(), "{:?}", bed.xtask_sessions());
    assert_unchanged(&bed, "after a refused row", &before);
}

#[test]
fn jobs_0_is_a_usage_error() {
    let dir = std::env::temp_dir();
    for task in ["db-restore", "db-verify"] {
        let run = Run::from(crate::testbed::xtask_in(&dir, &[task, "latest", "--jobs", "0"]).output().unwrap());
        assert_eq!(run.code, Some(2), "{task}: {}", run.stderr);
        assert!(run.stderr.contains("--jobs"), "{task} names the flag: {}", run.stderr);
        let run =
            Run::from(crate::testbed::xtask_in(&dir, &[task, "latest"]).env("HINDSIGHT_JOBS", "0").output().unwrap());
        assert_eq!(run.code, Some(2), "{task}: {}", run.stderr);
        assert!(run.stderr.contains("HINDSIGHT_JOBS"), "{task} names the variable: {}", run.stderr);
    }
}
