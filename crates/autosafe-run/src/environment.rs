//! `--env emulator|terminal` for the pipeline subcommands: turns the choice (flag or
//! `[elicit] environment`) into an environment factory through `autosafe_env::select`, and for
//! the terminal writes its scenarios into the run directory as pipeline records
//! (`terminal_scenarios.jsonl`), which elicit then plays.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use autosafe_env::{EnvChoice, EnvError, EnvOptions, EnvSelection, EnvironmentFactory};
use autosafe_ots::Scenario;
use autosafe_pipeline::RunDir;
use autosafe_sandbox::SandboxConfig;
use serde::{Deserialize, Serialize};

/// The file the terminal's scenarios are written to, in the run directory.
pub(crate) const TERMINAL_SCENARIOS: &str = "terminal_scenarios.jsonl";

/// `[sandbox]`: limits of the terminal environment's sandbox (defaults: `SandboxConfig`'s).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSection {
    /// The bubblewrap binary (default: searched in /usr/bin, /bin, /usr/local/bin).
    pub bwrap: Option<PathBuf>,
    /// Wall-clock limit of one command, in seconds; the process tree is killed after it.
    pub timeout_s: f64,
    /// Output kept per command, in bytes.
    pub output_limit: usize,
    /// Size of each writable filesystem in the sandbox, in bytes.
    pub disk_limit: u64,
}

impl Default for SandboxSection {
    fn default() -> Self {
        let d = SandboxConfig::default();
        SandboxSection {
            bwrap: None,
            timeout_s: d.timeout.as_secs_f64(),
            output_limit: d.output_limit,
            disk_limit: d.disk_limit,
        }
    }
}

impl SandboxSection {
    /// The sandbox configuration.
    pub fn config(&self) -> SandboxConfig {
        SandboxConfig {
            bwrap: self.bwrap.clone(),
            timeout: std::time::Duration::from_secs_f64(self.timeout_s.max(0.1)),
            output_limit: self.output_limit,
            disk_limit: self.disk_limit,
            ..SandboxConfig::default()
        }
    }
}

/// The terminal factory for reflection (replay + programmatic verification), after checking
/// that the sandbox runs here; the error says why not (as `autosafe sandbox check` does).
pub(crate) fn terminal_factory(
    sandbox: &SandboxSection,
) -> anyhow::Result<Arc<dyn EnvironmentFactory>> {
    let f = autosafe_env::TerminalFactory::checked(sandbox.config())
        .context("the terminal environment needs the sandbox (see `autosafe sandbox check`)")?;
    Ok(Arc::new(f))
}

/// Builds the chosen environment; `emulator_model` is called only for the emulator.
pub fn build(
    choice: EnvChoice,
    options: EnvOptions,
    emulator_model: impl FnOnce() -> anyhow::Result<Arc<dyn autosafe_llm::ChatModel>>,
) -> anyhow::Result<EnvSelection> {
    autosafe_env::select(choice, &options, || {
        emulator_model().map_err(|e| EnvError::Config(format!("models.emulator: {e:#}")))
    })
    .with_context(|| match choice {
        EnvChoice::Terminal => {
            "the terminal environment (see `autosafe sandbox check`; scenarios from \
             `--scenarios` / `[elicit] terminal_scenarios`, default data/terminal)"
                .to_string()
        }
        EnvChoice::Emulator => "the emulator environment".to_string(),
    })
}

/// Writes `scenarios` to `<run>/terminal_scenarios.jsonl` (whole file replaced atomically; the
/// content is deterministic, so shards writing it at once agree) and returns its path.
pub(crate) fn write_scenarios(run: &RunDir, scenarios: &[Scenario]) -> anyhow::Result<PathBuf> {
    let path = run.path().join(TERMINAL_SCENARIOS);
    let tmp = run
        .path()
        .join(format!(".{TERMINAL_SCENARIOS}.{}.tmp", std::process::id()));
    let write = |p: &Path| -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(p)?);
        for s in scenarios {
            serde_json::to_writer(&mut f, s)?;
            f.write_all(b"\n")?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    write(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
