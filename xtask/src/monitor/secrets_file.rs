//! The installed job's secrets file: `KEY=VALUE` lines, mode 0600, named by
//! `HINDSIGHT_SECRETS_FILE`, read before the command line is parsed.
//!
//! A cron line is readable by every user of the machine (in `/proc`, while the job runs),
//! so install-cron puts the values that may hold a secret (the ping URL's token, the
//! offsite store's key) here, and the job sets them as the variables clap then reads.
//! The format is dotenv's simplest: the value is the rest of the line, byte for byte, with
//! no quoting to get wrong; `#` comments and blank lines are skipped.

use std::{fs::File, io::Read, os::unix::fs::MetadataExt, path::Path};

use anyhow::{Context, Result, bail};

/// The variable that names the file, set in the cron line (a path, not a secret).
pub const VAR: &str = "HINDSIGHT_SECRETS_FILE";

/// The file's first line, for a person who finds it.
const HEADER: &str = "# The backup job's secrets, written by `cargo xtask install-cron` (run it again to change them).";

/// The file's text: a header comment, then one `KEY=VALUE` line each. Refused: a name that
/// is not a variable's, a value with a newline (it would end the line) or a NUL byte (no
/// variable can hold one). The errors name the variable, never the value.
pub fn render(entries: &[(&str, String)]) -> Result<String> {
    let mut text = format!("{HEADER}\n");
    for (key, value) in entries {
        check_key(key)?;
        if value.contains(['\n', '\0']) {
            bail!(
                "the value of {key} holds a newline or a NUL byte, which a secrets file line cannot carry: give it without one"
            );
        }
        text.push_str(&format!("{key}={value}\n"));
    }
    Ok(text)
}

/// The `KEY=VALUE` lines of `text`, in order. Errors name the line's number, never its
/// text: it may be a secret.
pub fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let mut entries: Vec<(String, String)> = Vec::new();
    // `\n` only: `lines()` would also drop a `\r` that belongs to the value.
    for (number, line) in text.split('\n').enumerate().map(|(i, line)| (i + 1, line)) {
        let start = line.trim_start();
        if start.is_empty() || start.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!(
                "line {number} of the secrets file is not KEY=VALUE: fix it, or run install-cron again to rewrite it"
            );
        };
        check_key(key).with_context(|| format!("line {number} of the secrets file"))?;
        if value.contains('\0') {
            bail!("line {number} of the secrets file holds a NUL byte, which no variable can hold: remove it");
        }
        if entries.iter().any(|(seen, _)| seen == key) {
            bail!("{key} is set twice in the secrets file (line {number}): keep one line");
        }
        entries.push((key.to_owned(), value.to_owned()));
    }
    Ok(entries)
}

/// Writes `entries` to `path` atomically: a temporary file in the same directory, mode
/// 0600 from its creation (the secret is never readable by others, even for a moment),
/// flushed to disk, then renamed over `path`. The directory must exist.
pub fn write(path: &Path, entries: &[(&str, String)]) -> Result<()> {
    let text = render(entries)?;
    super::write_atomically(path, text.as_bytes(), 0o600).with_context(|| {
        format!(
            "cannot write the secrets file: check the owner and mode of {}",
            path.parent().unwrap_or(path).display()
        )
    })
}

/// When `HINDSIGHT_SECRETS_FILE` is set, sets each variable of that file that the
/// environment does not already set (the environment wins, as with dotenv): the job's
/// secrets become what clap reads. Refused: a file others can read or write, or that
/// another user owns.
///
/// # Safety
///
/// Sets environment variables: call it before the process starts a thread (first thing
/// in `main`), when nothing can read the environment at the same time.
pub unsafe fn load() -> Result<()> {
    let Some(path) = std::env::var_os(VAR).filter(|path| !path.is_empty()) else { return Ok(()) };
    let path = Path::new(&path);
    let mut file = File::open(path).with_context(|| {
        format!("cannot open the secrets file {} ({VAR}): run install-cron again to write it", path.display())
    })?;
    // The open file's own mode and owner: what is read is what was checked.
    let meta = file.metadata().with_context(|| format!("cannot read the mode of {}", path.display()))?;
    check_private(path, meta.mode(), meta.uid(), rustix::process::geteuid().as_raw())?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read the secrets file {}: it must be text (UTF-8)", path.display()))?;
    let entries = parse(&text).with_context(|| format!("in the secrets file {} ({VAR})", path.display()))?;
    for (key, value) in entries {
        if std::env::var_os(&key).is_none() {
            // SAFETY: the caller's promise (see `# Safety`): no other thread exists yet,
            // so none reads or writes the environment while it changes.
            unsafe { std::env::set_var(&key, value) };
        }
    }
    Ok(())
}

/// As ssh does with a private key: the file must be this user's, and theirs alone.
fn check_private(path: &Path, mode: u32, owner: u32, me: u32) -> Result<()> {
    if owner != me {
        bail!(
            "the secrets file {} belongs to user {owner}, not to this one ({me}): a file someone else controls could \
             change the job's settings; run install-cron again as this user, or `chown {me} {}`",
            path.display(),
            path.display()
        );
    }
    if mode & 0o077 != 0 {
        bail!(
            "the secrets file {} has mode {:04o}: others may read or change the secrets in it; run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    Ok(())
}

/// A variable's name as a shell spells one: letters, digits, `_`, not starting with a digit.
fn check_key(key: &str) -> Result<()> {
    let ok = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if !ok {
        bail!("`{key}` is not a variable name (letters, digits and `_`, not starting with a digit)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use super::*;

    fn owned(entries: &[(&str, String)]) -> Vec<(String, String)> {
        entries.iter().map(|(key, value)| (key.to_string(), value.clone())).collect()
    }

    #[test]
    fn values_round_trip_literally() {
        let entries = [
            ("HINDSIGHT_PING_URL", "https://hc-ping.com/0f3c-secret token?x=1".to_owned()),
            // Quotes, `=`, `#`, spaces at either end and a `\r` are the value's own.
            ("AWS_SECRET_ACCESS_KEY", " a'b\"c=d #e\r".to_owned()),
            ("EMPTY", String::new()),
        ];
        let text = render(&entries).unwrap();
        assert!(text.starts_with("# "), "a header says what the file is: {text}");
        assert_eq!(parse(&text).unwrap(), owned(&entries));
        assert_eq!(parse(&render(&[]).unwrap()).unwrap(), []);
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let text = "# a comment\n\n   \n  # indented comment\nA=1\nB=x # not a comment\nC==2";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed, owned(&[("A", "1".into()), ("B", "x # not a comment".into()), ("C", "=2".into())]));
    }

    #[test]
    fn a_newline_a_bad_name_or_a_bad_line_is_refused_without_showing_the_value() {
        let err = render(&[("HINDSIGHT_PING_URL", "https://x/secret\nB=2".to_owned())]).unwrap_err();
        assert!(format!("{err:#}").contains("HINDSIGHT_PING_URL holds a newline"), "{err:#}");
        assert!(!format!("{err:#}").contains("x/secret"), "the value is not shown: {err:#}");
        assert!(render(&[("A B", "1".to_owned())]).is_err());
        assert!(render(&[("1A", "1".to_owned())]).is_err());

        let err = parse("A=1\nsecret-without-equals\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2 of the secrets file"), "{err:#}");
        assert!(!format!("{err:#}").contains("secret-without"), "{err:#}");
        assert!(parse(" A=1").is_err(), "a space before the name is not part of a name");
        assert!(parse("A=1\nA=2").is_err(), "a variable set twice");
    }

    #[test]
    fn only_a_file_of_this_user_alone_is_read() {
        let path = Path::new("/s/xtask.secrets");
        assert!(check_private(path, 0o100600, 1000, 1000).is_ok());
        assert!(check_private(path, 0o100400, 1000, 1000).is_ok());
        for mode in [0o100640, 0o100604, 0o100620, 0o100602, 0o100666] {
            let err = check_private(path, mode, 1000, 1000).unwrap_err().to_string();
            assert!(err.contains("chmod 600 /s/xtask.secrets"), "{mode:o}: {err}");
        }
        let err = check_private(path, 0o100600, 0, 1000).unwrap_err().to_string();
        assert!(err.contains("belongs to user 0"), "{err}");
    }

    #[test]
    fn written_atomically_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("xtask-secrets-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xtask.secrets");
        // Replacing a file others could read gives a private one, not the old mode.
        fs::write(&path, "OLD=1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let entries = [("HINDSIGHT_PING_URL", "https://x/token".to_owned())];
        write(&path, &entries).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(check_private(&path, meta.mode(), meta.uid(), rustix::process::geteuid().as_raw()).is_ok());
        assert_eq!(parse(&fs::read_to_string(&path).unwrap()).unwrap(), owned(&entries));
        let left: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["xtask.secrets"], "no temporary file left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
