//! A real ping server for the ping tests: `ping_server.py` (python3's own `http.server`,
//! and `ssl` for HTTPS), one per test on a free loopback port, recording every request it
//! receives so a test can say exactly what arrived.
//!
//! For HTTPS it is given a certificate for 127.0.0.1 and localhost signed by a throwaway
//! CA made here with the `openssl` CLI; a client trusts that CA through `ca_file()` (what
//! `SSL_CERT_FILE` would name). Nothing is mocked and nothing skips: without python3 or
//! openssl the tests fail, saying what to install. Dropping it kills the server and
//! removes its directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::testbed::program;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/ping_server.py");
/// python3 starts in well under a second; a loaded CI machine gets ten.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// One request as the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// With the query, as it came on the request line.
    pub path: String,
    /// Lossy UTF-8: the tests send text.
    pub body: String,
}

pub struct PingServer {
    child: Child,
    dir: PathBuf,
    port: u16,
    tls: bool,
}

#[allow(dead_code)]
impl PingServer {
    /// Plain HTTP, answering 200 `OK`.
    pub fn start() -> PingServer {
        PingServer::launch(false, 200)
    }

    /// HTTPS with a certificate from a throwaway CA (see `ca_file`), answering 200 `OK`.
    pub fn start_tls() -> PingServer {
        PingServer::launch(true, 200)
    }

    /// Plain HTTP, answering `status` to every request (a 500, a 404).
    pub fn answering(status: u16) -> PingServer {
        PingServer::launch(false, status)
    }

    /// `http(s)://127.0.0.1:PORT` followed by `path` (`/TOKEN?x=1`).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM of the CA that signed the server's certificate: what `SSL_CERT_FILE` names.
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.tls, "a plain HTTP ping server has no CA: start it with start_tls()");
        self.dir.join("ca.pem")
    }

    /// Every request so far, in the order they arrived. The server records a request
    /// before it answers, so a ping that got its answer is here.
    pub fn requests(&self) -> Vec<Request> {
        let record = fs::read_to_string(self.dir.join("record")).unwrap_or_default();
        record
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                let [method, path, body] = fields[..] else {
                    panic!("a record line is not METHOD\\tPATH\\tBODY: {line:?}")
                };
                Request {
                    method: method.to_owned(),
                    path: String::from_utf8_lossy(&unhex(path)).into_owned(),
                    body: String::from_utf8_lossy(&unhex(body)).into_owned(),
                }
            })
            .collect()
    }

    /// What the server wrote on stderr (its request log, a traceback).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn launch(tls: bool, status: u16) -> PingServer {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "ping-server-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));

        let mut cmd = program("python3");
        cmd.arg(SCRIPT).arg("--record").arg(dir.join("record")).arg("--port-file").arg(dir.join("port"));
        cmd.args(["--status", &status.to_string()]);
        if tls {
            make_certificates(&dir);
            cmd.arg("--cert").arg(dir.join("server.pem")).arg("--key").arg(dir.join("server.key"));
        }
        let stderr = fs::File::create(dir.join("stderr")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start python3 {SCRIPT}: {err}"));
        // Constructed before waiting, so that Drop kills it whatever happens next.
        let mut server = PingServer { child, dir, port: 0, tls };
        server.port = server.wait_for_port();
        server
    }

    /// The port from the port file, once the server listens; panics with its stderr when
    /// it exits or stays silent past the deadline.
    fn wait_for_port(&mut self) -> u16 {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(text) = fs::read_to_string(self.dir.join("port")) {
                return text.trim().parse().unwrap_or_else(|err| panic!("the port file says {text:?}: {err}"));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ping_server.py exited ({status}) before it listened; its stderr:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!("ping_server.py did not listen within {READY_WITHIN:?}; its stderr:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A CA (`ca.pem`), and a certificate it signed for 127.0.0.1 and localhost
/// (`server.pem`, `server.key`), in `dir`: P-256 keys, valid two days, made with the
/// `openssl` CLI so that the crate links no certificate generator for its tests.
fn make_certificates(dir: &Path) {
    // The extensions webpki insists on: a CA that says it is one, and a leaf for
    // serverAuth whose names are in its subjectAltName (the CN is not read).
    let config = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = xtask ping test CA
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
";
    fs::write(dir.join("openssl.cnf"), config).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509", "-config", "openssl.cnf", "-extensions", "ca"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        ]
        .concat(),
        [
            &["req", "-new", "-config", "openssl.cnf", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server",
        ],
    ];
    for args in steps {
        let output = openssl().args(&args).current_dir(dir).output().expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The `openssl` CLI, checked with `openssl version` (it has no `--version`, which
/// `testbed::program` asks).
fn openssl() -> Command {
    let found = Command::new("openssl").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "`openssl` is not installed: `apt-get install openssl` (ca-certificates, which provision.sh installs, brings it)"
    );
    Command::new("openssl")
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex in the record: {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|err| panic!("hex {text:?}: {err}")))
        .collect()
}
