//! Offsite copies (issue 13) against a real S3 server: Garage on loopback (`garage`), the
//! real `age` CLI, the real test bed. db-backup uploads while it dumps and encrypts on the
//! way out; a fresh clone with a new volume and an empty backup directory restores from
//! the store; every failure of the store leaves the local backup complete (exit 6); a
//! wrong identity and a damaged object are refused before anything is swapped; dead
//! uploads are aborted by the next run; remote retention, db-offsite, db-list's location
//! and install-cron's line.
//!
//! What is offsite is read with the crate's own client (`xtask::offsite::s3::Store`),
//! which is not the code under test here: the tasks are, driven as a person drives them.
//! Nothing is mocked and nothing skips: without Docker, Garage or `age`, these fail.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use xtask::{
    offsite::{
        credentials::{Credentials, Source},
        s3::{Addressing, Config, Location, Store},
    },
    store::backup_file::{BackupName, Kind},
};

use crate::{
    garage::Garage,
    testbed::{
        Bed, Flavor, Run, alembic_dir, assert_sidecar_matches, fingerprint, migrated_with_data, program, python_json,
        uv_turn, wait_for,
    },
};

/// Where the backups go in each test's bucket: s3://BUCKET/db/.
const PREFIX: &str = "db";

/// The test's side of the store: how the xtask is pointed at it, and the crate's own client
/// to see what is there.
impl Garage {
    fn offsite_url(&self) -> String {
        format!("s3://{}/{PREFIX}", self.bucket)
    }

    /// The key, where the xtask reads it: the environment, never a flag.
    fn offsite_env(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", &self.access_key_id).env("AWS_SECRET_ACCESS_KEY", &self.secret_access_key);
    }

    /// `--offsite s3://BUCKET/db --s3-endpoint http://127.0.0.1:PORT --s3-region garage-test`.
    fn offsite_args(&self) -> Vec<String> {
        ["--offsite", &self.offsite_url(), "--s3-endpoint", &self.endpoint, "--s3-region", &self.region]
            .map(str::to_owned)
            .to_vec()
    }

    fn client(&self) -> Store {
        let config = Config {
            endpoint: Some(self.endpoint.clone()),
            region: self.region.clone(),
            location: Location::parse(&self.offsite_url()).unwrap(),
            addressing: Addressing::Path,
        };
        let key = Credentials::new(&self.access_key_id, &self.secret_access_key, None, Source::Environment);
        Store::new(config, key).unwrap()
    }

    /// The objects under the prefix, by name, sorted.
    fn objects(&self) -> Vec<String> {
        let mut names: Vec<String> = self.client().list_objects().unwrap().into_iter().map(|o| o.name).collect();
        names.sort();
        names
    }

    /// The incomplete multipart uploads under the prefix: (object, upload id).
    fn pending(&self) -> Vec<(String, String)> {
        self.client().list_multipart_uploads().unwrap().into_iter().map(|u| (u.name, u.upload_id)).collect()
    }

    fn get(&self, name: &str) -> Vec<u8> {
        use std::io::Read;
        let mut body = Vec::new();
        self.client().get_object(name).unwrap().read_to_end(&mut body).unwrap();
        body
    }

    fn put(&self, name: &str, body: &[u8]) {
        self.client().put_object(name, body).unwrap();
    }

    /// The backups that count as offsite (the object and its `.sha256`), sorted: their
    /// local names, without `.age`.
    fn offsite_backups(&self) -> Vec<String> {
        let objects = self.objects();
        let plain = |name: &str| name.strip_suffix(".age").unwrap_or(name).to_owned();
        let mut backups: Vec<String> = objects
            .iter()
            .map(|o| plain(o))
            .filter(|n| n.ends_with(".sql") && !n.ends_with(".roles.sql"))
            .filter(|n| objects.iter().any(|o| plain(o) == format!("{n}.sha256")))
            .collect();
        backups.sort();
        backups.dedup();
        backups
    }
}

/// A throwaway directory for one test's keys, downloads and clone.
struct Work {
    dir: PathBuf,
}

impl Work {
    fn new(name: &str) -> Work {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("offsite_{name}_{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Work { dir }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An age key made by `age-keygen`, as an operator makes one.
struct Key {
    file: PathBuf,
    recipient: String,
}

impl Key {
    fn file(&self) -> &str {
        self.file.to_str().unwrap()
    }
}

fn keygen(work: &Work, name: &str) -> Key {
    let file = work.dir.join(name);
    let out = program("age-keygen").arg("-o").arg(&file).output().unwrap();
    assert!(out.status.success(), "age-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let out = program("age-keygen").arg("-y").arg(&file).output().unwrap();
    assert!(out.status.success(), "age-keygen -y: {}", String::from_utf8_lossy(&out.stderr));
    Key { file, recipient: String::from_utf8(out.stdout).unwrap().trim().to_owned() }
}

/// `age -d -i KEY` on `bytes`, by hand: the standard tool opens what the xtask stored.
fn age_decrypt(work: &Work, key: &Key, bytes: &[u8]) -> Vec<u8> {
    let (input, output) = (work.dir.join("in.age"), work.dir.join("out.plain"));
    fs::write(&input, bytes).unwrap();
    let out = program("age").arg("-d").arg("-i").arg(&key.file).arg("-o").arg(&output).arg(&input).output().unwrap();
    assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
    let plain = fs::read(&output).unwrap();
    let _ = (fs::remove_file(&input), fs::remove_file(&output));
    plain
}

/// `age -r RECIPIENT` on `bytes`: an object made by someone else's tool.
fn age_encrypt(work: &Work, key: &Key, bytes: &[u8]) -> Vec<u8> {
    let (input, output) = (work.dir.join("in.plain"), work.dir.join("out.age"));
    fs::write(&input, bytes).unwrap();
    let out = program("age").arg("-r").arg(&key.recipient).arg("-o").arg(&output).arg(&input).output().unwrap();
    assert!(out.status.success(), "age -r: {}", String::from_utf8_lossy(&out.stderr));
    let sealed = fs::read(&output).unwrap();
    let _ = (fs::remove_file(&input), fs::remove_file(&output));
    sealed
}

/// `xtask ARGS --offsite ... --s3-endpoint ... --s3-region ...` in the bed's environment,
/// with the store's key in the environment (and the fixture's Alembic project, for
/// db-restore).
fn xtask(bed: &Bed, garage: &Garage, args: &[&str]) -> Command {
    let mut cmd = bed.xtask(args);
    cmd.args(garage.offsite_args());
    garage.offsite_env(&mut cmd);
    if args.first() == Some(&"db-restore") {
        cmd.env("HINDSIGHT_ALEMBIC_DIR", alembic_dir());
    }
    cmd
}

/// Runs `cmd` to its end; checks that no secret shows in anything it printed.
fn finish(cmd: &mut Command, garage: &Garage, secrets: &[&str]) -> Run {
    // db-restore runs uv in the shared fixture directory: one at a time.
    let _turn = cmd.get_args().next().is_some_and(|a| a == "db-restore").then(uv_turn);
    let run = Run::from(cmd.output().expect("the xtask binary runs"));
    assert_no_secret(&run, garage, secrets);
    run
}

fn assert_no_secret(run: &Run, garage: &Garage, secrets: &[&str]) {
    for secret in secrets.iter().copied().chain([garage.secret_access_key.as_str()]) {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "a secret is in the output:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    assert!(!run.stderr.contains("AGE-SECRET-KEY") && !run.stdout.contains("AGE-SECRET-KEY"), "{}", run.stderr);
}

fn task(bed: &Bed, garage: &Garage, args: &[&str]) -> Run {
    finish(&mut xtask(bed, garage, args), garage, &[])
}

fn task_ok(bed: &Bed, garage: &Garage, args: &[&str]) -> Run {
    let run = task(bed, garage, args);
    assert_eq!(run.code, Some(0), "xtask {args:?} failed:\n{}", run.stderr);
    run
}

/// Started, not waited for: stdout to nowhere, stderr kept.
fn spawn(bed: &Bed, garage: &Garage, args: &[&str]) -> Child {
    xtask(bed, garage, args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The local backups (not the prerestore dumps), oldest first.
fn local_backups(bed: &Bed) -> Vec<PathBuf> {
    let ours = |p: &PathBuf| BackupName::of_path(p).is_some_and(|n| n.kind == Kind::Backup);
    bed.backups().into_iter().filter(ours).collect()
}

fn backup_names(bed: &Bed) -> Vec<String> {
    local_backups(bed).iter().map(|p| file_name(p)).collect()
}

fn newest(bed: &Bed) -> PathBuf {
    local_backups(bed).pop().expect("a local backup")
}

/// The in-flight upload records in the backup directory.
fn records(bed: &Bed) -> Vec<PathBuf> {
    bed.files().into_iter().filter(|p| p.to_string_lossy().ends_with(".offsite-upload")).collect()
}

/// The run ended with exit 6 and an error that names the new local backup, says it is
/// complete and that its offsite copy failed; the backup matches its `.sha256`.
fn assert_local_good_offsite_failed(bed: &Bed, run: &Run, backups_before: usize) {
    assert_eq!(run.code, Some(6), "the local backup is good, its offsite copy is not:\n{}", run.stderr);
    assert_eq!(local_backups(bed).len(), backups_before + 1, "the local backup is kept: {:?}", bed.files());
    let backup = newest(bed);
    let error = run.last_line();
    assert!(error.contains("error: "), "{error}");
    assert!(
        error.contains(&file_name(&backup)) && error.contains("complete") && error.contains("offsite copy failed"),
        "says the local backup is complete and its offsite copy failed: {error}"
    );
    assert_sidecar_matches(&backup);
}

/// `db-list --offsite --json`: file name → location, for every backup listed.
fn locations(bed: &Bed, garage: &Garage) -> BTreeMap<String, String> {
    let run = task_ok(bed, garage, &["db-list", "--json"]);
    let rows = python_json(&run.stdout, "'\\n'.join(b['file'] + ' ' + b['location'] for b in d['backups'])");
    rows.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (file, location) = l.rsplit_once(' ').unwrap();
            (file.to_owned(), location.to_owned())
        })
        .collect()
}

/// Sorted `names`, as owned strings.
fn sorted(names: &[&String]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    names
}

/// A JSON list of strings, read by Python, sorted.
fn json_list(stdout: &str, key: &str) -> Vec<String> {
    let text = python_json(stdout, &format!("'\\n'.join(sorted(d['{key}']))"));
    text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
fn offsite_encrypted_copy_opens_with_age_and_a_fresh_clone_restores_it_on_a_new_volume() {
    let garage = Garage::start("offclone");
    let bed = migrated_with_data("offclone");
    let work = Work::new("clone");
    let key = keygen(&work, "ops.key");
    let other = keygen(&work, "other.key");
    let recipients = work.dir.join("recipients.txt");
    fs::write(&recipients, format!("# the second reader\n{}\n", other.recipient)).unwrap();
    let before = fingerprint(&bed);

    // No recipient and no --offsite-plaintext: a usage error before anything is dumped,
    // whether the store is named by a flag or by the environment.
    let run = task(&bed, &garage, &["db-backup"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--offsite-plaintext"), "the message names the way out: {}", run.stderr);
    let mut by_env = bed.xtask(&["db-backup"]);
    garage.offsite_env(&mut by_env);
    by_env.env("HINDSIGHT_OFFSITE", garage.offsite_url()).env("AWS_ENDPOINT_URL", &garage.endpoint);
    let run = finish(by_env.env("AWS_REGION", &garage.region), &garage, &[]);
    assert_eq!(run.code, Some(2), "HINDSIGHT_OFFSITE set, no recipient: {}", run.stderr);
    let written: Vec<PathBuf> =
        bed.files().into_iter().filter(|p| file_name(p).starts_with("hindsight_db_backup_")).collect();
    assert!(written.is_empty(), "nothing was dumped: {written:?}");
    assert!(garage.objects().is_empty(), "nothing was sent: {:?}", garage.objects());

    // Encrypted on the way out, to public keys only: one a flag, one in a recipients file.
    let file = recipients.to_str().unwrap();
    task_ok(&bed, &garage, &["db-backup", "--encrypt-to", &key.recipient, "--encrypt-to-file", file]);
    let local = newest(&bed);
    let name = file_name(&local);
    let roles = local.with_file_name(format!("{name}.roles.sql"));
    let sidecar = local.with_file_name(format!("{name}.sha256"));
    let mut expected = vec![format!("{name}.age"), format!("{name}.sha256.age")];
    if roles.exists() {
        expected.push(format!("{name}.roles.sql.age"));
    }
    expected.sort();
    assert_eq!(garage.objects(), expected, "the backup and its sidecars, encrypted, nothing in the clear");
    let sealed = garage.get(&format!("{name}.age"));
    assert!(!sealed.windows(19).any(|w| w == b"PostgreSQL database"), "no plaintext in the object");
    for reader in [&key, &other] {
        assert!(age_decrypt(&work, reader, &sealed) == fs::read(&local).unwrap(), "age -d gives the local file");
    }
    let sum = age_decrypt(&work, &key, &garage.get(&format!("{name}.sha256.age")));
    assert_eq!(String::from_utf8(sum).unwrap(), fs::read_to_string(&sidecar).unwrap(), "the local sidecar's text");
    if roles.exists() {
        let text = age_decrypt(&work, &key, &garage.get(&format!("{name}.roles.sql.age")));
        assert!(text == fs::read(&roles).unwrap(), "the roles file");
    }
    assert!(records(&bed).is_empty() && garage.pending().is_empty(), "no upload left in flight");

    // db-verify of the offsite copy: into a scratch database, and no record written.
    let run = task_ok(&bed, &garage, &["db-verify", "--from", "offsite", "latest", "--identity", key.file()]);
    assert!(run.stderr.contains(&name), "verifies that backup: {}", run.stderr);
    let verified: Vec<PathBuf> = bed.files().into_iter().filter(|p| file_name(p).ends_with(".verified")).collect();
    assert!(verified.is_empty(), "no .verified record for an offsite copy: {verified:?}");
    assert!(bed.scratch_databases().is_empty());

    // The scenario that matters: a new machine with a clone of the repository, a new
    // Compose project and volume, an empty backup directory.
    let clone = work.dir.join("clone");
    let root = crate::testbed::repo_root();
    let head = Command::new("git").arg("-C").arg(&root).args(["rev-parse", "HEAD"]).output().unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
    let cloned = Command::new("git").args(["clone", "--quiet", "--no-checkout"]).arg(&root).arg(&clone).status();
    assert!(cloned.unwrap().success(), "git clone");
    let checkout = Command::new("git").arg("-C").arg(&clone).args(["checkout", "--quiet", "--detach", &head]).status();
    assert!(checkout.unwrap().success(), "git checkout {head}");
    let fresh = Bed::new("offfresh", Flavor::V2);
    let in_clone = |args: &[&str]| {
        let mut cmd = fresh.xtask(args);
        cmd.current_dir(&clone)
            .env("CARGO_MANIFEST_DIR", clone.join("xtask"))
            .env_remove("HINDSIGHT_BACKUP_DIR")
            .env("HINDSIGHT_ALEMBIC_DIR", clone.join("xtask/tests/fixtures/alembic"))
            .args(garage.offsite_args());
        garage.offsite_env(&mut cmd);
        cmd
    };
    let run = finish(&mut in_clone(&["db-list", "--json"]), &garage, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        python_json(&run.stdout, "[(b['file'], b['location']) for b in d['backups']]"),
        format!("[('{name}', 'offsite')]"),
        "the clone sees the copy, offsite only"
    );
    let restore = ["db-restore", "--from", "offsite", "latest", "--yes", "--identity", key.file()];
    let run = finish(&mut in_clone(&restore), &garage, &[]);
    assert_eq!(run.code, Some(0), "the fresh clone restores from the store:\n{}", run.stderr);
    assert!(run.last_line().contains("restore complete"), "{}", run.last_line());
    let after = fingerprint(&fresh);
    assert_eq!(after.1, before.1, "values, sequences and revision");
    assert!(after.0 == before.0, "pg_dump sees a different database after the restore from the store");
    assert!(fresh.scratch_databases().is_empty());
    let data = clone.join("hindsight_db_backups/data");
    let copies: Vec<String> = fs::read_dir(&data)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!copies.iter().any(|f| f.starts_with(&name)), "no full copy of the backup on the disk: {copies:?}");
}

#[test]
fn offsite_wrong_identity_and_damaged_objects_fail_before_anything_is_swapped() {
    let garage = Garage::start("offdamage");
    let bed = migrated_with_data("offdamage");
    let work = Work::new("damage");
    let key = keygen(&work, "right.key");
    let wrong = keygen(&work, "wrong.key");
    task_ok(&bed, &garage, &["db-backup", "--encrypt-to", &key.recipient]);
    let local = newest(&bed);
    let object = format!("{}.age", file_name(&local));
    // The live database differs from the backup: a swap would show.
    bed.psql("DELETE FROM memories WHERE id > 1000");
    let before = (fingerprint(&bed), bed.databases());
    let unchanged = |what: &str, run: &Run| {
        assert!(bed.scratch_databases().is_empty(), "{what}: a scratch database is left:\n{}", run.stderr);
        let now = (fingerprint(&bed), bed.databases());
        assert!(now == before, "{what}: the live database or the list of databases changed:\n{}", run.stderr);
    };

    // An encrypted object and no identity: said so.
    let run = task(&bed, &garage, &["db-restore", "--from", "offsite", "latest", "--yes"]);
    assert!(matches!(run.code, Some(1 | 2)), "{:?}: {}", run.code, run.stderr);
    assert!(run.last_line().contains("identity"), "{}", run.last_line());
    unchanged("no identity", &run);

    // The wrong identity: exit 1 before any scratch database.
    for name in ["db-restore", "db-verify"] {
        let mut args = vec![name, "--from", "offsite", "latest", "--identity", wrong.file()];
        if name == "db-restore" {
            args.push("--yes");
        }
        let run = task(&bed, &garage, &args);
        assert_eq!(run.code, Some(1), "{name}: {}", run.stderr);
        // db-verify's last line is its summary: the identity is in the failure above it.
        let error = if name == "db-verify" { run.stderr.as_str() } else { run.last_line() };
        assert!(error.contains("identity"), "{name}: the message says the identity: {}", run.stderr);
        unchanged(name, &run);
    }

    let good = garage.get(&object);
    let plain = age_decrypt(&work, &key, &good);
    let at = plain.windows(8).position(|w| w == b"row 2500").expect("the dump has row 2500");
    let mut altered = plain.clone();
    altered[at] = b'R';
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    let damaged: [(&str, Vec<u8>); 4] = [
        ("the object cut in half", good[..good.len() / 2].to_vec()),
        ("half the dump, encrypted whole", age_encrypt(&work, &key, &plain[..plain.len() / 2])),
        ("one byte of the dump altered, encrypted whole", age_encrypt(&work, &key, &altered)),
        ("one byte of the object altered", flipped),
    ];
    for (what, bytes) in &damaged {
        garage.put(&object, bytes);
        let run =
            task(&bed, &garage, &["db-restore", "--from", "offsite", "latest", "--yes", "--identity", key.file()]);
        assert_eq!(run.code, Some(1), "{what}: {}", run.stderr);
        let error = run.last_line();
        assert!(
            error.contains("does not match its checksum") || error.contains("truncated or damaged"),
            "{what}: fails the checksum: {error}"
        );
        unchanged(what, &run);
    }
    // db-verify of a damaged copy fails the same way, and records nothing.
    let run = task(&bed, &garage, &["db-verify", "--from", "offsite", "latest", "--identity", key.file()]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    unchanged("db-verify of a damaged copy", &run);

    // The good object back: the same verification passes, so the refusals were the damage's.
    garage.put(&object, &good);
    let mut cmd = xtask(&bed, &garage, &["db-verify", "--from", "offsite", "latest"]);
    let run = finish(cmd.env("HINDSIGHT_AGE_IDENTITY", &key.file), &garage, &[]);
    assert_eq!(run.code, Some(0), "the identity from HINDSIGHT_AGE_IDENTITY: {}", run.stderr);
    assert!(bed.files().iter().all(|p| !file_name(p).ends_with(".verified")), "no record for an offsite copy");
    unchanged("db-verify of the good copy", &run);
}

#[test]
fn offsite_store_outage_keeps_every_local_backup_and_the_next_runs_catch_up() {
    let mut garage = Garage::start("offoutage");
    let bed = migrated_with_data("offoutage");
    let work = Work::new("outage");
    let key = keygen(&work, "ops.key");
    let backup = ["db-backup", "--encrypt-to", &key.recipient];
    task_ok(&bed, &garage, &backup);

    garage.kill();
    for _ in 0..2 {
        let count = local_backups(&bed).len();
        let run = task(&bed, &garage, &backup);
        assert_local_good_offsite_failed(&bed, &run, count);
        let error = run.last_line().to_lowercase();
        assert!(
            error.contains("unreachable") || error.contains("cannot reach") || error.contains("refused"),
            "says the store cannot be reached: {error}"
        );
    }
    // A recipients file gone missing is the copy's failure too, never the backup's.
    let count = local_backups(&bed).len();
    let gone = work.dir.join("no-such-recipients.txt");
    let run = task(&bed, &garage, &["db-backup", "--encrypt-to-file", gone.to_str().unwrap()]);
    assert_local_good_offsite_failed(&bed, &run, count);
    assert!(run.last_line().contains("no-such-recipients.txt"), "names the file: {}", run.last_line());
    // The local backups stay in sight while the store is down.
    let run = task(&bed, &garage, &["db-list"]);
    assert_eq!(run.code, Some(0), "db-list with the store down: {}", run.stderr);
    assert!(run.stderr.contains("cannot list the offsite copies"), "{}", run.stderr);
    assert_eq!(run.stdout.matches("hindsight_db_backup_").count(), 4, "{}", run.stdout);
    let names = backup_names(&bed);
    assert_eq!(names.len(), 4);
    // db-status: a WARNING (1), for the last run's exit 6 and the store it cannot list.
    let status = task(&bed, &garage, &["db-status", "--max-verify-age", "0"]);
    assert_eq!(status.code, Some(1), "{}", status.stdout);
    let first = status.stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("WARNING: hindsight_db: the last run's offsite copy failed"), "{first}");
    assert!(first.contains("cannot list the offsite copies"), "{first}");

    // Back up: the next run uploads its own backup, then catches up newest first, at most
    // --offsite-catch-up of them; the run after that the rest.
    garage.restart();
    // The recipient from the environment this time.
    let mut cmd = xtask(&bed, &garage, &["db-backup", "--offsite-catch-up", "1"]);
    let run = finish(cmd.env("HINDSIGHT_AGE_RECIPIENTS", &key.recipient), &garage, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let names = backup_names(&bed);
    assert_eq!(names.len(), 5);
    assert_eq!(
        garage.offsite_backups(),
        sorted(&[&names[0], &names[3], &names[4]]),
        "the new one, and the newest missing one"
    );
    task_ok(&bed, &garage, &backup);
    let names = backup_names(&bed);
    assert_eq!(garage.offsite_backups(), names, "every local backup is offsite again");
    let status = task(&bed, &garage, &["db-status", "--max-verify-age", "0"]);
    assert_eq!(status.code, Some(0), "{}", status.stdout);
    assert!(status.stdout.contains("offsite copy of the newest backup"), "{}", status.stdout);
    for name in &names {
        let path = bed.backup_dir.join(name);
        assert_sidecar_matches(&path);
        let sum = age_decrypt(&work, &key, &garage.get(&format!("{name}.sha256.age")));
        assert_eq!(String::from_utf8(sum).unwrap(), fs::read_to_string(format!("{}.sha256", path.display())).unwrap());
    }
    let caught_up = &names[1];
    let sealed = garage.get(&format!("{caught_up}.age"));
    assert!(
        age_decrypt(&work, &key, &sealed) == fs::read(bed.backup_dir.join(caught_up)).unwrap(),
        "a caught-up copy is the local file"
    );
    assert!(records(&bed).is_empty() && garage.pending().is_empty(), "no upload left in flight");
}

#[test]
fn offsite_wrong_credentials_a_missing_bucket_and_a_quota_exit_6_with_the_local_backup_complete() {
    let garage = Garage::start("offrefuse");
    let bed = migrated_with_data("offrefuse");
    let backup = ["db-backup", "--offsite-plaintext"];

    // A wrong secret, and a key id the store does not know.
    let wrong_secret: String = garage.secret_access_key.chars().rev().collect();
    let unknown_id = format!("GK{}", "0".repeat(24));
    for (id, secret) in
        [(garage.access_key_id.as_str(), wrong_secret.as_str()), (&unknown_id, &garage.secret_access_key)]
    {
        let count = local_backups(&bed).len();
        let mut cmd = xtask(&bed, &garage, &backup);
        cmd.env("AWS_ACCESS_KEY_ID", id).env("AWS_SECRET_ACCESS_KEY", secret);
        let run = finish(&mut cmd, &garage, &[&wrong_secret]);
        assert_local_good_offsite_failed(&bed, &run, count);
        assert!(run.last_line().contains("credentials"), "says the credentials are wrong: {}", run.last_line());
    }

    // No credentials at all: said where they are looked for.
    let count = local_backups(&bed).len();
    let mut cmd = xtask(&bed, &garage, &backup);
    cmd.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").env("HOME", &bed.backup_dir);
    let run = finish(&mut cmd, &garage, &[]);
    assert_local_good_offsite_failed(&bed, &run, count);
    assert!(run.last_line().contains("AWS_ACCESS_KEY_ID"), "says where to put the key: {}", run.last_line());

    // A bucket that is not there: named.
    let count = local_backups(&bed).len();
    let mut cmd = bed.xtask(&backup);
    cmd.args(["--offsite", "s3://hindsight-no-such-bucket/db", "--s3-endpoint", &garage.endpoint]);
    garage.offsite_env(cmd.args(["--s3-region", &garage.region]));
    let run = finish(&mut cmd, &garage, &[]);
    assert_local_good_offsite_failed(&bed, &run, count);
    assert!(run.last_line().contains("hindsight-no-such-bucket"), "names the bucket: {}", run.last_line());
    assert!(garage.objects().is_empty(), "{:?}", garage.objects());

    // A quota smaller than the dump (several MiB): the store refuses the size.
    garage.set_quota(1024 * 1024);
    let count = local_backups(&bed).len();
    let run = task(&bed, &garage, &backup);
    assert_local_good_offsite_failed(&bed, &run, count);
    assert!(run.last_line().to_lowercase().contains("quota"), "says the quota: {}", run.last_line());
    assert!(garage.offsite_backups().is_empty(), "no copy counts as offsite: {:?}", garage.objects());
    assert!(garage.pending().is_empty(), "the refused upload is aborted: {:?}", garage.pending());

    // The quota lifted: db-offsite uploads every backup the failures left behind.
    garage.garage_ok(&["bucket", "set-quotas", &garage.bucket, "--max-size", "none"]);
    let run = task_ok(&bed, &garage, &["db-offsite", "--offsite-plaintext", "--json"]);
    let names = backup_names(&bed);
    assert_eq!(names.len(), 5);
    assert_eq!(json_list(&run.stdout, "uploaded"), names, "{}", run.stdout);
    assert_eq!(garage.offsite_backups(), names);
    assert!(records(&bed).is_empty(), "no upload record is left: {:?}", records(&bed));
}

/// A database whose dump takes seconds and many parts: an upload can be caught midway.
fn big_bed(name: &str) -> Bed {
    let bed = Bed::new(name, Flavor::V2);
    bed.start();
    bed.psql("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 4) AS body FROM generate_series(1, 2000000) g;");
    bed
}

/// Waits until the run has its upload record, a multipart upload is open at the store,
/// and the dump is past `bytes`: the upload is under way. Returns the upload's id.
fn wait_for_upload(bed: &Bed, garage: &Garage, bytes: u64) -> String {
    let id =
        wait_for("an upload in flight (its record, the store's upload, the dump past the first parts)", 90, || {
            let grown = bed.files().iter().any(|p| {
                p.to_string_lossy().ends_with(".sql.partial") && fs::metadata(p).is_ok_and(|m| m.len() >= bytes)
            });
            let pending = garage.pending();
            (grown && !records(bed).is_empty() && pending.len() == 1).then(|| pending[0].1.clone())
        });
    let record = &records(bed)[0];
    let text = fs::read_to_string(record).unwrap();
    assert!(text.contains(&id), "the record holds the upload id {id}: {text}");
    assert!(text.contains(&garage.bucket), "and the store's URL: {text}");
    assert_eq!(fs::metadata(record).unwrap().permissions().mode() & 0o777, 0o600, "the record is private");
    id
}

#[test]
fn offsite_uploads_cut_by_a_dead_store_or_a_killed_run_are_aborted_by_the_next_run() {
    let mut garage = Garage::start("offcut");
    let bed = big_bed("offcut");
    let work = Work::new("cut");
    let key = keygen(&work, "ops.key");
    let backup = ["db-backup", "--encrypt-to", &key.recipient];

    // The store killed in the middle of the upload.
    let child = spawn(&bed, &garage, &backup);
    let dead_store = wait_for_upload(&bed, &garage, 32 << 20);
    garage.kill();
    let run = Run::from(child.wait_with_output().unwrap());
    assert_no_secret(&run, &garage, &[]);
    assert_local_good_offsite_failed(&bed, &run, 0);
    let error = run.last_line().to_lowercase();
    assert!(
        error.contains("cannot reach the store") || error.contains("stopped answering"),
        "says the store went away, not some pipe's error: {error}"
    );
    let cut = file_name(&newest(&bed));

    // Back up: the next run (db-offsite here) aborts the dead upload, removes its record,
    // and uploads the backup.
    garage.restart();
    assert!(garage.objects().is_empty(), "the cut upload left no visible object: {:?}", garage.objects());
    let run = task_ok(&bed, &garage, &["db-offsite", "--encrypt-to", &key.recipient, "--json"]);
    assert_eq!(json_list(&run.stdout, "aborted"), [dead_store], "{}", run.stdout);
    // `uploaded` names the objects (the README's table), `removed` the backups.
    assert_eq!(json_list(&run.stdout, "uploaded"), [format!("{cut}.age")], "{}", run.stdout);
    assert!(garage.pending().is_empty(), "no incomplete upload left: {:?}", garage.pending());
    assert!(records(&bed).is_empty(), "the record is gone: {:?}", records(&bed));
    assert_eq!(garage.offsite_backups(), [cut.as_str()]);

    // The xtask itself killed (SIGKILL: no cleanup of its own) in the middle of an upload.
    let mut child = spawn(&bed, &garage, &backup);
    let killed = wait_for_upload(&bed, &garage, 32 << 20);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(garage.pending().iter().map(|p| &p.1).collect::<Vec<_>>(), [&killed], "the dead run's upload is open");
    assert_eq!(records(&bed).len(), 1, "and recorded");
    let objects = garage.objects();
    assert!(objects.iter().all(|o| o.starts_with(&cut)), "no object of the killed run is visible: {objects:?}");

    // The next db-backup aborts it, and leaves nothing in flight.
    task_ok(&bed, &garage, &backup);
    assert!(garage.pending().is_empty(), "no incomplete upload left: {:?}", garage.pending());
    assert!(records(&bed).is_empty(), "the record is gone: {:?}", records(&bed));
    let names = backup_names(&bed);
    assert_eq!(names.len(), 2, "the cut run's backup and the last one: {names:?}");
    assert_eq!(garage.offsite_backups(), names);
    assert_sidecar_matches(&newest(&bed));
}

#[test]
fn offsite_db_offsite_uploads_what_is_missing_and_remote_retention_keeps_the_newest() {
    let garage = Garage::start("offsync");
    let bed = migrated_with_data("offsync");
    let before = fingerprint(&bed);
    for _ in 0..3 {
        bed.run_ok(&["db-backup"]);
    }
    let names = backup_names(&bed);
    assert_eq!(names.len(), 3);
    let all = |location: &str, names: &[String]| -> BTreeMap<String, String> {
        names.iter().map(|n| (n.clone(), location.to_owned())).collect()
    };
    assert_eq!(locations(&bed, &garage), all("local", &names), "nothing offsite yet");

    // The sync on demand: every missing backup, in the clear when asked to.
    let run = task(&bed, &garage, &["db-offsite", "--json"]);
    assert_eq!(run.code, Some(2), "no recipient and no --offsite-plaintext: {}", run.stderr);
    let run = task_ok(&bed, &garage, &["db-offsite", "--offsite-plaintext", "--json"]);
    assert_eq!(python_json(&run.stdout, "d['ok']"), "True", "{}", run.stdout);
    assert_eq!(json_list(&run.stdout, "uploaded"), names, "{}", run.stdout);
    assert!(json_list(&run.stdout, "removed").is_empty() && json_list(&run.stdout, "aborted").is_empty());
    assert_eq!(garage.offsite_backups(), names);
    for name in &names {
        let path = bed.backup_dir.join(name);
        assert!(garage.get(name) == fs::read(&path).unwrap(), "{name}: the object is the local file");
        assert_eq!(garage.get(&format!("{name}.sha256")), fs::read(format!("{}.sha256", path.display())).unwrap());
    }
    assert_eq!(locations(&bed, &garage), all("both", &names));
    // The key from a profile of a shared credentials file this time, as a cron job finds it.
    let credentials = bed.backup_dir.with_extension("credentials");
    let (id, secret) = (&garage.access_key_id, &garage.secret_access_key);
    fs::write(&credentials, format!("[backup]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n")).unwrap();
    let mut cmd = xtask(&bed, &garage, &["db-offsite", "--offsite-plaintext", "--json"]);
    cmd.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY");
    cmd.env("AWS_SHARED_CREDENTIALS_FILE", &credentials).env("AWS_PROFILE", "backup");
    let run = finish(&mut cmd, &garage, &[]);
    let _ = fs::remove_file(&credentials);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(json_list(&run.stdout, "uploaded").is_empty(), "nothing left to upload: {}", run.stdout);
    // A reference counts over the offsite list; a plain copy needs no identity.
    let run = task_ok(&bed, &garage, &["db-verify", "--from", "offsite", "latest~1", "--json"]);
    let verified = python_json(&run.stdout, "d['backups'][0]['path']");
    assert!(verified.ends_with(&format!("/{}", names[1])), "latest~1 is the middle one: {verified}");

    // One gone from the disk: offsite only, and db-restore reads it from there, saying so.
    for file in bed.files().into_iter().filter(|p| file_name(p).starts_with(&names[0])) {
        fs::remove_file(file).unwrap();
    }
    let mut expected = all("both", &names);
    expected.insert(names[0].clone(), "offsite".to_owned());
    assert_eq!(locations(&bed, &garage), expected);
    let table = task_ok(&bed, &garage, &["db-list"]).stdout;
    let header = table.lines().find(|l| l.contains("file")).unwrap_or_else(|| panic!("a header:\n{table}"));
    assert!(header.to_lowercase().split_whitespace().any(|w| w == "location"), "a Location column:\n{table}");
    let row = table.lines().find(|l| l.contains(&names[0])).unwrap_or_else(|| panic!("listed:\n{table}"));
    assert!(row.contains("offsite"), "{row}");
    bed.psql("DELETE FROM memories WHERE id > 1000");
    let run = task(&bed, &garage, &["db-restore", &names[0], "--yes"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("offsite"), "a notice that it reads the offsite copy: {}", run.stderr);
    assert_eq!(fingerprint(&bed), before, "the offsite copy restored");

    // Remote retention: at most 2 offsite after the next backup, the newest kept; the local
    // backups follow their own rule.
    task_ok(&bed, &garage, &["db-backup", "--offsite-plaintext", "--offsite-max-backups", "2"]);
    let local = backup_names(&bed);
    assert_eq!(local.len(), 3, "local retention is its own: {local:?}");
    let newest = local[2].clone();
    assert_eq!(garage.offsite_backups(), [local[1].clone(), newest.clone()], "exactly the 2 newest offsite");
    let mut expected = all("both", &local[1..]);
    expected.insert(local[0].clone(), "local".to_owned());
    assert_eq!(locations(&bed, &garage), expected);
    let run = task_ok(&bed, &garage, &["db-offsite", "--offsite-plaintext", "--offsite-max-backups", "1", "--json"]);
    assert_eq!(json_list(&run.stdout, "removed"), [local[1].clone()], "{}", run.stdout);
    assert_eq!(garage.offsite_backups(), [newest], "the newest copy is never removed");
    assert_eq!(backup_names(&bed), local, "remote retention removes nothing on the disk");
}

#[test]
fn offsite_install_cron_carries_the_offsite_settings_and_no_credential() {
    let bed = Bed::new("offcron", Flavor::V2);
    let work = Work::new("cron");
    let recipients = work.dir.join("recipients.txt");
    let (id, secret, token) = ("GKcronkeyid0000000000000", "cron-secret-never-in-the-line", "cron-session-token");
    let cron = |extra: &[&str]| {
        let mut cmd = bed.xtask(&[&["install-cron", "--print"], extra].concat());
        cmd.env("AWS_ACCESS_KEY_ID", id).env("AWS_SECRET_ACCESS_KEY", secret).env("AWS_SESSION_TOKEN", token);
        let run = Run::from(cmd.output().unwrap());
        assert_eq!(run.code, Some(0), "{extra:?}: {}", run.stderr);
        for credential in [id, secret, token] {
            assert!(
                !run.stdout.contains(credential) && !run.stderr.contains(credential),
                "{credential} shown:\n{}",
                run.stdout
            );
        }
        run.stdout.lines().nth(1).unwrap_or_else(|| panic!("an entry:\n{}", run.stdout)).to_owned()
    };
    // `s3://b/p` is written `s3://b/p/` once read: the same place.
    let has = |job: &str, flag: &str, value: &str| {
        [value.to_owned(), format!("{value}/")]
            .iter()
            .any(|value| job.contains(&format!("'{flag}' '{value}'")) || job.contains(&format!("'{flag}={value}'")))
    };

    fs::write(&recipients, format!("# the offsite readers\n{}\n", keygen(&work, "other.key").recipient)).unwrap();
    let key = keygen(&work, "ops.key");
    let recipient = key.recipient.as_str();
    let job = cron(&[
        "--offsite",
        "s3://backups/hindsight",
        "--s3-endpoint",
        "http://127.0.0.1:3900",
        "--s3-region",
        "garage-test",
        "--s3-addressing",
        "path",
        "--encrypt-to",
        recipient,
        "--encrypt-to-file",
        recipients.to_str().unwrap(),
        "--offsite-max-backups",
        "7",
        "--offsite-keep-daily",
        "5",
        "--offsite-catch-up",
        "2",
    ]);
    for (flag, value) in [
        ("--offsite", "s3://backups/hindsight"),
        ("--s3-endpoint", "http://127.0.0.1:3900"),
        ("--s3-region", "garage-test"),
        ("--s3-addressing", "path"),
        ("--encrypt-to", recipient),
        ("--encrypt-to-file", recipients.to_str().unwrap()),
        ("--offsite-max-backups", "7"),
        ("--offsite-keep-daily", "5"),
        ("--offsite-catch-up", "2"),
    ] {
        assert!(has(&job, flag, value), "the job carries {flag} {value}: {job}");
    }
    for variable in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        assert!(!job.contains(variable), "no credential variable in the line: {job}");
    }

    // From the environment, and in the clear when asked.
    let mut cmd = bed.xtask(&["install-cron", "--print", "--offsite-plaintext"]);
    cmd.env("HINDSIGHT_OFFSITE", "s3://backups/env").env("AWS_SECRET_ACCESS_KEY", secret).env("AWS_ACCESS_KEY_ID", id);
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let job = run.stdout.lines().nth(1).unwrap().to_owned();
    assert!(has(&job, "--offsite", "s3://backups/env") && job.contains("'--offsite-plaintext'"), "{job}");
    assert!(!job.contains(secret) && !job.contains(id), "{job}");

    // An offsite job that would fail every hour is refused now.
    let run = Run::from(bed.xtask(&["install-cron", "--print", "--offsite", "s3://backups/x"]).output().unwrap());
    assert_eq!(run.code, Some(2), "no recipient and no --offsite-plaintext: {}", run.stderr);
}
