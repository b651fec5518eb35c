//! `cargo xtask test`: provision the test bed (Docker Engine, Compose v1 and v2, cron, uv,
//! the postgres image), then run the whole test suite against it.

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::{cli::Test, process};

impl Test {
    pub fn run(self, sh: &Shell) -> Result<()> {
        process::run_attached("provisioning", cmd!(sh, "bash infra/testbed/provision.sh")).context(
            "provisioning the test bed failed: it needs root on Debian bookworm (see infra/testbed/provision.sh)",
        )?;
        let args = self.cargo_test_args;
        process::run_attached("cargo test", cmd!(sh, "cargo test --workspace --locked {args...}"))
            .context("the test suite failed: see the failures above")
    }
}
