//! The offsite copies of one database's backups, as the tasks see them: which objects make
//! a copy, the listing, uploads (streamed while the dump is written, or from a finished
//! file), the records that let a later run abort what a killed one left, remote
//! retention, and reading a copy back.
//!
//! A backup `NAME` is stored as `NAME.age` (encrypted with age on this host) or `NAME`
//! (with `--offsite-plaintext`), and beside it `NAME.roles.sql[.age]` where it has roles
//! and last `NAME.sha256[.age]`, the local sidecar as it is: the checksum of the
//! unencrypted file, which is what a restore compares. A copy counts only once its
//! `.sha256` object exists; the object itself appears only when its multipart upload
//! completes, after the local checks.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result, anyhow, bail};
use xshell::Shell;

use crate::{
    cli::{OffsiteArgs, ReadArgs, S3Addressing, UploadArgs},
    db::load::FileFault,
    exit::{Code, Coded},
    offsite::{
        credentials::Credentials,
        s3::{self, Addressing, Class, Config, Store},
        upload::Upload,
    },
    output::{detail, human_bytes, step, warning},
    store::{
        backup_dir::{self, BackupDir},
        backup_file::{self, Backup, BackupName, Compression, Kind, SHA256_SUFFIX},
        catalogue::{self, Candidate, Origin, Reference},
        retention::{self, Policy},
        roles::ROLES_SUFFIX,
    },
    stream::{
        codec::Hashing,
        crypt::{Decrypting, Encrypting, Identities, Recipients},
    },
};

/// The ending of an encrypted copy's objects.
pub const AGE_SUFFIX: &str = ".age";
/// Beside a backup while its upload is in flight: the store, the object and the upload's id.
pub const RECORD_SUFFIX: &str = ".offsite-upload";
/// What a copy is read and written through: large enough that a syscall moves a lot.
const BUF: usize = 1024 * 1024;

/// One store location, with what is needed to write to it (the recipients) when writing.
pub struct Offsite {
    store: Store,
    /// `None`: plaintext copies (`--offsite-plaintext`), or a store only read from.
    recipients: Option<Recipients>,
}

/// A complete offsite copy: its object and its `.sha256` object exist.
#[derive(Debug, Clone)]
pub struct RemoteBackup {
    pub name: BackupName,
    /// The local file name it is a copy of.
    pub file_name: String,
    /// The object holding the backup (`NAME.age` or `NAME`).
    pub object: String,
    pub encrypted: bool,
    /// As stored (encrypted, when it is).
    pub size: u64,
}

impl RemoteBackup {
    /// The object of the file beside it with `suffix` (`.sha256`, `.roles.sql`).
    fn beside(&self, suffix: &str) -> String {
        let age = if self.encrypted { AGE_SUFFIX } else { "" };
        format!("{}{suffix}{age}", self.file_name)
    }

    /// As a `Backup` of a listing, for retention and the references (`latest`, a number,
    /// a time): its path is its file name.
    pub fn as_backup(&self) -> Backup {
        Backup { path: PathBuf::from(&self.file_name), name: self.name.clone(), size: self.size, complete: true }
    }
}

/// Why the settings cannot work, found before anything is written: a usage error.
fn usage(message: String) -> anyhow::Error {
    Coded { code: Code::Usage, message }.into()
}

/// The location's connection, or `None` without --offsite.
fn config(args: &OffsiteArgs) -> Option<Config> {
    let location = args.offsite.clone()?;
    let addressing = match (args.s3_addressing, &args.s3_endpoint) {
        (S3Addressing::Path, _) | (S3Addressing::Auto, Some(_)) => Addressing::Path,
        (S3Addressing::Virtual, _) | (S3Addressing::Auto, None) => Addressing::VirtualHost,
    };
    Some(Config { endpoint: args.s3_endpoint.clone(), region: args.s3_region.clone(), location, addressing })
}

/// A usage error when the settings ask for no encryption without saying so, or for both:
/// found from the flags alone, before anything is read or written.
pub fn check_choice(upload: &UploadArgs) -> Result<()> {
    let named = !upload.encrypt_to.is_empty() || upload.encrypt_to_file.is_some();
    match (named, upload.offsite_plaintext) {
        (true, true) => Err(usage(
            "--offsite-plaintext and a recipient (--encrypt-to, --encrypt-to-file) contradict each other: give one"
                .to_owned(),
        )),
        (false, false) => Err(usage(
            "--offsite is set but no age recipient is: give --encrypt-to age1... (HINDSIGHT_AGE_RECIPIENTS), so that \
             the database leaves this host encrypted, or --offsite-plaintext to ship it readable on purpose"
                .to_owned(),
        )),
        _ => Ok(()),
    }
}

/// The recipients the settings name, or `None` for plaintext; a usage error when neither
/// or both are asked for, or a recipient does not parse.
pub fn recipients(upload: &UploadArgs) -> Result<Option<Recipients>> {
    check_choice(upload)?;
    let mut recipients = Recipients::new();
    for recipient in &upload.encrypt_to {
        recipients
            .add(recipient, "--encrypt-to")
            .map_err(|err| usage(format!("{err}: give an age public key (age1...)")))?;
    }
    if let Some(file) = upload.recipients_file() {
        recipients.add_file(&file).map_err(|err| usage(format!("{err}: check --encrypt-to-file")))?;
    }
    // `check_choice` passed: recipients were named (a file without keys fails to add), or
    // plaintext was asked for.
    Ok((!upload.offsite_plaintext).then_some(recipients))
}

impl Offsite {
    /// Checks the settings (a usage error when they cannot work) without contacting the
    /// store: `None` without --offsite. Credentials are looked up later, in `connect`,
    /// since a missing key is a failure of the offsite copy, not of the command line.
    pub fn settings(args: &OffsiteArgs) -> Result<Option<Config>> {
        let Some(config) = config(args) else { return Ok(None) };
        if let Some(endpoint) = &config.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(usage(format!(
                "--s3-endpoint `{endpoint}` (or AWS_ENDPOINT_URL) must start with http:// or https://"
            )));
        }
        Ok(Some(config))
    }

    /// The store at `config`, with the credentials from the environment.
    pub fn connect(config: Config, recipients: Option<Recipients>) -> Result<Offsite> {
        let url = config.location.to_string();
        let credentials = Credentials::from_env().map_err(|why| anyhow!("cannot reach {url}: {why}"))?;
        let store = Store::new(config, credentials).map_err(|why| anyhow!("cannot reach {url}: {why}"))?;
        Ok(Offsite { store, recipients })
    }

    /// The location, as `s3://BUCKET/PREFIX/`.
    pub fn url(&self) -> String {
        self.store.location().to_string()
    }

    /// The full URL of `object`, for messages.
    pub fn object_url(&self, object: &str) -> String {
        format!("{}{object}", self.url())
    }

    pub fn encrypted(&self) -> bool {
        self.recipients.is_some()
    }

    /// The complete copies of `db`'s backups, newest first.
    pub fn list(&self, db: &str) -> Result<Vec<RemoteBackup>, s3::Error> {
        let objects = self.store.list_objects()?;
        let names: BTreeSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
        let mut copies: Vec<RemoteBackup> = Vec::new();
        for object in &objects {
            let (file_name, encrypted) = match object.name.strip_suffix(AGE_SUFFIX) {
                Some(base) => (base, true),
                None => (object.name.as_str(), false),
            };
            let Some(name) = BackupName::parse(file_name) else { continue };
            if name.db != db || name.kind != Kind::Backup {
                continue;
            }
            let copy = RemoteBackup {
                name,
                file_name: file_name.to_owned(),
                object: object.name.clone(),
                encrypted,
                size: object.size,
            };
            if !names.contains(copy.beside(SHA256_SUFFIX).as_str()) {
                continue;
            }
            // Both forms of one backup (plaintext once, encrypted later): the encrypted one.
            match copies.iter_mut().find(|c| c.file_name == copy.file_name) {
                Some(existing) if !existing.encrypted => *existing = copy,
                Some(_) => {}
                None => copies.push(copy),
            }
        }
        copies.sort_by(|a, b| b.name.taken.cmp(&a.name.taken).then_with(|| b.file_name.cmp(&a.file_name)));
        Ok(copies)
    }

    /// Starts the upload of local file `file_name` (streamed by the caller), after
    /// recording its id in the backup directory: a run killed from here on leaves a
    /// record, and the next run aborts the upload by it.
    pub fn start(&self, sh: &Shell, dir: &BackupDir, file_name: &str, expected: Option<u64>) -> Result<Outgoing> {
        let object = match self.recipients {
            Some(_) => format!("{file_name}{AGE_SUFFIX}"),
            None => file_name.to_owned(),
        };
        // Recorded before the upload exists (no id yet), so that no moment is left where a
        // killed run leaves an upload nothing names; then again with its id.
        let record_name = format!("{file_name}{RECORD_SUFFIX}");
        let record = dir.path().join(&record_name);
        let write = |upload_id: &str| {
            write_record(dir, &record_name, &format!("{}\n{object}\n{upload_id}\n", self.url()))
                .with_context(|| format!("cannot record the upload in {}", dir.path().display()))
        };
        write("")?;
        let upload = Upload::start(&self.store, &object, expected)?;
        write(upload.upload_id())?;
        let writer = match &self.recipients {
            Some(recipients) => Writer::Encrypted(Encrypting::start(sh, recipients, upload)?),
            None => Writer::Plain(upload),
        };
        Ok(Outgoing { record, object, writer })
    }

    /// Completes an upload whose stream has ended, checks the object's size with
    /// HeadObject, removes the record, and uploads the files beside `local` (its roles,
    /// then its `.sha256`, which makes the copy count).
    pub fn finish(&self, sh: &Shell, outgoing: Outgoing, local: &Path) -> Result<Uploaded> {
        let Outgoing { record, object, writer } = outgoing;
        let upload = match writer {
            Writer::Plain(upload) => upload,
            Writer::Encrypted(encrypting) => encrypting.finish().context("encrypting the offsite copy failed")?,
        };
        let completed = upload.complete()?;
        let stored = self.store.head_object(&object)?.map(|info| info.size);
        if stored != Some(completed.bytes) {
            bail!(
                "the store holds {} for {} after the upload of {} bytes: the copy is not whole; run again",
                stored.map_or("nothing".to_owned(), |n| format!("{n} bytes")),
                self.object_url(&object),
                completed.bytes
            );
        }
        backup_dir::remove_if_exists(&record)?;
        let file_name = local.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for suffix in [ROLES_SUFFIX, SHA256_SUFFIX] {
            let path = backup_file::beside(local, suffix);
            let text = match std::fs::read(&path) {
                Ok(text) => text,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
            };
            let age = if self.recipients.is_some() { AGE_SUFFIX } else { "" };
            let body = self.seal(sh, &text)?;
            self.store.put_object(&format!("{file_name}{suffix}{age}"), &body)?;
        }
        Ok(Uploaded { object, bytes: completed.bytes, parts: completed.parts })
    }

    /// Small files (sidecars) as they are stored: encrypted whole, when copies are.
    fn seal(&self, sh: &Shell, text: &[u8]) -> Result<Vec<u8>> {
        match &self.recipients {
            None => Ok(text.to_vec()),
            Some(recipients) => {
                let mut encrypting = Encrypting::start(sh, recipients, Vec::new())?;
                encrypting.write_all(text)?;
                Ok(encrypting.finish()?)
            }
        }
    }

    /// Uploads the complete local `backup` from its file, checking on the way that the
    /// file still matches its `.sha256`: a copy is never made of a damaged file.
    pub fn upload_file(&self, sh: &Shell, dir: &BackupDir, backup: &Backup) -> Result<Uploaded> {
        let file_name = backup.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let expected = crate::store::catalogue::sidecar_sum(&backup.path)?;
        let file = File::open(&backup.path).with_context(|| format!("cannot open {}", backup.path.display()))?;
        let mut outgoing = self.start(sh, dir, &file_name, Some(backup.size))?;
        let mut reading = Hashing::new(file);
        let mut buf = vec![0u8; BUF];
        loop {
            let n = match reading.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err).with_context(|| format!("cannot read {}", backup.path.display())),
            };
            crate::interrupt::check()?;
            outgoing.write_all(&buf[..n]).with_context(|| format!("uploading {} failed", backup.path.display()))?;
        }
        let (_, sha256, _) = reading.finish();
        if let Some(expected) = expected
            && expected != sha256
        {
            // Dropping the upload aborts it.
            return Err(crate::store::catalogue::checksum_mismatch(&backup.path, &sha256, &expected))
                .context("not uploaded");
        }
        self.finish(sh, outgoing, &backup.path)
    }

    /// Aborts the uploads that dead runs recorded in `dir` for this location, and removes
    /// their records: the upload ids of what was aborted, or found already gone.
    pub fn abort_dead(&self, dir: &BackupDir, db: &str) -> Result<Vec<String>> {
        let mut aborted = Vec::new();
        for (path, url, object, upload_id) in records(dir.path(), db)? {
            if url != self.url() {
                warning!(
                    "{} records an upload to {url}, not to {}: it is left as it is (abort it there, then remove the \
                     record)",
                    path.display(),
                    self.url()
                );
                continue;
            }
            // No id: the run stopped around CreateMultipartUpload. Its object's name (a
            // timestamp of that run) finds whatever upload it started.
            let ids = match upload_id.is_empty() {
                false => vec![upload_id],
                true => self
                    .store
                    .list_multipart_uploads()?
                    .into_iter()
                    .filter(|pending| pending.name == object)
                    .map(|pending| pending.upload_id)
                    .collect(),
            };
            for upload_id in ids {
                match self.store.abort_multipart_upload(&object, &upload_id) {
                    Ok(()) => {
                        step!("aborted the incomplete upload of {} that a stopped run left", self.object_url(&object))
                    }
                    Err(err) if err.class() == Class::NoSuchUpload => {
                        detail!("the upload recorded in {} is gone already", path.display())
                    }
                    Err(err) => return Err(err.into()),
                }
                aborted.push(upload_id);
            }
            backup_dir::remove_if_exists(&path)?;
        }
        Ok(aborted)
    }

    /// Removes the copies `policy` does not keep (never the newest), each one's `.sha256`
    /// object first, so that a copy half removed no longer counts: their objects.
    pub fn prune(&self, copies: &[RemoteBackup], policy: &Policy) -> Result<Vec<String>> {
        let backups: Vec<Backup> = copies.iter().map(RemoteBackup::as_backup).collect();
        let mut removed = Vec::new();
        for decision in retention::decide(&backups, policy, None).iter().filter(|d| !d.keep()) {
            let Some(copy) = copies.iter().find(|c| Path::new(&c.file_name) == decision.backup.path) else { continue };
            for object in [copy.beside(SHA256_SUFFIX), copy.beside(ROLES_SUFFIX), copy.object.clone()] {
                self.store.delete_object(&object)?;
            }
            step!("removed the offsite copy {}: no offsite retention rule keeps it", self.object_url(&copy.object));
            removed.push(copy.object.clone());
        }
        Ok(removed)
    }

    /// The copy's bytes as stored locally: downloaded, and decrypted with `identities`
    /// when it is encrypted. Opening fails early on a wrong identity.
    pub fn open(
        &self,
        sh: &Shell,
        copy: &RemoteBackup,
        identities: Option<&Identities>,
    ) -> Result<Box<dyn Read + Send>> {
        self.open_object(sh, &copy.object, copy.encrypted, identities)?
            .ok_or_else(|| anyhow!("{} is gone from the store", self.object_url(&copy.object)))
    }

    /// A small file beside the copy (`.sha256`, `.roles.sql`), decrypted; `None` when the
    /// store has none.
    pub fn read_beside(
        &self,
        sh: &Shell,
        copy: &RemoteBackup,
        suffix: &str,
        identities: Option<&Identities>,
    ) -> Result<Option<String>> {
        let object = copy.beside(suffix);
        let Some(mut reader) = self.open_object(sh, &object, copy.encrypted, identities)? else { return Ok(None) };
        let mut text = String::new();
        reader
            .by_ref()
            .take(16 * 1024 * 1024)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", self.object_url(&object)))?;
        Ok(Some(text))
    }

    /// `object` streamed down, and through `age -d` when `encrypted`; `None` when the
    /// store has no such object.
    fn open_object(
        &self,
        sh: &Shell,
        object: &str,
        encrypted: bool,
        identities: Option<&Identities>,
    ) -> Result<Option<Box<dyn Read + Send>>> {
        let download = match self.store.get_object(object) {
            Ok(download) => download,
            Err(err) if err.class() == Class::NoSuchKey || (err.status() == Some(404) && err.code().is_none()) => {
                return Ok(None);
            }
            Err(err) => return Err(err.into()),
        };
        match (encrypted, identities) {
            (false, _) => Ok(Some(Box::new(download))),
            (true, Some(identities)) => Ok(Some(Box::new(
                Decrypting::open(sh, identities, download)
                    .with_context(|| format!("cannot decrypt {}", self.object_url(object)))?,
            ))),
            (true, None) => Err(needs_identity(&self.object_url(object))),
        }
    }
}

/// The offsite copy a `Candidate` reads from, with the key that opens it and its roles
/// file (checked against its `.sha256` line).
pub struct Fetch {
    pub offsite: Arc<Offsite>,
    pub copy: RemoteBackup,
    pub identities: Option<Identities>,
    pub roles: Option<String>,
}

impl std::fmt::Debug for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetch").field("copy", &self.copy).field("identities", &self.identities).finish()
    }
}

impl Fetch {
    pub fn open(&self, sh: &Shell) -> Result<Box<dyn Read + Send>> {
        self.offsite.open(sh, &self.copy, self.identities.as_ref())
    }
}

/// The offsite store to read from, with the identity file that opens encrypted copies:
/// `None` without --offsite. A bad identity file is a usage error.
pub fn reader(args: &OffsiteArgs, read: &ReadArgs) -> Result<Option<(Arc<Offsite>, Option<Identities>)>> {
    let Some(config) = Offsite::settings(args)? else { return Ok(None) };
    let identities = match read.identity() {
        Some(file) => Some(Identities::from_file(&file).map_err(|err| usage(format!("{err}: check --identity")))?),
        None => None,
    };
    Ok(Some((Arc::new(Offsite::connect(config, None)?), identities)))
}

/// The offsite store `--from offsite` needs, or a usage error without one.
pub fn required(store: Option<(Arc<Offsite>, Option<Identities>)>) -> Result<(Arc<Offsite>, Option<Identities>)> {
    store.ok_or_else(|| {
        usage("--from offsite needs the store: give --offsite s3://BUCKET/PREFIX (HINDSIGHT_OFFSITE)".to_owned())
    })
}

impl Offsite {
    /// The copy `wanted` names among `copies` (newest first), by the same spellings as a
    /// local backup (`latest`, `latest~N`, a number over this list, a time), or by its
    /// file name (with or without `.age`, or its whole `s3://` URL).
    pub fn pick<'a>(&self, copies: &'a [RemoteBackup], db: &str, wanted: &str) -> Result<&'a RemoteBackup> {
        let reference = Reference::parse(wanted);
        if reference == Reference::File {
            if wanted.starts_with("s3://") && !wanted.starts_with(&self.url()) {
                bail!("{wanted} is not under --offsite {}: give the store it is in with --offsite", self.url());
            }
            let base = wanted.rsplit('/').next().unwrap_or(wanted);
            let base = base.strip_suffix(AGE_SUFFIX).unwrap_or(base);
            return copies.iter().find(|c| c.file_name == base).with_context(|| {
                format!(
                    "no complete offsite copy `{base}` in {}: see `cargo xtask db-list --offsite {}`",
                    self.url(),
                    self.url()
                )
            });
        }
        let backups: Vec<Backup> = copies.iter().map(RemoteBackup::as_backup).collect();
        let picked = catalogue::pick(&reference, wanted, &backups, Path::new(&self.url()), db)?;
        Ok(copies.iter().find(|c| Path::new(&c.file_name) == picked.path).expect("picked from these"))
    }

    /// A copy as a restore's candidate, checked as far as possible before anything is
    /// loaded: its `.sha256` (decrypting it proves the identity opens this copy), its roles
    /// file against it, and pg_dump's release from the head of the SQL.
    pub fn candidate(
        self: &Arc<Self>,
        sh: &Shell,
        copy: &RemoteBackup,
        identities: Option<Identities>,
    ) -> Result<Candidate> {
        let url = self.object_url(&copy.object);
        let fault = |why: String| anyhow::Error::from(FileFault(why));
        let sums = self
            .read_beside(sh, copy, SHA256_SUFFIX, identities.as_ref())?
            .ok_or_else(|| fault(format!("{url} has no .sha256 object: it is not a complete copy")))?;
        let sha256 = backup_file::parse_sidecar_for(&sums, &copy.file_name)
            .ok_or_else(|| fault(format!("the .sha256 object of {url} holds no checksum")))?
            .to_owned();
        let roles_name = format!("{}{ROLES_SUFFIX}", copy.file_name);
        let roles = match self.read_beside(sh, copy, ROLES_SUFFIX, identities.as_ref())? {
            Some(text) => {
                if let Some(expected) = backup_file::parse_sidecar_named(&sums, &roles_name) {
                    let mut hashing = Hashing::new(io::sink());
                    hashing.write_all(text.as_bytes())?;
                    let actual = hashing.finish().1;
                    if actual != expected {
                        let path = PathBuf::from(self.object_url(&copy.beside(ROLES_SUFFIX)));
                        return Err(fault(format!("{:#}", catalogue::checksum_mismatch(&path, &actual, expected))));
                    }
                }
                Some(text)
            }
            None => None,
        };
        let compression = Compression::of_file_name(&copy.file_name);
        let fetch = Fetch { offsite: Arc::clone(self), copy: copy.clone(), identities, roles };
        let pg_dump = catalogue::pg_dump_version(&catalogue::head_of(fetch.open(sh)?, compression));
        Ok(Candidate {
            path: PathBuf::from(self.object_url(&copy.file_name)),
            size: copy.size,
            compression,
            sha256: Some(sha256),
            pg_dump,
            origin: Origin::Offsite(Box::new(fetch)),
        })
    }
}

fn needs_identity(url: &str) -> anyhow::Error {
    usage(format!(
        "{url} is encrypted: give the age identity (private key) file that opens it with --identity FILE \
         (HINDSIGHT_AGE_IDENTITY)"
    ))
}

/// Writes a record (0600, fsynced, replacing an older one of the same name).
fn write_record(dir: &BackupDir, name: &str, text: &str) -> Result<()> {
    let mut partial = dir.create_partial(name)?;
    partial.file().write_all(text.as_bytes())?;
    partial.commit_replacing().map(drop)
}

/// The upload records of `db`'s backups in `dir`: each one's path, location URL, object
/// and upload id. A record that does not parse is reported and left alone.
fn records(dir: &Path, db: &str) -> Result<Vec<(PathBuf, String, String, String)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(backup) = file_name.strip_suffix(RECORD_SUFFIX) else { continue };
        if BackupName::parse(backup).is_none_or(|name| name.db != db) {
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        match lines.as_slice() {
            [url, object, upload_id] => found.push((path, url.to_string(), object.to_string(), upload_id.to_string())),
            [url, object] => found.push((path, url.to_string(), object.to_string(), String::new())),
            _ => warning!("{} is not an upload record this tool wrote: left as it is", path.display()),
        }
    }
    Ok(found)
}

/// What `finish` made.
#[derive(Debug)]
pub struct Uploaded {
    pub object: String,
    /// As stored (encrypted, when it is).
    pub bytes: u64,
    pub parts: u32,
}

/// An upload in flight: `Write` its bytes, then `Offsite::finish`. Dropped unfinished, the
/// upload is aborted (and the record stays for the next run, which finds it gone).
pub struct Outgoing {
    record: PathBuf,
    object: String,
    writer: Writer,
}

enum Writer {
    Plain(Upload),
    Encrypted(Encrypting<Upload>),
}

impl Write for Outgoing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.writer {
            Writer::Plain(upload) => upload.write(buf),
            Writer::Encrypted(encrypting) => encrypting.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The local backups to upload now: complete, kept by remote retention over the local and
/// remote backups together, and not offsite yet; newest first, at most `limit`.
pub fn to_catch_up<'a>(local: &'a [Backup], remote: &[RemoteBackup], policy: &Policy, limit: usize) -> Vec<&'a Backup> {
    let offsite: BTreeSet<&str> = remote.iter().map(|c| c.file_name.as_str()).collect();
    let file_name = |b: &Backup| b.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut together: Vec<Backup> = remote.iter().map(RemoteBackup::as_backup).collect();
    for backup in local.iter().filter(|b| b.complete && b.name.kind == Kind::Backup) {
        if !offsite.contains(file_name(backup).as_str()) {
            together.push(Backup { path: PathBuf::from(file_name(backup)), ..backup.clone() });
        }
    }
    let kept: BTreeSet<PathBuf> = retention::decide(&together, policy, None)
        .into_iter()
        .filter(|d| d.keep())
        .map(|d| d.backup.path.clone())
        .collect();
    let mut missing: Vec<&Backup> = local
        .iter()
        .filter(|b| b.complete && b.name.kind == Kind::Backup)
        .filter(|b| !offsite.contains(file_name(b).as_str()) && kept.contains(Path::new(&file_name(b))))
        .collect();
    missing.sort_by_key(|b| std::cmp::Reverse(b.name.taken));
    missing.truncate(limit);
    missing
}

/// A short description of a copy for a step line.
pub fn describe(copy: &RemoteBackup) -> String {
    let how = if copy.encrypted { "encrypted" } else { "plaintext" };
    format!("{} ({how}, {})", copy.object, human_bytes(copy.size))
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate};

    use super::*;
    use crate::store::backup_file::{Compression, Revision};

    fn name(hours: i64) -> BackupName {
        let taken =
            NaiveDate::from_ymd_opt(2026, 11, 25).unwrap().and_hms_opt(0, 0, 0).unwrap() + Duration::hours(hours);
        BackupName {
            db: "hindsight_db".into(),
            kind: Kind::Backup,
            taken,
            revision: Revision::Known(vec!["abc".into()]),
            compression: Compression::None,
        }
    }

    fn local(hours: i64) -> Backup {
        let name = name(hours);
        Backup { path: PathBuf::from("/backups").join(name.file_name()), name, size: 10, complete: true }
    }

    fn remote(hours: i64) -> RemoteBackup {
        let name = name(hours);
        let file_name = name.file_name();
        RemoteBackup { object: format!("{file_name}.age"), file_name, name, encrypted: true, size: 20 }
    }

    fn policy(max: usize) -> Policy {
        Policy { max, ..Policy::default() }
    }

    fn hours(backups: &[&Backup]) -> Vec<u32> {
        use chrono::Timelike;
        backups.iter().map(|b| b.name.taken.hour()).collect()
    }

    #[test]
    fn catch_up_takes_the_newest_missing_that_retention_keeps() {
        let local: Vec<Backup> = (0..6).map(local).collect();
        let offsite = vec![remote(5), remote(3)];
        // Kept offsite: 5, 4, 3, 2 (max 4); missing there: 4 and 2.
        assert_eq!(hours(&to_catch_up(&local, &offsite, &policy(4), 10)), [4, 2]);
        assert_eq!(hours(&to_catch_up(&local, &offsite, &policy(4), 1)), [4]);
        assert!(to_catch_up(&local, &offsite, &policy(4), 0).is_empty());
        // Older than every copy retention keeps: never uploaded just to be removed.
        assert!(to_catch_up(&local[..2], &[remote(5), remote(4)], &policy(2), 10).is_empty());
    }

    #[test]
    fn catch_up_skips_incomplete_backups() {
        let mut broken = local(4);
        broken.complete = false;
        let local = vec![local(5), broken];
        assert_eq!(hours(&to_catch_up(&local, &[], &policy(10), 10)), [5]);
    }

    #[test]
    fn upload_records_are_read_with_or_without_their_id() {
        let dir = std::env::temp_dir().join(format!("hindsight-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (name(1).file_name(), name(2).file_name());
        std::fs::write(dir.join(format!("{a}{RECORD_SUFFIX}")), format!("s3://b/p/\n{a}.age\nID1\n")).unwrap();
        // Written before CreateMultipartUpload answered: no id yet.
        std::fs::write(dir.join(format!("{b}{RECORD_SUFFIX}")), format!("s3://b/p/\n{b}.age\n\n")).unwrap();
        std::fs::write(dir.join(format!("other_db_backup_20261125_000000_x.sql{RECORD_SUFFIX}")), "x\ny\nz\n").unwrap();
        let mut found = records(&dir, "hindsight_db").unwrap();
        found.sort();
        std::fs::remove_dir_all(&dir).unwrap();
        let ids: Vec<(&str, &str)> = found.iter().map(|(_, _, object, id)| (object.as_str(), id.as_str())).collect();
        assert_eq!(ids, [(format!("{a}.age").as_str(), "ID1"), (format!("{b}.age").as_str(), "")]);
    }

    #[test]
    fn sidecar_objects_follow_the_copy_s_encryption() {
        let copy = remote(1);
        assert_eq!(copy.beside(SHA256_SUFFIX), format!("{}.sha256.age", copy.file_name));
        let plain = RemoteBackup { encrypted: false, object: copy.file_name.clone(), ..copy };
        assert_eq!(plain.beside(ROLES_SUFFIX), format!("{}.roles.sql", plain.file_name));
    }
}
