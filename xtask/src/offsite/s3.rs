//! An S3 bucket (and a prefix in it) reached with the few signed requests that an offsite
//! copy needs: multipart uploads (create, part, complete, abort, list the incomplete ones),
//! small objects (put), and reading back (head, a streaming get, list, delete).
//!
//! Blocking, over `ureq`: every call is one HTTP exchange on this thread (the multipart
//! writer in `upload` puts the sending on a thread of its own). Each request is signed
//! with SigV4 over its payload's SHA-256, which the store checks against the body it
//! received; bodies also carry `Content-MD5`, the check every S3 store makes, so a part
//! altered on the way is refused whichever check a store makes. Garage 2.5.0 checks both
//! (`BadDigest` for the MD5, `InvalidDigest` for the SHA-256: tried by hand on loopback).
//!
//! Failures are typed ([`Error`]): the operation, the object, the HTTP status and the
//! store's own `Code` and `Message`, sorted into a [`Class`] so that a caller can tell
//! wrong credentials from a missing bucket from a quota from a store that is down, and a
//! message that says what to do. No message carries the secret or the session token.

use std::{
    fmt,
    io::{self, Read},
    thread,
    time::Duration,
};

use md5::Md5;
use sha2::{Digest, Sha256};
use ureq::{
    Agent, Body,
    http::{self, Response},
};

use super::{
    credentials::Credentials,
    sigv4::{self, Scope},
    xml,
};
use crate::store::backup_file::hex;

/// Tries of a request that failed in a way that may pass (a dropped connection, a 503):
/// about 3.5 s of waiting in all, enough for a store that restarts, short enough that a
/// dead one fails the run quickly.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// An error body longer than this is cut: S3's are a few hundred bytes.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// Listings and results are small documents; a store that sends more is not answering S3.
const RESULT_BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// `s3://BUCKET/PREFIX`: where the backups live.
#[derive(Clone, Debug, PartialEq)]
pub struct Location {
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{url}` is not an S3 location: write it as s3://BUCKET or s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || !bucket.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
            return Err(format!(
                "`{url}` has no valid bucket name: write it as s3://BUCKET/PREFIX, the bucket of letters, digits, `.`, `-` and `_`"
            ));
        }
        Ok(Location { bucket: bucket.to_owned(), prefix: normalise_prefix(prefix) })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// `db`, `/db/`, `db//` all mean `db/`; empty stays empty (the bucket's root).
fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    match trimmed.is_empty() {
        true => String::new(),
        false => format!("{trimmed}/"),
    }
}

/// How the bucket is named in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `http://host/BUCKET/KEY`: what self-hosted stores (Garage, MinIO, Ceph) answer
    /// without wildcard DNS for their buckets.
    Path,
    /// `https://BUCKET.host/KEY`: what AWS prefers.
    VirtualHost,
}

/// Everything but the credentials: from the flags and their variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// `http(s)://host[:port]`; `None` for AWS itself (`https://s3.REGION.amazonaws.com`).
    pub endpoint: Option<String>,
    /// Must match the store's own (Garage: its `s3_region`), or it refuses every request.
    pub region: String,
    pub location: Location,
    pub addressing: Addressing,
}

/// One bucket and prefix of one store, with the credentials to sign for it. Cheap to
/// clone (the connection pool is shared), and `Send`, for the upload's thread.
#[derive(Clone)]
pub struct Store {
    secure: bool,
    /// What `Host` says: `host[:port]`, with the bucket in front for virtual hosts.
    host: String,
    /// The path before a key: `/BUCKET` with path-style addressing, empty otherwise.
    base_path: String,
    /// The endpoint as a person wrote it, for messages.
    endpoint: String,
    region: String,
    location: Location,
    addressing: Addressing,
    credentials: Credentials,
    agent: Agent,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("location", &self.location.to_string())
            .field("addressing", &self.addressing)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// An object as HeadObject sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    pub size: u64,
    /// As the store gives it (quoted; `-N` after a multipart upload on AWS, other forms
    /// elsewhere): an identity, never a checksum to compare with one computed here.
    pub etag: String,
}

/// An object of a listing; `name` is its key without the prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub name: String,
    pub size: u64,
    /// As the store wrote it (`2026-11-25T10:00:05.000Z`).
    pub last_modified: String,
    pub etag: String,
}

/// An incomplete multipart upload under the prefix: what a dead run leaves.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingUpload {
    pub name: String,
    pub upload_id: String,
    pub initiated: String,
}

/// The S3 operations, named as in the S3 API reference (and in messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListMultipartUploads,
    PutObject,
    HeadObject,
    GetObject,
    ListObjectsV2,
    DeleteObject,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Op {
    fn writes(self) -> bool {
        matches!(self, Op::CreateMultipartUpload | Op::UploadPart | Op::CompleteMultipartUpload | Op::PutObject)
    }
}

/// What kind of failure, for a caller's decision and for the message's advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The store does not know the key id, or the signature does not match the secret,
    /// or a session token expired.
    Credentials,
    /// The key is known but may not do this (not allowed on the bucket).
    Denied,
    NoSuchBucket,
    /// No such object (GetObject; HeadObject answers `None` instead).
    NoSuchKey,
    /// The multipart upload is gone (completed, aborted, or expired by the store).
    NoSuchUpload,
    /// The store refused the size: a bucket or account quota, or an object too large.
    Quota,
    /// The region does not match the store's, or the endpoint redirects elsewhere.
    Region,
    /// This machine's clock is too far from the store's for a signature to hold.
    Clock,
    /// The body did not match its checksum on arrival.
    Integrity,
    /// No connection: refused, unknown host, TLS failure.
    Unreachable,
    /// The store answered 5xx or slow down, or the connection broke or timed out.
    Unavailable,
    /// Anything else: an unexpected answer.
    Other,
}

#[derive(Clone, Debug)]
pub enum ErrorKind {
    /// The store answered with an error status, and (usually) an error document.
    Status { status: u16, code: String, message: String },
    /// No answer: the connection failed, broke or timed out (`class` says which).
    Transport { class: Class, detail: String },
    /// An answer this client cannot read, or a limit of S3 that was reached.
    Invalid(String),
}

/// A failed S3 operation, with what it was about and where.
#[derive(Clone, Debug)]
pub struct Error {
    pub op: Op,
    /// `s3://bucket/prefix/name` (and which part), or the bucket.
    pub target: String,
    pub kind: ErrorKind,
    /// Where, for the advice; boxed, so that a `Result` stays small.
    context: Box<Context>,
}

/// The store an error happened at, as its messages name it.
#[derive(Clone, Debug)]
struct Context {
    endpoint: String,
    region: String,
    bucket: String,
    credentials: String,
}

impl Error {
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The store's error code (`AccessDenied`), when it sent one.
    pub fn code(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Status { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }

    pub fn class(&self) -> Class {
        match &self.kind {
            ErrorKind::Status { status, code, message } => classify(*status, code, message),
            ErrorKind::Transport { class, .. } => *class,
            ErrorKind::Invalid(_) => Class::Other,
        }
    }

    /// Whether trying again soon may succeed.
    pub fn is_transient(&self) -> bool {
        // A body damaged on the way is whole in memory here: sending it again may pass.
        matches!(self.class(), Class::Unavailable | Class::Integrity)
            || matches!(&self.kind, ErrorKind::Transport { class: Class::Unreachable, detail } if detail.contains("refused"))
    }

    fn advice(&self) -> String {
        let Context { endpoint, region, bucket, credentials } = &*self.context;
        match self.class() {
            Class::Credentials => format!(
                "the store at {endpoint} refused the credentials from {credentials}: check the key id and the secret \
                 (and AWS_SESSION_TOKEN for temporary keys)"
            ),
            Class::Denied => {
                let right = if self.op.writes() { "write to" } else { "read" };
                format!(
                    "the key from {credentials} may not {right} bucket `{bucket}`: grant it read and write on the bucket \
                     (Garage: `garage bucket allow --read --write --owner {bucket} --key KEY`)"
                )
            }
            Class::NoSuchBucket => format!(
                "bucket `{bucket}` does not exist at {endpoint}: create it, or check the bucket in the offsite URL \
                 and the endpoint (--s3-endpoint, AWS_ENDPOINT_URL)"
            ),
            Class::NoSuchKey => "no such object: check its name (db-list shows the offsite copies)".into(),
            Class::NoSuchUpload => {
                "the multipart upload is gone (completed, aborted, or expired by the store): upload the backup again"
                    .into()
            }
            Class::Quota => format!(
                "the store refused the size: bucket `{bucket}` is over its quota (or the object is too large); \
                 raise the quota or remove old copies"
            ),
            Class::Region => format!(
                "the store's region is not `{region}`: set AWS_REGION to the store's own (Garage: its `s3_region`), \
                 and check the endpoint"
            ),
            Class::Clock => "this machine's clock is too far from the store's: set it right (NTP)".into(),
            Class::Integrity => "the data changed on the way to the store: check the network, then try again".into(),
            Class::Unreachable => format!(
                "cannot reach the store at {endpoint}: is it running, and are the endpoint (--s3-endpoint, \
                 AWS_ENDPOINT_URL) and its scheme (http or https) right?"
            ),
            Class::Unavailable => format!("the store at {endpoint} failed or stopped answering: try again later"),
            Class::Other => format!("an unexpected answer from the store at {endpoint}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offsite {} of {} failed: ", self.op, self.target)?;
        match &self.kind {
            ErrorKind::Status { status, code, message } => {
                write!(f, "HTTP {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, " ({})", one_line(message))?;
                }
            }
            ErrorKind::Transport { detail, .. } => write!(f, "{}", one_line(detail))?,
            ErrorKind::Invalid(detail) => write!(f, "{}", one_line(detail))?,
        }
        write!(f, "; {}", self.advice())
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    /// For `Write` and `Read`: the S3 error stays inside, for `downcast`.
    fn from(err: Error) -> io::Error {
        io::Error::other(err)
    }
}

fn one_line(text: &str) -> String {
    let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

/// Sorts an error status by its code first (stores agree on codes more than statuses),
/// then by the status alone (HEAD answers carry no body).
pub fn classify(status: u16, code: &str, message: &str) -> Class {
    let message = message.to_ascii_lowercase();
    match code {
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "InvalidToken"
        | "ExpiredToken"
        | "TokenRefreshRequired"
        | "InvalidSecurity"
        | "InvalidSignature" => return Class::Credentials,
        "NoSuchBucket" => return Class::NoSuchBucket,
        "NoSuchKey" => return Class::NoSuchKey,
        "NoSuchUpload" => return Class::NoSuchUpload,
        "QuotaExceeded" | "EntityTooLarge" | "XMinioAdminBucketQuotaExceeded" => return Class::Quota,
        "AuthorizationHeaderMalformed"
        | "PermanentRedirect"
        | "IllegalLocationConstraintException"
        | "InvalidRegion" => return Class::Region,
        "RequestTimeTooSkewed" => return Class::Clock,
        "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" => return Class::Integrity,
        "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => return Class::Unavailable,
        _ => {}
    }
    if code.contains("Quota") || message.contains("quota") {
        return Class::Quota;
    }
    match status {
        // Garage answers both an unknown key id and a wrong secret with AccessDenied,
        // saying which in the message ("Forbidden: No such key: GK...", "Forbidden:
        // Invalid signature"); a quota too ("Forbidden: Bucket size quota is reached").
        403 if message.contains("no such key") || message.contains("invalid signature") => Class::Credentials,
        403 if code.is_empty() || code == "AccessDenied" || code == "Forbidden" => Class::Denied,
        301 | 307 | 308 => Class::Region,
        500..=599 => Class::Unavailable,
        _ => Class::Other,
    }
}

/// A request before it is signed.
struct Call<'a> {
    op: Op,
    method: &'static str,
    /// An object's name under the prefix; `None` for the bucket itself.
    name: Option<&'a str>,
    /// For messages: which part.
    detail: Option<String>,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    body: &'a [u8],
}

impl<'a> Call<'a> {
    fn new(op: Op, method: &'static str, name: Option<&'a str>) -> Call<'a> {
        Call { op, method, name, detail: None, query: Vec::new(), headers: Vec::new(), body: &[] }
    }
}

impl Store {
    pub fn new(config: Config, credentials: Credentials) -> Result<Store, String> {
        let region = config.region.trim().to_owned();
        if region.is_empty() {
            return Err(
                "no region for the offsite store: set AWS_REGION (Garage: its `s3_region`, often `garage`)".into()
            );
        }
        let endpoint = match &config.endpoint {
            Some(url) => url.trim().to_owned(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let (secure, authority) = parse_endpoint(&endpoint)?;
        let bucket = &config.location.bucket;
        let (host, base_path) = match config.addressing {
            Addressing::Path => (authority, format!("/{}", sigv4::uri_encode(bucket, false))),
            Addressing::VirtualHost => (format!("{bucket}.{authority}"), String::new()),
        };
        // A store behind a private CA is trusted through SSL_CERT_FILE, as curl does; a
        // broken bundle fails here, before any upload, and only for an https endpoint.
        let tls = if secure { crate::tls::config().map_err(|err| format!("{err:#}"))? } else { Default::default() };
        let agent: Agent = Agent::config_builder()
            .tls_config(tls)
            // Error statuses come back as answers: their body says which error.
            .http_status_as_error(false)
            // A redirect means another region or endpoint; a signed request must not follow it.
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            // Between any two reads or writes; whole transfers may take hours.
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .user_agent(concat!("hindsight-xtask/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Store {
            secure,
            host,
            base_path,
            endpoint,
            region,
            location: config.location,
            addressing: config.addressing,
            credentials,
            agent,
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The full key of a name: the prefix, then the name.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.location.prefix)
    }

    /// `s3://bucket/prefix/name`, for messages.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.location.bucket, self.key(name))
    }

    /// An error about `name` that is not the store's answer (a limit reached, a thread
    /// that died), with the same context as the store's own.
    pub(crate) fn invalid(&self, op: Op, name: &str, detail: String) -> Error {
        self.error(&Call::new(op, "", Some(name)), ErrorKind::Invalid(detail))
    }

    fn error(&self, call: &Call<'_>, kind: ErrorKind) -> Error {
        let mut target = match call.name {
            Some(name) => format!("`{}`", self.url(name)),
            None => format!("bucket `{}`", self.location.bucket),
        };
        if let Some(detail) = &call.detail {
            target = format!("{target} ({detail})");
        }
        Error {
            op: call.op,
            target,
            kind,
            context: Box::new(Context {
                endpoint: self.endpoint.clone(),
                region: self.region.clone(),
                bucket: self.location.bucket.clone(),
                credentials: self.credentials.source.to_string(),
            }),
        }
    }

    /// Sends a call, again after a transient failure; an error status is an `Error`.
    fn execute(&self, call: &Call<'_>) -> Result<Response<Body>, Error> {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1.. {
            let result = self.attempt(call);
            match result {
                Err(err) if attempt < ATTEMPTS && err.is_transient() => {
                    thread::sleep(backoff);
                    backoff *= 2;
                }
                result => return result,
            }
        }
        unreachable!("the loop returns")
    }

    fn attempt(&self, call: &Call<'_>) -> Result<Response<Body>, Error> {
        let path = match call.name {
            Some(name) => format!("{}/{}", self.base_path, sigv4::uri_encode(&self.key(name), true)),
            None if self.base_path.is_empty() => "/".to_owned(),
            None => self.base_path.clone(),
        };
        let query = sigv4::canonical_query(&call.query);
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let payload_sha256 =
            if call.body.is_empty() { sigv4::EMPTY_SHA256.to_owned() } else { hex(&Sha256::digest(call.body)) };
        let mut headers: Vec<(&str, String)> = vec![
            ("host", self.host.clone()),
            ("x-amz-date", amz_date.clone()),
            ("x-amz-content-sha256", payload_sha256.clone()),
        ];
        if !call.body.is_empty() {
            headers.push(("content-md5", sigv4::base64(&Md5::digest(call.body))));
        }
        if let Some(token) = self.credentials.session_token() {
            headers.push(("x-amz-security-token", token.to_owned()));
        }
        headers.extend(call.headers.iter().cloned());
        let scope = Scope { amz_date: &amz_date, region: &self.region, service: "s3" };
        let request = sigv4::Request {
            method: call.method,
            canonical_uri: &path,
            query: &call.query,
            headers: &headers,
            payload_sha256: &payload_sha256,
        };
        let authorization =
            sigv4::authorization(&self.credentials.access_key_id, self.credentials.secret(), &scope, &request);
        let scheme = if self.secure { "https" } else { "http" };
        let uri = match query.is_empty() {
            true => format!("{scheme}://{}{path}", self.host),
            false => format!("{scheme}://{}{path}?{query}", self.host),
        };
        let mut builder = http::Request::builder().method(call.method).uri(&uri);
        for (name, value) in &headers {
            builder = builder.header(*name, value);
        }
        builder = builder.header("authorization", authorization);
        let invalid =
            |err: http::Error| self.error(call, ErrorKind::Invalid(format!("cannot build the request: {err}")));
        let sent = match call.method {
            "PUT" | "POST" => self.agent.run(builder.body(call.body).map_err(invalid)?),
            _ => self.agent.run(builder.body(()).map_err(invalid)?),
        };
        let response = sent.map_err(|err| self.error(call, transport(err)))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let mut body = String::new();
        if call.method != "HEAD" {
            // Best effort: a body that cannot be read leaves the status alone to tell.
            let _ = response.into_body().into_reader().take(ERROR_BODY_LIMIT).read_to_string(&mut body);
        }
        let (code, message) = match xml::error_body(&body) {
            Some(e) => (e.code, e.message),
            None => (String::new(), String::new()),
        };
        Err(self.error(call, ErrorKind::Status { status, code, message }))
    }

    /// A small XML answer (a listing, a result), read whole.
    fn read_result(&self, call: &Call<'_>, response: Response<Body>) -> Result<String, Error> {
        let mut text = String::new();
        response
            .into_body()
            .into_reader()
            .take(RESULT_BODY_LIMIT)
            .read_to_string(&mut text)
            .map_err(|err| self.error(call, io_kind(&err)))?;
        Ok(text)
    }

    fn parsed<T>(&self, call: &Call<'_>, parsed: Result<T, String>) -> Result<T, Error> {
        parsed.map_err(|err| self.error(call, ErrorKind::Invalid(format!("an answer that is not S3's: {err}"))))
    }

    /// Starts a multipart upload of `name`: its upload id, which the caller records
    /// before sending anything, so that a dead run's upload can be aborted later.
    pub fn create_multipart_upload(&self, name: &str) -> Result<String, Error> {
        let mut call = Call::new(Op::CreateMultipartUpload, "POST", Some(name));
        call.query.push(("uploads", String::new()));
        call.headers.push(("content-type", "application/octet-stream".into()));
        let response = self.execute(&call)?;
        let body = self.read_result(&call, response)?;
        self.parsed(&call, xml::upload_id(&body))
    }

    /// Sends part `number` (1 to 10,000) of an upload: the part's ETag, for completing it.
    pub fn upload_part(&self, name: &str, upload_id: &str, number: u32, body: &[u8]) -> Result<String, Error> {
        let mut call = Call::new(Op::UploadPart, "PUT", Some(name));
        call.detail = Some(format!("part {number}, {} bytes", body.len()));
        call.query.push(("partNumber", number.to_string()));
        call.query.push(("uploadId", upload_id.to_owned()));
        call.body = body;
        let response = self.execute(&call)?;
        match response.headers().get("etag").and_then(|v| v.to_str().ok()) {
            Some(etag) if !etag.is_empty() => Ok(etag.to_owned()),
            _ => Err(self.error(&call, ErrorKind::Invalid("the store answered without an ETag".into()))),
        }
    }

    /// Joins the parts into the object, which appears only now: the object's ETag.
    pub fn complete_multipart_upload(
        &self,
        name: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<String, Error> {
        let body = xml::complete_body(parts);
        let mut call = Call::new(Op::CompleteMultipartUpload, "POST", Some(name));
        call.detail = Some(format!("{} parts", parts.len()));
        call.query.push(("uploadId", upload_id.to_owned()));
        call.headers.push(("content-type", "application/xml".into()));
        call.body = body.as_bytes();
        let response = self.execute(&call)?;
        let text = self.read_result(&call, response)?;
        // S3 may answer 200 and put the error in the body, when it fails while joining.
        if let Some(e) = xml::error_body(&text) {
            return Err(self.error(&call, ErrorKind::Status { status: 200, code: e.code, message: e.message }));
        }
        self.parsed(&call, xml::completed_etag(&text))
    }

    /// Drops an upload and its parts. An upload that is already gone counts as dropped,
    /// so that cleaning up after a dead run can be repeated.
    pub fn abort_multipart_upload(&self, name: &str, upload_id: &str) -> Result<(), Error> {
        let mut call = Call::new(Op::AbortMultipartUpload, "DELETE", Some(name));
        call.query.push(("uploadId", upload_id.to_owned()));
        match self.execute(&call) {
            Ok(_) => Ok(()),
            Err(err) if err.class() == Class::NoSuchUpload => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The incomplete multipart uploads under the prefix, every page of them.
    pub fn list_multipart_uploads(&self) -> Result<Vec<PendingUpload>, Error> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut call = Call::new(Op::ListMultipartUploads, "GET", None);
            call.query.push(("uploads", String::new()));
            call.query.push(("prefix", self.location.prefix.clone()));
            if let Some((key, id)) = &markers {
                call.query.push(("key-marker", key.clone()));
                call.query.push(("upload-id-marker", id.clone()));
            }
            let response = self.execute(&call)?;
            let text = self.read_result(&call, response)?;
            let page = self.parsed(&call, xml::upload_page(&text))?;
            for upload in page.uploads {
                if let Some(name) = upload.key.strip_prefix(&self.location.prefix) {
                    uploads.push(PendingUpload {
                        name: name.to_owned(),
                        upload_id: upload.upload_id,
                        initiated: upload.initiated,
                    });
                }
            }
            match page.next {
                // A store that repeats its markers would loop for ever.
                Some(next) if Some(&next) != markers.as_ref() => markers = Some(next),
                Some(_) => return Err(self.error(&call, ErrorKind::Invalid("the listing repeats its page".into()))),
                None => return Ok(uploads),
            }
        }
    }

    /// Writes a small object (a sidecar) whole.
    pub fn put_object(&self, name: &str, body: &[u8]) -> Result<(), Error> {
        let mut call = Call::new(Op::PutObject, "PUT", Some(name));
        call.headers.push(("content-type", "application/octet-stream".into()));
        call.body = body;
        self.execute(&call).map(drop)
    }

    /// The object's size and ETag, or `None` when there is no such object.
    pub fn head_object(&self, name: &str) -> Result<Option<ObjectInfo>, Error> {
        let call = Call::new(Op::HeadObject, "HEAD", Some(name));
        let response = match self.execute(&call) {
            Ok(response) => response,
            Err(err) if err.status() == Some(404) => return Ok(None),
            Err(err) if err.status().is_some() && err.code().is_none() => {
                // A HEAD answer has no body to say why (a 400 for a wrong region, a 403 for
                // a wrong secret): the first byte asked with GET brings the store's reason.
                let mut probe = Call::new(Op::HeadObject, "GET", Some(name));
                probe.headers.push(("range", "bytes=0-0".into()));
                return match self.execute(&probe) {
                    Err(reason) if reason.code().is_some() => Err(reason),
                    _ => Err(err),
                };
            }
            Err(err) => return Err(err),
        };
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let size = header("content-length").and_then(|len| len.parse().ok()).ok_or_else(|| {
            self.error(&call, ErrorKind::Invalid("the store answered without the object's size".into()))
        })?;
        Ok(Some(ObjectInfo { size, etag: header("etag").unwrap_or_default() }))
    }

    /// Opens an object for reading, as a stream: nothing of it is held beyond the read.
    pub fn get_object(&self, name: &str) -> Result<Download, Error> {
        let call = Call::new(Op::GetObject, "GET", Some(name));
        let response = self.execute(&call)?;
        let size = response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        Ok(Download {
            reader: Box::new(response.into_body().into_reader()),
            size,
            read: 0,
            context: self.error(&call, ErrorKind::Invalid(String::new())),
        })
    }

    /// Every object under the prefix, every page of them, in key order.
    pub fn list_objects(&self) -> Result<Vec<Object>, Error> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = Call::new(Op::ListObjectsV2, "GET", None);
            call.query.push(("list-type", "2".into()));
            call.query.push(("prefix", self.location.prefix.clone()));
            if let Some(token) = &token {
                call.query.push(("continuation-token", token.clone()));
            }
            let response = self.execute(&call)?;
            let text = self.read_result(&call, response)?;
            let page = self.parsed(&call, xml::object_page(&text))?;
            for entry in page.objects {
                if let Some(name) = entry.key.strip_prefix(&self.location.prefix) {
                    objects.push(Object {
                        name: name.to_owned(),
                        size: entry.size,
                        last_modified: entry.last_modified,
                        etag: entry.etag,
                    });
                }
            }
            match page.next {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                Some(_) => return Err(self.error(&call, ErrorKind::Invalid("the listing repeats its page".into()))),
                None => return Ok(objects),
            }
        }
    }

    /// Removes an object; one that does not exist is no error (S3 answers 204 either way).
    pub fn delete_object(&self, name: &str) -> Result<(), Error> {
        let call = Call::new(Op::DeleteObject, "DELETE", Some(name));
        match self.execute(&call) {
            Ok(_) => Ok(()),
            Err(err) if err.class() == Class::NoSuchKey => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// `http(s)://host[:port]` (a trailing `/` allowed): whether it is https, and the authority.
fn parse_endpoint(endpoint: &str) -> Result<(bool, String), String> {
    let how = "write it as https://HOST[:PORT] (or http:// for a store on this machine)";
    let (secure, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("the S3 endpoint `{endpoint}` has no http:// or https://: {how}"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("the S3 endpoint `{endpoint}` is not a bare host (no path, user or query): {how}"));
    }
    Ok((secure, authority.to_owned()))
}

fn transport(err: ureq::Error) -> ErrorKind {
    let (class, detail) = match &err {
        ureq::Error::Io(io) => return io_kind(io),
        ureq::Error::HostNotFound => (Class::Unreachable, "host not found".to_owned()),
        ureq::Error::ConnectionFailed => (Class::Unreachable, "connection failed".to_owned()),
        ureq::Error::Timeout(which) => (Class::Unavailable, format!("timed out ({which:?})")),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => {
            (Class::Unreachable, format!("TLS: {err}"))
        }
        _ => (Class::Other, err.to_string()),
    };
    ErrorKind::Transport { class, detail }
}

fn io_kind(err: &io::Error) -> ErrorKind {
    use io::ErrorKind as K;
    let class = match err.kind() {
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => Class::Unreachable,
        _ => Class::Unavailable,
    };
    let detail = match err.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        _ => err.to_string(),
    };
    ErrorKind::Transport { class, detail }
}

/// An object being read: `Read` over the response body, which fails rather than ends
/// early when the connection breaks before the size the store announced.
pub struct Download {
    reader: Box<dyn Read + Send>,
    size: Option<u64>,
    read: u64,
    /// The operation and object, for the errors of later reads.
    context: Error,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("target", &self.context.target)
            .field("size", &self.size)
            .field("read", &self.read)
            .finish()
    }
}

impl Download {
    /// The size the store announced, when it did.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    fn fail(&self, kind: ErrorKind) -> io::Error {
        let c = &self.context;
        io::Error::other(Error { op: c.op, target: c.target.clone(), kind, context: c.context.clone() })
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.reader.read(buf) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Err(err),
            Err(err) => return Err(self.fail(io_kind(&err))),
        };
        self.read += n as u64;
        if n == 0 && !buf.is_empty() && self.size.is_some_and(|size| self.read < size) {
            let detail = format!("the connection ended after {} of {} bytes", self.read, self.size.unwrap_or(0));
            return Err(self.fail(ErrorKind::Transport { class: Class::Unavailable, detail }));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsite::credentials::Source;

    fn store(addressing: Addressing, endpoint: Option<&str>) -> Store {
        let config = Config {
            endpoint: endpoint.map(str::to_owned),
            region: "garage".into(),
            location: Location::parse("s3://backups/hindsight/db").unwrap(),
            addressing,
        };
        Store::new(config, Credentials::new("GKID", "the-secret", Some("the-token"), Source::Environment)).unwrap()
    }

    #[test]
    fn locations_parse_with_a_normalised_prefix() {
        let l = Location::parse("s3://backups").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("backups", ""));
        let l = Location::parse("s3://backups/").unwrap();
        assert_eq!(l.prefix, "");
        let l = Location::parse("s3://backups/hindsight//db/").unwrap();
        assert_eq!(l.prefix, "hindsight//db/", "inner slashes are the user's key");
        assert_eq!(Location::parse("s3://b/x").unwrap().to_string(), "s3://b/x/");
        for bad in ["backups", "s3://", "s3:///x", "https://b/x", "s3://b c/x", "s3://b?x"] {
            let err = Location::parse(bad).unwrap_err();
            assert!(err.contains("s3://BUCKET"), "{bad}: {err}");
        }
    }

    #[test]
    fn endpoints_are_bare_hosts_with_a_scheme() {
        assert_eq!(parse_endpoint("http://127.0.0.1:3900").unwrap(), (false, "127.0.0.1:3900".into()));
        assert_eq!(parse_endpoint("https://s3.example.org/").unwrap(), (true, "s3.example.org".into()));
        for bad in ["127.0.0.1:3900", "ftp://x", "http://", "http://h/path", "http://user:pw@h", "https://h?x=1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_and_virtual_host_addressing() {
        let s = store(Addressing::Path, Some("http://127.0.0.1:3900"));
        assert_eq!((s.host.as_str(), s.base_path.as_str(), s.secure), ("127.0.0.1:3900", "/backups", false));
        let s = store(Addressing::VirtualHost, None);
        assert_eq!(s.endpoint, "https://s3.garage.amazonaws.com");
        assert_eq!((s.host.as_str(), s.base_path.as_str(), s.secure), ("backups.s3.garage.amazonaws.com", "", true));
        assert_eq!(s.key("a.sql"), "hindsight/db/a.sql");
        assert_eq!(s.url("a.sql"), "s3://backups/hindsight/db/a.sql");
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", store(Addressing::Path, Some("http://127.0.0.1:3900")));
        assert!(shown.contains("GKID") && shown.contains("127.0.0.1:3900"), "{shown}");
        assert!(!shown.contains("the-secret") && !shown.contains("the-token"), "{shown}");
    }

    #[test]
    fn errors_are_classified_by_code_then_status() {
        assert_eq!(classify(403, "InvalidAccessKeyId", ""), Class::Credentials);
        assert_eq!(classify(403, "SignatureDoesNotMatch", ""), Class::Credentials);
        assert_eq!(classify(403, "AccessDenied", "Access Denied"), Class::Denied);
        // Garage's answers, as a single node 2.5.0 gave them.
        assert_eq!(classify(403, "AccessDenied", "Forbidden: Invalid signature"), Class::Credentials);
        assert_eq!(
            classify(403, "AccessDenied", "Forbidden: No such key: GK000000000000000000000000"),
            Class::Credentials
        );
        assert_eq!(
            classify(
                403,
                "AccessDenied",
                "Forbidden: Bucket size quota is reached, maximum total size of objects for this bucket: 10000000."
            ),
            Class::Quota
        );
        assert_eq!(classify(404, "NoSuchBucket", "Bucket not found: nope"), Class::NoSuchBucket);
        assert_eq!(
            classify(
                400,
                "AuthorizationHeaderMalformed",
                "Authorization header malformed, unexpected scope: '20261125/us-east-1/s3/aws4_request', expected: '20261125/garage/s3/aws4_request'"
            ),
            Class::Region
        );
        assert_eq!(classify(403, "", ""), Class::Denied, "a HEAD's 403 has no body");
        assert_eq!(classify(404, "NoSuchBucket", ""), Class::NoSuchBucket);
        assert_eq!(classify(403, "QuotaExceeded", ""), Class::Quota);
        assert_eq!(classify(403, "AccessDenied", "Forbidden: Bucket quota is exceeded"), Class::Quota);
        assert_eq!(classify(400, "EntityTooLarge", ""), Class::Quota);
        assert_eq!(classify(400, "AuthorizationHeaderMalformed", "region 'us-east-1' is wrong"), Class::Region);
        assert_eq!(classify(301, "", ""), Class::Region);
        assert_eq!(classify(403, "RequestTimeTooSkewed", ""), Class::Clock);
        assert_eq!(
            classify(400, "BadDigest", "Bad digest: The Content-MD5 you specified did not match what we received."),
            Class::Integrity
        );
        assert_eq!(
            classify(
                400,
                "InvalidDigest",
                "Invalid digest: SHA256 checksum verification failed (from x-amz-content-sha256)"
            ),
            Class::Integrity
        );
        assert_eq!(classify(503, "SlowDown", ""), Class::Unavailable);
        assert_eq!(classify(502, "", ""), Class::Unavailable);
        assert_eq!(classify(404, "NoSuchUpload", ""), Class::NoSuchUpload);
        assert_eq!(classify(400, "InvalidArgument", ""), Class::Other);
    }

    #[test]
    fn messages_name_the_operation_the_object_and_what_to_do_never_the_secret() {
        let s = store(Addressing::Path, Some("http://127.0.0.1:3900"));
        let mut call = Call::new(Op::UploadPart, "PUT", Some("x.sql.zst"));
        call.detail = Some("part 3, 8388608 bytes".into());
        let status =
            |code: &str, message: &str| ErrorKind::Status { status: 403, code: code.into(), message: message.into() };
        let err = s.error(&call, status("AccessDenied", "Access Denied"));
        let text = err.to_string();
        assert!(
            text.starts_with(
                "offsite UploadPart of `s3://backups/hindsight/db/x.sql.zst` (part 3, 8388608 bytes) failed: HTTP 403 AccessDenied (Access Denied); "
            ),
            "{text}"
        );
        assert!(text.contains("may not write to bucket `backups`"), "{text}");
        let err = s.error(&call, status("SignatureDoesNotMatch", "The request signature we calculated does not match"));
        assert!(err.to_string().contains("refused the credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"));
        let refused = ErrorKind::Transport { class: Class::Unreachable, detail: "connection refused".into() };
        let err = s.error(&Call::new(Op::ListObjectsV2, "GET", None), refused);
        assert!(err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains(
                "of bucket `backups` failed: connection refused; cannot reach the store at http://127.0.0.1:3900"
            ),
            "{text}"
        );
        for kind in [status("InvalidAccessKeyId", "the-secret"), status("", "")] {
            let text = s.error(&call, kind).to_string();
            assert!(!text.contains("the-token") && !text.contains("GKID"), "{text}");
        }
    }

    #[test]
    fn an_error_survives_the_trip_through_io_error() {
        let s = store(Addressing::Path, Some("http://127.0.0.1:3900"));
        let err: io::Error =
            s.error(&Call::new(Op::PutObject, "PUT", Some("a")), ErrorKind::Invalid("x".into())).into();
        let back = err.get_ref().and_then(|e| e.downcast_ref::<Error>()).expect("an S3 error inside");
        assert_eq!(back.op, Op::PutObject);
    }

    #[test]
    fn a_download_cut_short_is_an_error_not_an_end() {
        let s = store(Addressing::Path, Some("http://127.0.0.1:3900"));
        let context = s.error(&Call::new(Op::GetObject, "GET", Some("a")), ErrorKind::Invalid(String::new()));
        let mut d = Download { reader: Box::new(&b"12345"[..]), size: Some(10), read: 0, context };
        let mut out = Vec::new();
        let err = d.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("ended after 5 of 10 bytes"), "{err}");
        let context = s.error(&Call::new(Op::GetObject, "GET", Some("a")), ErrorKind::Invalid(String::new()));
        let mut d = Download { reader: Box::new(&b"12345"[..]), size: Some(5), read: 0, context };
        out.clear();
        assert_eq!(d.read_to_end(&mut out).unwrap(), 5);
    }
}
