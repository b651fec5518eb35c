//! Pings to a dead-man's switch (`db-backup --ping-url URL`), by healthchecks.io's
//! convention: a POST to `URL/start` when a run begins, to `URL` when it succeeded, to
//! `URL/fail` when it failed, the last two with one line saying why as the body. So a
//! backup that stops running at all (cron gone, machine down, disk full before the first
//! line of the log) is noticed by something that does not live on this machine.
//!
//! A ping never fails or changes the backup, and delays it little: `/start` is sent on a
//! thread of its own; the last ping takes 3 s per attempt at most, with one retry after
//! 0.5 s for what may pass (no connection, no answer in time, a 5xx). A server that
//! refuses costs about 0.5 s; one that hangs about 6.5 s (or 3 s waiting for a `/start`
//! still in flight, then one attempt, not two). A failed ping is one warning line.
//!
//! The URL's path and query are a secret: whoever knows them can report a failing backup
//! as a success. Nothing this module prints or returns carries them, only the host; the
//! reasons are built from the error's kind, never from ureq's text (which may quote the
//! URL), and whatever text is printed is scrubbed of the path and query all the same.

use std::{fmt, sync::mpsc, thread, time::Duration};

use ureq::{Agent, tls::TlsConfig};

use crate::output::{detail, warning};

/// One attempt's limit, to connect and for the whole exchange: healthchecks.io answers
/// in well under a second; a server that takes longer is as good as down.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The pause before the one retry: a dropped connection or a restarting server.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How long `finish` waits for `/start` still in flight: `/start` must arrive first, or
/// the switch reads the run as started after it ended.
const START_WAIT: Duration = Duration::from_secs(3);
/// healthchecks.io keeps the first 10 000 bytes of a body (its `PING_BODY_LIMIT`).
const BODY_LIMIT: usize = 10_000;
/// What replaces a secret in printed text.
const HIDDEN: &str = "…";

/// A ping URL, checked: where the pings go. Its `Debug` shows the host only.
#[derive(Clone)]
pub struct Ping {
    /// `scheme://authority/path`, without a trailing `/`: the success ping's URL.
    base: String,
    /// `?query`, or empty: goes after `/start` and `/fail`, not before.
    query: String,
    /// The host, and the port if the URL gives one: all that may be shown.
    host: String,
    /// Whom https trusts (see `tls`); an unreadable `SSL_CERT_FILE` is kept as its
    /// message, and said in each https ping's warning instead of failing the backup.
    tls: Result<TlsConfig, String>,
}

/// The `/start` ping in flight: `finish` waits for it.
pub struct Started {
    /// Says once the thread has sent (or given up).
    done: mpsc::Receiver<()>,
    thread: thread::JoinHandle<()>,
}

/// How the run ended, as the switch should hear it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `URL`.
    Success,
    /// `URL/fail`.
    Failure,
    /// No second ping: the run did not happen (another held the lock), which is neither a
    /// success nor a failure of the backups. Only `/start` was sent.
    Nothing,
}

/// Which of the three pings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Start,
    Success,
    Fail,
}

impl Which {
    fn suffix(self) -> &'static str {
        match self {
            Which::Start => "/start",
            Which::Success => "",
            Which::Fail => "/fail",
        }
    }

    /// For messages: `/start`, `success`, `/fail`.
    fn label(self) -> &'static str {
        match self {
            Which::Success => "success",
            which => which.suffix(),
        }
    }
}

/// Why an attempt failed, and whether another may do better.
#[derive(Debug)]
struct Failure {
    reason: String,
    retry: bool,
}

impl Failure {
    fn passing(reason: impl Into<String>) -> Failure {
        Failure { reason: reason.into(), retry: true }
    }

    fn lasting(reason: impl Into<String>) -> Failure {
        Failure { reason: reason.into(), retry: false }
    }
}

impl fmt::Debug for Ping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ping").field("host", &self.host).finish_non_exhaustive()
    }
}

impl Ping {
    /// An `http://` or `https://` URL with a host. The error names nothing of the URL but
    /// its host: the path or query may be a secret token. Reads `SSL_CERT_FILE` (see
    /// `tls`), whose failure is only said when an https ping is sent.
    pub fn parse(url: &str) -> Result<Ping, String> {
        const FORM: &str = "write it as https://HOST/TOKEN (healthchecks.io: https://hc-ping.com/UUID)";
        let url = url.trim();
        // A fragment is never sent; dropping it keeps it out of every URL built here.
        let url = url.split('#').next().unwrap_or_default();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("the ping URL is not an http(s) URL: {FORM}"));
        };
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return Err(format!(
                "the ping URL for host {host} has a user name or password before `@`: ping URLs carry \
                 their secret in the path; {FORM}"
            ));
        }
        let host = authority;
        if host.is_empty() {
            return Err(format!("the ping URL has no host: {FORM}"));
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c)) {
            return Err(format!("the ping URL's host is not a host name (letters, digits, `.`, `-`): {FORM}"));
        }
        // The port: whatever follows the last `:` outside an IPv6 address's brackets.
        if let Some((_, port)) = host.rsplit_once(':').filter(|(_, port)| !port.contains(']'))
            && !port.parse::<u16>().is_ok_and(|port| port > 0)
        {
            return Err(format!("the ping URL for host {host} has no valid port after `:` (1 to 65535)"));
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("the ping URL for host {host} is not http(s): {FORM}"));
        }
        if tail.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "the ping URL for host {host} has a space or control character after the host: \
                 copy the URL again, or percent-encode it (%20)"
            ));
        }
        let (path, query) = tail.split_at(tail.find('?').unwrap_or(tail.len()));
        // Only https reads the bundle, so a broken SSL_CERT_FILE cannot spoil an http ping.
        let tls = crate::tls::config().map_err(|err| format!("{err:#}"));
        Ok(Ping {
            base: format!("{scheme}://{host}{}", path.trim_end_matches('/')),
            query: query.to_owned(),
            host: host.to_owned(),
            tls,
        })
    }

    /// The same URL, trusting `tls` for https instead of what `SSL_CERT_FILE` says: for
    /// a caller that already has its TLS setup, and for the tests, which cannot set a
    /// variable all their threads share (`tls::config_from` makes one from a CA file).
    pub fn with_tls(self, tls: TlsConfig) -> Ping {
        Ping { tls: Ok(tls), ..self }
    }

    /// The host (and port if given) only: what logs and errors may show.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends `URL/start` on a thread of its own and returns at once: a slow or dead
    /// server costs the backup nothing here.
    pub fn start(&self) -> Started {
        let (tx, done) = mpsc::channel();
        let ping = self.clone();
        let thread = thread::spawn(move || {
            ping.send(Which::Start, "", true);
            let _ = tx.send(());
        });
        Started { done, thread }
    }

    /// Waits (at most 3 s) for `/start` to be sent, then sends `URL` (success) or
    /// `URL/fail` (failure) with the first line of `body`, at most 10 000 bytes, as the
    /// POST body; `Outcome::Nothing` sends nothing more. Never an error: a failed ping is
    /// a warning line.
    pub fn finish(&self, started: Started, outcome: Outcome, body: &str) {
        // A /start still in flight after the wait means a server that hangs: one attempt
        // then, not two, so that the end of the run stays a few seconds late at most.
        let start_sent = started.done.recv_timeout(START_WAIT).is_ok();
        if start_sent {
            let _ = started.thread.join();
        }
        let which = match outcome {
            Outcome::Success => Which::Success,
            Outcome::Failure => Which::Fail,
            Outcome::Nothing => return,
        };
        self.send(which, first_line(body, BODY_LIMIT), start_sent);
    }

    /// The URL of one ping: the suffix goes on the path, before the query.
    fn url(&self, which: Which) -> String {
        format!("{}{}{}", self.base, which.suffix(), self.query)
    }

    /// Sends one ping, with one retry when `retry` allows and the failure may pass, and
    /// says how it went: a `detail!` line, or a `warning!` line.
    fn send(&self, which: Which, body: &str, retry: bool) {
        match self.try_send(which, body, retry) {
            Ok(()) => detail!("pinged {} ({})", self.host, which.label()),
            Err(reason) => warning!("{}", self.failure_line(which, &reason)),
        }
    }

    fn try_send(&self, which: Which, body: &str, retry: bool) -> Result<(), String> {
        let agent = self.agent()?;
        let url = self.url(which);
        let mut result = attempt(&agent, &url, body);
        if retry && result.as_ref().is_err_and(|failure| failure.retry) {
            thread::sleep(RETRY_AFTER);
            result = attempt(&agent, &url, body);
        }
        result.map_err(|failure| failure.reason)
    }

    fn agent(&self) -> Result<Agent, String> {
        let mut config = Agent::config_builder()
            // A status is an answer to judge, not an error whose text may quote the URL.
            .http_status_as_error(false)
            // A redirected POST may lose its body or turn into a GET: say so instead.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(TIMEOUT))
            .timeout_global(Some(TIMEOUT))
            .user_agent(concat!("hindsight-xtask/", env!("CARGO_PKG_VERSION")));
        if self.base.starts_with("https://") {
            config = config.tls_config(self.tls.clone()?);
        }
        Ok(config.build().into())
    }

    /// The warning for a failed ping: the host, which ping, why, with the URL's path and
    /// query scrubbed out of the reason whatever it says.
    fn failure_line(&self, which: Which, reason: &str) -> String {
        format!(
            "ping to {} ({}) failed: {}; the backup itself is not affected",
            self.host,
            which.label(),
            self.scrub(reason)
        )
    }

    /// `text` with every secret part of the URL replaced by `…`: the path and query as a
    /// whole, and each long piece of them (a token may show up alone, or percent-encoded
    /// around it). Short pieces stay: `ping` must not turn `ping to` into `… to`.
    fn scrub(&self, text: &str) -> String {
        let path = &self.base[self.base.find("://").map_or(0, |i| i + 3) + self.host.len()..];
        let mut secrets: Vec<&str> = vec![path, &self.query];
        secrets.extend(path.split('/').chain(self.query.trim_start_matches('?').split(['&', '='])));
        secrets.retain(|secret| secret.len() >= 8 || (secret.len() > 1 && (*secret == path || *secret == self.query)));
        // Longest first: the whole path goes before a piece of it leaves the rest behind.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.into_iter().fold(text.to_owned(), |text, secret| text.replace(secret, HIDDEN))
    }
}

/// One POST: `Ok` for a 2xx, else why not and whether another try may do better.
fn attempt(agent: &Agent, url: &str, body: &str) -> Result<(), Failure> {
    let response = agent
        .post(url)
        .header("Content-Type", "text/plain; charset=utf-8")
        .send(body.as_bytes())
        .map_err(|err| reason(&err, url.starts_with("https://")))?;
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        300..=399 => Err(Failure::lasting(format!(
            "the server answered HTTP {status}, a redirect, which a ping does not follow: use the URL it points to"
        ))),
        404 => Err(Failure::lasting(
            "the server answered HTTP 404: no such check there; copy the ping URL from the check's page again",
        )),
        429 => Err(Failure::lasting("the server answered HTTP 429: too many pings; it throttles this check")),
        400..=499 => Err(Failure::lasting(format!("the server answered HTTP {status}: check the ping URL"))),
        _ => Err(Failure::passing(format!("the server answered HTTP {status}"))),
    }
}

/// Why a request failed, from the error's kind alone: ureq's own text may quote the URL.
/// `https`: whether TLS was spoken, so a garbled stream is the handshake's verdict.
fn reason(err: &ureq::Error, https: bool) -> Failure {
    use ureq::{Error, Timeout};
    const CA_HINT: &str = "a private CA? set SSL_CERT_FILE to its PEM bundle";
    match err {
        Error::Timeout(Timeout::Connect | Timeout::Resolve) => {
            Failure::passing(format!("no connection within {} s", TIMEOUT.as_secs()))
        }
        Error::Timeout(_) => Failure::passing(format!("no answer within {} s", TIMEOUT.as_secs())),
        Error::HostNotFound => Failure::passing("the host name does not resolve (DNS)"),
        Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Failure::passing("connection refused (nothing listens on that port)")
        }
        // rustls's own verdict (an unknown CA, an expired certificate, a name that does
        // not match) comes wrapped in an io error of this kind: not worth a retry.
        Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData && https => {
            let why = io.get_ref().map_or_else(|| io.kind().to_string(), ToString::to_string);
            Failure::lasting(format!("TLS: {why} ({CA_HINT})"))
        }
        // ureq resolves with the standard library, whose failure has no kind of its own.
        Error::Io(io) if io.to_string().starts_with("failed to lookup address") => {
            Failure::passing(format!("the host name does not resolve (DNS: {io})"))
        }
        // The OS's words (`Connection reset by peer`, a resolver's message): scrubbed
        // by `failure_line` like any text.
        Error::Io(io) => Failure::passing(format!("network error: {io}")),
        Error::ConnectionFailed => Failure::passing("the connection failed"),
        Error::Rustls(tls) => Failure::lasting(format!("TLS: {tls} ({CA_HINT})")),
        Error::Tls(tls) => Failure::lasting(format!("TLS: {tls} ({CA_HINT})")),
        Error::Pem(_) => Failure::lasting("TLS: a certificate could not be read"),
        Error::Protocol(_) => {
            Failure::lasting("the answer is not HTTP (an https server asked over http://, or the reverse?)")
        }
        Error::BadUri(_) | Error::Http(_) => {
            Failure::lasting("the URL cannot be sent as it is: copy it again from the check's page")
        }
        // Anything else: its text, which `failure_line` scrubs of the URL's secret parts.
        other => Failure::lasting(other.to_string()),
    }
}

/// The first line of `text`, cut to at most `limit` bytes on a character boundary.
fn first_line(text: &str, limit: usize) -> &str {
    let line = text.lines().next().unwrap_or_default();
    if line.len() <= limit {
        return line;
    }
    let mut end = limit;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "5f3c0a9e-1b2d-4c6e-8f70-a1b2c3d4e5f6";

    fn ping(url: &str) -> Ping {
        Ping::parse(url).unwrap_or_else(|err| panic!("{url}: {err}"))
    }

    fn urls(url: &str) -> [String; 3] {
        let ping = ping(url);
        [ping.url(Which::Start), ping.url(Which::Success), ping.url(Which::Fail)]
    }

    #[test]
    fn start_and_fail_go_on_the_path_with_or_without_a_trailing_slash() {
        let want = [
            format!("https://hc-ping.com/{TOKEN}/start"),
            format!("https://hc-ping.com/{TOKEN}"),
            format!("https://hc-ping.com/{TOKEN}/fail"),
        ];
        assert_eq!(urls(&format!("https://hc-ping.com/{TOKEN}")), want);
        assert_eq!(urls(&format!("https://hc-ping.com/{TOKEN}/")), want);
        assert_eq!(urls(&format!("  https://hc-ping.com/{TOKEN}//\n")), want);
    }

    #[test]
    fn start_and_fail_go_before_the_query() {
        assert_eq!(
            urls("http://ping.example:8000/ping/key/backup?create=1&rid=7"),
            [
                "http://ping.example:8000/ping/key/backup/start?create=1&rid=7",
                "http://ping.example:8000/ping/key/backup?create=1&rid=7",
                "http://ping.example:8000/ping/key/backup/fail?create=1&rid=7",
            ]
        );
        assert_eq!(
            urls(&format!("https://hc-ping.com/{TOKEN}/?rid=1#frag")),
            [
                format!("https://hc-ping.com/{TOKEN}/start?rid=1"),
                format!("https://hc-ping.com/{TOKEN}?rid=1"),
                format!("https://hc-ping.com/{TOKEN}/fail?rid=1"),
            ]
        );
    }

    #[test]
    fn a_bare_host_pings_its_root() {
        assert_eq!(
            urls("HTTP://10.0.0.5:8000"),
            ["http://10.0.0.5:8000/start", "http://10.0.0.5:8000", "http://10.0.0.5:8000/fail"]
        );
        assert_eq!(urls("http://[::1]:8000/?k=v")[0], "http://[::1]:8000/start?k=v");
    }

    #[test]
    fn the_host_is_shown_with_its_port_and_nothing_else() {
        assert_eq!(ping(&format!("https://hc-ping.com/{TOKEN}")).host(), "hc-ping.com");
        assert_eq!(ping(&format!("http://127.0.0.1:8000/{TOKEN}?x=1")).host(), "127.0.0.1:8000");
        assert_eq!(ping("http://[::1]:8000/t").host(), "[::1]:8000");
        let debug = format!("{:?}", ping(&format!("https://hc-ping.com/{TOKEN}?k={TOKEN}")));
        assert!(debug.contains("hc-ping.com") && !debug.contains(TOKEN), "{debug}");
    }

    #[test]
    fn urls_that_are_not_http_with_a_host_are_refused_naming_the_host_only() {
        let refused = [
            (format!("ftp://hc-ping.com/{TOKEN}"), "the ping URL for host hc-ping.com is not http(s)"),
            (format!("file:///{TOKEN}"), "has no host"),
            (format!("https:///{TOKEN}"), "has no host"),
            (format!("https://?{TOKEN}"), "has no host"),
            (format!("hc-ping.com/{TOKEN}"), "is not an http(s) URL"),
            (TOKEN.to_owned(), "is not an http(s) URL"),
            (format!("https://user:{TOKEN}@hc-ping.com/x"), "for host hc-ping.com has a user name or password"),
            (format!("https://hc-ping.com:port/{TOKEN}"), "no valid port"),
            (format!("https://hc-ping.com:99999/{TOKEN}"), "no valid port"),
            (format!("https://hc-ping.com:0/{TOKEN}"), "no valid port"),
            (format!("https://hc ping.com/{TOKEN}"), "not a host name"),
            (format!("https://hc-ping.com/{TOKEN} /x"), "space or control character"),
        ];
        for (url, want) in refused {
            let err = Ping::parse(&url).expect_err(&url);
            assert!(err.contains(want), "{url}: {err}");
            assert!(!err.contains(TOKEN), "{url}: the error shows the token: {err}");
        }
    }

    #[test]
    fn a_warning_names_the_host_and_never_the_path_or_query() {
        let ping = ping(&format!("https://hc-ping.com:8443/ping/{TOKEN}/nightly-backup?rid={TOKEN}x"));
        // As ureq's own text would put it, with the whole URL, or a piece of it.
        let url = ping.url(Which::Fail);
        let line = ping.failure_line(Which::Fail, &format!("bad uri: {url}; also {TOKEN} and nightly-backup"));
        assert!(
            line.starts_with("ping to hc-ping.com:8443 (/fail) failed: bad uri: https://hc-ping.com:8443…"),
            "{line}"
        );
        assert!(line.ends_with("; the backup itself is not affected"), "{line}");
        for secret in [TOKEN, "nightly-backup", "rid=", "/ping/"] {
            assert!(!line.contains(secret), "`{secret}` shown: {line}");
        }
        // Short words of the text stay whole.
        let line = ping.failure_line(Which::Start, "connection refused (nothing listens on that port)");
        assert_eq!(
            line,
            "ping to hc-ping.com:8443 (/start) failed: connection refused (nothing listens on that port); \
             the backup itself is not affected"
        );
    }

    #[test]
    fn a_real_error_from_a_secret_url_gives_a_reason_without_it() {
        // ureq's own error for a URL it cannot send quotes it: the reason must not.
        let agent: Agent = Agent::config_builder().build().into();
        let err = agent.post(format!("http://127.0.0.1:1/{TOKEN} x")).send(&b""[..]).unwrap_err();
        let failure = reason(&err, false);
        assert!(!failure.reason.contains(TOKEN), "{failure:?}");
        assert!(!failure.retry, "{failure:?}");
    }

    #[test]
    fn a_body_is_its_first_line_cut_on_a_character_boundary() {
        assert_eq!(first_line("dump failed: disk full\nsecond line", BODY_LIMIT), "dump failed: disk full");
        assert_eq!(first_line("", BODY_LIMIT), "");
        assert_eq!(first_line(&"x".repeat(20_000), BODY_LIMIT).len(), BODY_LIMIT);
        // 'é' is two bytes: a cut in its middle moves back before it.
        assert_eq!(first_line("aé", 2), "a");
        assert_eq!(first_line("aé", 3), "aé");
    }
}
