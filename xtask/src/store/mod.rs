//! The backup store on disk: the directory and its locks, the files' names and sidecars,
//! the catalogue of complete backups, and which of them retention keeps.

pub mod backup_dir;
pub mod backup_file;
pub mod catalogue;
pub mod retention;
pub mod roles;
