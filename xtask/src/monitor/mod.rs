//! How a run is watched from outside: its record in the backup directory, a Prometheus
//! metrics file, pings to a dead-man's switch, its own rotated log.

pub mod ping;
