//! Offsite copies of backups in S3-compatible object storage (AWS S3, Garage, MinIO,
//! Ceph RGW, R2, B2).
//!
//! - `remote`: the copies of one database's backups, as the tasks use them.
//! - `sigv4`: request signing (pure).
//! - `xml`: the XML of S3's answers (pure).
//! - `credentials`: the key, from the environment or the shared credentials file.
//! - `s3`: a bucket and prefix, its operations, and their typed errors.
//! - `upload`: a multipart upload as a `Write`, with bounded memory.

pub mod credentials;
pub mod remote;
pub mod s3;
pub mod sigv4;
pub mod upload;
pub mod xml;
