//! `cargo xtask test`: provision the test bed (Docker Engine, Compose v1 and v2, cron, uv,
//! the postgres image), then run the whole test suite against it.

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::{cli::Test, output::step, process};

impl Test {
    pub fn run(self, sh: &Shell) -> Result<()> {
        process::run_attached("provisioning", cmd!(sh, "bash infra/testbed/provision.sh")).context(
            "provisioning the test bed failed: it needs root on Debian bookworm (see infra/testbed/provision.sh)",
        )?;
        let args = &self.cargo_test_args;
        process::run_attached("cargo test", cmd!(sh, "cargo test --workspace --locked {args...}"))
            .context("the test suite failed: see the failures above")?;
        // It installs a crontab, if only a throwaway user's: never on a developer's machine
        // unless asked.
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if in_ci || std::env::var("HINDSIGHT_CRON_E2E").is_ok_and(|v| v == "1") {
            process::run_attached("cron test", cmd!(sh, "cargo test --locked --test e2e -- --ignored {args...}"))
                .context("the cron end-to-end test failed: see above")
        } else {
            step!(
                "not running the cron end-to-end test (it creates a user and a crontab): set HINDSIGHT_CRON_E2E=1 to run it"
            );
            Ok(())
        }
    }
}
