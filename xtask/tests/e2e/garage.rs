//! A real S3 server for the offsite tests: Garage, one node on loopback per test, with a
//! throwaway config, layout, bucket and key in its own directory, on free ports.
//!
//! The launcher is the library's (`xtask::testbed::garage`, which the bench starts too);
//! this wrapper puts each node under the tests' `CARGO_TARGET_TMPDIR` and turns its
//! errors into panics. Garage is AGPL: it is only run as a program, never linked.
//! Nothing is mocked and nothing skips: without the binary every test that needs it
//! fails, saying what to run (`infra/testbed/provision.sh`).

use std::{
    io::{Read, Write},
    net::TcpStream,
    ops::{Deref, DerefMut},
    path::Path,
    process::Output,
    time::Duration,
};

use xtask::testbed::garage as bed;
#[allow(unused_imports)]
pub use xtask::testbed::garage::{GARAGE_BIN, REGION, garage_bin};

/// One Garage node, its bucket and its key (the library's, whose fields and other
/// methods it derefs to). Dropping it kills the server and removes its directory.
pub struct Garage(bed::Garage);

impl Deref for Garage {
    type Target = bed::Garage;
    fn deref(&self) -> &bed::Garage {
        &self.0
    }
}

impl DerefMut for Garage {
    fn deref_mut(&mut self) -> &mut bed::Garage {
        &mut self.0
    }
}

/// The library's error, with its whole chain (the CLI's output, the server's log).
fn ok<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|err| panic!("{err:#}"))
}

#[allow(dead_code)]
impl Garage {
    /// Starts a node for test `name`, waits for it, applies a one-node layout, and creates
    /// bucket `hindsight-NAME` and a key with read, write and owner on it.
    pub fn start(name: &str) -> Garage {
        Garage(ok(bed::Garage::start_in(Path::new(env!("CARGO_TARGET_TMPDIR")), name)))
    }

    /// Runs the CLI; the caller judges the outcome.
    pub fn garage(&self, args: &[&str]) -> Output {
        ok(self.0.garage(args))
    }

    /// Runs the CLI and returns its stdout; panics, with both streams and the server's
    /// log, when it fails.
    pub fn garage_ok(&self, args: &[&str]) -> String {
        ok(self.0.garage_ok(args))
    }

    /// Sets the bucket's size quota: the store refuses what would take it over.
    pub fn set_quota(&self, max_size_bytes: u64) {
        ok(self.0.set_quota(max_size_bytes))
    }

    /// `garage bucket info BUCKET`'s text: size, objects, unfinished uploads, quotas, keys.
    pub fn bucket_info(&self) -> String {
        ok(self.0.bucket_info())
    }

    /// Starts the server again on the same ports and data (after `kill`, or killing it
    /// first), and waits for it: the bucket, key and objects are still there.
    pub fn restart(&mut self) {
        ok(self.0.restart())
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
