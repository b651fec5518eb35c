//! A real S3 server for the offsite tests and the bench: Garage, one node on loopback,
//! with a throwaway config, layout, bucket and key in its own directory, on free ports.
//!
//! Test-bed code. `infra/testbed/provision.sh` builds Garage from crates.io into a fixed
//! root. It is AGPL: it is only run here as a separate program, never linked, and no
//! task a person runs against their own data starts it. Without the binary, starting a
//! node fails, saying what to run.
//!
//! The `garage` CLI reaches the node through its RPC port with the same config file
//! (`garage -c CONFIG ...`), as an operator's would. Every failure is an `Err` with the
//! CLI's output and the server's log: the e2e tests turn it into a panic
//! (`tests/e2e/garage.rs`), the bench into its own error.

use std::{
    fs::File,
    io::Read,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};

/// Where provision.sh installs the binary (`cargo install --root /opt/hindsight-testbed/garage`).
pub const GARAGE_BIN: &str = "/opt/hindsight-testbed/garage/bin/garage";

/// The region every node announces (Garage's `s3_region`): a client must sign with it.
pub const REGION: &str = "garage-test";

/// How long a node may take to answer after `garage server` starts.
const START_SECS: u64 = 60;

/// The Garage binary: `HINDSIGHT_TESTBED_GARAGE` when set, else provision.sh's.
pub fn garage_bin() -> PathBuf {
    std::env::var_os("HINDSIGHT_TESTBED_GARAGE").map_or_else(|| PathBuf::from(GARAGE_BIN), PathBuf::from)
}

/// Checks, once per process, that the Garage binary runs and is 2.x (the CLI's syntax
/// changed between 0.9, 1.x and 2.x: this module speaks 2.x's); returns its version line.
pub fn require_garage() -> Result<String> {
    static CHECK: OnceLock<Result<String, String>> = OnceLock::new();
    let checked = CHECK.get_or_init(|| {
        let bin = garage_bin();
        let version = Command::new(&bin).arg("--version").env_clear().stdin(Stdio::null()).output();
        let version = match version {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            _ => {
                return Err(format!(
                    "no Garage at {}: run `bash infra/testbed/provision.sh` as root (or `cargo xtask test`), \
                     which builds it from crates.io (about 9 minutes); HINDSIGHT_TESTBED_GARAGE names another binary",
                    bin.display()
                ));
            }
        };
        if !version.split([' ', ':', 'v']).any(|word| word.starts_with("2.")) {
            return Err(format!(
                "{} is not Garage 2.x ({version}): run `bash infra/testbed/provision.sh` as root, which installs \
                 the pinned version",
                bin.display()
            ));
        }
        Ok(version)
    });
    checked.clone().map_err(|message| anyhow!(message))
}

/// `N` free ports on loopback, for the server to bind a moment later.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // Held together, so that the ports differ.
    let listeners = (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    let ports = listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<Vec<_>, _>>()?;
    Ok(ports.try_into().expect("N listeners"))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// One Garage node, its bucket and its key. Dropping it kills the server and removes its
/// directory.
pub struct Garage {
    /// `http://127.0.0.1:PORT`: the S3 API, path-style.
    pub endpoint: String,
    pub s3_port: u16,
    /// The store's `s3_region` ([`REGION`]).
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The node's own directory: config, metadata, data and `server.log`.
    pub dir: PathBuf,
    config: PathBuf,
    server: Option<Child>,
}

impl Garage {
    /// Starts a node for `name` in a new directory under `parent`, waits for it, applies
    /// a one-node layout, and creates bucket `hindsight-NAME` and a key with read, write
    /// and owner on it.
    pub fn start_in(parent: &Path, name: &str) -> Result<Garage> {
        require_garage()?;
        // S3's rules: 3 to 63 of lowercase letters, digits and hyphens.
        let bucket = format!("hindsight-{}", name.replace('_', "-").to_lowercase());
        ensure!(
            bucket.len() <= 63 && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{bucket:?} is not a valid bucket name: pick a shorter name of letters, digits, '-' and '_'"
        );
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("garage_{name}_{}_{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let [rpc_port, s3_port] = free_ports().context("no free port on loopback")?;
        let config = dir.join("garage.toml");
        let text = format!(
            r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
"#,
            dir = dir.display(),
            secret = random_hex(32)?,
        );
        std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
        let mut garage = Garage {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            s3_port,
            region: REGION.to_owned(),
            bucket,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            dir,
            config,
            server: None,
        };
        // From here on, a failure drops `garage`, which kills the server.
        garage.spawn_and_wait()?;

        let node = garage.garage_ok(&["node", "id", "-q"])?;
        let node_id = node.trim().split('@').next().unwrap_or_default().to_owned();
        garage.garage_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id])?;
        garage.garage_ok(&["layout", "apply", "--version", "1"])?;

        let bucket = garage.bucket.clone();
        garage.garage_ok(&["bucket", "create", &bucket])?;
        let key = garage.garage_ok(&["key", "create", &format!("{bucket}-key")])?;
        garage.access_key_id = field(&key, "Key ID:")?;
        garage.secret_access_key = field(&key, "Secret key:")?;
        garage.garage_ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &bucket,
            "--key",
            &garage.access_key_id,
        ])?;
        Ok(garage)
    }

    /// `garage -c CONFIG ARGS` against this node, none of the caller's `GARAGE_*` settings
    /// leaking in.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(garage_bin());
        cmd.arg("-c").arg(&self.config).args(args).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GARAGE_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Runs the CLI; the caller judges the outcome.
    pub fn garage(&self, args: &[&str]) -> Result<Output> {
        self.cli(args).output().with_context(|| format!("cannot run {}", garage_bin().display()))
    }

    /// Runs the CLI and returns its stdout; when it fails, an error with both streams
    /// and the server's log.
    pub fn garage_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.garage(args)?;
        ensure!(
            out.status.success(),
            "garage {args:?} failed ({}):\n{}{}\n--- server log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets the bucket's size quota: the store refuses what would take it over.
    pub fn set_quota(&self, max_size_bytes: u64) -> Result<()> {
        self.garage_ok(&["bucket", "set-quotas", &self.bucket, "--max-size", &max_size_bytes.to_string()])?;
        Ok(())
    }

    /// `garage bucket info BUCKET`'s text: size, objects, unfinished uploads, quotas, keys.
    pub fn bucket_info(&self) -> Result<String> {
        self.garage_ok(&["bucket", "info", &self.bucket])
    }

    /// The server's process id, while it runs (for a look at its CPU and memory).
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// SIGKILLs the server, as a crash or a pulled plug would: no goodbye to any client.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Starts the server again on the same ports and data (after [`Garage::kill`], or
    /// killing it first), and waits for it: the bucket, key and objects are still there.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn_and_wait()
    }

    pub fn is_running(&mut self) -> bool {
        self.server.as_mut().is_some_and(|s| matches!(s.try_wait(), Ok(None)))
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let log_path = self.dir.join("server.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = self.cli(&["server"]);
        cmd.env("RUST_LOG", "garage=info").stdout(log.try_clone()?).stderr(log);
        self.server = Some(cmd.spawn().with_context(|| format!("cannot start {}", garage_bin().display()))?);
        let deadline = Instant::now() + Duration::from_secs(START_SECS);
        loop {
            if !self.is_running() {
                bail!("the Garage server exited:\n{}", self.log_tail());
            }
            let status = self.cli(&["status"]).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
            if status.success() && TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "waited {START_SECS} s for Garage to answer `garage status` and on its S3 port:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The value after `label` in the CLI's `label   value` tables.
fn field(text: &str, label: &str) -> Result<String> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| anyhow!("no {label:?} in the garage CLI's output:\n{text}"))
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_of_the_cli_tables() {
        let text = "==== ACCESS KEY INFORMATION ====\nKey ID:              GK31c2\nSecret key:          ab12\n";
        assert_eq!(field(text, "Key ID:").unwrap(), "GK31c2");
        assert_eq!(field(text, "Secret key:").unwrap(), "ab12");
        assert!(field(text, "Created:").is_err());
        assert!(field("Key ID:   \n", "Key ID:").is_err());
    }
}
