//! The installed job's secrets file: `KEY=VALUE` lines, mode 0600, named by
//! `HINDSIGHT_SECRETS_FILE`, read before the command line is parsed.
