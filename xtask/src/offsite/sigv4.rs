//! AWS Signature Version 4 for S3, pure: the canonical request, the string to sign, the
//! signing key and the signature, and the URI encoding they depend on. No clock and no
//! network here, so that every step is checked against AWS's published examples.
//!
//! S3 differs from the other services in two ways that matter here: the path is encoded
//! once (not twice) and never normalised (`a//b` and `a/./b` are keys of their own), and
//! `x-amz-content-sha256` carries the payload's hash, which the store checks against the
//! body it received: a signed payload is also an integrity check of every byte sent.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::store::backup_file::hex;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The SHA-256 of nothing: the payload hash of a request without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What a signature covers, apart from the secret.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent: already encoded with [`uri_encode`] (`/bucket/a%20b`).
    pub canonical_uri: &'a str,
    /// Unencoded names and values; `("uploads", "")` is the bare `?uploads`.
    pub query: &'a [(&'a str, String)],
    /// Names in lower case, every one of them signed (`host` among them).
    pub headers: &'a [(&'a str, String)],
    /// Hex SHA-256 of the body ([`EMPTY_SHA256`] for none).
    pub payload_sha256: &'a str,
}

/// When and where a request is signed: `20130524T000000Z`, its region and service.
pub struct Scope<'a> {
    pub amz_date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl Scope<'_> {
    fn date(&self) -> &str {
        &self.amz_date[..8]
    }

    /// `20130524/us-east-1/s3/aws4_request`
    pub fn credential_scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date(), self.region, self.service)
    }
}

/// RFC 3986 encoding as SigV4 wants it: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX`
/// (upper-case hex); `/` kept when `keep_slash` (object keys in a path), encoded
/// otherwise (query names and values).
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The query in canonical form, which is also the form sent: encoded pairs sorted by name,
/// then value, `name=value` joined with `&` (a bare name signs as `name=`).
pub fn canonical_query(query: &[(&str, String)]) -> String {
    let mut pairs: Vec<(String, String)> =
        query.iter().map(|(name, value)| (uri_encode(name, false), uri_encode(value, false))).collect();
    pairs.sort();
    pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

/// The canonical request and its signed-headers list (`host;range;x-amz-date`).
pub fn canonical_request(request: &Request<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> =
        request.headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), normalise_value(value))).collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(name, value)| format!("{name}:{value}\n")).collect();
    let signed_headers = headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.canonical_uri,
        canonical_query(request.query),
        canonical_headers,
        signed_headers,
        request.payload_sha256
    );
    (text, signed_headers)
}

/// A header value as signed: trimmed, inner runs of spaces made one.
fn normalise_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn string_to_sign(scope: &Scope<'_>, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        scope.amz_date,
        scope.credential_scope(),
        hex(&Sha256::digest(canonical_request.as_bytes()))
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The day's key for one region and service, derived from the secret.
pub fn signing_key(secret: &str, scope: &Scope<'_>) -> [u8; 32] {
    let date = hmac(format!("AWS4{secret}").as_bytes(), scope.date().as_bytes());
    let region = hmac(&date, scope.region.as_bytes());
    let service = hmac(&region, scope.service.as_bytes());
    hmac(&service, b"aws4_request")
}

pub fn signature(secret: &str, scope: &Scope<'_>, string_to_sign: &str) -> String {
    hex(&hmac(&signing_key(secret, scope), string_to_sign.as_bytes()))
}

/// The `Authorization` header's value for `request`.
pub fn authorization(access_key_id: &str, secret: &str, scope: &Scope<'_>, request: &Request<'_>) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let signature = signature(secret, scope, &string_to_sign(scope, &canonical));
    format!(
        "{ALGORITHM} Credential={access_key_id}/{},SignedHeaders={signed_headers},Signature={signature}",
        scope.credential_scope()
    )
}

/// Standard base64 with padding, for `Content-MD5`: the one place this crate needs it,
/// too small a need for a dependency.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The "GET Object" example of AWS's "Signature Calculations for the Authorization
    // Header" page (S3 API reference): a 10-byte range of examplebucket/test.txt.
    const S3_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn s3_get_object_headers() -> Vec<(&'static str, String)> {
        vec![
            ("host", "examplebucket.s3.amazonaws.com".into()),
            ("range", "bytes=0-9".into()),
            ("x-amz-content-sha256", EMPTY_SHA256.into()),
            ("x-amz-date", "20130524T000000Z".into()),
        ]
    }

    #[test]
    fn the_s3_get_object_example_signs_as_published() {
        let headers = s3_get_object_headers();
        let request = Request {
            method: "GET",
            canonical_uri: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let (canonical, signed) = canonical_request(&request);
        assert_eq!(
            canonical,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "host;range;x-amz-content-sha256;x-amz-date");
        let scope = Scope { amz_date: "20130524T000000Z", region: "us-east-1", service: "s3" };
        let to_sign = string_to_sign(&scope, &canonical);
        assert_eq!(
            to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            signature(S3_SECRET, &scope, &to_sign),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(
            authorization(S3_KEY_ID, S3_SECRET, &scope, &request),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn the_test_suites_get_vanilla_signs_as_published() {
        // aws-sig-v4-test-suite/get-vanilla: service `service`, its own example secret.
        let headers = [("host", "example.amazonaws.com".to_owned()), ("x-amz-date", "20150830T123600Z".to_owned())];
        let request =
            Request { method: "GET", canonical_uri: "/", query: &[], headers: &headers, payload_sha256: EMPTY_SHA256 };
        let scope = Scope { amz_date: "20150830T123600Z", region: "us-east-1", service: "service" };
        assert_eq!(
            authorization("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &scope, &request),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,\
             SignedHeaders=host;x-amz-date,\
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn header_names_are_lowered_sorted_and_values_trimmed() {
        let headers = [("X-Amz-Date", "  20150830T123600Z ".to_owned()), ("Host", "h".to_owned())];
        let request = Request { method: "PUT", canonical_uri: "/", query: &[], headers: &headers, payload_sha256: "p" };
        let (canonical, signed) = canonical_request(&request);
        assert_eq!(signed, "host;x-amz-date");
        assert!(canonical.contains("\nhost:h\nx-amz-date:20150830T123600Z\n\n"), "{canonical}");
    }

    #[test]
    fn keys_are_encoded_once_with_their_slashes_kept() {
        assert_eq!(
            uri_encode("backups/hindsight_db_backup_20261125_100000_3f2a.sql.zst", true),
            "backups/hindsight_db_backup_20261125_100000_3f2a.sql.zst"
        );
        assert_eq!(uri_encode("a b+c=d&e/ä~", true), "a%20b%2Bc%3Dd%26e/%C3%A4~");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_encode("2026050201+rls", true), "2026050201%2Brls", "a `+` is never a space");
        assert_eq!(
            uri_encode("%41", true),
            "%2541",
            "already-encoded text is encoded again, as the store decodes once"
        );
    }

    #[test]
    fn the_query_is_sorted_by_encoded_name_and_bare_names_sign_as_empty_values() {
        let query = [
            ("uploadId", "abc/def=".to_owned()),
            ("partNumber", "3".to_owned()),
            ("uploads", String::new()),
            ("prefix", "backups/a b".to_owned()),
        ];
        assert_eq!(canonical_query(&query), "partNumber=3&prefix=backups%2Fa%20b&uploadId=abc%2Fdef%3D&uploads=");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        // Content-MD5 of nothing, as S3's documentation spells it.
        use md5::{Digest as _, Md5};
        assert_eq!(base64(&Md5::digest(b"")), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }
}
