//! `cargo xtask bench`: db-backup and db-restore against the bare `pg_dump` pipe and a
//! bare `psql < file`, on a scratch Compose project filled to a chosen size. Writes
//! `target/bench/bench.md` and `target/bench/bench.csv`.

use std::{
    fmt::Write as _,
    fs::{self, File},
    path::{Path, PathBuf},
    process::Stdio,
    time::Instant,
};

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

use crate::{
    cli::Bench,
    db::{Database, Start},
    output::{done, human_bytes, step},
    process,
    store::backup_file::BackupName,
};

/// The text-heavy half: rows shaped like a memory store, with prose bodies built from
/// sentences of common words (compressible as real text is), jsonb metadata and arrays.
const MEMORIES_TABLE: &str = "CREATE TABLE IF NOT EXISTS memories (
    id bigserial PRIMARY KEY, body text NOT NULL, meta jsonb NOT NULL, tags text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())";

const WORDS: &str = "the of and to in is was he for it with as his on be at by had are but from or have an they \
    which one you were her all she there would their we him been has when who will more no if out so said what up \
    its about into than them can only other new some could time these two may then do first any my now such like \
    our over man me even most made after also did many before must through back years where much your way well \
    down should because each just those people how too little state good very make world still own see men work \
    long get here between both life being under never day same another know while last might us great old year \
    off come since against go came right used take three memory note remember meeting project idea later";

fn memories_batch(first: u64, rows: u64) -> String {
    let picks: Vec<String> = (1..=15).map(|k| format!("a[1 + (g * {} + {k}) % 5000]", 7 + 6 * k)).collect();
    format!(
        "WITH words AS (SELECT string_to_array('{WORDS}', ' ') AS w),
         sentences AS (SELECT array_agg(s) AS a FROM (
             SELECT initcap((SELECT string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
                             FROM words, generate_series(1, 8 + i % 9))) || '.' AS s
             FROM generate_series(1, 5000) i) x)
         INSERT INTO memories (body, meta, tags)
         SELECT {},
                jsonb_build_object('source', 'chat', 'score', round(random()::numeric, 4), 'session', g % 997,
                                   'lang', 'en', 'links', jsonb_build_array(g % 17, g % 31)),
                ARRAY['topic' || g % 50, 'user' || g % 300, 'kind' || g % 7]
         FROM sentences, generate_series({first}, {}) g",
        picks.join(" || ' ' || "),
        first + rows - 1
    )
}

struct Sample {
    secs: f64,
    bytes: Option<u64>,
    peak_kib: Option<u64>,
}

impl Bench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        // Never the user's database: every Compose command of this task, and of the
        // xtask runs it measures, is in the scratch project, which must not be theirs.
        let theirs = std::env::var("COMPOSE_PROJECT_NAME").ok().unwrap_or_else(|| {
            let files = self.db.compose_files(&sh.current_dir());
            let file = files.first().cloned().unwrap_or_default();
            let dir = file.parent().and_then(|d| d.file_name()).unwrap_or_default();
            dir.to_string_lossy().into_owned()
        });
        if self.project == theirs {
            bail!(
                "--project {} is the project your database runs in: the benchmark fills and destroys its project; pick another name",
                self.project
            );
        }
        sh.set_var("COMPOSE_PROJECT_NAME", &self.project);
        sh.set_var("HINDSIGHT_DB_PORT", self.port.to_string());
        let out = sh.current_dir().join("target/bench");
        let work = out.join("work");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;

        let db = Database::open(sh, &self.db.target(&sh.current_dir()), "bench")?;
        db.ensure_ready(sh, self.db.wait_secs, Start::IfStopped)?;
        self.fill(sh, &db)?;
        let db_bytes: u64 = db.sql(sh, "SELECT pg_database_size(current_database())")?.trim().parse()?;
        step!("database `{}` holds {}", db.name, human_bytes(db_bytes));

        let exe = std::env::current_exe()?;
        let variants = ["bare pg_dump pipe", "db-backup none", "db-backup gzip", "db-backup zstd"];
        let restores = [
            "bare drop, create, psql < file",
            "db-restore (plain)",
            "db-restore (zstd)",
            "db-restore (plain), retiring an older replaced database",
        ];
        let mut samples: Vec<Vec<Sample>> = (0..variants.len() + restores.len()).map(|_| Vec::new()).collect();
        for round in 1..=self.rounds.get() {
            step!("round {round} of {}", self.rounds);
            let bare = work.join("bare.sql");
            // Every measurement starts with nothing left for PostgreSQL to write out.
            db.sql(sh, "CHECKPOINT")?;
            let started = Instant::now();
            let stdout = File::create(&bare)?;
            process::run_redirected("pg_dump", db.bare_dump(sh), Stdio::null(), stdout.into())?;
            samples[0].push(Sample {
                secs: started.elapsed().as_secs_f64(),
                bytes: Some(fs::metadata(&bare)?.len()),
                peak_kib: None,
            });
            let mut made = Vec::new();
            for (i, compress) in ["none", "gzip", "zstd"].into_iter().enumerate() {
                let dir = work.join(format!("backups-{compress}"));
                let _ = fs::remove_dir_all(&dir);
                let backup_dir = dir.as_path();
                db.sql(sh, "CHECKPOINT")?;
                let run = cmd!(sh, "{exe} db-backup --compress {compress} --backup-dir {backup_dir} --max-backups 1");
                let (secs, peak_kib) = timed(run)?;
                let file = only_backup(&dir)?;
                samples[1 + i].push(Sample { secs, bytes: Some(fs::metadata(&file)?.len()), peak_kib });
                made.push(file);
            }

            // A restore is timed until its data is durable (a CHECKPOINT after it), which
            // bare psql would otherwise leave to whatever runs next.
            db.sql(sh, "CHECKPOINT")?;
            let started = Instant::now();
            db.drop_database(sh, "bench_bare")?;
            db.create_database(sh, "bench_bare")?;
            process::run_redirected("psql", db.bare_load(sh, "bench_bare"), File::open(&bare)?.into(), Stdio::null())?;
            db.sql(sh, "CHECKPOINT")?;
            samples[4].push(Sample { secs: started.elapsed().as_secs_f64(), bytes: None, peak_kib: None });
            // The restores' own directory: a retired database's dump lands there, never
            // in the repository's backups.
            let restore_dir = work.join("restores");
            let restore_dir = restore_dir.as_path();
            for (slot, file) in [(5, &made[0]), (6, &made[2]), (7, &made[0])] {
                // Slots 5 and 6 have no older replaced database to dump (dropped here,
                // untimed); slot 7 retires the one slot 6 left: a dump, then a drop.
                if slot != 7 {
                    for old in db.databases_with_prefix(sh, &format!("{}__pre_restore_", db.name))? {
                        db.drop_database(sh, &old)?;
                    }
                }
                // Without the Alembic step, which the comparison leaves out.
                let restore =
                    cmd!(sh, "{exe} db-restore {file} --yes --no-migrate --backup-dir {restore_dir} --keep-previous 1");
                db.sql(sh, "CHECKPOINT")?;
                let started = Instant::now();
                let (_, peak_kib) = timed(restore)?;
                db.sql(sh, "CHECKPOINT")?;
                let secs = started.elapsed().as_secs_f64();
                samples[slot].push(Sample { secs, bytes: None, peak_kib });
            }
            let _ = fs::remove_dir_all(restore_dir);
        }
        for old in db.databases_with_prefix(sh, &format!("{}__pre_restore_", db.name))? {
            db.drop_database(sh, &old)?;
        }
        db.drop_database(sh, "bench_bare")?;

        let names: Vec<&str> = variants.iter().chain(&restores).copied().collect();
        let (markdown, csv) = report(&names, &samples, db_bytes, self.rounds.get());
        fs::write(out.join("bench.md"), &markdown)?;
        fs::write(out.join("bench.csv"), csv)?;
        eprintln!("{markdown}");
        done!("wrote {} and {}", out.join("bench.md").display(), out.join("bench.csv").display());
        if !self.keep {
            db.remove_with_volumes(sh)?;
            fs::remove_dir_all(&work)?;
        }
        Ok(())
    }

    /// pgbench tables for half the size, memories until the whole reaches it. A database
    /// already that large (from `--keep`) is used as it is.
    fn fill(&self, sh: &Shell, db: &Database) -> Result<()> {
        let target = self.size_mb * 1_000_000;
        let size = |db: &Database| -> Result<u64> {
            Ok(db.sql(sh, "SELECT pg_database_size(current_database())")?.trim().parse()?)
        };
        if size(db)? >= target * 9 / 10 {
            return Ok(());
        }
        let scale = (self.size_mb / 2 / 15).max(1) as u32;
        step!("filling `{}` to {} MB: pgbench at scale {scale}, then memories", db.name, self.size_mb);
        db.pgbench_init(sh, scale)?;
        db.sql(sh, "DROP TABLE IF EXISTS memories")?;
        db.sql(sh, MEMORIES_TABLE)?;
        let mut next = 1;
        while size(db)? < target {
            db.sql(sh, &memories_batch(next, 20_000))?;
            next += 20_000;
        }
        db.sql(sh, "VACUUM ANALYZE")?;
        Ok(())
    }
}

/// Wall time of one xtask run, and the peak memory it reported in its last line.
fn timed(run: xshell::Cmd<'_>) -> Result<(f64, Option<u64>)> {
    let started = Instant::now();
    let stderr = process::run_redirected("xtask", run, Stdio::null(), Stdio::null())?;
    let secs = started.elapsed().as_secs_f64();
    Ok((secs, stderr.lines().last().and_then(parse_peak_kib)))
}

fn only_backup(dir: &Path) -> Result<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        // By name: the roles file beside a backup ends in `.sql` too.
        if BackupName::of_path(&path).is_some() {
            files.push(path);
        }
    }
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one backup in {}, found {files:?}", dir.display()),
    }
}

/// `peak memory 6.1 MiB` from a summary line, in KiB.
fn parse_peak_kib(line: &str) -> Option<u64> {
    let rest = line.split("peak memory ").nth(1)?;
    let mut words = rest.split([' ', ',', ')']).filter(|w| !w.is_empty());
    let value: f64 = words.next()?.parse().ok()?;
    let unit = match words.next()? {
        "B" => 1.0 / 1024.0,
        "KiB" => 1.0,
        "MiB" => 1024.0,
        "GiB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * unit).round() as u64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

fn report(names: &[&str], samples: &[Vec<Sample>], db_bytes: u64, rounds: usize) -> (String, String) {
    let medians: Vec<f64> = samples.iter().map(|s| median(&mut s.iter().map(|s| s.secs).collect::<Vec<_>>())).collect();
    let mut md = format!(
        "Database: {} (pg_database_size), {rounds} rounds, medians. Backups are compared with the bare \
         pg_dump pipe, restores with the bare drop, create and `psql < file`; every run starts after a \
         CHECKPOINT, and restores are timed until a CHECKPOINT has made their data durable. \
         `× bare` divides the medians; `round ratios` is the median of each round's ratio to the bare run \
         of the same round, which a machine that slows down between rounds disturbs less.\n\n\
         | what | median s | × bare | round ratios | output | peak RSS of the xtask |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
        human_bytes(db_bytes)
    );
    let mut csv = "what,median_s,ratio_to_bare,median_round_ratio,output_bytes,peak_rss_kib,all_s\n".to_owned();
    for (i, name) in names.iter().enumerate() {
        let bare_slot = if i < 4 { 0 } else { 4 };
        let bare = medians[bare_slot];
        let mut round_ratios: Vec<f64> =
            samples[i].iter().zip(&samples[bare_slot]).map(|(run, bare)| run.secs / bare.secs).collect();
        let round_ratio = median(&mut round_ratios);
        let bytes = samples[i].iter().filter_map(|s| s.bytes).max();
        let peak = samples[i].iter().filter_map(|s| s.peak_kib).max();
        let all: Vec<String> = samples[i].iter().map(|s| format!("{:.2}", s.secs)).collect();
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.3} | {round_ratio:.3} | {} | {} |",
            medians[i],
            medians[i] / bare,
            bytes.map_or("".to_owned(), human_bytes),
            peak.map_or("".to_owned(), |kib| human_bytes(kib * 1024))
        );
        let _ = writeln!(
            csv,
            "{name},{:.3},{:.4},{round_ratio:.4},{},{},{}",
            medians[i],
            medians[i] / bare,
            bytes.map_or(String::new(), |b| b.to_string()),
            peak.map_or(String::new(), |k| k.to_string()),
            all.join(" ")
        );
    }
    (md, csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_memory_from_a_summary_line() {
        let line = "[t] backup complete: /b/x.sql (1.0 GiB, revision unknown, 9.1 s, peak memory 6.5 MiB)";
        assert_eq!(parse_peak_kib(line), Some(6656));
        assert_eq!(parse_peak_kib("[t] restore complete: (peak memory 900.0 KiB, 2 old removed)"), Some(900));
        assert_eq!(parse_peak_kib("no figure"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
