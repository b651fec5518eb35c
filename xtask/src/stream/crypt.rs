//! age encryption of a backup's stream, by the standard `age` CLI (Debian's 1.1.1) as a
//! stage of the pipeline, started through `process`: a writer that encrypts to public-key
//! recipients (the backup host never holds a private key) and a reader that decrypts
//! with an identity file. age's STREAM format authenticates every 64 KiB chunk and marks
//! the last one, so memory stays flat on both sides and a cut or altered file fails.
//! Why the CLI and not the `age` crate (compile time, with measurements): see the README,
//! under Layout, after the list of dependencies.
//!
//! Recipients and identities are checked here first (the bech32 checksum of each key),
//! the way `age -R` and `age -i` read their files: one per line, `#` comments and blank
//! lines skipped. So a typo fails before a dump starts, and an error names the line;
//! a line of an identity file is never shown, since it may be most of a private key.
//! Only X25519 keys (`age1...`, `AGE-SECRET-KEY-1...`, what `age-keygen` writes) are taken.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ChildStdout;
use std::thread::{self, JoinHandle};

use xshell::{Shell, cmd};

use crate::process::{Failure, Feeding};

/// A recipients or identity file larger than this is not one (the CLI's own limit is
/// 16 MiB); refusing early keeps a wrong path (a dump) from being read into memory.
const KEY_FILE_LIMIT: u64 = 1 << 20;
/// The copy buffer between age and our side: four of age's chunks per pipe read.
const BUF_SIZE: usize = 256 * 1024;
/// age's stdout pipe, when the kernel allows (`/proc/sys/fs/pipe-max-size`, 1 MiB by default).
const PIPE_SIZE: usize = 1024 * 1024;

/// What went wrong, in terms a person can act on. Never holds a secret key's text, nor
/// a line of the plaintext (age quotes a plain file's first line when it is not age).
#[derive(Debug)]
pub enum CryptError {
    /// A recipient that does not parse; `source` says where it came from
    /// (`--encrypt-to`, `FILE line 3`).
    BadRecipient { source: String, reason: String },
    /// An identity file line that is not an identity.
    BadIdentity { file: PathBuf, line: usize, reason: String },
    /// A recipients or identity file with no key in it.
    NoKeys { file: PathBuf, what: &'static str },
    /// Encryption was asked for with no recipient at all.
    NoRecipients,
    /// A recipients or identity file that cannot be read.
    ReadFile { file: PathBuf, err: io::Error },
    /// The input does not start with an age header.
    NotAge,
    /// None of the identities opens the file: it was encrypted to other recipients.
    WrongIdentity { file: PathBuf },
    /// The header was altered or damaged: its MAC does not match.
    DamagedHeader,
    /// The file ends without age's last chunk.
    Truncated,
    /// A chunk fails authentication: altered, damaged, or cut inside a chunk.
    Altered,
    /// `age` could not be started, or failed otherwise (its own words), or our side of
    /// the pipe failed.
    Other(String),
}

impl fmt::Display for CryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptError::BadRecipient { source, reason } => write!(f, "{source}: {reason}"),
            CryptError::BadIdentity { file, line, reason } => {
                write!(f, "identity file {} line {line}: {reason}", file.display())
            }
            CryptError::NoKeys { file, what } => write!(f, "{} holds no {what}", file.display()),
            CryptError::NoRecipients => write!(f, "no age recipient to encrypt to"),
            CryptError::ReadFile { file, err } => write!(f, "cannot read {}: {err}", file.display()),
            CryptError::NotAge => write!(f, "not an age-encrypted file (no `age-encryption.org/v1` header)"),
            CryptError::WrongIdentity { file } => write!(
                f,
                "wrong identity: no key in {} opens this file, which was encrypted to other recipients \
                 (`age-keygen -y {}` prints the recipient its key opens)",
                file.display(),
                file.display()
            ),
            CryptError::DamagedHeader => write!(f, "the age header was altered or damaged: its MAC does not match"),
            CryptError::Truncated => write!(f, "the encrypted file is truncated: it ends without age's last chunk"),
            CryptError::Altered => {
                write!(f, "the encrypted file was altered, damaged or cut short: a chunk fails authentication")
            }
            CryptError::Other(text) => write!(f, "{text}"),
        }
    }
}

impl std::error::Error for CryptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CryptError::ReadFile { err, .. } => Some(err),
            _ => None,
        }
    }
}

impl From<CryptError> for io::Error {
    fn from(err: CryptError) -> io::Error {
        let kind = match err {
            CryptError::Truncated => io::ErrorKind::UnexpectedEof,
            CryptError::Altered | CryptError::DamagedHeader | CryptError::NotAge => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

/// age's failure in our terms, from what it said on stderr (age 1.1.1's wording).
fn classify(failure: &Failure, identity: Option<&Path>) -> CryptError {
    if failure.said("no identity matched") {
        CryptError::WrongIdentity { file: identity.map(Path::to_path_buf).unwrap_or_default() }
    } else if failure.said("bad header MAC") {
        CryptError::DamagedHeader
    } else if failure.said("failed to read header") || failure.said("parsing age header") {
        // Never age's own words here: they quote the input's first line, a line of a dump.
        CryptError::NotAge
    } else if failure.said("unexpected EOF") {
        CryptError::Truncated
    } else if failure.said("failed to decrypt and authenticate") {
        CryptError::Altered
    } else {
        CryptError::Other(failure.to_string())
    }
}

/// The public keys a backup is encrypted to, in the order given, each once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipients(Vec<String>);

impl Recipients {
    pub fn new() -> Recipients {
        Recipients::default()
    }

    /// Adds one recipient given as text (`--encrypt-to`, a variable); `source` names
    /// where it came from for the error.
    pub fn add(&mut self, text: &str, source: &str) -> Result<(), CryptError> {
        let recipient = parse_recipient(text.trim())
            .map_err(|reason| CryptError::BadRecipient { source: source.to_string(), reason })?;
        // Twice the same key (a flag and the file both naming it) is one stanza.
        if !self.0.contains(&recipient) {
            self.0.push(recipient);
        }
        Ok(())
    }

    /// Adds every recipient of a recipients file, as `age -R FILE` reads it.
    pub fn add_file(&mut self, file: &Path) -> Result<(), CryptError> {
        let text = read_key_file(file)?;
        match self.add_lines(&text, &file.display().to_string())? {
            0 => Err(CryptError::NoKeys { file: file.to_path_buf(), what: "age recipient" }),
            _ => Ok(()),
        }
    }

    /// Adds the recipients of a recipients file's text, one per line; returns how many
    /// lines held one. Errors name `name` and the line.
    pub fn add_lines(&mut self, text: &str, name: &str) -> Result<usize, CryptError> {
        let mut found = 0;
        // `lines` drops a `\r\n` as age does; nothing else is trimmed, since age takes
        // neither an indented comment nor spaces around a key, and a file that passes
        // here must pass `age -R` too.
        for (index, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let source = format!("{name} line {}", index + 1);
            if line.trim() != line {
                let reason = "spaces around it (or an indented comment), which `age -R` does not accept".to_string();
                return Err(CryptError::BadRecipient { source, reason });
            }
            self.add(line, &source)?;
            found += 1;
        }
        Ok(found)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The recipients as `age1...` strings, for a log line or a cron entry (public keys:
    /// never secret).
    pub fn as_strings(&self) -> &[String] {
        &self.0
    }
}

fn parse_recipient(text: &str) -> Result<String, String> {
    if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        // Said without echoing the key: it should not be in a log either.
        return Err("this is a private key (AGE-SECRET-KEY-...), not a recipient: give the public key \
                    that `age-keygen -y KEYFILE` prints, and keep the private key off this host"
            .to_string());
    }
    if text.starts_with("ssh-") {
        return Err(
            "SSH recipients are not supported: use an age X25519 key (`age1...`, from `age-keygen`)".to_string()
        );
    }
    match bech32_key(text, "age") {
        Ok(()) => Ok(text.to_string()),
        // The post-quantum and plugin recipients (`age1pq1...`, `age1yubikey1...`) have
        // other lengths, and Debian's age 1.1.1 reads none of them.
        Err(why) => Err(format!("`{text}` is not an age X25519 recipient (`age1...`, from `age-keygen`): {why}")),
    }
}

/// The identity file a restore decrypts with, checked; `age -d -i` reads it itself, so
/// its keys never pass through this process.
#[derive(Clone, Debug)]
pub struct Identities {
    file: PathBuf,
    keys: usize,
}

impl Identities {
    /// Checks an identity file as `age -i FILE` reads it: `AGE-SECRET-KEY-1...` lines,
    /// `#` comments, blank lines (what `age-keygen -o FILE` writes).
    pub fn from_file(file: &Path) -> Result<Identities, CryptError> {
        let text = read_key_file(file)?;
        let keys = Identities::check(&text, file)?;
        Ok(Identities { file: file.to_path_buf(), keys })
    }

    /// Checks an identity file's text; `file` names it in errors. Returns how many keys
    /// it holds.
    pub fn check(text: &str, file: &Path) -> Result<usize, CryptError> {
        let bad = |line: usize, reason: &str| CryptError::BadIdentity {
            file: file.to_path_buf(),
            line,
            reason: reason.to_string(),
        };
        let mut keys = 0;
        // As in a recipients file: only `\r\n` is dropped, as `age -i` does.
        for (index, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Never the line itself in an error: it may be most of a private key.
            let number = index + 1;
            if line.trim() != line {
                return Err(bad(number, "spaces around it (or an indented comment), which `age -i` does not accept"));
            }
            if line.starts_with("-----BEGIN OPENSSH PRIVATE KEY") || line.starts_with("-----BEGIN RSA PRIVATE KEY") {
                return Err(bad(number, "SSH private keys are not supported: use an age key (`age-keygen -o FILE`)"));
            }
            if line.starts_with("age-encryption.org/") || line.starts_with("-----BEGIN AGE ENCRYPTED FILE") {
                return Err(bad(
                    number,
                    "a passphrase-protected identity file is not supported: the restore runs without a \
                     terminal to ask for it; decrypt it first (`age -d FILE > KEYFILE`, on a private disk)",
                ));
            }
            if line.starts_with("age1") {
                return Err(bad(
                    number,
                    "this is a recipient (a public key), not an identity: give the file `age-keygen` wrote, \
                     with its AGE-SECRET-KEY-1... line",
                ));
            }
            if !line.starts_with("AGE-SECRET-KEY-1") {
                return Err(bad(number, "not an age identity (an `AGE-SECRET-KEY-1...` line)"));
            }
            bech32_key(line, "age-secret-key-")
                .map_err(|why| bad(number, &format!("not a valid age identity: {why}")))?;
            keys += 1;
        }
        if keys == 0 {
            return Err(CryptError::NoKeys { file: file.to_path_buf(), what: "age identity (AGE-SECRET-KEY-1...)" });
        }
        Ok(keys)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn len(&self) -> usize {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }
}

fn read_key_file(file: &Path) -> Result<String, CryptError> {
    let read = || -> io::Result<String> {
        let mut text = String::new();
        let mut reader = fs::File::open(file)?.take(KEY_FILE_LIMIT + 1);
        reader.read_to_string(&mut text)?;
        if text.len() as u64 > KEY_FILE_LIMIT {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "larger than 1 MiB: not a key file"));
        }
        Ok(text)
    };
    read().map_err(|err| CryptError::ReadFile { file: file.to_path_buf(), err })
}

/// Checks that `text` is a bech32 string (BIP 173, which age uses) with human-readable
/// part `hrp` holding 32 bytes: an X25519 key. The checksum catches a mistyped or cut key
/// before a dump starts, instead of `age` failing once it is under way.
fn bech32_key(text: &str, hrp: &str) -> Result<(), &'static str> {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const GENERATOR: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    if text.bytes().any(|b| b.is_ascii_lowercase()) && text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("mixed case");
    }
    let lower = text.to_ascii_lowercase();
    let (found_hrp, data) = lower.rsplit_once('1').ok_or("no separator")?;
    if found_hrp != hrp {
        return Err("wrong prefix");
    }
    // 32 bytes are 52 five-bit groups, then 6 of checksum.
    if data.len() != 58 {
        return Err("wrong length");
    }
    let values: Vec<u8> = data
        .bytes()
        .map(|b| CHARSET.iter().position(|&c| c == b).map(|v| v as u8))
        .collect::<Option<_>>()
        .ok_or("a character bech32 does not use")?;
    let mut checksum: u32 = 1;
    let hrp_expanded = hrp.bytes().map(|b| b >> 5).chain([0]).chain(hrp.bytes().map(|b| b & 31));
    for value in hrp_expanded.chain(values.iter().copied()) {
        let top = checksum >> 25;
        checksum = ((checksum & 0x1ff_ffff) << 5) ^ u32::from(value);
        for (bit, generator) in GENERATOR.iter().enumerate() {
            if (top >> bit) & 1 == 1 {
                checksum ^= generator;
            }
        }
    }
    if checksum != 1 {
        return Err("bad checksum (a character mistyped or missing)");
    }
    // 52 groups are 260 bits: the last 4 are padding and must be zero.
    if values[51] & 0x0f != 0 {
        return Err("bad padding");
    }
    Ok(())
}

/// Encrypts what is written to it into `inner`, as an age file: `age -r ...` runs as a
/// stage, our writes go to its stdin, and a thread pumps its stdout into `inner`.
/// `finish` closes its input, which makes age write the last chunk; without it the file
/// does not open.
pub struct Encrypting<W: Write + Send + 'static> {
    age: Option<Feeding>,
    pump: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> Encrypting<W> {
    pub fn start(sh: &Shell, recipients: &Recipients, inner: W) -> Result<Encrypting<W>, CryptError> {
        if recipients.is_empty() {
            return Err(CryptError::NoRecipients);
        }
        // Public keys only on the command line: no secret in an argv or the -v echo.
        let args = recipients.0.iter().flat_map(|r| ["-r", r.as_str()]);
        let mut age = Feeding::start_reading("age", cmd!(sh, "age {args...}"))
            .map_err(|err| CryptError::Other(format!("cannot start `age` (is it installed?): {err:#}")))?;
        let stdout = age.stdout().expect("piped");
        // As Feeding does for stdin: a larger pipe means fewer wake-ups per megabyte.
        let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_SIZE);
        let pump = thread::spawn(move || pump(stdout, inner));
        Ok(Encrypting { age: Some(age), pump: Some(pump) })
    }

    /// Seals the last chunk, waits for age and the pump, and returns the inner writer
    /// (flushed).
    pub fn finish(mut self) -> Result<W, CryptError> {
        let failed = self.age.take().expect("running until finished").close();
        let Some(pump) = self.pump.take() else {
            return Err(CryptError::Other("writing the encrypted stream failed earlier".to_string()));
        };
        let pumped = pump.join();
        match (failed, pumped) {
            (None, Ok(Ok(inner))) => Ok(inner),
            // Our side failed first (a full disk, an upload refused): age's broken pipe
            // says nothing more.
            (_, Ok(Err(err))) => Err(CryptError::Other(format!("writing the encrypted stream failed: {err}"))),
            (Some(failure), _) => Err(CryptError::Other(failure.to_string())),
            (None, Err(_)) => Err(CryptError::Other("the encrypted stream's writer panicked".to_string())),
        }
    }
}

fn pump<W: Write>(mut from: ChildStdout, mut inner: W) -> io::Result<W> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => inner.write_all(&buf[..n])?,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    inner.flush()?;
    Ok(inner)
}

impl<W: Write + Send + 'static> Write for Encrypting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.age.as_mut().expect("running until finished").stdin().write(buf).map_err(|err| {
            // age stops reading when its output has nowhere to go: the writer behind it
            // failed first (an upload refused), and its error is the one that says why.
            // With age's input closed, the pump ends at once: joining cannot hang.
            if err.kind() != io::ErrorKind::BrokenPipe {
                return err;
            }
            match self.pump.take().map(JoinHandle::join) {
                Some(Ok(Err(cause))) => cause,
                _ => err,
            }
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        // age keeps a partial chunk until it is full or the input ends: nothing to push.
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for Encrypting<W> {
    /// Left on an error: age is stopped (Feeding's drop), the pump ends with its stdout.
    fn drop(&mut self) {
        drop(self.age.take());
        if let Some(pump) = self.pump.take() {
            let _ = pump.join();
        }
    }
}

/// The plaintext of an age file read from `source`: `age -d -i FILE` runs as a stage, a
/// thread feeds it `source`, and we read its stdout. Opening waits for age's first
/// output, so a wrong identity, a damaged header or a file that is not age fails in
/// `open`, before the caller has loaded anything. age writes each chunk only once it
/// authenticates, and a failure later (a cut or altered chunk) is an error at the end,
/// never a clean end of file: the caller must read to the end before trusting any of it.
pub struct Decrypting {
    age: Option<Feeding>,
    stdout: ChildStdout,
    feeder: Option<JoinHandle<io::Result<()>>>,
    identity: PathBuf,
    first: Vec<u8>,
    first_at: usize,
    plaintext: u64,
    ended: bool,
}

impl Decrypting {
    pub fn open<R: Read + Send + 'static>(
        sh: &Shell,
        identities: &Identities,
        mut source: R,
    ) -> Result<Decrypting, CryptError> {
        let file = identities.file();
        let mut age = Feeding::start_reading("age -d", cmd!(sh, "age -d -i {file}"))
            .map_err(|err| CryptError::Other(format!("cannot start `age` (is it installed?): {err:#}")))?;
        let stdout = age.stdout().expect("piped");
        let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_SIZE);
        let mut stdin = age.take_stdin().expect("piped");
        let feeder = thread::spawn(move || -> io::Result<()> {
            let mut buf = vec![0u8; BUF_SIZE];
            loop {
                match source.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => stdin.write_all(&buf[..n])?,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        return Err(io::Error::new(err.kind(), format!("reading the encrypted file failed: {err}")));
                    }
                }
            }
            // Dropping stdin is the end of age's input.
        });
        let mut opened = Decrypting {
            age: Some(age),
            stdout,
            feeder: Some(feeder),
            identity: file.to_path_buf(),
            first: vec![0u8; BUF_SIZE],
            first_at: 0,
            plaintext: 0,
            ended: false,
        };
        // age checks the header and the identity before it writes a byte: the first
        // read answers both.
        let n = loop {
            match opened.stdout.read(&mut opened.first) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(CryptError::Other(format!("reading from age failed: {err}"))),
            }
        };
        opened.first.truncate(n);
        if n == 0 {
            // An empty plaintext is legitimate; a failure is not.
            opened.end()?;
        }
        Ok(opened)
    }

    /// Plaintext bytes returned so far.
    pub fn position(&self) -> u64 {
        self.plaintext
    }

    /// At age's end of output: its exit, and the feeder's, say whether the end is real.
    fn end(&mut self) -> Result<(), CryptError> {
        self.ended = true;
        let failed = self.age.take().map(Feeding::close).unwrap_or_default();
        let feeder = self.feeder.take();
        match failed {
            // A source that failed (a download cut off) ended age's input early, which
            // age calls a truncated file: the source's own error is the one to say.
            Some(_) if feeder.as_ref().is_some_and(|feeder| feeder.is_finished()) => {
                match feeder.map(|feeder| feeder.join()) {
                    Some(Ok(Err(err))) if err.kind() != io::ErrorKind::BrokenPipe => {
                        Err(CryptError::Other(err.to_string()))
                    }
                    _ => Err(classify(failed.as_ref().expect("matched"), Some(&self.identity))),
                }
            }
            // age quit early: the feeder meets a broken pipe, or is still waiting on a
            // slow source. Its result says nothing more; it ends on its own.
            Some(failure) => Err(classify(&failure, Some(&self.identity))),
            None => match feeder.map(|feeder| feeder.join()) {
                Some(Ok(Err(err))) => Err(CryptError::Other(err.to_string())),
                Some(Err(_)) => Err(CryptError::Other("the encrypted file's reader panicked".to_string())),
                _ => Ok(()),
            },
        }
    }
}

impl Read for Decrypting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.first_at < self.first.len() {
            let n = buf.len().min(self.first.len() - self.first_at);
            buf[..n].copy_from_slice(&self.first[self.first_at..self.first_at + n]);
            self.first_at += n;
            self.plaintext += n as u64;
            return Ok(n);
        }
        if self.ended {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 {
            self.end()?;
        }
        self.plaintext += n as u64;
        Ok(n)
    }
}

impl Drop for Decrypting {
    /// Left before the end (an error of the caller's): age is stopped; the feeder ends
    /// at its next write, on the broken pipe.
    fn drop(&mut self) {
        drop(self.age.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway key pair made by age-keygen for these tests only.
    const PUBLIC: &str = "age1sh5y9k06k9kh3zcnnxhpjxxf9aam2cvzf7vlpp68aclfzjw97akqdmf6gg";
    const SECRET: &str = "AGE-SECRET-KEY-1DVRERARDWPQC5JYXHGVG4VEGDZV9FTF7MCN7X7P6JTLD2QJJJ7TQC45E93";
    const OTHER_PUBLIC: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    #[test]
    fn keys_are_checked_by_their_bech32_checksum() {
        assert_eq!(bech32_key(PUBLIC, "age"), Ok(()));
        assert_eq!(bech32_key(SECRET, "age-secret-key-"), Ok(()));
        assert_eq!(bech32_key(OTHER_PUBLIC, "age"), Ok(()));
        let typo = PUBLIC.replace("sh5y", "sh5z");
        assert_eq!(bech32_key(&typo, "age"), Err("bad checksum (a character mistyped or missing)"));
        assert_eq!(bech32_key(&PUBLIC[..PUBLIC.len() - 1], "age"), Err("wrong length"));
        assert_eq!(bech32_key(&PUBLIC.replace("age1", "agE1"), "age"), Err("mixed case"));
        assert_eq!(bech32_key(&PUBLIC.replace('q', "b"), "age"), Err("a character bech32 does not use"));
        assert_eq!(bech32_key(PUBLIC, "age-secret-key-"), Err("wrong prefix"));
    }

    #[test]
    fn recipients_files_are_read_as_age_dash_r_reads_them_and_errors_name_the_line() {
        let mut recipients = Recipients::new();
        recipients.add(PUBLIC, "--encrypt-to").unwrap();
        let text = format!("# ops team\n\n{PUBLIC}\r\n# old laptop\n{OTHER_PUBLIC}\n");
        assert_eq!(recipients.add_lines(&text, "recipients.txt").unwrap(), 2);
        assert_eq!(recipients.as_strings(), [PUBLIC, OTHER_PUBLIC], "the same key twice is one recipient");
        // What age -R refuses, refused here too (age 1.1.1: "malformed recipient at line 1").
        for text in [format!("  {PUBLIC}\n"), format!("{PUBLIC} \n"), format!("  # indented\n{PUBLIC}\n")] {
            let err = Recipients::new().add_lines(&text, "r.txt").unwrap_err().to_string();
            assert!(err.starts_with("r.txt line 1: spaces around it"), "{err}");
        }
        // A flag's value is trimmed: a shell's quoting leaves spaces more easily.
        Recipients::new().add(&format!(" {PUBLIC}\n"), "--encrypt-to").unwrap();

        let bad = format!("{PUBLIC}\n# fine\nage1notakey\n");
        let err = Recipients::new().add_lines(&bad, "recipients.txt").unwrap_err().to_string();
        assert!(err.starts_with("recipients.txt line 3: `age1notakey` is not an age X25519 recipient"), "{err}");

        let err = Recipients::new().add(SECRET, "--encrypt-to").unwrap_err().to_string();
        assert!(err.starts_with("--encrypt-to: this is a private key"), "{err}");
        assert!(!err.contains(&SECRET[20..]), "never echoed: {err}");
        let err = Recipients::new().add("ssh-ed25519 AAAAC3Nza me@host", "--encrypt-to").unwrap_err().to_string();
        assert!(err.contains("SSH recipients are not supported"), "{err}");
        assert!(matches!(
            Encrypting::start(&Shell::new().unwrap(), &Recipients::new(), Vec::new()).err(),
            Some(CryptError::NoRecipients)
        ));
    }

    #[test]
    fn identity_files_are_checked_as_age_dash_i_reads_them_without_echoing_a_line() {
        let file = Path::new("key.txt");
        // What age-keygen writes.
        let text = format!("# created: 2026-11-25T10:00:00Z\r\n# public key: {PUBLIC}\r\n{SECRET}\r\n");
        assert_eq!(Identities::check(&text, file).unwrap(), 1, "CRLF, as age reads it");

        let typo = SECRET.replace("DVRER", "DVRES");
        let cases = [
            (format!("# k\n{PUBLIC}\n"), 2, "a recipient"),
            (format!("{SECRET}\n{typo}\n"), 2, "not a valid age identity: bad checksum"),
            (format!("{}\n", &SECRET[..40]), 1, "not a valid age identity: wrong length"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n".to_string(), 1, "SSH private keys"),
            ("age-encryption.org/v1\n-> scrypt x 18\n".to_string(), 1, "passphrase-protected"),
            ("hello\n".to_string(), 1, "not an age identity"),
            (format!("  {SECRET}\n"), 1, "spaces around it"),
            (format!("{SECRET}\n  # indented\n"), 2, "spaces around it"),
        ];
        for (text, line, says) in cases {
            let shown = Identities::check(&text, file).unwrap_err().to_string();
            assert!(shown.starts_with(&format!("identity file key.txt line {line}: ")), "{shown}");
            assert!(shown.contains(says), "{shown}");
            assert!(!shown.contains(&SECRET[16..40]), "never the key: {shown}");
        }
        let err = Identities::check("# only comments\n\n", file).unwrap_err();
        assert!(err.to_string().contains("holds no age identity"), "{err}");
    }

    #[test]
    fn age_failures_are_said_in_our_terms_and_never_quote_the_input() {
        let failure = |stderr: &str| Failure { what: "age -d".into(), code: Some(1), stderr: stderr.into() };
        let key = Path::new("/keys/ops.txt");
        let said = |stderr: &str| classify(&failure(stderr), Some(key));
        assert!(matches!(
            said("age: error: no identity matched any of the recipients\n"),
            CryptError::WrongIdentity { .. }
        ));
        assert!(said("age: error: no identity matched any of the recipients").to_string().contains("/keys/ops.txt"));
        assert!(matches!(said("age: error: bad header MAC"), CryptError::DamagedHeader));
        assert!(matches!(said("age: error: unexpected EOF"), CryptError::Truncated));
        assert!(matches!(said("age: error: failed to decrypt and authenticate payload chunk"), CryptError::Altered));
        let plain =
            said("age: error: failed to read header: parsing age header: unexpected intro: \"INSERT INTO secrets\"");
        assert!(matches!(plain, CryptError::NotAge));
        assert!(!plain.to_string().contains("INSERT"), "a line of a dump is never repeated");
        assert!(said("age: error: something new").to_string().contains("something new"));
    }
}
