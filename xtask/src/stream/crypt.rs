//! age encryption of a backup's stream, in this process: a writer that encrypts to
//! public-key recipients (the backup host never holds a private key) and a reader that
//! decrypts with the identities of an identity file, both through age's own STREAM
//! format (64 KiB chunks, each authenticated), so memory stays flat whatever the size.
//! What it writes is a standard binary age file: `age -d -i KEY` opens it.
//!
//! Recipients and identities are read the way the `age` CLI reads `-R` and `-i` files:
//! one per line, `#` comments and blank lines skipped. Only X25519 keys (`age1...`,
//! `AGE-SECRET-KEY-1...`, what `age-keygen` writes) are taken: SSH keys, plugins and
//! passphrases would bring in a much larger part of the crate (see the README's
//! Dependencies) and are refused with a message that says so.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::stream::{StreamReader, StreamWriter};
use age::x25519;
use zeroize::Zeroize;

/// A recipients or identity file larger than this is not one (the CLI's own limit is
/// 16 MiB); refusing early keeps a wrong path (a dump) from being read into memory.
const KEY_FILE_LIMIT: u64 = 1 << 20;

/// What went wrong, in terms a person can act on. Never holds a secret key's text:
/// a bad identity line is named by its number only.
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
    /// The file was encrypted with a passphrase, not to keys.
    Passphrase,
    /// None of the identities opens the file: it was encrypted to other recipients.
    WrongIdentity { identities: usize },
    /// The header was altered or damaged (its MAC, or a stanza, does not check).
    DamagedHeader,
    /// Reading or writing the stream's header failed.
    Io(io::Error),
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
            CryptError::Passphrase => {
                write!(f, "the file is encrypted with a passphrase, not to a key: open it with `age -d`")
            }
            CryptError::WrongIdentity { identities } => write!(
                f,
                "wrong identity: none of the {identities} key(s) given opens this file, which was encrypted to other recipients \
                 (`age-keygen -y KEYFILE` prints the recipient a key opens)"
            ),
            CryptError::DamagedHeader => write!(f, "the age header was altered or damaged: its MAC does not match"),
            CryptError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for CryptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CryptError::ReadFile { err, .. } | CryptError::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// The public keys a backup is encrypted to, in the order given, each once.
#[derive(Clone, Default)]
pub struct Recipients(Vec<x25519::Recipient>);

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
        let mut text = read_key_file(file)?;
        let added = self.add_lines(&text, &file.display().to_string());
        text.zeroize();
        match added? {
            0 => Err(CryptError::NoKeys { file: file.to_path_buf(), what: "age recipient" }),
            _ => Ok(()),
        }
    }

    /// Adds the recipients of a recipients file's text, one per line; returns how many
    /// lines held one. Errors name `name` and the line.
    pub fn add_lines(&mut self, text: &str, name: &str) -> Result<usize, CryptError> {
        let mut found = 0;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add(line, &format!("{name} line {}", index + 1))?;
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
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|recipient| recipient.to_string()).collect()
    }
}

fn parse_recipient(text: &str) -> Result<x25519::Recipient, String> {
    if text.starts_with("AGE-SECRET-KEY-") {
        // Said without echoing the key: it should not be in a log either.
        return Err("this is a private key (AGE-SECRET-KEY-...), not a recipient: give the public key \
                    that `age-keygen -y KEYFILE` prints, and keep the private key off this host"
            .to_string());
    }
    if text.starts_with("ssh-") {
        return Err("SSH recipients are not supported: use an age X25519 key (`age1...`, from `age-keygen`)".to_string());
    }
    if text.starts_with("age1") && text.len() > 66 {
        // The post-quantum and plugin recipients (`age1pq1...`, `age1yubikey1...`) are
        // longer than X25519's 62 characters, and Debian's age 1.1.1 reads none of them.
        return Err(format!("`{text}` is not an X25519 recipient: only `age1...` keys from `age-keygen` are supported"));
    }
    x25519::Recipient::from_str(text)
        .map_err(|why| format!("`{text}` is not an age recipient (`age1...`, from `age-keygen`): {why}"))
}

/// The private keys a restore decrypts with, from an identity file.
pub struct Identities {
    keys: Vec<x25519::Identity>,
}

impl Identities {
    /// Reads an identity file as `age -i FILE` does: `AGE-SECRET-KEY-1...` lines,
    /// `#` comments, blank lines (what `age-keygen -o FILE` writes).
    pub fn from_file(file: &Path) -> Result<Identities, CryptError> {
        let mut text = read_key_file(file)?;
        let parsed = Identities::parse(&text, file);
        // The key's text is dropped here; the parsed key zeroizes itself when dropped.
        text.zeroize();
        parsed
    }

    /// Parses an identity file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Identities, CryptError> {
        let bad = |line: usize, reason: &str| CryptError::BadIdentity {
            file: file.to_path_buf(),
            line,
            reason: reason.to_string(),
        };
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Never the line itself in an error: it may be most of a private key.
            let number = index + 1;
            if line.starts_with("-----BEGIN OPENSSH PRIVATE KEY") || line.starts_with("-----BEGIN RSA PRIVATE KEY") {
                return Err(bad(number, "SSH private keys are not supported: use an age key (`age-keygen -o FILE`)"));
            }
            if line.starts_with("age-encryption.org/") || line.starts_with("-----BEGIN AGE ENCRYPTED FILE") {
                return Err(bad(
                    number,
                    "a passphrase-protected identity file is not supported: decrypt it first \
                     (`age -d FILE > KEYFILE`, on a private disk)",
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
            let key = x25519::Identity::from_str(line)
                .map_err(|why| bad(number, &format!("not a valid age identity: {why}")))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(CryptError::NoKeys { file: file.to_path_buf(), what: "age identity (AGE-SECRET-KEY-1...)" });
        }
        Ok(Identities { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The recipient each identity opens, as `age-keygen -y` prints them.
    pub fn recipients(&self) -> Recipients {
        Recipients(self.keys.iter().map(|key| key.to_public()).collect())
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

/// Encrypts what is written to it into `inner`, as an age file. The header goes out
/// at once; `finish` writes the last chunk, without which the file does not open.
pub struct Encrypting<W: Write> {
    stream: StreamWriter<W>,
}

impl<W: Write> Encrypting<W> {
    pub fn new(recipients: &Recipients, inner: W) -> Result<Encrypting<W>, CryptError> {
        if recipients.is_empty() {
            return Err(CryptError::NoRecipients);
        }
        let encryptor = age::Encryptor::with_recipients(recipients.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|err| CryptError::Io(io::Error::other(err.to_string())))?;
        Ok(Encrypting { stream: encryptor.wrap_output(inner).map_err(CryptError::Io)? })
    }

    /// Seals the last chunk and returns the inner writer (not flushed).
    pub fn finish(self) -> io::Result<W> {
        self.stream.finish()
    }
}

impl<W: Write> Write for Encrypting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// The plaintext of an age file read from `inner`. Opening it reads and checks the
/// header only (a few hundred bytes), so a wrong identity fails before any plaintext
/// exists; every 64 KiB chunk is then authenticated before it is returned, and an end
/// without the last chunk's mark is an error, never a short read.
pub struct Decrypting<R: Read> {
    stream: StreamReader<R>,
    plaintext: u64,
}

impl<R: Read> Decrypting<R> {
    pub fn new(identities: &Identities, inner: R) -> Result<Decrypting<R>, CryptError> {
        // The unbuffered parser reads no byte past the header, so `inner` (a pipe, a
        // download) needs no buffering of ours.
        let decryptor = age::Decryptor::new(inner).map_err(|err| header_error(err, identities))?;
        if decryptor.is_scrypt() {
            return Err(CryptError::Passphrase);
        }
        let stream = decryptor
            .decrypt(identities.keys.iter().map(|key| key as &dyn age::Identity))
            .map_err(|err| header_error(err, identities))?;
        Ok(Decrypting { stream, plaintext: 0 })
    }

    /// Plaintext bytes returned so far.
    pub fn position(&self) -> u64 {
        self.plaintext
    }
}

fn header_error(err: age::DecryptError, identities: &Identities) -> CryptError {
    match err {
        age::DecryptError::NoMatchingKeys => CryptError::WrongIdentity { identities: identities.len() },
        age::DecryptError::InvalidMac | age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
            CryptError::DamagedHeader
        }
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => CryptError::NotAge,
        // A header cut short is an end of file inside the parser.
        age::DecryptError::Io(err) if err.kind() == io::ErrorKind::UnexpectedEof => CryptError::NotAge,
        age::DecryptError::Io(err) => CryptError::Io(err),
        other => CryptError::Io(io::Error::other(other.to_string())),
    }
}

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.read(buf) {
            Ok(n) => {
                self.plaintext += n as u64;
                Ok(n)
            }
            // age's own words ("decryption error") do not say what it means for a backup.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the encrypted file is truncated: it ends after {} bytes of plaintext, without its last chunk", self.plaintext),
            )),
            Err(err) if err.kind() == io::ErrorKind::InvalidData => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the encrypted file was altered, damaged or cut short: the chunk after {} bytes of plaintext fails authentication ({err})",
                    self.plaintext
                ),
            )),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (x25519::Identity, String) {
        let identity = x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        (identity, recipient)
    }

    fn identities(keys: &[&x25519::Identity]) -> Identities {
        Identities { keys: keys.iter().map(|key| (*key).clone()).collect() }
    }

    fn encrypt(recipients: &Recipients, plain: &[u8]) -> Vec<u8> {
        let mut writer = Encrypting::new(recipients, Vec::new()).unwrap();
        // Odd-sized writes, so chunks straddle them.
        for piece in plain.chunks(10_007) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap()
    }

    fn sql(bytes: usize) -> Vec<u8> {
        (0..).flat_map(|i| format!("INSERT INTO t VALUES ({i});\n").into_bytes()).take(bytes).collect()
    }

    #[test]
    fn round_trip_to_several_recipients_each_of_which_opens_it() {
        let (alice, alice_pub) = key();
        let (bob, bob_pub) = key();
        let mut recipients = Recipients::new();
        recipients.add(&alice_pub, "--encrypt-to").unwrap();
        recipients.add(&format!("  {bob_pub}\n"), "--encrypt-to").unwrap();
        recipients.add(&alice_pub, "the file").unwrap();
        assert_eq!(recipients.len(), 2, "the same key twice is one recipient");
        // Sizes around the 64 KiB chunk: empty, under, exactly one, several and a part.
        for size in [0, 1, 65_535, 65_536, 65_537, 3 * 65_536, 1_000_000] {
            let plain = sql(size);
            let stored = encrypt(&recipients, &plain);
            assert!(stored.starts_with(b"age-encryption.org/v1\n"));
            for who in [&alice, &bob] {
                let mut back = Vec::new();
                let mut reader = Decrypting::new(&identities(&[who]), stored.as_slice()).unwrap();
                reader.read_to_end(&mut back).unwrap();
                assert_eq!(back, plain, "size {size}");
                assert_eq!(reader.position(), size as u64);
            }
        }
    }

    #[test]
    fn a_wrong_identity_fails_at_the_header_before_any_plaintext() {
        let (_, recipient) = key();
        let (other, _) = key();
        let mut recipients = Recipients::new();
        recipients.add(&recipient, "--encrypt-to").unwrap();
        let stored = encrypt(&recipients, &sql(200_000));
        let err = Decrypting::new(&identities(&[&other]), stored.as_slice()).err().unwrap();
        assert!(matches!(err, CryptError::WrongIdentity { identities: 1 }), "{err}");
        assert!(err.to_string().contains("wrong identity"), "{err}");
    }

    #[test]
    fn truncation_and_alteration_fail_and_are_said_as_such() {
        let (identity, recipient) = key();
        let mut recipients = Recipients::new();
        recipients.add(&recipient, "--encrypt-to").unwrap();
        let plain = sql(300_000);
        let stored = encrypt(&recipients, &plain);
        let ids = identities(&[&identity]);
        let read_all = |bytes: &[u8]| -> Result<Vec<u8>, String> {
            let mut reader = Decrypting::new(&ids, bytes).map_err(|err| err.to_string())?;
            let mut back = Vec::new();
            reader.read_to_end(&mut back).map_err(|err| err.to_string())?;
            Ok(back)
        };
        let header = stored.len() - (plain.len() + 16 * plain.len().div_ceil(65_536)) - 16;
        // Cut inside a chunk, exactly at a chunk boundary, and just before the end.
        for cut in [stored.len() / 2, header + 16 + 65_536 + 16, stored.len() - 1] {
            let err = read_all(&stored[..cut]).unwrap_err();
            assert!(err.contains("truncated") || err.contains("altered"), "cut at {cut}: {err}");
        }
        let boundary = read_all(&stored[..header + 16 + 2 * (65_536 + 16)]).unwrap_err();
        assert!(boundary.contains("truncated"), "{boundary}");
        // One byte flipped in the payload, and in the header's MAC line.
        let mut altered = stored.clone();
        altered[stored.len() - 100] ^= 1;
        assert!(read_all(&altered).unwrap_err().contains("altered"));
        let mut altered = stored.clone();
        altered[header - 5] ^= 1;
        let err = read_all(&altered).unwrap_err();
        assert!(err.contains("altered") || err.contains("not an age"), "{err}");
        // A plain dump given where an encrypted one was expected.
        assert!(read_all(&plain).unwrap_err().contains("not an age-encrypted file"));
        assert!(read_all(b"").unwrap_err().contains("not an age-encrypted file"));
    }

    #[test]
    fn recipients_files_are_read_as_age_dash_r_reads_them_and_errors_name_the_line() {
        let (_, alice) = key();
        let (_, bob) = key();
        let mut recipients = Recipients::new();
        let text = format!("# ops team\n\n{alice}\r\n   # old laptop\n  {bob}  \n");
        assert_eq!(recipients.add_lines(&text, "recipients.txt").unwrap(), 2);
        assert_eq!(recipients.to_strings(), [alice.clone(), bob]);

        let bad = format!("{alice}\n# fine\nage1notakey\n");
        let err = Recipients::new().add_lines(&bad, "recipients.txt").unwrap_err().to_string();
        assert!(err.starts_with("recipients.txt line 3: `age1notakey` is not an age recipient"), "{err}");

        let secret = x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let secret_text = secret.to_string().expose_secret().to_string();
        let err = Recipients::new().add(&secret_text, "--encrypt-to").unwrap_err().to_string();
        assert!(err.contains("private key") && !err.contains(&secret_text[20..]), "never echoed: {err}");
        let err = Recipients::new().add("ssh-ed25519 AAAAC3Nza me@host", "--encrypt-to").unwrap_err().to_string();
        assert!(err.contains("SSH recipients are not supported"), "{err}");
        assert!(matches!(Encrypting::new(&Recipients::new(), Vec::new()).err(), Some(CryptError::NoRecipients)));
    }

    #[test]
    fn identity_files_are_read_as_age_dash_i_reads_them_without_echoing_a_line() {
        let key = x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let secret = key.to_string().expose_secret().to_string();
        let public = key.to_public().to_string();
        let file = Path::new("key.txt");
        // What age-keygen writes.
        let text = format!("# created: 2026-11-25T10:00:00Z\n# public key: {public}\n{secret}\n");
        let parsed = Identities::parse(&text, file).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed.recipients().to_strings(), [public.clone()]);

        let cases = [
            (format!("# k\n{public}\n"), 2, "a recipient"),
            (format!("{secret}\n{}x\n", &secret[..40]), 2, "not a valid age identity"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n".to_string(), 1, "SSH private keys"),
            ("age-encryption.org/v1\n-> scrypt x 18\n".to_string(), 1, "passphrase-protected"),
            ("hello\n".to_string(), 1, "not an age identity"),
        ];
        for (text, line, says) in cases {
            let err = Identities::parse(&text, file).err().unwrap();
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("identity file key.txt line {line}: ")), "{shown}");
            assert!(shown.contains(says), "{shown}");
            assert!(!shown.contains(&secret[16..]), "never the key: {shown}");
        }
        let err = Identities::parse("# only comments\n\n", file).err().unwrap();
        assert!(err.to_string().contains("holds no age identity"), "{err}");
    }
}
