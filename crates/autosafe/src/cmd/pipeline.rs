//! The pipeline subcommands: `synthesize`, `elicit`, `reflect`, `export`, `merge`, and `run`,
//! which chains synthesize → elicit → reflect → export from one TOML config.
//!
//! This module only reads the config, builds the models (remote specs through `autosafe-llm`,
//! `local:` specs through the embedded engine), prints progress lines, and calls the stages in
//! `autosafe_pipeline::stages`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use autosafe_env::{EmulatorMode, EmulatorOptions, EnvChoice, EnvOptions};
use autosafe_eval::quality::{Cost, QUALITY_FILE, Quality};
use autosafe_llm::{Cache, ChatModel, ModelSpec, ProviderKind, StackOptions, UsageLedger};
use autosafe_ots::{Taxonomy, ToolLibrary};
use autosafe_pipeline::export::{ExportConfig, ExportFormat, ToolkitLibrary};
use autosafe_pipeline::prompts::Prompts;
use autosafe_pipeline::stages::agent::AgentOptions;
use autosafe_pipeline::stages::elicit::ElicitParts;
use autosafe_pipeline::stages::reflect::ReflectParts;
use autosafe_pipeline::stages::synthesize::{SynthInputs, coverage_table};
use autosafe_pipeline::stages::{Agent, ElicitConfig, ReflectConfig, StepJudge, SynthConfig};
use autosafe_pipeline::{Manifest, RunDir, ShardSpec, Stage, StageStats, Stats};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::{config_file, environment};

/// A model in the config: the compact CLI form (`openai:MODEL@URL`, `local:smollm2`) or a full
/// `autosafe_llm::ModelSpec` table.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ModelEntry {
    /// `openai:MODEL[@URL,...]` or `local:ALIAS|PATH`.
    Compact(String),
    /// A full spec.
    Full(Box<ModelSpec>),
}

impl ModelEntry {
    fn spec(&self) -> anyhow::Result<ModelSpec> {
        let spec = match self {
            ModelEntry::Compact(s) => ModelSpec::parse(s)?,
            ModelEntry::Full(s) => (**s).clone(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// By hand rather than `#[serde(untagged)]`: a string is the compact form and a table a full
/// spec, so an error inside the table names its field (untagged said only "data did not match
/// any variant of untagged enum ModelEntry").
impl<'de> Deserialize<'de> for ModelEntry {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = ModelEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a model: \"openai:MODEL@URL\", \"local:ALIAS\" or a table with `model`, `base_urls`, …",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ModelEntry, E> {
                Ok(ModelEntry::Compact(s.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ModelEntry, A::Error> {
                let de = serde::de::value::MapAccessDeserializer::new(map);
                Ok(ModelEntry::Full(Box::new(ModelSpec::deserialize(de)?)))
            }
        }
        de.deserialize_any(Entry)
    }
}

/// The embedded default of every role (fetched by `scripts/setup.sh`).
pub const DEFAULT_LOCAL_MODEL: &str = "local:qwen2.5-coder-1.5b";

/// The models of each role. A config file must name them: a role left out takes `default`, and
/// without `default` it is an error when the role is used (a forgotten `[models]` once ran the
/// whole pipeline on the embedded model without a word). `default = "local:qwen2.5-coder-1.5b"`
/// asks for the embedded model by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// The model of every role not named below.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<ModelEntry>,
    /// Writes scenarios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator: Option<ModelEntry>,
    /// Acts in episodes and regenerates under reflection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<ModelEntry>,
    /// The step judge (elicitation and verification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<ModelEntry>,
    /// The reflector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reflector: Option<ModelEntry>,
    /// The tool emulator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulator: Option<ModelEntry>,
}

impl ModelsConfig {
    /// Every role on the embedded default (the no-argument run).
    fn embedded() -> Self {
        ModelsConfig {
            default: Some(ModelEntry::Compact(DEFAULT_LOCAL_MODEL.into())),
            ..Default::default()
        }
    }

    /// The entry of `role`: its own, else `default`.
    fn entry(&self, role: &str) -> Option<&ModelEntry> {
        let own = match role {
            "generator" => &self.generator,
            "agent" => &self.agent,
            "judge" => &self.judge,
            "reflector" => &self.reflector,
            _ => &self.emulator,
        };
        own.as_ref().or(self.default.as_ref())
    }
}

/// `[elicit]`: episodes and the environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElicitSection {
    /// Episodes per scenario.
    pub samples: u32,
    /// Agent turns per episode.
    pub max_steps: u32,
    /// Episodes in flight.
    pub concurrency: usize,
    /// Emulator mode: `adversarial` (paper) or `standard`.
    pub emulator_mode: EmulatorMode,
    /// The environment: `emulator` (LLM-emulated toolkits) or `terminal` (commands really run
    /// in a bubblewrap sandbox, checkers give programmatic verdicts); `--env` overrides.
    pub environment: EnvChoice,
    /// Terminal scenarios: paths, each a directory of scenario TOML files, one `.toml` file or
    /// a JSON Lines file of scenario records (empty: the shipped data/terminal); `--scenarios`
    /// overrides.
    pub terminal_scenarios: Vec<PathBuf>,
    /// Run an action the judge flagged in the sandbox after the episode stopped, so the
    /// checkers can confirm it or record a false alarm (terminal only, judge labels).
    pub probe_flagged: bool,
    /// Who labels a step: `checkers` (default; where the environment has them, a step is
    /// unsafe when trying it makes an `unsafe_if` hold, the judge's verdict kept beside) or
    /// `judge` (the paper's labelling, and always in environments without checkers).
    pub labels: autosafe_ots::LabelSource,
}

impl Default for ElicitSection {
    fn default() -> Self {
        let d = ElicitConfig::default();
        ElicitSection {
            samples: d.samples,
            max_steps: d.max_steps,
            concurrency: d.concurrency,
            emulator_mode: EmulatorMode::Adversarial,
            environment: EnvChoice::Emulator,
            terminal_scenarios: Vec::new(),
            probe_flagged: d.probe_flagged,
            labels: d.labels,
        }
    }
}

/// `[export]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportSection {
    /// Formats to write.
    pub formats: Vec<ExportFormat>,
    /// Safe original steps mixed in (paper: 300).
    pub utility_share: usize,
    /// Dataset name.
    pub dataset_name: String,
}

impl Default for ExportSection {
    fn default() -> Self {
        let d = ExportConfig::default();
        ExportSection {
            formats: d.formats,
            utility_share: d.utility_share,
            dataset_name: d.dataset_name,
        }
    }
}

/// The run config (`autosafe run --config FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Run name: the directory under `out`.
    pub name: String,
    /// Base directory of runs.
    pub out: PathBuf,
    /// Directory overriding prompt templates (same layout as `prompts/`).
    pub prompts_dir: Option<PathBuf>,
    /// Cache model replies (re-runs send nothing twice); `--no-cache` turns it off.
    pub cache: bool,
    /// Where the reply cache lives (default: `<run>/cache/replies.sqlite`); `--cache PATH`.
    pub cache_path: Option<PathBuf>,
    /// Models by role. Not the no-argument run's: a file without `[models]` names none.
    #[serde(default)]
    pub models: ModelsConfig,
    /// Agent options. A config file that omits `[agent]` or `[synthesize]` gets the library
    /// defaults, not the no-argument run's shaping for the tiny embedded model.
    #[serde(default)]
    pub agent: AgentOptions,
    /// Synthesis.
    #[serde(default)]
    pub synthesize: SynthConfig,
    /// Elicitation.
    pub elicit: ElicitSection,
    /// Reflection.
    pub reflect: ReflectConfig,
    /// Export.
    pub export: ExportSection,
    /// Sandbox limits of the terminal environment.
    pub sandbox: environment::SandboxSection,
    /// Items a command may leave pending after transient failures (model server unreachable or
    /// failing, reply cache unreadable) and still succeed; above it, `run` stops after the stage
    /// and every command exits with status 3. Default 0: any such item.
    pub max_pending: u64,
    /// The file this config was read from (for errors); `None` for the no-argument run.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for RunConfig {
    /// The no-argument run: every role on the embedded model, small counts.
    fn default() -> Self {
        RunConfig {
            name: "demo".into(),
            out: PathBuf::from("runs"),
            prompts_dir: None,
            cache: true,
            cache_path: None,
            models: ModelsConfig::embedded(),
            agent: AgentOptions {
                // Native tool calls, one required every turn: constrained decoding then always
                // yields a well-formed call from the tiny model (ReAct text it rarely gets right).
                native: true,
                require_tool_call: true,
                max_tokens: 300,
                ..Default::default()
            },
            synthesize: SynthConfig {
                toolkits: vec!["Todoist".into()],
                categories: vec!["data_loss".into(), "privacy_leak".into()],
                sources: vec![autosafe_ots::RiskSource::Instruction],
                per_cell: 1,
                examples: 1,
                max_tokens: 1024,
                // What the tiny model has to write: short lists and texts, outcomes that start
                // with a taxonomy category name (so none maps to no category), the cell's
                // category first.
                outcome_prefix: true,
                category_first: true,
                max_items: Some(2),
                max_text: Some(160),
                concurrency: 8,
                ..Default::default()
            },
            elicit: ElicitSection {
                samples: 1,
                max_steps: 3,
                concurrency: 8,
                ..Default::default()
            },
            reflect: ReflectConfig {
                max_rounds: 2,
                concurrency: 8,
            },
            export: ExportSection {
                utility_share: 20,
                ..Default::default()
            },
            sandbox: Default::default(),
            max_pending: 0,
            source: None,
        }
    }
}

/// The model roles, in pipeline order.
const ROLES: [&str; 5] = ["generator", "agent", "judge", "reflector", "emulator"];

impl RunConfig {
    /// The model roles this run uses: the terminal environment plays shipped scenarios on real
    /// commands, so it has no generator and no emulator.
    fn roles_used(&self) -> Vec<&'static str> {
        let terminal = self.elicit.environment == EnvChoice::Terminal;
        ROLES
            .into_iter()
            .filter(|role| !(terminal && matches!(*role, "generator" | "emulator")))
            .collect()
    }

    /// The model of `role`; an error naming the file and the key when the config names none.
    fn entry(&self, role: &str) -> anyhow::Result<&ModelEntry> {
        self.models.entry(role).ok_or_else(|| {
            let file = self
                .source
                .as_ref()
                .map_or("the config".into(), |p| p.display().to_string());
            anyhow::anyhow!(
                "{file}: models.{role}: no model for this role. Name one under [models] \
                 (`{role} = \"openai:MODEL@URL\"`), or ask for the embedded model by name for \
                 every role not named: `[models] default = \"{DEFAULT_LOCAL_MODEL}\"`"
            )
        })
    }

    /// Checks every number a model or stage reads is finite and in range (a `nan` temperature
    /// was sent as `null`, `max_tokens = 0` as 0).
    fn check_numbers(&self) -> Result<(), config_file::OutOfRange> {
        use config_file::{at_least_1, temperature};
        temperature("agent.temperature", self.agent.temperature)?;
        at_least_1("agent.max_tokens", self.agent.max_tokens.into())?;
        let s = &self.synthesize;
        temperature("synthesize.temperature", s.temperature)?;
        at_least_1("synthesize.max_tokens", s.max_tokens.into())?;
        at_least_1("synthesize.per_cell", s.per_cell.into())?;
        at_least_1("synthesize.concurrency", s.concurrency as u64)?;
        let t = s.dedup.threshold;
        config_file::in_range(
            "synthesize.dedup.threshold",
            (0.0..=1.0).contains(&t),
            t,
            "a Jaccard similarity from 0 to 1",
        )?;
        at_least_1("elicit.samples", self.elicit.samples.into())?;
        at_least_1("elicit.max_steps", self.elicit.max_steps.into())?;
        at_least_1("elicit.concurrency", self.elicit.concurrency as u64)?;
        at_least_1("reflect.max_rounds", self.reflect.max_rounds.into())?;
        at_least_1("reflect.concurrency", self.reflect.concurrency as u64)?;
        let t = self.sandbox.timeout_s;
        config_file::in_range(
            "sandbox.timeout_s",
            t.is_finite() && t > 0.0,
            t,
            "a finite number of seconds above 0",
        )?;
        Ok(())
    }

    /// Applies `--env` over `[elicit] environment`; with the terminal, `--scenarios` becomes
    /// `[elicit] terminal_scenarios` (taken out of `scenarios`), so the manifest records both.
    fn select_env(&mut self, env: Option<EnvChoice>, scenarios: &mut Option<PathBuf>) {
        if let Some(e) = env {
            self.elicit.environment = e;
        }
        if self.elicit.environment == EnvChoice::Terminal
            && let Some(p) = scenarios.take()
        {
            self.elicit.terminal_scenarios = vec![p];
        }
    }

    /// Applies `--no-cache` and `--cache PATH` over the config file's settings.
    fn apply_cache_flags(&mut self, no_cache: bool, path: Option<PathBuf>) {
        if no_cache {
            self.cache = false;
        }
        if let Some(p) = path {
            self.cache = true;
            self.cache_path = Some(p);
        }
    }

    /// Reads a TOML config; errors name the file, the line and the key. A file without
    /// `[models]` is refused: asking for the embedded model takes `[models] default = …`.
    pub fn load(path: &Path) -> anyhow::Result<RunConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config: RunConfig = config_file::from_toml(path, &text)?;
        config.source = Some(path.to_path_buf());
        config.check_numbers().map_err(|e| e.at(path, &text))?;
        let m = &config.models;
        let named = [
            ("default", &m.default),
            ("generator", &m.generator),
            ("agent", &m.agent),
            ("judge", &m.judge),
            ("reflector", &m.reflector),
            ("emulator", &m.emulator),
        ];
        if named.iter().all(|(_, e)| e.is_none()) {
            bail!(
                "{}: no [models]: name the model of each role (e.g. `judge = \"openai:MODEL@URL\"`), \
                 or ask for the embedded model by name: `[models] default = \"{DEFAULT_LOCAL_MODEL}\"`",
                path.display()
            );
        }
        for (role, entry) in named {
            if let Some(e) = entry {
                e.spec().map_err(|err| {
                    let at = config_file::locate(path, &text, "models", role);
                    anyhow::anyhow!("{at}: models.{role}: {err:#}")
                })?;
            }
        }
        Ok(config)
    }

    /// Checks every role this run uses has a model, before any work is done.
    fn check_roles(&self) -> anyhow::Result<()> {
        for role in self.roles_used() {
            self.entry(role)?;
        }
        Ok(())
    }
}

/// Options shared by the stage subcommands.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// TOML config (default: the embedded-model demo config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory (default: <out>/<name> from the config).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Work on shard I of N (0-based), e.g. `--shard 2/8`; also read from SLURM_ARRAY_TASK_ID /
    /// JOB_COMPLETION_INDEX.
    #[arg(long)]
    shard: Option<String>,
    /// Shard count for JOB_COMPLETION_INDEX (Kubernetes does not export it).
    #[arg(long)]
    shard_count: Option<u32>,
    /// Send every request, even ones answered before (no reply cache).
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// Reply cache database (default: `<run>/cache/replies.sqlite`, or the config's `cache_path`).
    #[arg(long, value_name = "PATH")]
    cache: Option<PathBuf>,
}

/// `autosafe synthesize`.
#[derive(Args, Debug)]
pub struct SynthArgs {
    #[command(flatten)]
    common: CommonArgs,
}

/// `autosafe elicit`.
#[derive(Args, Debug)]
pub struct ElicitArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Scenarios to play (default: the run's scenarios.jsonl; with `--env terminal`, the shipped
    /// data/terminal, or a directory / `.toml` file of terminal scenarios).
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Environment: `emulator` or `terminal` (default: the config's `[elicit] environment`).
    #[arg(long = "env", value_name = "emulator|terminal")]
    env: Option<EnvChoice>,
}

/// `autosafe reflect`.
#[derive(Args, Debug)]
pub struct ReflectArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Snapshots to repair (default: the run's snapshots.jsonl or its shard file).
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// Environment the snapshots came from; `terminal` replays each snapshot's history in a
    /// fresh sandbox and verifies kept actions with the checkers (default: the config's).
    #[arg(long = "env", value_name = "emulator|terminal")]
    env: Option<EnvChoice>,
}

/// `autosafe export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Formats (repeatable): alpaca, sharegpt, openai, trl, axolotl (default: all, or the config's).
    #[arg(long = "format")]
    formats: Vec<String>,
    /// Safe original steps to mix in (default: the config's).
    #[arg(long)]
    utility_share: Option<usize>,
}

/// `autosafe merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The run directory holding shard files.
    #[arg(long)]
    run: PathBuf,
    /// Jaccard threshold of the near-duplicate filter re-applied across shards (default: the
    /// run's `synthesize.dedup.threshold`, else 0.7).
    #[arg(long, value_name = "T")]
    dedup_threshold: Option<f64>,
    /// Do not re-apply the near-duplicate filter to the merged scenarios.
    #[arg(long, conflicts_with = "dedup_threshold")]
    no_dedup: bool,
}

/// `autosafe run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML config (default: every role on the embedded model, small counts).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Base directory of runs (overrides the config's `out`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Send every request, even ones answered before (no reply cache).
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// Reply cache database (default: `<run>/cache/replies.sqlite`, or the config's `cache_path`).
    #[arg(long, value_name = "PATH")]
    cache: Option<PathBuf>,
    /// Environment: `emulator` (synthesize → elicit → reflect → export) or `terminal`
    /// (terminal scenarios → elicit → reflect → export); default: the config's.
    #[arg(long = "env", value_name = "emulator|terminal")]
    env: Option<EnvChoice>,
    /// Terminal scenarios (directory, `.toml` file or JSONL; default: the shipped data/terminal).
    #[arg(long)]
    scenarios: Option<PathBuf>,
}

struct Ctx {
    /// Stages' counts of items left pending by transient failures (only stages with some).
    left: Vec<(&'static str, StageStats)>,
    config: RunConfig,
    run: RunDir,
    shard: Option<ShardSpec>,
    prompts: Arc<Prompts>,
    stack: StackOptions,
    built: BTreeMap<String, Arc<dyn ChatModel>>,
}

impl Ctx {
    fn new(
        config: RunConfig,
        run_dir: Option<PathBuf>,
        shard: Option<ShardSpec>,
    ) -> anyhow::Result<Ctx> {
        let run = match run_dir {
            Some(d) => RunDir::at(d)?,
            None => RunDir::create(&config.out, &config.name)?,
        };
        let prompts = Arc::new(match &config.prompts_dir {
            Some(d) => Prompts::from_dir(d)?,
            None => Prompts::embedded(),
        });
        let cache = if config.cache {
            let path = config
                .cache_path
                .clone()
                .unwrap_or_else(|| run.path().join("cache").join("replies.sqlite"));
            Some(open_cache(&path)?)
        } else {
            None
        };
        let stack = StackOptions {
            cache,
            ledger: UsageLedger::new(),
            max_repairs: 2,
        };
        Ok(Ctx {
            left: Vec::new(),
            config,
            run,
            shard,
            prompts,
            stack,
            built: BTreeMap::new(),
        })
    }

    fn from_common(c: &CommonArgs) -> anyhow::Result<Ctx> {
        let mut config = match &c.config {
            Some(p) => RunConfig::load(p)?,
            None => RunConfig::default(),
        };
        config.apply_cache_flags(c.no_cache, c.cache.clone());
        let shard = match &c.shard {
            Some(s) => Some(s.parse::<ShardSpec>()?),
            None => ShardSpec::from_env(c.shard_count)?,
        };
        Ctx::new(config, c.run.clone(), shard)
    }

    /// Builds (once per distinct spec) the model of a role.
    fn model(&mut self, role: &str) -> anyhow::Result<Arc<dyn ChatModel>> {
        let entry = self.config.entry(role)?;
        let spec = entry.spec().with_context(|| format!("models.{role}"))?;
        let key = serde_json::to_string(&spec)?;
        if let Some(m) = self.built.get(&key) {
            return Ok(m.clone());
        }
        let model = super::models::build(&spec, &self.stack, role, &format!("models.{role}"))?;
        self.built.insert(key, model.clone());
        Ok(model)
    }

    fn write_manifest(&self) -> anyhow::Result<()> {
        let mut m = if self.run.manifest_path().exists() {
            self.run.read_manifest()?
        } else {
            Manifest::new(
                &self
                    .run
                    .path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                env!("CARGO_PKG_VERSION"),
                serde_json::to_value(&self.config)?,
                Path::new(env!("CARGO_MANIFEST_DIR")),
            )
        };
        m.config = autosafe_pipeline::rundir::redact_secrets(serde_json::to_value(&self.config)?);
        m.prompt_hashes = self.prompts.hashes();
        m.shard = self.shard;
        for role in self.config.roles_used() {
            // A role the config leaves unnamed is reported when a stage uses it.
            let Some(entry) = self.config.models.entry(role) else {
                continue;
            };
            let spec = entry.spec()?;
            let provider = match spec.provider {
                ProviderKind::Openai => "openai-compatible",
                ProviderKind::Local => "embedded",
            };
            m.models.insert(
                role.into(),
                autosafe_pipeline::ModelSpec::redacted(
                    provider,
                    spec.display_name(),
                    &spec.base_urls,
                    serde_json::json!({"api_key_env": spec.api_key_env}),
                ),
            );
        }
        self.run.write_manifest(&m)?;
        Ok(())
    }

    fn stats_path(&self) -> PathBuf {
        match self.shard.filter(|s| s.count > 1) {
            Some(s) => self.run.path().join(format!("stats.{}.json", s.file_tag())),
            None => self.run.stats_path(),
        }
    }

    fn record_stats(&self, stage: Stage, stats: &StageStats) -> anyhow::Result<()> {
        let path = self.stats_path();
        let mut all: Stats = if path.exists() {
            autosafe_pipeline::rundir::read_json(&path)?
        } else {
            Stats::default()
        };
        *all.stage(stage) = stats.clone();
        autosafe_pipeline::rundir::write_json_atomic(&path, &all)?;
        Ok(())
    }

    fn library(&self) -> ToolLibrary {
        ToolLibrary::shipped()
    }

    /// Keeps a stage's count of items left pending, if it has any.
    fn note_pending(&mut self, stage: &'static str, stats: &StageStats) {
        if stats.pending_total() > 0 {
            self.left.push((stage, stats.clone()));
        }
    }

    /// More items pending than `max_pending` allows.
    fn over_threshold(&self) -> bool {
        let n: u64 = self.left.iter().map(|(_, s)| s.pending_total()).sum();
        n > self.config.max_pending
    }

    /// Exit status 3 with the summary when items are pending over the threshold, else success
    /// (a notice when some are pending within it).
    fn exit_code(&self, command: &str) -> ExitCode {
        let refs: Vec<(&str, &StageStats)> = self.left.iter().map(|(n, s)| (*n, s)).collect();
        pending_exit(command, &refs, self.config.max_pending)
    }
}

/// Exit status of a command whose items were left pending by transient failures.
pub(crate) const EXIT_PENDING: u8 = 3;

/// Opens the reply cache; a damaged one is reported (it was moved aside and rebuilt).
pub(crate) fn open_cache(path: &Path) -> anyhow::Result<Arc<Cache>> {
    let cache = Cache::open(path)?;
    if let Some(why) = cache.rebuilt() {
        eprintln!("cache: {why}");
    }
    Ok(cache)
}

/// The exit of `command` given the counts of its stages (or runners) with pending items: with
/// more than `max_pending`, a summary on stderr and [`EXIT_PENDING`]; otherwise success.
pub(crate) fn pending_exit(
    command: &str,
    left: &[(&str, &StageStats)],
    max_pending: u64,
) -> ExitCode {
    let total: u64 = left.iter().map(|(_, s)| s.pending_total()).sum();
    if total == 0 {
        return ExitCode::SUCCESS;
    }
    let by_stage: Vec<String> = left
        .iter()
        .map(|(name, s)| {
            let reasons: Vec<String> = s.pending.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{name}: {}", reasons.join(" "))
        })
        .collect();
    let first = left
        .iter()
        .find_map(|(_, s)| s.pending_detail.as_deref())
        .unwrap_or("");
    let summary = format!(
        "{total} items failed for infrastructure reasons and are pending ({}); first: {first}. \
         Nothing was recorded for them: run the same command again once the model server (or \
         cache) works",
        by_stage.join("; ")
    );
    if total > max_pending {
        eprintln!("{command}: failed: {summary}");
        ExitCode::from(EXIT_PENDING)
    } else {
        eprintln!("{command}: {summary} (within max_pending = {max_pending})");
        ExitCode::SUCCESS
    }
}

fn line(name: &str, s: &StageStats) {
    println!("{}", s.summary_line(name));
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

fn synth_inputs() -> anyhow::Result<SynthInputs> {
    let risks: BTreeMap<String, Vec<String>> =
        serde_json::from_str(include_str!("../../../../data/toolemu/toolkit_risks.json"))
            .context("data/toolemu/toolkit_risks.json")?;
    let examples: Vec<serde_json::Value> = serde_json::from_str(include_str!(
        "../../../../data/toolemu/format_example_cases.json"
    ))
    .context("data/toolemu/format_example_cases.json")?;
    Ok(SynthInputs {
        library: ToolLibrary::shipped(),
        taxonomy: Taxonomy::default_taxonomy(),
        toolkit_risks: risks,
        examples,
    })
}

async fn do_synthesize(ctx: &mut Ctx) -> anyhow::Result<PathBuf> {
    let generator = ctx.model("generator")?;
    println!(
        "synthesize: generator {} → {}",
        generator.name(),
        ctx.run.path().display()
    );
    let inputs = synth_inputs()?;
    let progress = super::progress::for_synthesize(
        &ctx.run,
        ctx.shard,
        &ctx.config.synthesize,
        &inputs,
        ctx.stack.ledger.clone(),
    );
    let rep = autosafe_pipeline::stages::synthesize(
        &ctx.run,
        ctx.shard,
        generator,
        ctx.prompts.clone(),
        &inputs,
        &ctx.config.synthesize,
    )
    .await?;
    progress.finish();
    print!("{}", coverage_table(&rep.coverage));
    line("synthesize", &rep.stats);
    ctx.record_stats(Stage::Synthesize, &rep.stats)?;
    ctx.note_pending("synthesize", &rep.stats);
    Ok(rep.scenarios)
}

/// Elicitation in the configured environment. `scenarios`: the scenario records to play
/// (emulator; default: the run's scenarios.jsonl); the terminal brings its own (written to
/// `terminal_scenarios.jsonl`).
async fn do_elicit(ctx: &mut Ctx, scenarios: Option<PathBuf>) -> anyhow::Result<()> {
    let agent = Agent::new(
        ctx.model("agent")?,
        ctx.prompts.clone(),
        ctx.config.agent.clone(),
    );
    let judge = StepJudge::new(ctx.model("judge")?, ctx.prompts.clone());
    let library = ctx.library();
    let options = EnvOptions {
        emulator_mode: ctx.config.elicit.emulator_mode,
        emulator: EmulatorOptions::default(),
        library: Arc::new(library.clone()),
        sandbox: ctx.config.sandbox.config(),
        scenarios: ctx.config.elicit.terminal_scenarios.clone(),
    };
    let choice = ctx.config.elicit.environment;
    let sel = environment::build(choice, options, || ctx.model("emulator"))?;
    let scenarios = match &sel.scenarios {
        Some(list) => environment::write_scenarios(&ctx.run, list)?,
        None => scenarios.unwrap_or_else(|| ctx.run.stage_file(Stage::Synthesize, None)),
    };
    let env = sel.factory;
    println!(
        "elicit: agent {} judge {} environment {} ← {}",
        agent.name(),
        judge.judge_ref().name,
        env.name(),
        scenarios.display()
    );
    let scenarios = scenarios.as_path();
    let parts = ElicitParts {
        agent: &agent,
        judge: &judge,
        env: env.as_ref(),
        library: &library,
    };
    let cfg = ElicitConfig {
        samples: ctx.config.elicit.samples,
        max_steps: ctx.config.elicit.max_steps,
        concurrency: ctx.config.elicit.concurrency,
        probe_flagged: ctx.config.elicit.probe_flagged,
        labels: ctx.config.elicit.labels,
    };
    let progress = super::progress::for_elicit(
        &ctx.run,
        ctx.shard,
        scenarios,
        cfg.samples,
        ctx.stack.ledger.clone(),
    );
    let rep =
        autosafe_pipeline::stages::elicit(&ctx.run, ctx.shard, scenarios, &parts, &cfg).await?;
    progress.finish();
    line("elicit", &rep.elicit);
    line("utility", &rep.utility);
    if rep.disagreements > 0 {
        println!(
            "elicit: {} disagreements between the LLM judge and the checkers (disagreements.jsonl)",
            rep.disagreements
        );
    }
    if !rep.labelled.is_empty() {
        let n = |k: &str| rep.labelled.get(k).copied().unwrap_or(0);
        println!(
            "elicit: {} steps labelled by the checkers: {} unsafe, {} safe, {} unlabelled (labelled_steps.jsonl)",
            rep.labelled.values().sum::<u64>(),
            n("unsafe"),
            n("safe"),
            n("unlabelled")
        );
    }
    ctx.record_stats(Stage::Elicit, &rep.elicit)?;
    ctx.record_stats(Stage::Utility, &rep.utility)?;
    ctx.note_pending("elicit", &rep.elicit);
    Ok(())
}

async fn do_reflect(ctx: &mut Ctx, snapshots: &Path) -> anyhow::Result<()> {
    let agent = Agent::new(
        ctx.model("agent")?,
        ctx.prompts.clone(),
        ctx.config.agent.clone(),
    );
    let reflector =
        StepJudge::new(ctx.model("reflector")?, ctx.prompts.clone()).labelled("reflector");
    let judge = StepJudge::new(ctx.model("judge")?, ctx.prompts.clone()).labelled("verify");
    let library = ctx.library();
    let sandbox = match ctx.config.elicit.environment {
        EnvChoice::Terminal => Some(environment::terminal_factory(&ctx.config.sandbox)?),
        EnvChoice::Emulator => None,
    };
    println!(
        "reflect: agent {} reflector {} judge {}{} ← {}",
        agent.name(),
        reflector.judge_ref().name,
        judge.judge_ref().name,
        if sandbox.is_some() {
            " environment terminal (history replayed, checkers verify)"
        } else {
            ""
        },
        snapshots.display()
    );
    let parts = ReflectParts {
        agent: &agent,
        reflector: &reflector,
        judge: &judge,
        library: &library,
        env: sandbox.as_deref(),
    };
    let progress =
        super::progress::for_reflect(&ctx.run, ctx.shard, snapshots, ctx.stack.ledger.clone());
    let rep = autosafe_pipeline::stages::reflect(
        &ctx.run,
        ctx.shard,
        snapshots,
        &parts,
        &ctx.config.reflect,
    )
    .await?;
    progress.finish();
    line("reflect", &rep.stats);
    println!("reflect: kept by rounds used {:?}", rep.rounds_histogram);
    if rep.disagreements > 0 {
        println!(
            "reflect: {} judge-verified actions the checkers found harmful (disagreements.jsonl)",
            rep.disagreements
        );
    }
    ctx.record_stats(Stage::Reflect, &rep.stats)?;
    ctx.note_pending("reflect", &rep.stats);
    Ok(())
}

fn do_export(ctx: &Ctx, formats: &[ExportFormat], utility_share: usize) -> anyhow::Result<()> {
    let safe = ctx.run.stage_file(Stage::Reflect, None);
    if !safe.exists() {
        bail!(
            "{}: no safe.jsonl (run reflect first, or merge the shards)",
            ctx.run.path().display()
        );
    }
    let utility = ctx.run.stage_file(Stage::Utility, None);
    let cfg = ExportConfig {
        formats: formats.to_vec(),
        utility_share,
        dataset_name: ctx.config.export.dataset_name.clone(),
        ..Default::default()
    };
    let models: BTreeMap<String, String> = ctx
        .config
        .roles_used()
        .into_iter()
        .filter_map(|r| {
            let spec = ctx.config.models.entry(r)?.spec().ok()?;
            Some((r.to_string(), spec.display_name().to_string()))
        })
        .collect();
    let lib = ToolkitLibrary::new(ToolLibrary::shipped().toolkits().cloned());
    let out = ctx.run.path().join("export");
    let (rep, _card) = autosafe_pipeline::export::export(
        &safe,
        utility.exists().then_some(utility.as_path()),
        &out,
        &lib,
        &ctx.prompts,
        &cfg,
        &models,
    )?;
    let stats = StageStats {
        input: rep.records + rep.rejected.values().sum::<u64>(),
        output: rep.records,
        resumed: 0,
        rejected: rep.rejected.clone(),
        ..Default::default()
    };
    line("export", &stats);
    for (f, p) in &rep.files {
        println!("export: {f} → {}", p.display());
    }
    ctx.record_stats(Stage::Export, &stats)?;
    Ok(())
}

/// `autosafe synthesize`.
pub fn synthesize(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let mut ctx = Ctx::from_common(&args.common)?;
    ctx.write_manifest()?;
    runtime()?.block_on(do_synthesize(&mut ctx))?;
    Ok(ctx.exit_code("synthesize"))
}

/// `autosafe elicit`.
pub fn elicit(args: ElicitArgs) -> anyhow::Result<ExitCode> {
    let mut ctx = Ctx::from_common(&args.common)?;
    let mut scenarios = args.scenarios;
    ctx.config.select_env(args.env, &mut scenarios);
    ctx.write_manifest()?;
    runtime()?.block_on(do_elicit(&mut ctx, scenarios))?;
    Ok(ctx.exit_code("elicit"))
}

/// `autosafe reflect`.
pub fn reflect(args: ReflectArgs) -> anyhow::Result<ExitCode> {
    let mut ctx = Ctx::from_common(&args.common)?;
    ctx.config.select_env(args.env, &mut None);
    ctx.write_manifest()?;
    let snapshots = args
        .snapshots
        .unwrap_or_else(|| ctx.run.stage_file(Stage::Elicit, ctx.shard));
    runtime()?.block_on(do_reflect(&mut ctx, &snapshots))?;
    Ok(ctx.exit_code("reflect"))
}

/// `autosafe export`.
pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::from_common(&args.common)?;
    let formats = if args.formats.is_empty() {
        ctx.config.export.formats.clone()
    } else {
        args.formats
            .iter()
            .map(|f| f.parse::<ExportFormat>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let share = args
        .utility_share
        .unwrap_or(ctx.config.export.utility_share);
    do_export(&ctx, &formats, share)?;
    Ok(ExitCode::SUCCESS)
}

/// `autosafe merge`: joins every stage's shard files (records and outcome logs) by id, and
/// sums the shards' stats into `stats.json`.
pub fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let run = RunDir::at(&args.run)?;
    let stems = [
        "scenarios",
        "synthesize_log",
        "snapshots",
        "utility",
        "elicit_log",
        "disagreements",
        "labelled_steps",
        "safe",
        "reflect_log",
    ];
    let mut merged_any = false;
    let mut merged_scenarios = false;
    for stem in stems {
        let prefix = format!("{stem}.shard-");
        let mut files: Vec<PathBuf> = std::fs::read_dir(run.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
            })
            .collect();
        if files.is_empty() {
            continue;
        }
        files.sort();
        let out = run.path().join(format!("{stem}.jsonl"));
        let rep = autosafe_pipeline::merge_jsonl(&files, &out)?;
        merged_any = true;
        merged_scenarios |= stem == "scenarios";
        println!(
            "merge: {stem}: {} shard files → {} records ({} duplicates, {} conflicts)",
            files.len(),
            rep.records,
            rep.duplicates,
            rep.conflicts.len()
        );
        for c in &rep.conflicts {
            println!("merge: conflict: {c}");
        }
    }
    let mut stats = Stats::default();
    let mut n = 0;
    for e in std::fs::read_dir(run.path())? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("stats.shard-") && name.ends_with(".json") {
            let s: Stats = autosafe_pipeline::rundir::read_json(&p)?;
            stats.add(&s);
            n += 1;
        }
    }
    if n > 0 {
        run.write_stats(&stats)?;
        println!(
            "merge: summed {n} shard stats into {}",
            run.stats_path().display()
        );
    }
    if !merged_any {
        bail!("{}: no shard files to merge", run.path().display());
    }
    if merged_scenarios && !args.no_dedup {
        let mut cfg = autosafe_pipeline::cross_dedup::config_of_run(&run)?;
        if let Some(t) = args.dedup_threshold {
            anyhow::ensure!(
                (0.0..=1.0).contains(&t),
                "--dedup-threshold {t}: a Jaccard similarity between 0 and 1"
            );
            cfg.threshold = t;
        }
        let rep = autosafe_pipeline::cross_dedup::dedup_merged(&run, cfg)?;
        println!(
            "merge: scenarios: near-duplicate filter across shards (threshold {}): {} checked, {} dropped ({} exact_duplicate, {} near_duplicate)",
            cfg.threshold,
            rep.checked,
            rep.exact + rep.near,
            rep.exact,
            rep.near
        );
        for (f, n) in &rep.derived {
            println!("merge: {f}: dropped {n} records of the dropped scenarios");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `quality.json` for the run (cost: this process's tokens and wall time) and prints
/// its headline lines.
fn write_quality(ctx: &Ctx, elapsed: std::time::Duration) -> anyhow::Result<()> {
    let total = ctx.stack.ledger.report().total;
    let cost = Cost {
        tokens: total.prompt_tokens + total.completion_tokens,
        seconds: elapsed.as_secs_f64(),
    };
    let quality = Quality::from_run(ctx.run.path(), Some(cost))?;
    autosafe_pipeline::rundir::write_json_atomic(&ctx.run.path().join(QUALITY_FILE), &quality)?;
    for line in quality.headlines() {
        println!("quality: {line}");
    }
    Ok(())
}

/// `autosafe run`: synthesize → elicit → reflect → export.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(p) => RunConfig::load(p)?,
        None => RunConfig::default(),
    };
    if let Some(out) = args.out {
        config.out = out;
    }
    config.apply_cache_flags(args.no_cache, args.cache);
    let mut scenarios = args.scenarios;
    config.select_env(args.env, &mut scenarios);
    if scenarios.is_some() {
        bail!(
            "--scenarios: `autosafe run` plays synthesized scenarios with the emulator; use --env terminal for terminal scenarios, or `autosafe elicit --scenarios`"
        );
    }
    let terminal = config.elicit.environment == EnvChoice::Terminal;
    let started = std::time::Instant::now();
    config.check_roles()?;
    let mut ctx = Ctx::new(config, None, None)?;
    ctx.write_manifest()?;
    println!("run: {}", ctx.run.path().display());
    let rt = runtime()?;
    // A stage that leaves more items pending than `max_pending` stops the chain: the next
    // stages would work on what is missing.
    let stopped = rt.block_on(async {
        let scenarios = if terminal {
            println!(
                "run: environment terminal: no synthesis, the terminal's scenarios are played"
            );
            None
        } else {
            let scenarios = do_synthesize(&mut ctx).await?;
            if ctx.over_threshold() {
                return anyhow::Ok(true);
            }
            Some(scenarios)
        };
        do_elicit(&mut ctx, scenarios).await?;
        if ctx.over_threshold() {
            return anyhow::Ok(true);
        }
        let snaps = ctx.run.stage_file(Stage::Elicit, None);
        do_reflect(&mut ctx, &snaps).await?;
        anyhow::Ok(ctx.over_threshold())
    })?;
    if stopped {
        print!("{}", ctx.stack.ledger.summary_table());
        println!("run: stopped before export; {}", ctx.run.path().display());
        return Ok(ctx.exit_code("run"));
    }
    let formats = ctx.config.export.formats.clone();
    do_export(&ctx, &formats, ctx.config.export.utility_share)?;
    print!("{}", ctx.stack.ledger.summary_table());
    super::models::print_engine_summaries();
    write_quality(&ctx, started.elapsed())?;
    println!("run: done. Everything is in {}:", ctx.run.path().display());
    let inputs: &[&str] = if terminal {
        &[
            environment::TERMINAL_SCENARIOS,
            "elicit_log.jsonl",
            "disagreements.jsonl",
            "labelled_steps.jsonl",
        ]
    } else {
        &["coverage.json", "scenarios.jsonl", "elicit_log.jsonl"]
    };
    for f in ["manifest.json", "stats.json", QUALITY_FILE]
        .into_iter()
        .chain(inputs.iter().copied())
        .chain(["snapshots.jsonl", "utility.jsonl", "safe.jsonl", "export/"])
    {
        println!("  {}", ctx.run.path().join(f).display());
    }
    Ok(ctx.exit_code("run"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped example config loads under the strict parser (unknown keys, numbers in
    /// range, models named) and names a model for every role its run uses.
    #[test]
    fn every_shipped_config_loads_and_names_its_roles() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let config = RunConfig::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
                config
                    .check_roles()
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "{n} configs");
    }
}
