//! The offsite store's credentials, found where every S3 tool looks for them: the
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` variables, else a
//! profile of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`; `AWS_PROFILE`, else `default`). Never from a flag: a flag lands in
//! the cron line, in `ps` and in shell history.
//!
//! The secret is in no `Debug`, no message and no log: only the key id and where it came
//! from are ever shown.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// Where a key was found, for messages ("the profile `backup` of ~/.aws/credentials").
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Environment,
    File { path: PathBuf, profile: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Environment => write!(f, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
            Source::File { path, profile } => write!(f, "the profile `{profile}` of {}", path.display()),
        }
    }
}

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    pub source: Source,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<hidden>"))
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>, source: Source) -> Self {
        Credentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            session_token: session_token.filter(|t| !t.is_empty()).map(str::to_owned),
            source,
        }
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret_access_key
    }

    pub(crate) fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    /// From the environment of this process, as the AWS CLI looks.
    pub fn from_env() -> Result<Credentials, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let file = var("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from);
        let lookup = Lookup {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            file: file.or_else(|| home.map(|h| h.join(".aws/credentials"))),
            profile: var("AWS_PROFILE"),
        };
        lookup.resolve(|path| std::fs::read_to_string(path))
    }
}

/// What `from_env` reads, apart from the file's text: pure, for the tests.
struct Lookup {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    file: Option<PathBuf>,
    profile: Option<String>,
}

const HOW: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), \
                   or write them into ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE names another file, \
                   AWS_PROFILE another profile than `default`)";

impl Lookup {
    fn resolve(self, read: impl Fn(&Path) -> std::io::Result<String>) -> Result<Credentials, String> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                return Ok(Credentials::new(id, secret, self.session_token.as_deref(), Source::Environment));
            }
            (Some(_), None) => return Err(format!("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: {HOW}")),
            (None, Some(_)) => return Err(format!("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: {HOW}")),
            (None, None) => {}
        }
        let Some(path) = self.file else {
            return Err(format!("no credentials for the offsite store (HOME is not set): {HOW}"));
        };
        let profile = self.profile.unwrap_or_else(|| "default".to_owned());
        let text = match read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("no credentials for the offsite store: {} does not exist; {HOW}", path.display()));
            }
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        };
        let source = Source::File { path: path.clone(), profile: profile.clone() };
        let section = parse_profile(&text, &profile)
            .ok_or_else(|| format!("{} has no profile `{profile}`: {HOW}", path.display()))?;
        let get =
            |name: &str| section.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => Ok(Credentials::new(id, secret, get("aws_session_token"), source)),
            _ => Err(format!("{source} lacks aws_access_key_id or aws_secret_access_key: {HOW}")),
        }
    }
}

/// The `key = value` lines of `[profile]` in a credentials file (INI: `#` and `;` start
/// comments, names and keys are trimmed; the config file's `[profile name]` is accepted too).
fn parse_profile(text: &str, profile: &str) -> Option<Vec<(String, String)>> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            sections.push((name.strip_prefix("profile ").map(str::trim).unwrap_or(name).to_owned(), Vec::new()));
        } else if let (Some((_, entries)), Some((key, value))) = (sections.last_mut(), line.split_once('=')) {
            entries.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    // A profile named twice: its last section wins, as in the AWS CLI.
    sections.into_iter().rev().find(|(name, _)| name == profile).map(|(_, entries)| entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# keys for the backups\n\
        [default]\n\
        aws_access_key_id = AKIDDEFAULT\n\
        aws_secret_access_key = default/secret+key\n\
        \n\
        [profile garage]\n\
        ; Garage's key\n\
        aws_access_key_id=GK31c2f218a2e44f485b94239e\n\
        aws_secret_access_key=b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835\n\
        aws_session_token = \n\
        [temp]\n\
        AWS_ACCESS_KEY_ID = ASIATEMP\n\
        aws_secret_access_key = temp-secret\n\
        aws_session_token = FwoGZXIvYXdzEJr//token\n";

    fn lookup(profile: Option<&str>) -> Lookup {
        Lookup {
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            file: Some(PathBuf::from("/home/u/.aws/credentials")),
            profile: profile.map(str::to_owned),
        }
    }

    fn read_file(_: &Path) -> std::io::Result<String> {
        Ok(FILE.to_owned())
    }

    #[test]
    fn the_environment_comes_first() {
        let mut l = lookup(None);
        l.access_key_id = Some("AKIDENV".into());
        l.secret_access_key = Some("env-secret".into());
        l.session_token = Some("tok".into());
        let c = l.resolve(|_| panic!("the file is not read when the environment has keys")).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.secret(), c.session_token()), ("AKIDENV", "env-secret", Some("tok")));
        assert_eq!(c.source, Source::Environment);
    }

    #[test]
    fn half_a_key_in_the_environment_is_an_error_that_names_the_missing_half() {
        let mut l = lookup(None);
        l.access_key_id = Some("AKIDENV".into());
        let err = l.resolve(read_file).unwrap_err();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
    }

    #[test]
    fn profiles_of_the_shared_file() {
        let c = lookup(None).resolve(read_file).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret(), c.session_token()),
            ("AKIDDEFAULT", "default/secret+key", None)
        );
        let c = lookup(Some("garage")).resolve(read_file).unwrap();
        assert_eq!(c.access_key_id, "GK31c2f218a2e44f485b94239e");
        assert_eq!(c.session_token(), None, "an empty token is no token");
        let c = lookup(Some("temp")).resolve(read_file).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.session_token()), ("ASIATEMP", Some("FwoGZXIvYXdzEJr//token")));
        assert_eq!(c.source.to_string(), "the profile `temp` of /home/u/.aws/credentials");
    }

    #[test]
    fn a_missing_profile_or_file_says_what_to_do() {
        let err = lookup(Some("nope")).resolve(read_file).unwrap_err();
        assert!(err.contains("has no profile `nope`") && err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        let err = lookup(None).resolve(|_| Err(std::io::ErrorKind::NotFound.into())).unwrap_err();
        assert!(err.contains("/home/u/.aws/credentials does not exist"), "{err}");
        let err = lookup(None).resolve(|_| Ok("[default]\naws_access_key_id = X\n".into())).unwrap_err();
        assert!(err.contains("lacks"), "{err}");
    }

    #[test]
    fn debug_and_messages_never_show_the_secret_or_the_token() {
        let c = lookup(Some("temp")).resolve(read_file).unwrap();
        let shown = format!("{c:?} {c:#?} {}", c.source);
        assert!(shown.contains("ASIATEMP"));
        assert!(!shown.contains("temp-secret") && !shown.contains("FwoGZXIvYXdzEJr"), "{shown}");
        let err = lookup(Some("nope")).resolve(read_file).unwrap_err();
        assert!(!err.contains("secret+key") && !err.contains("b892c0665f"), "{err}");
    }
}
