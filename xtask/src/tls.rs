//! Whom the xtask's HTTPS clients (the offsite store, the ping) trust: Mozilla's roots,
//! built in, or, when `SSL_CERT_FILE` names a PEM bundle, exactly the certificates in it.
//!
//! That is what OpenSSL and curl do with the variable: the bundle replaces the built-in
//! roots, it does not add to them. So a store or a ping server behind a private CA works
//! with the same setting the rest of the machine already uses, and a test can trust its
//! throwaway CA without trusting the world. The variable is read here and nowhere else.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// The variable OpenSSL and curl read: a PEM file of the CA certificates to trust.
pub const CERT_FILE_VAR: &str = "SSL_CERT_FILE";

/// `SSL_CERT_FILE`'s path; `None` when it is unset or empty (an empty value is how a
/// cron line or a wrapper script says "not set").
pub fn cert_file_from_env() -> Option<PathBuf> {
    std::env::var_os(CERT_FILE_VAR).filter(|v| !v.is_empty()).map(|v: OsString| PathBuf::from(v))
}

/// The TLS setup for this process: `SSL_CERT_FILE`'s bundle when it is set, else the
/// built-in roots.
pub fn config() -> anyhow::Result<TlsConfig> {
    config_from(cert_file_from_env().as_deref())
}

/// The TLS setup trusting the CA certificates in `cert_file` only (a PEM bundle), or the
/// built-in roots for `None`. Taken as a parameter so that a test can trust its own CA
/// without setting a variable every thread of the test process shares.
pub fn config_from(cert_file: Option<&Path>) -> anyhow::Result<TlsConfig> {
    let Some(path) = cert_file else {
        return Ok(TlsConfig::default());
    };
    let shown = path.display();
    let pem = std::fs::read(path).with_context(|| {
        format!("cannot read {CERT_FILE_VAR} `{shown}`: point it at a readable PEM bundle of CA certificates, or unset it to trust the built-in roots")
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            // A bundle may carry keys or other blocks beside the certificates: not trust.
            Ok(_) => {}
            Err(err) => bail!(
                "{CERT_FILE_VAR} `{shown}` is not a valid PEM bundle ({err}): point it at a file of \
                 `-----BEGIN CERTIFICATE-----` blocks, or unset it to trust the built-in roots"
            ),
        }
    }
    if certs.is_empty() {
        bail!(
            "{CERT_FILE_VAR} `{shown}` holds no certificate (no `-----BEGIN CERTIFICATE-----` block): \
             point it at the CA's PEM bundle, or unset it to trust the built-in roots"
        );
    }
    Ok(TlsConfig::builder().root_certs(RootCerts::new_with_certs(&certs)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_the_built_in_roots() {
        let config = config_from(None).unwrap();
        assert!(matches!(config.root_certs(), RootCerts::WebPki));
    }

    #[test]
    fn a_missing_or_empty_bundle_is_an_error_saying_what_to_do() {
        let dir = std::env::temp_dir().join(format!("xtask-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = format!("{:#}", config_from(Some(&missing)).unwrap_err());
        assert!(err.contains("cannot read SSL_CERT_FILE") && err.contains("unset it"), "{err}");

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = format!("{:#}", config_from(Some(&empty)).unwrap_err());
        assert!(err.contains("holds no certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
