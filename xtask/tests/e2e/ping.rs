//! The pings to a dead-man's switch (`xtask::monitor::ping`) against a real HTTP(S)
//! server on loopback (`ping_server`): what arrives, in which order, on which path, with
//! which body; that a dead server costs a few seconds and no error; that https trusts a
//! private CA given as a PEM file, and nothing else; and that what a failed ping prints
//! names the host, never the token in the URL.
//!
//! What a ping prints goes to this process's stderr, which a test cannot read; so the
//! printing tests run this test binary again as a child (one test, `child_pings`, which
//! does nothing unless the parent's variables tell it what to ping) and read the child's
//! stderr. That also lets the child have its own `SSL_CERT_FILE`, which the threads of
//! this process, sharing one environment, must not set.

use std::{
    net::TcpListener,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use xtask::{
    monitor::ping::{Outcome, Ping},
    output::{Level, set_level},
    tls,
};

use crate::ping_server::{PingServer, Request};

const TOKEN: &str = "0f8e6d4c-2b1a-4e3f-9a7b-5c6d7e8f9a0b";

fn post(path: &str, body: &str) -> Request {
    Request { method: "POST".into(), path: path.into(), body: body.into() }
}

fn ping(url: &str) -> Ping {
    Ping::parse(url).unwrap_or_else(|err| panic!("{err}"))
}

/// A loopback port nothing listens on: bound, then let go.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn ping_start_then_success_posts_start_then_the_url_with_the_first_line() {
    let server = PingServer::start();
    let ping = ping(&server.url(&format!("/{TOKEN}/")));
    let started = ping.start();
    ping.finish(started, Outcome::Success, "backed up 12 tables, 3.1 MiB\nnot this line");
    assert_eq!(
        server.requests(),
        [post(&format!("/{TOKEN}/start"), ""), post(&format!("/{TOKEN}"), "backed up 12 tables, 3.1 MiB")],
        "{}",
        server.log()
    );
}

#[test]
fn ping_failure_posts_its_reason_to_fail_before_the_query() {
    let server = PingServer::start();
    let ping = ping(&server.url(&format!("/ping/{TOKEN}/nightly?rid=42")));
    let started = ping.start();
    let long = format!("pg_dump exited 1: {}", "é".repeat(6_000));
    ping.finish(started, Outcome::Failure, &long);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0], post(&format!("/ping/{TOKEN}/nightly/start?rid=42"), ""));
    assert_eq!(requests[1].path, format!("/ping/{TOKEN}/nightly/fail?rid=42"));
    // At most 10 000 bytes, cut between two characters.
    assert!(requests[1].body.starts_with("pg_dump exited 1: éé"), "{:?}", &requests[1].body[..40]);
    assert!(requests[1].body.len() <= 10_000 && requests[1].body.len() > 9_990, "{}", requests[1].body.len());
    assert!(!requests[1].body.contains('\u{fffd}'), "cut inside a character");
}

#[test]
fn ping_nothing_sends_only_start() {
    let server = PingServer::start();
    let ping = ping(&server.url(&format!("/{TOKEN}")));
    let started = ping.start();
    ping.finish(started, Outcome::Nothing, "busy: another run holds the lock");
    assert_eq!(server.requests(), [post(&format!("/{TOKEN}/start"), "")]);
}

#[test]
fn ping_to_a_dead_server_returns_within_seconds() {
    let ping = ping(&format!("http://127.0.0.1:{}/{TOKEN}", dead_port()));
    let began = Instant::now();
    let started = ping.start();
    assert!(began.elapsed() < Duration::from_millis(500), "start waited: {:?}", began.elapsed());
    ping.finish(started, Outcome::Failure, "dump failed");
    assert!(began.elapsed() < Duration::from_secs(8), "finish took {:?}", began.elapsed());
}

#[test]
fn ping_to_a_server_that_never_answers_returns_within_seconds() {
    // Bound and never accepted: the kernel completes the connection, nothing answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let ping = ping(&format!("http://{}/{TOKEN}", silent.local_addr().unwrap()));
    let began = Instant::now();
    let started = ping.start();
    ping.finish(started, Outcome::Success, "ok");
    // 3 s waiting for /start, then one attempt of 3 s: no retry for a server that hangs.
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(8), "finish took {took:?}");
}

#[test]
fn ping_retries_a_5xx_once_and_a_404_never() {
    let server = PingServer::answering(503);
    let ping = ping(&server.url(&format!("/{TOKEN}")));
    ping.finish(ping.start(), Outcome::Success, "ok");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    let (start, success) = (format!("/{TOKEN}/start"), format!("/{TOKEN}"));
    assert_eq!(paths, [start.as_str(), &start, &success, &success]);

    let server = PingServer::answering(404);
    let ping = self::ping(&server.url(&format!("/{TOKEN}")));
    ping.finish(ping.start(), Outcome::Success, "ok");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [start.as_str(), &success]);
}

#[test]
fn ping_over_https_trusts_the_ca_it_is_given_and_no_other() {
    let server = PingServer::start_tls();
    let url = server.url(&format!("/{TOKEN}"));
    let trusting = ping(&url).with_tls(tls::config_from(Some(&server.ca_file())).unwrap());
    trusting.finish(trusting.start(), Outcome::Success, "ok over https");
    assert_eq!(
        server.requests(),
        [post(&format!("/{TOKEN}/start"), ""), post(&format!("/{TOKEN}"), "ok over https")],
        "{}",
        server.log()
    );

    // The built-in roots do not know the throwaway CA: the handshake fails, nothing arrives.
    let default = ping(&url).with_tls(tls::config_from(None).unwrap());
    default.finish(default.start(), Outcome::Success, "must not arrive");
    assert_eq!(server.requests().len(), 2, "a server no root vouches for got a ping");
}

/// The child's side: pings what `XTASK_PING_CHILD_URL` names, `/start` then `/fail`, with
/// the verbose lines on. Without the variable (any ordinary run) it does nothing.
#[test]
fn child_pings() {
    let Ok(url) = std::env::var("XTASK_PING_CHILD_URL") else { return };
    set_level(Level::Verbose);
    let ping = ping(&url);
    ping.finish(ping.start(), Outcome::Failure, "dump failed");
}

/// Runs `child_pings` in a new process of this binary, pinging `url` with `ssl_cert_file`
/// as its SSL_CERT_FILE (removed for `None`); its output.
fn run_child(url: &str, ssl_cert_file: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "ping::child_pings", "--nocapture", "--test-threads", "1"]);
    cmd.env("XTASK_PING_CHILD_URL", url).env_remove("SSL_CERT_FILE").stdin(Stdio::null());
    if let Some(file) = ssl_cert_file {
        cmd.env("SSL_CERT_FILE", file);
    }
    let output = cmd.output().expect("the test binary runs again");
    assert!(output.status.success(), "the child failed:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// The child's lines about pings, without their timestamps; panics if anything it
/// printed shows the token.
fn warnings(output: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(TOKEN), "the token shown:\n{stderr}");
    stderr.lines().filter(|l| l.contains("ping")).map(|l| l.split_once("] ").map_or(l, |(_, l)| l).to_owned()).collect()
}

#[test]
fn ping_failures_print_one_warning_naming_the_host_never_the_token() {
    let server = PingServer::answering(404);
    let host = format!("127.0.0.1:{}", server.port());
    let lines = warnings(&run_child(&server.url(&format!("/ping/{TOKEN}?k={TOKEN}")), None));
    let reason = "the server answered HTTP 404: no such check there; copy the ping URL from the check's page again";
    let tail = "the backup itself is not affected";
    assert_eq!(
        lines,
        [
            format!("warning: ping to {host} (/start) failed: {reason}; {tail}"),
            format!("warning: ping to {host} (/fail) failed: {reason}; {tail}"),
        ]
    );

    let port = dead_port();
    let lines = warnings(&run_child(&format!("http://127.0.0.1:{port}/{TOKEN}"), None));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].starts_with(&format!("warning: ping to 127.0.0.1:{port} (/fail) failed: connection refused")),
        "{lines:?}"
    );

    // Over https to a server with a CA the built-in roots do not know.
    let tls_server = PingServer::start_tls();
    let lines = warnings(&run_child(&tls_server.url(&format!("/{TOKEN}")), None));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("(/fail) failed: TLS: ") && lines[1].contains("set SSL_CERT_FILE"), "{lines:?}");
}

#[test]
fn ping_trusts_the_ca_in_ssl_cert_file() {
    let server = PingServer::start_tls();
    let host = format!("127.0.0.1:{}", server.port());
    let lines = warnings(&run_child(&server.url(&format!("/{TOKEN}")), Some(&server.ca_file())));
    assert_eq!(lines, [format!("pinged {host} (/start)"), format!("pinged {host} (/fail)")]);
    assert_eq!(
        server.requests(),
        [post(&format!("/{TOKEN}/start"), ""), post(&format!("/{TOKEN}/fail"), "dump failed")]
    );

    // A bundle that cannot be read: a warning saying so, and no ping.
    let missing = server.ca_file().with_file_name("missing.pem");
    let lines = warnings(&run_child(&server.url(&format!("/{TOKEN}")), Some(&missing)));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains(&format!("ping to {host} (/start) failed: cannot read SSL_CERT_FILE")), "{lines:?}");
    assert_eq!(server.requests().len(), 2);
}
