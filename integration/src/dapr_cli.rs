//! The real dapr CLI (`scripts/setup-dapr-cli.sh`), run the way an operator runs it against
//! the sandbox's sidecars: it finds them among the host's `daprd` processes.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use crate::children::script_output;

pub struct DaprCli {
    binary: PathBuf,
}

impl DaprCli {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            binary: script_output("setup-dapr-cli.sh", &[])?,
        })
    }

    /// `dapr <args>`: its standard output, or an error with everything it printed.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.binary)
            .args(args)
            .output()
            .with_context(|| format!("run {}", self.binary.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        anyhow::ensure!(
            output.status.success(),
            "dapr {} failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(stdout)
    }

    /// `dapr invoke --app-id <app_id> --method <method> --data <data>`: the JSON the app
    /// answered (the CLI prints it before its own success line). The CLI calls the target's
    /// own sidecar and (1.12) sends no Dapr API token, so the sidecar must not ask for one.
    pub fn invoke(
        &self,
        app_id: &str,
        method: &str,
        data: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let stdout = self.run(&[
            "invoke",
            "--app-id",
            app_id,
            "--method",
            method,
            "--data",
            &data.to_string(),
        ])?;
        let body = stdout
            .lines()
            .find(|line| line.trim_start().starts_with('{'))
            .with_context(|| format!("no JSON in the CLI's output:\n{stdout}"))?;
        Ok(serde_json::from_str(body)?)
    }
}
