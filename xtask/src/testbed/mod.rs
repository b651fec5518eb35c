//! Test-bed code, shared by the end-to-end tests and `cargo xtask bench`: servers the
//! xtask talks to, started on loopback for a test or a measurement and thrown away after.
//! No task a person runs against their own database uses it.
//!
//! - `garage`: Garage, the S3 store of the offsite tests and bench. It is AGPL, and is
//!   only ever run as a separate program (the binary provision.sh builds), never linked.

pub mod garage;
