//! A real S3 server for the offsite tests: Garage, one node on loopback per test, with a
//! throwaway config, layout, bucket and key in its own directory, on free ports.
//!
//! `infra/testbed/provision.sh` builds Garage from crates.io into a fixed root. It is
//! AGPL: it is only run here as a program, never linked. Nothing is mocked and nothing
//! skips: without the binary every test that needs it fails, saying what to run.
//!
//! The `garage` CLI reaches the node through its RPC port with the same config file
//! (`garage -c CONFIG ...`), as an operator's would.

use std::{
    fs::File,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{
        Once,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::testbed::wait_for;

/// Where provision.sh installs the binary (`cargo install --root /opt/hindsight-testbed/garage`).
pub const GARAGE_BIN: &str = "/opt/hindsight-testbed/garage/bin/garage";

/// The region every test node announces (Garage's `s3_region`): a client must sign with it.
pub const REGION: &str = "garage-test";

/// The Garage binary: `HINDSIGHT_TESTBED_GARAGE` when set, else provision.sh's.
pub fn garage_bin() -> PathBuf {
    std::env::var_os("HINDSIGHT_TESTBED_GARAGE").map_or_else(|| PathBuf::from(GARAGE_BIN), PathBuf::from)
}

fn require_garage() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let bin = garage_bin();
        let version = Command::new(&bin).arg("--version").env_clear().output();
        let version = match version {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => panic!(
                "no Garage at {}: run `bash infra/testbed/provision.sh` as root (or `cargo xtask test`), \
                 which builds it from crates.io (about 9 minutes)",
                bin.display()
            ),
        };
        // The CLI's syntax changed between 0.9, 1.x and 2.x: this helper speaks 2.x's.
        assert!(
            version.split([' ', ':', 'v']).any(|word| word.starts_with("2.")),
            "{} is not Garage 2.x ({}): run `bash infra/testbed/provision.sh` as root, which installs the pinned version",
            bin.display(),
            version.trim()
        );
    });
}

/// A free port on loopback, for the server to bind a moment later.
fn free_ports<const N: usize>() -> [u16; N] {
    // Held together, so that the ports differ.
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("/dev/urandom reads");
    buf.iter().map(|b| format!("{b:02x}")).collect()
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
    /// Starts a node for test `name`, waits for it, applies a one-node layout, and creates
    /// bucket `hindsight-NAME` and a key with read, write and owner on it.
    pub fn start(name: &str) -> Garage {
        require_garage();
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("garage_{name}_{}_{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let [rpc_port, s3_port] = free_ports();
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
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
                secret = random_hex(32),
            ),
        )
        .unwrap();
        // S3's rules: 3 to 63 of lowercase letters, digits and hyphens.
        let bucket = format!("hindsight-{}", name.replace('_', "-").to_lowercase());
        assert!(
            bucket.len() <= 63 && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{bucket:?} is not a valid bucket name: pick a shorter test name of letters, digits, '-' and '_'"
        );
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
        garage.spawn_and_wait();

        let node = garage.garage_ok(&["node", "id", "-q"]);
        let node_id = node.trim().split('@').next().unwrap().to_owned();
        garage.garage_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id]);
        garage.garage_ok(&["layout", "apply", "--version", "1"]);

        let bucket = garage.bucket.clone();
        garage.garage_ok(&["bucket", "create", &bucket]);
        let key = garage.garage_ok(&["key", "create", &format!("{bucket}-key")]);
        garage.access_key_id = field(&key, "Key ID:");
        garage.secret_access_key = field(&key, "Secret key:");
        garage.garage_ok(&["bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", &garage.access_key_id]);
        garage
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
    pub fn garage(&self, args: &[&str]) -> Output {
        self.cli(args).output().expect("the garage binary runs")
    }

    /// Runs the CLI and returns its stdout; panics, with both streams and the server's
    /// log, when it fails.
    pub fn garage_ok(&self, args: &[&str]) -> String {
        let out = self.garage(args);
        assert!(
            out.status.success(),
            "garage {args:?} failed ({}):\n{}{}\n--- server log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sets the bucket's size quota: the store refuses what would take it over.
    pub fn set_quota(&self, max_size_bytes: u64) {
        self.garage_ok(&["bucket", "set-quotas", &self.bucket, "--max-size", &max_size_bytes.to_string()]);
    }

    /// `garage bucket info BUCKET`'s text: size, objects, unfinished uploads, quotas, keys.
    pub fn bucket_info(&self) -> String {
        self.garage_ok(&["bucket", "info", &self.bucket])
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
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_and_wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.server.as_mut().is_some_and(|s| s.try_wait().unwrap().is_none())
    }

    fn spawn_and_wait(&mut self) {
        let log = File::options().create(true).append(true).open(self.dir.join("server.log")).unwrap();
        let mut cmd = self.cli(&["server"]);
        cmd.env("RUST_LOG", "garage=info").stdout(log.try_clone().unwrap()).stderr(log);
        self.server = Some(cmd.spawn().expect("the garage binary starts"));
        wait_for("Garage to answer `garage status` and on its S3 port", 60, || {
            assert!(self.is_running(), "the Garage server exited:\n{}", self.log_tail());
            let status = self.cli(&["status"]).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
            (status.success() && TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok()).then_some(())
        });
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The value after `label` in the CLI's `label   value` tables.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| panic!("no {label:?} in the garage CLI's output:\n{text}"))
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP GET written by hand on a socket, with `headers` (`Name: value` lines):
/// (status line, whole response). No S3 client, no tool the machine may lack.
fn raw_get(garage: &Garage, path: &str, headers: &[String]) -> (String, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", garage.s3_port)).expect("Garage's S3 port accepts");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n", garage.s3_port);
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    conn.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("Garage answers and closes");
    let status = response.lines().next().unwrap_or("").to_owned();
    (status, response)
}

/// The S3 error code of an XML error body.
fn s3_code(response: &str) -> &str {
    let start =
        response.find("<Code>").map(|i| i + "<Code>".len()).unwrap_or_else(|| panic!("no S3 error:\n{response}"));
    let end = start + response[start..].find("</Code>").unwrap();
    &response[start..end]
}

/// SigV4's headers for this key, with a made-up signature and the scope's `region`.
fn badly_signed(garage: &Garage, region: &str) -> Vec<String> {
    let now = chrono::Utc::now();
    let day = now.format("%Y%m%d");
    vec![
        format!(
            "Authorization: AWS4-HMAC-SHA256 Credential={}/{day}/{region}/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
            garage.access_key_id,
            "0".repeat(64)
        ),
        format!("x-amz-date: {}", now.format("%Y%m%dT%H%M%SZ")),
        "x-amz-content-sha256: UNSIGNED-PAYLOAD".to_owned(),
    ]
}

#[test]
fn garage_bed_has_a_bucket_its_key_may_read_write_and_own_and_a_quota() {
    let garage = Garage::start("bed");
    assert!(garage.access_key_id.starts_with("GK"), "a Garage key id: {}", garage.access_key_id);
    assert_eq!(garage.secret_access_key.len(), 64, "a 32-byte hex secret");

    let info = garage.bucket_info();
    let row = info
        .lines()
        .find(|l| l.contains(&garage.access_key_id))
        .unwrap_or_else(|| panic!("the key is not on the bucket:\n{info}"));
    assert!(row.trim_start().starts_with("RWO"), "read, write and owner: {row}");
    assert!(!info.contains("Quotas"), "no quota yet:\n{info}");

    garage.set_quota(5 * 1024 * 1024);
    let info = garage.bucket_info();
    let quota = info.lines().find(|l| l.contains("maximum size")).unwrap_or_else(|| panic!("no quota:\n{info}"));
    assert!(quota.contains("5.0 MiB"), "5 MiB: {quota}");

    let key = garage.garage_ok(&["key", "info", &garage.access_key_id]);
    assert!(key.contains(&garage.bucket), "the key lists its bucket:\n{key}");
}

#[test]
fn garage_bed_answers_s3_requests_with_xml_errors_naming_its_region() {
    let garage = Garage::start("anon");
    let bucket = format!("/{}", garage.bucket);
    let (status, body) = raw_get(&garage, &bucket, &[]);
    assert!(status.starts_with("HTTP/1.1 403"), "refused: {body}");
    assert_eq!(s3_code(&body), "AccessDenied", "{body}");
    assert!(body.contains(&format!("<Region>{}</Region>", garage.region)), "the store's region: {body}");

    // A client must sign for the store's region; with it, the key is known and only the
    // signature is wrong.
    let (status, body) = raw_get(&garage, &bucket, &badly_signed(&garage, "us-east-1"));
    assert!(status.starts_with("HTTP/1.1 400"), "{body}");
    assert_eq!(s3_code(&body), "AuthorizationHeaderMalformed", "{body}");
    let (status, body) = raw_get(&garage, &bucket, &badly_signed(&garage, &garage.region));
    assert!(status.starts_with("HTTP/1.1 403"), "{body}");
    assert_eq!(s3_code(&body), "AccessDenied", "{body}");
    assert!(body.contains("Invalid signature"), "{body}");
}

#[test]
fn garage_bed_killed_stops_answering_and_restarted_keeps_its_bucket() {
    let mut garage = Garage::start("kill");
    garage.set_quota(1024 * 1024);
    garage.kill();
    assert!(!garage.is_running());
    let refused = TcpStream::connect(("127.0.0.1", garage.s3_port)).map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "nothing listens on {}", garage.endpoint);

    garage.restart();
    let info = garage.bucket_info();
    assert!(info.contains(&garage.access_key_id) && info.contains("maximum size"), "all still there:\n{info}");
    let (status, body) = raw_get(&garage, &format!("/{}", garage.bucket), &[]);
    assert!(status.starts_with("HTTP/1.1 403"), "answers again: {body}");
}
