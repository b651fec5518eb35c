//! `cargo xtask bench`: db-backup and db-restore against the bare `pg_dump` pipe and a
//! bare `psql < file`, and db-backup with an age-encrypted offsite copy against db-backup
//! alone, on a scratch Compose project filled to a chosen size. db-restore runs at
//! `--jobs 1` and at the default (the container's CPUs), and `pg_restore -j` of a
//! custom-format dump of the same database stands beside them for reference. The offsite
//! copies go to a throwaway Garage on loopback, started by the test bed's launcher
//! (`testbed::garage`). Writes `target/bench/bench.md` and `target/bench/bench.csv`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::{
    cli::Bench,
    db::{Database, Start},
    output::{done, human_bytes, step, warning},
    process,
    store::backup_file::BackupName,
    testbed::garage::Garage,
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

/// One measured run.
#[derive(Default)]
struct Sample {
    secs: f64,
    bytes: Option<u64>,
    /// The xtask's peak RSS: the larger of its summary line's and the sampled one.
    peak_kib: Option<u64>,
    /// The programs the run started (age, the docker client...), each one's peak RSS by
    /// name, sampled.
    programs_kib: BTreeMap<String, u64>,
    /// CPU seconds (user + system) of the run's programs on this host, the xtask and
    /// what it started, once they have exited: not pg_dump or psql in the container.
    cpu_secs: Option<f64>,
    /// CPU seconds Garage spent during the run.
    garage_cpu_secs: Option<f64>,
    /// The psql sessions a db-restore said it loads with, when it says.
    sessions: Option<usize>,
}

/// A row of the report: its name, and the row its ratios are to. In a name, `{default}`
/// stands for db-restore's default `--jobs` and `{cpus}` for the container's CPUs, known
/// only once the bench runs (see `names`).
struct Row {
    name: &'static str,
    baseline: usize,
}

/// The rows, in the order the report lists them.
const BARE_DUMP: usize = 0;
const BACKUP_NONE: usize = 1;
const BACKUP_ZSTD: usize = 3;
const OFFSITE_NONE: usize = 4;
const BARE_LOAD: usize = 6;
const PG_RESTORE: usize = 12;
const ROWS: [Row; 13] = [
    Row { name: "bare pg_dump pipe", baseline: BARE_DUMP },
    Row { name: "db-backup none", baseline: BARE_DUMP },
    Row { name: "db-backup gzip", baseline: BARE_DUMP },
    Row { name: "db-backup zstd", baseline: BARE_DUMP },
    Row { name: "db-backup none, age-encrypted offsite to loopback Garage", baseline: BACKUP_NONE },
    Row { name: "db-backup zstd, age-encrypted offsite to loopback Garage", baseline: BACKUP_ZSTD },
    Row { name: "bare drop, create, psql < file", baseline: BARE_LOAD },
    Row { name: "db-restore (plain) --jobs 1", baseline: BARE_LOAD },
    Row { name: "db-restore (zstd) --jobs 1", baseline: BARE_LOAD },
    Row { name: "db-restore (plain) --jobs {default}", baseline: BARE_LOAD },
    Row { name: "db-restore (zstd) --jobs {default}", baseline: BARE_LOAD },
    Row { name: "db-restore (plain), retiring an older replaced database", baseline: BARE_LOAD },
    Row { name: "pg_restore -j {cpus} (custom dump)", baseline: BARE_LOAD },
];

/// A db-restore row: which backup it restores (0 the plain one, 2 the zstd one, in the
/// order they are made), and whether it passes `--jobs 1` (else no `--jobs`: the default).
struct Restore {
    row: usize,
    backup: usize,
    one_job: bool,
}

/// In the order they run. The last one retires the database the one before it replaced;
/// the others find none (the earlier ones' are dropped before, untimed).
const RESTORES: [Restore; 5] = [
    Restore { row: BARE_LOAD + 1, backup: 0, one_job: true },
    Restore { row: BARE_LOAD + 2, backup: 2, one_job: true },
    Restore { row: BARE_LOAD + 3, backup: 0, one_job: false },
    Restore { row: BARE_LOAD + 4, backup: 2, one_job: false },
    Restore { row: BARE_LOAD + 5, backup: 0, one_job: false },
];
const RETIRING: usize = BARE_LOAD + 5;

/// The custom-format dump `pg_restore -j` reads, made once per bench inside the
/// container: its timing then holds no copy through the host, as the bare psql's does
/// not hold pg_dump's.
const CUSTOM_DUMP: &str = "/tmp/hindsight-bench.dump";
/// The database the bare psql load makes, and the one `pg_restore` makes.
const BARE_DB: &str = "bench_bare";
const PG_RESTORE_DB: &str = "bench_pg_restore";

/// Where the offsite rows upload: a throwaway Garage on loopback, and an age key made
/// for the run (only its public half is given to db-backup).
struct Offsite {
    garage: Garage,
    url: String,
    recipient: String,
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

        // First what the offsite rows need, so that a missing Garage or age fails before
        // the long fill.
        let offsite = Offsite::start(sh, &work)?;

        let db = Database::open(sh, &self.db.target(&sh.current_dir()), "bench")?;
        db.ensure_ready(sh, self.db.wait_secs, Start::IfStopped)?;
        self.fill(sh, &db)?;
        let db_bytes: u64 = db.sql(sh, "SELECT pg_database_size(current_database())")?.trim().parse()?;
        step!("database `{}` holds {}", db.name, human_bytes(db_bytes));

        // pg_restore gets the jobs db-restore's default gives itself: the container's CPUs.
        let cpus = db.cpus(sh)?;
        step!("pg_restore reference: a custom-format dump in the container, restored with -j {cpus}");
        let custom = ContainerFile { sh, db: &db, path: CUSTOM_DUMP };
        process::run("pg_dump -Fc", db.bare_custom_dump(sh, CUSTOM_DUMP))?;

        let exe = std::env::current_exe()?;
        let mut samples: Vec<Vec<Sample>> = ROWS.iter().map(|_| Vec::new()).collect();
        for round in 1..=self.rounds.get() {
            step!("round {round} of {}", self.rounds);
            let bare = work.join("bare.sql");
            // Every measurement starts with nothing left for PostgreSQL to write out.
            db.sql(sh, "CHECKPOINT")?;
            let started = Instant::now();
            let cpu = children_cpu_secs();
            let stdout = File::create(&bare)?;
            process::run_redirected("pg_dump", db.bare_dump(sh), Stdio::null(), stdout.into())?;
            samples[BARE_DUMP].push(Sample {
                secs: started.elapsed().as_secs_f64(),
                bytes: Some(fs::metadata(&bare)?.len()),
                cpu_secs: Some(children_cpu_secs() - cpu),
                ..Sample::default()
            });
            let mut made = Vec::new();
            for (i, compress) in ["none", "gzip", "zstd"].into_iter().enumerate() {
                let dir = work.join(format!("backups-{compress}"));
                let _ = fs::remove_dir_all(&dir);
                let backup_dir = dir.as_path();
                db.sql(sh, "CHECKPOINT")?;
                let run = cmd!(sh, "{exe} db-backup --compress {compress} --backup-dir {backup_dir} --max-backups 1");
                let mut sample = timed(run, None)?;
                let file = only_backup(&dir)?;
                sample.bytes = Some(fs::metadata(&file)?.len());
                samples[BACKUP_NONE + i].push(sample);
                made.push(file);
            }
            for (i, compress) in ["none", "zstd"].into_iter().enumerate() {
                let dir = work.join(format!("backups-offsite-{compress}"));
                let _ = fs::remove_dir_all(&dir);
                let backup_dir = dir.as_path();
                let Offsite { garage, url, recipient } = &offsite;
                let (endpoint, region) = (&garage.endpoint, &garage.region);
                db.sql(sh, "CHECKPOINT")?;
                // The key in the child's environment, never in its arguments.
                let run = cmd!(
                    sh,
                    "{exe} db-backup --compress {compress} --backup-dir {backup_dir} --max-backups 1
                        --offsite {url} --s3-endpoint {endpoint} --s3-region {region} --encrypt-to {recipient}"
                )
                .env("AWS_ACCESS_KEY_ID", &garage.access_key_id)
                .env("AWS_SECRET_ACCESS_KEY", &garage.secret_access_key);
                let mut sample = timed(run, garage.pid())?;
                sample.bytes = Some(fs::metadata(only_backup(&dir)?)?.len());
                samples[OFFSITE_NONE + i].push(sample);
                fs::remove_dir_all(&dir)?;
            }

            samples[BARE_LOAD].push(bare_restore(sh, &db, BARE_DB, || {
                let load = db.bare_load(sh, BARE_DB);
                process::run_redirected("psql", load, File::open(&bare)?.into(), Stdio::null()).map(drop)
            })?);
            samples[PG_RESTORE].push(bare_restore(sh, &db, PG_RESTORE_DB, || {
                process::run("pg_restore", db.bare_custom_restore(sh, PG_RESTORE_DB, cpus, CUSTOM_DUMP))
            })?);
            // The restores' own directory: a retired database's dump lands there, never
            // in the repository's backups.
            let restore_dir = work.join("restores");
            let restore_dir = restore_dir.as_path();
            for Restore { row, backup, one_job } in RESTORES {
                // All but the last have no older replaced database to dump (dropped here,
                // untimed); the last retires the one the restore before it left: a dump,
                // then a drop.
                if row != RETIRING {
                    for old in db.databases_with_prefix(sh, &format!("{}__pre_restore_", db.name))? {
                        db.drop_database(sh, &old)?;
                    }
                }
                let file = &made[backup];
                // Without the Alembic step, which the comparison leaves out.
                let mut restore =
                    cmd!(sh, "{exe} db-restore {file} --yes --no-migrate --backup-dir {restore_dir} --keep-previous 1");
                if one_job {
                    restore = restore.args(["--jobs", "1"]);
                }
                db.sql(sh, "CHECKPOINT")?;
                let started = Instant::now();
                let mut sample = timed(restore, None)?;
                db.sql(sh, "CHECKPOINT")?;
                sample.secs = started.elapsed().as_secs_f64();
                samples[row].push(sample);
            }
            let _ = fs::remove_dir_all(restore_dir);
        }
        for old in db.databases_with_prefix(sh, &format!("{}__pre_restore_", db.name))? {
            db.drop_database(sh, &old)?;
        }
        db.drop_database(sh, BARE_DB)?;
        db.drop_database(sh, PG_RESTORE_DB)?;
        drop(custom);
        drop(offsite);

        let names = names(&samples, cpus);
        let (markdown, csv) = report(&samples, &names, db_bytes, self.rounds.get());
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

impl Offsite {
    /// Starts Garage (the test bed's launcher) under `work` and makes an age key there.
    fn start(sh: &Shell, work: &Path) -> Result<Offsite> {
        for program in ["age", "age-keygen"] {
            if which::which(program).is_err() {
                bail!(
                    "the offsite rows need `{program}` on PATH: run `bash infra/testbed/provision.sh` as root, \
                     which installs Debian's age"
                );
            }
        }
        let garage = Garage::start_in(work, "bench").context(
            "the offsite rows upload to a throwaway Garage on loopback: run `bash infra/testbed/provision.sh` \
             as root, which builds it once",
        )?;
        let key = work.join("age-identity.txt");
        process::run("age-keygen", cmd!(sh, "age-keygen -o {key}"))?;
        let recipient = process::read("age-keygen -y", cmd!(sh, "age-keygen -y {key}"))?.trim().to_owned();
        step!("offsite rows: Garage {} on {}, bucket {}", garage.pid().unwrap_or(0), garage.endpoint, garage.bucket);
        Ok(Offsite { url: format!("s3://{}/bench", garage.bucket), garage, recipient })
    }
}

/// A file inside the database's container, removed when this goes out of scope: at the
/// end of the bench, and on the way out of a failed one (a `--keep` container outlives
/// the run, and a 1 GB bench's dump is hundreds of MB in its /tmp).
struct ContainerFile<'a> {
    sh: &'a Shell,
    db: &'a Database,
    path: &'static str,
}

impl Drop for ContainerFile<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.db.remove_container_file(self.sh, self.path) {
            warning!("could not remove {} in the database's container: {err:#}", self.path);
        }
    }
}

/// A bare restore into a new `target`: a drop, a create, then `load`, timed until its data
/// is durable (a CHECKPOINT after it), which bare psql and pg_restore would otherwise
/// leave to whatever runs next. It starts after a CHECKPOINT, as every run does.
fn bare_restore(sh: &Shell, db: &Database, target: &str, load: impl FnOnce() -> Result<()>) -> Result<Sample> {
    db.sql(sh, "CHECKPOINT")?;
    let started = Instant::now();
    let cpu = children_cpu_secs();
    db.drop_database(sh, target)?;
    db.create_database(sh, target)?;
    load()?;
    db.sql(sh, "CHECKPOINT")?;
    Ok(Sample { secs: started.elapsed().as_secs_f64(), cpu_secs: Some(children_cpu_secs() - cpu), ..Sample::default() })
}

/// The xtask runs see none of the caller's offsite settings: a row without `--offsite`
/// must not upload, and the offsite rows get only what they are given. Nor its
/// `HINDSIGHT_JOBS`: a default row must get the default.
fn clean(mut run: xshell::Cmd<'_>) -> xshell::Cmd<'_> {
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        let ours = ["HINDSIGHT_OFFSITE", "HINDSIGHT_AGE_", "HINDSIGHT_S3_", "HINDSIGHT_JOBS", "AWS_"];
        if ours.iter().any(|p| name.starts_with(p)) {
            run = run.env_remove(&key);
        }
    }
    run
}

/// One xtask run: its wall time, CPU, and memory (the peak its summary line reports,
/// and what `/proc` showed of it and its programs meanwhile); with `garage`, Garage's
/// CPU during it.
fn timed(run: xshell::Cmd<'_>, garage: Option<u32>) -> Result<Sample> {
    let run = clean(run);
    let garage_before = garage.and_then(process_cpu_secs);
    let cpu_before = children_cpu_secs();
    let started = Instant::now();
    let mut watch = None;
    let stderr = process::run_redirected_watched("xtask", run, Stdio::null(), Stdio::null(), |pid| {
        watch = Some(Watch::start(pid));
    });
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = children_cpu_secs() - cpu_before;
    let garage_cpu_secs = garage.and_then(process_cpu_secs).zip(garage_before).map(|(after, before)| after - before);
    let peaks = watch.map(Watch::finish).unwrap_or_default();
    let stderr = stderr?;
    let sessions = stderr.lines().find_map(parse_sessions);
    let reported = stderr.lines().rev().find_map(parse_peak_kib);
    let peak_kib = match (reported, peaks.own_kib) {
        (None, 0) => None,
        (reported, sampled) => Some(reported.unwrap_or(0).max(sampled)),
    };
    Ok(Sample {
        secs,
        bytes: None,
        peak_kib,
        programs_kib: peaks.programs_kib,
        cpu_secs: Some(cpu_secs),
        garage_cpu_secs,
        sessions,
    })
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces), as
/// numbers: index 0 is the state (field 3 of proc(5), read as 0), field N is index N - 3.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<u64> = rest.split_whitespace().map(|field| field.parse().unwrap_or(0)).collect();
    (fields.len() > 14).then_some(fields)
}

/// Clock ticks per second of `/proc`'s CPU times: Linux's USER_HZ, 100 on every
/// architecture it runs the xtask on.
const USER_HZ: f64 = 100.0;

/// CPU seconds of this process's children that have exited and been waited for, theirs
/// and their own children's (`cutime` + `cstime`).
fn children_cpu_secs() -> f64 {
    // cutime and cstime: fields 16 and 17.
    stat_fields("self").map_or(0.0, |f| (f[13] + f[14]) as f64 / USER_HZ)
}

/// CPU seconds a running process has spent so far (`utime` + `stime`).
fn process_cpu_secs(pid: u32) -> Option<f64> {
    // utime and stime: fields 14 and 15.
    stat_fields(&pid.to_string()).map(|f| (f[11] + f[12]) as f64 / USER_HZ)
}

/// Peak memory of a program and of what it runs.
#[derive(Default)]
struct Peaks {
    /// The program's own VmHWM, as last seen, in KiB.
    own_kib: u64,
    /// Its descendants' VmHWM, the highest by program name, in KiB.
    programs_kib: BTreeMap<String, u64>,
}

/// Samples a program's process tree from `/proc` every 20 ms until it is waited for.
/// VmHWM is each process's own high-water mark, so a sample misses only what a process
/// grows in its last 20 ms.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Peaks>,
}

impl Watch {
    fn start(pid: u32) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut peaks = Peaks::default();
            let mut own_name = String::new();
            while !stopped.load(Ordering::Relaxed) {
                for (i, process) in tree(pid).into_iter().enumerate() {
                    let Some((name, hwm)) = name_and_hwm(process) else { continue };
                    if i == 0 {
                        peaks.own_kib = peaks.own_kib.max(hwm);
                        own_name = name;
                    } else if name != own_name {
                        // (A child between its fork and its exec still has our name.)
                        let peak = peaks.programs_kib.entry(name).or_default();
                        *peak = (*peak).max(hwm);
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            peaks
        });
        Watch { stop, thread }
    }

    fn finish(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// `pid` and its descendants, parents first.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut next = 0;
    while next < all.len() {
        let parent = all[next];
        next += 1;
        let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else { continue };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(children.split_whitespace().filter_map(|child| child.parse::<u32>().ok()));
        }
    }
    all
}

/// A process's name and VmHWM in KiB, from `/proc/PID/status`.
fn name_and_hwm(pid: u32) -> Option<(String, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = |label: &str| status.lines().find_map(|line| line.strip_prefix(label)).map(str::trim);
    let name = value("Name:")?.to_owned();
    let hwm = value("VmHWM:")?.strip_suffix("kB")?.trim().parse().ok()?;
    Some((name, hwm))
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

/// `loading through 2 sessions` (or `1 session`) from a db-restore's output: the jobs it
/// chose.
fn parse_sessions(line: &str) -> Option<usize> {
    let rest = line.split("loading through ").nth(1)?;
    let (number, rest) = rest.split_once(' ')?;
    rest.starts_with("session").then(|| number.parse().ok()).flatten()
}

/// The rows' names, `{default}` and `{cpus}` filled in. The default is what the default
/// rows' runs said they chose, when they all said the same (`2 (default)`); else just
/// `default`.
fn names(samples: &[Vec<Sample>], cpus: usize) -> Vec<String> {
    let said: std::collections::BTreeSet<Option<usize>> =
        RESTORES.iter().filter(|r| !r.one_job).flat_map(|r| &samples[r.row]).map(|s| s.sessions).collect();
    let default = match said.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(jobs)] => format!("{jobs} (default)"),
        _ => "default".to_owned(),
    };
    ROWS.iter().map(|row| row.name.replace("{default}", &default).replace("{cpus}", &cpus.to_string())).collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// `age 9.1 MiB, docker 38.2 MiB`: each program's highest peak over the rounds.
fn programs_peak(samples: &[Sample]) -> BTreeMap<String, u64> {
    let mut peaks = BTreeMap::new();
    for sample in samples {
        for (name, kib) in &sample.programs_kib {
            let peak: &mut u64 = peaks.entry(name.clone()).or_default();
            *peak = (*peak).max(*kib);
        }
    }
    peaks
}

/// A CSV field as RFC 4180 has it: quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

fn report(samples: &[Vec<Sample>], names: &[String], db_bytes: u64, rounds: usize) -> (String, String) {
    let medians: Vec<f64> = samples.iter().map(|s| median(&mut s.iter().map(|s| s.secs).collect::<Vec<_>>())).collect();
    let median_of = |row: &[Sample], field: fn(&Sample) -> Option<f64>| {
        let mut values: Vec<f64> = row.iter().filter_map(field).collect();
        (!values.is_empty()).then(|| median(&mut values))
    };
    let mut md = format!(
        "Database: {} (pg_database_size), {rounds} rounds, medians. Backups are compared with the bare \
         pg_dump pipe, restores with the bare drop, create and `psql < file` (db-restore at `--jobs 1` and \
         at its default, the container's CPUs, and for reference `pg_restore -j` of a custom-format dump \
         of the same database, made once beforehand inside the container), and a backup with an offsite \
         copy (age-encrypted, uploaded to a Garage on loopback, which shares the machine) with the same \
         db-backup without one; every run starts after a CHECKPOINT, and restores are timed until a \
         CHECKPOINT has made their data durable. `× baseline` divides the medians; `round ratios` is the \
         median of each round's ratio to the baseline's run of the same round, which a machine that slows \
         down between rounds disturbs less. Peak RSS: the xtask's own (its summary line's VmHWM, or what \
         /proc showed, the larger), and each program it started, sampled from /proc every 20 ms.\n\n\
         | what | median s | × baseline | round ratios | baseline | output | peak RSS of the xtask | peak RSS of its programs |\n\
         | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |\n",
        human_bytes(db_bytes)
    );
    let mut cpu_md = "Where the time goes, medians in seconds: the wall time; the CPU of the programs on \
         this host (the xtask and what it started, age and the docker client among them; not pg_dump or \
         psql, which run in the container); and Garage's CPU during the run.\n\n\
         | what | wall s | CPU s, xtask and its programs | CPU s, Garage |\n\
         | --- | ---: | ---: | ---: |\n"
        .to_owned();
    let mut csv = "what,median_s,ratio_to_baseline,median_round_ratio,output_bytes,peak_rss_kib,all_s,baseline,\
         programs_peak_rss_kib,median_cpu_s,median_garage_cpu_s\n"
        .to_owned();
    for (i, row) in ROWS.iter().enumerate() {
        let (name, base) = (&names[i], row.baseline);
        let baseline = medians[base];
        let mut round_ratios: Vec<f64> =
            samples[i].iter().zip(&samples[base]).map(|(run, base)| run.secs / base.secs).collect();
        let round_ratio = median(&mut round_ratios);
        let bytes = samples[i].iter().filter_map(|s| s.bytes).max();
        let peak = samples[i].iter().filter_map(|s| s.peak_kib).max();
        let programs = programs_peak(&samples[i]);
        let all: Vec<String> = samples[i].iter().map(|s| format!("{:.2}", s.secs)).collect();
        let cpu = median_of(&samples[i], |s| s.cpu_secs);
        let garage_cpu = median_of(&samples[i], |s| s.garage_cpu_secs);
        let shown = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.2}"));
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.3} | {round_ratio:.3} | {} | {} | {} | {} |",
            medians[i],
            medians[i] / baseline,
            if base == i { "itself" } else { &names[base] },
            bytes.map_or("".to_owned(), human_bytes),
            peak.map_or("".to_owned(), |kib| human_bytes(kib * 1024)),
            programs
                .iter()
                .map(|(name, kib)| format!("{name} {}", human_bytes(kib * 1024)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(cpu_md, "| {name} | {:.2} | {} | {} |", medians[i], shown(cpu), shown(garage_cpu));
        let _ = writeln!(
            csv,
            "{},{:.3},{:.4},{round_ratio:.4},{},{},{},{},{},{},{}",
            csv_field(name),
            medians[i],
            medians[i] / baseline,
            bytes.map_or(String::new(), |b| b.to_string()),
            peak.map_or(String::new(), |k| k.to_string()),
            all.join(" "),
            csv_field(&names[base]),
            programs.iter().map(|(name, kib)| format!("{name}={kib}")).collect::<Vec<_>>().join(" "),
            shown(cpu),
            shown(garage_cpu),
        );
    }
    md.push('\n');
    md.push_str(&cpu_md);
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
    fn a_sleeping_child_is_watched_with_its_own_child() {
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 2 & wait"]).spawn().unwrap();
        let watch = Watch::start(child.id());
        thread::sleep(Duration::from_millis(300));
        let peaks = watch.finish();
        child.wait().unwrap();
        assert!(peaks.own_kib > 0, "sh's own VmHWM");
        assert!(peaks.programs_kib.get("sleep").is_some_and(|kib| *kib > 0), "{:?}", peaks.programs_kib);
    }

    #[test]
    fn cpu_of_a_child_that_has_exited_and_of_a_running_process() {
        let before = children_cpu_secs();
        // Half a second of user CPU, or more on a busy machine.
        let status = std::process::Command::new("sh")
            .args(["-c", "end=$(($(date +%s%N) + 500000000)); while [ $(date +%s%N) -lt $end ]; do :; done"])
            .status()
            .unwrap();
        assert!(status.success());
        let spent = children_cpu_secs() - before;
        assert!((0.1..30.0).contains(&spent), "{spent} s");

        let mut child = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        thread::sleep(Duration::from_millis(700));
        let running = process_cpu_secs(child.id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!((0.1..1.0).contains(&running), "{running} s");
    }

    #[test]
    fn every_row_is_reported_against_its_baseline() {
        let sample = |secs: f64| Sample { secs, cpu_secs: Some(secs / 2.0), ..Sample::default() };
        let mut samples: Vec<Vec<Sample>> = ROWS.iter().map(|_| vec![sample(10.0)]).collect();
        samples[BACKUP_NONE] = vec![sample(8.0)];
        samples[OFFSITE_NONE] = vec![Sample {
            secs: 10.0,
            bytes: Some(1 << 20),
            peak_kib: Some(20 * 1024),
            programs_kib: BTreeMap::from([("age".to_owned(), 9 * 1024), ("docker".to_owned(), 40 * 1024)]),
            cpu_secs: Some(3.0),
            garage_cpu_secs: Some(4.5),
            sessions: None,
        }];
        samples[PG_RESTORE] = vec![sample(5.0)];
        let (md, csv) = report(&samples, &names(&samples, 2), 1 << 30, 1);
        let row = md.lines().find(|l| l.starts_with("| db-backup none, age")).unwrap();
        assert!(
            row.contains(
                "| 10.00 | 1.250 | 1.250 | db-backup none | 1.0 MiB | 20.0 MiB | age 9.0 MiB, docker 40.0 MiB |"
            ),
            "{row}"
        );
        let row = md.lines().filter(|l| l.starts_with("| db-backup none, age")).nth(1).unwrap();
        assert_eq!(row, "| db-backup none, age-encrypted offsite to loopback Garage | 10.00 | 3.00 | 4.50 |");
        let row = csv.lines().find(|l| l.starts_with("\"db-backup none, age")).unwrap();
        assert!(
            row.starts_with("\"db-backup none, age-encrypted offsite to loopback Garage\",10.000,1.2500,"),
            "{row}"
        );
        assert!(row.ends_with(",db-backup none,age=9216 docker=40960,3.00,4.50"), "{row}");
        let row = csv.lines().find(|l| l.starts_with("\"bare drop")).unwrap();
        assert!(row.ends_with(",\"bare drop, create, psql < file\",,5.00,"), "{row}");
        let row = md.lines().find(|l| l.starts_with("| pg_restore")).unwrap();
        assert!(
            row.starts_with(
                "| pg_restore -j 2 (custom dump) | 5.00 | 0.500 | 0.500 | bare drop, create, psql < file |"
            )
        );
        assert!(md.contains("| db-restore (zstd) --jobs 1 | 10.00 | 1.000 |"), "{md}");
        assert!(md.contains("| db-restore (plain) --jobs default | 10.00 | 1.000 |"), "{md}");
        assert_eq!(csv.lines().count(), ROWS.len() + 1);
    }

    #[test]
    fn the_default_rows_are_named_after_the_jobs_they_chose() {
        let said = |sessions: Option<usize>| Sample { secs: 1.0, sessions, ..Sample::default() };
        let mut samples: Vec<Vec<Sample>> = ROWS.iter().map(|_| vec![said(None)]).collect();
        for restore in RESTORES.iter().filter(|r| !r.one_job) {
            samples[restore.row] = vec![said(Some(2)), said(Some(2))];
        }
        let named = names(&samples, 3);
        assert_eq!(named[BARE_LOAD + 3], "db-restore (plain) --jobs 2 (default)");
        assert_eq!(named[BARE_LOAD + 4], "db-restore (zstd) --jobs 2 (default)");
        assert_eq!(named[BARE_LOAD + 1], "db-restore (plain) --jobs 1");
        assert_eq!(named[PG_RESTORE], "pg_restore -j 3 (custom dump)");
        // Runs that said different things, or nothing: just `default`.
        samples[RETIRING] = vec![said(Some(1))];
        assert_eq!(names(&samples, 2)[BARE_LOAD + 4], "db-restore (zstd) --jobs default");
        samples[RETIRING] = vec![said(None)];
        assert_eq!(names(&samples, 2)[BARE_LOAD + 4], "db-restore (zstd) --jobs default");
    }

    #[test]
    fn sessions_from_a_restore_line() {
        let line = "[t] loading through 2 sessions; table data they cannot take yet waits in /b";
        assert_eq!(parse_sessions(line), Some(2));
        assert_eq!(parse_sessions("[t] loading through 1 session, in one transaction"), Some(1));
        assert_eq!(parse_sessions("[t] loading through the night"), None);
        assert_eq!(parse_sessions("[t] restore complete"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
