//! How a run is watched from outside: its record in the backup directory, a Prometheus
//! metrics file, pings to a dead-man's switch, its own rotated log, and the file that
//! keeps the job's secrets out of the cron line.

pub mod log;
pub mod metrics;
pub mod record;
pub mod secrets_file;
