//! Output levels and the texts people read (issue 12), through the real binary: the
//! default prints one line per step and no command; `-q` the last line and warnings;
//! `-v` every command, quoted so that pasting it into sh runs it; counts of 1 in the
//! singular; and db-restore's texts, whose swap-back command works from a new shell.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use crate::testbed::{Bed, DB, Flavor, Run};

/// The text of each stderr line, after its timestamp; every line must have one (the cron
/// log relies on them).
fn texts(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .map(|line| {
            let rest = line.strip_prefix('[').unwrap_or_else(|| panic!("no timestamp: {line:?}\n{}", run.stderr));
            rest.split_once("] ").unwrap_or_else(|| panic!("no timestamp: {line:?}")).1
        })
        .collect()
}

/// The lines that echo a command: `$ ...`.
fn echoes(run: &Run) -> Vec<&str> {
    texts(run).into_iter().filter_map(|text| text.strip_prefix("$ ")).collect()
}

/// A bed whose database holds one table with one row, and no Alembic revision.
fn one_table_bed(name: &str) -> Bed {
    let bed = Bed::new(name, Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1);");
    bed
}

#[test]
fn default_quiet_and_verbose_output_of_db_backup_and_db_verify() {
    let bed = one_table_bed("levels");

    // Default: one line per step, no command.
    let run = bed.run_ok(&["db-backup"]);
    let lines = texts(&run);
    assert!(echoes(&run).is_empty(), "no command echo by default:\n{}", run.stderr);
    assert!(lines.iter().all(|text| !text.contains("docker ")), "no docker command line:\n{}", run.stderr);
    let started = lines.iter().filter(|text| text.starts_with("db-backup of `hindsight_db` started")).count();
    let dumping = lines.iter().filter(|text| text.starts_with("dumping database `hindsight_db` into")).count();
    assert_eq!((started, dumping), (1, 1), "each step once:\n{}", run.stderr);
    assert!(lines.iter().any(|text| text.starts_with("warning: Alembic revision unknown")), "{}", run.stderr);
    assert!(run.last_line().contains("backup complete:"), "{}", run.stderr);
    assert_eq!(lines.len(), 4, "started, the warning, dumping, complete:\n{}", run.stderr);

    // -q: the warning and the last line.
    let run = bed.run_ok(&["-q", "db-backup"]);
    let lines = texts(&run);
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(lines[0].starts_with("warning: Alembic revision unknown"), "{}", run.stderr);
    assert!(lines[1].starts_with("backup complete:"), "{}", run.stderr);

    // -q on db-verify: its verdict alone, and a count of 1 in the singular.
    let run = bed.run_ok(&["db-verify", "--quiet"]);
    let lines = texts(&run);
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].starts_with("verified "), "{}", run.stderr);
    assert!(lines[0].contains(", 1 table with 1 row restored and counted"), "{}", run.stderr);

    // -v: every command, each a line that sh runs as it is, and the steps too.
    let run = bed.run_ok(&["db-verify", "-v"]);
    assert!(echoes(&run).iter().any(|cmd| cmd.contains(" psql ")), "{}", run.stderr);
    assert!(texts(&run).iter().any(|text| text.contains("1 table")), "{}", run.stderr);
    assert!(!run.stderr.contains(&bed.password), "no password in any command:\n{}", run.stderr);
    let run = bed.run_ok(&["-v", "db-backup"]);
    let echoed = echoes(&run);
    assert!(echoed.iter().any(|cmd| cmd.contains(" pg_dump ")), "{}", run.stderr);
    assert!(run.last_line().contains("backup complete:"), "{}", run.stderr);
    assert!(!run.stderr.contains(&bed.password), "no password in any command:\n{}", run.stderr);
    // A psql query with quotes inside quotes, the kind the issue found broken, in a
    // database that outlives the run (the scratch database does not).
    let lasting = [r"dbname='\''postgres'\''", r"dbname='\''hindsight_db'\''"];
    let query = echoed
        .iter()
        .find(|cmd| {
            cmd.contains(" psql ")
                && cmd.contains(" -c ")
                && cmd.contains("SELECT")
                && cmd.matches(r"'\''").count() > 4
                && lasting.iter().any(|db| cmd.contains(db))
        })
        .unwrap_or_else(|| panic!("a psql query with quoted quotes among:\n{}", echoed.join("\n")));
    let out = bed.shell(query).output().unwrap();
    assert!(
        out.status.success(),
        "the echoed command, pasted into sh, fails:\n{query}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The swap-back statement's database name, to ask the server which data is live.
fn rows(bed: &Bed) -> String {
    bed.psql("SELECT string_agg(v::text, ',' ORDER BY v) FROM t").trim().to_owned()
}

#[test]
fn restore_texts_say_what_happened_and_the_swap_back_command_works_from_a_new_shell() {
    let bed = one_table_bed("rtexts");
    bed.run_ok(&["db-backup"]);

    // No live database: nothing is replaced, so nothing is said about keeping it.
    let drop = format!("DROP DATABASE {DB}");
    let out = bed.compose(&["exec", "-T", "db", "psql", "-U", "user", "-d", "postgres", "-c", &drop]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = bed.run_ok(&["db-restore", "latest", "--yes", "--no-migrate"]);
    for word in ["kept", "keep", "swap back", "__pre_restore_"] {
        assert!(!run.stderr.contains(word), "`{word}` with nothing replaced:\n{}", run.stderr);
    }
    assert!(run.last_line().contains("not migrated (--no-migrate)"), "{}", run.last_line());
    assert!(!run.last_line().contains("migrated to -"), "{}", run.last_line());
    assert_eq!(rows(&bed), "1");

    // A live database: it is kept, and the printed command swaps it back.
    bed.psql("INSERT INTO t VALUES (2);");
    let run = bed.run_ok(&["db-restore", "latest", "--yes", "--no-migrate"]);
    assert_eq!(rows(&bed), "1", "the backup's data is live");
    let line = texts(&run).into_iter().find(|text| text.contains("to swap back: ")).unwrap_or_else(|| {
        panic!("a swap-back command:\n{}", run.stderr);
    });
    let command = line.split_once("to swap back: ").unwrap().1;
    assert!(command.contains(&format!("-p {}", bed.project)), "the project: {command}");
    assert!(!command.contains(&bed.password), "no password: {command}");

    // A new shell elsewhere: no COMPOSE_PROJECT_NAME, only what the compose file reads.
    let elsewhere = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-elsewhere", bed.project));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let mut sh = Command::new("sh");
    sh.args(["-c", command]).current_dir(&elsewhere).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("HINDSIGHT_") || key.starts_with("POSTGRES_") || key.starts_with("COMPOSE_") {
            sh.env_remove(key);
        }
    }
    sh.env("HINDSIGHT_DB_PORT", bed.port.to_string())
        .env("POSTGRES_PASSWORD", &bed.password)
        .env("POSTGRES_IMAGE", &bed.image);
    let out = sh.output().unwrap();
    let _ = std::fs::remove_dir_all(&elsewhere);
    assert!(out.status.success(), "the swap-back command fails:\n{command}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rows(&bed), "1,2", "the replaced data is live again");
    let unwanted = bed.databases().into_iter().filter(|d| d.starts_with(&format!("{DB}__unwanted_"))).count();
    assert_eq!(unwanted, 1, "the restored data set aside: {:?}", bed.databases());
}

#[test]
fn on_a_terminal_a_load_shows_its_percentage_and_time_left_and_quiet_shows_none() {
    let bed = Bed::new("progress", Flavor::V2);
    bed.start();
    // Tens of MiB: a load of a few seconds, long enough for the line to be drawn.
    bed.psql("CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 1000000) g;");
    bed.run_ok(&["db-backup"]);

    let (code, screen) = bed.on_a_terminal("db-verify", "");
    assert_eq!(code, Some(0), "{screen}");
    // Each redraw starts with a carriage return.
    // A parallel load draws its reading of the file (`read`), then its sessions' share
    // (`loaded`); one session draws `loaded` throughout.
    let drawn: Vec<&str> =
        screen.split('\r').filter(|piece| piece.contains("loaded ") || piece.contains("read ")).collect();
    let with_eta =
        drawn.iter().find(|piece| piece.contains("%, ") && piece.contains(" left, ") && piece.contains("/s)"));
    assert!(with_eta.is_some(), "a progress line with a percentage and the time left:\n{screen:?}");

    let (code, screen) = bed.on_a_terminal("db-verify -q", "");
    assert_eq!(code, Some(0), "{screen}");
    assert!(!screen.contains(" left, "), "no progress with -q:\n{screen:?}");
    assert_eq!(screen.trim().lines().count(), 1, "the verdict alone:\n{screen}");
}
