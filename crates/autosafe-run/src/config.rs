//! The run config (`autosafe run --config FILE`, and the stage commands' `--config`): models by
//! role, each stage's settings, and the checks made before any work (every number in range,
//! every role the run uses named).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use autosafe_env::{EmulatorMode, EnvChoice};
use autosafe_llm::ModelSpec;
use autosafe_pipeline::export::{ExportConfig, ExportFormat};
use autosafe_pipeline::stages::agent::AgentOptions;
use autosafe_pipeline::stages::{ElicitConfig, JudgeOptions, ReflectConfig, SynthConfig};
use serde::{Deserialize, Serialize};

use crate::{config_file, environment};

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
    /// The spec it names, validated.
    pub fn spec(&self) -> anyhow::Result<ModelSpec> {
        let spec = match self {
            ModelEntry::Compact(s) => ModelSpec::parse(s)?,
            ModelEntry::Full(s) => (**s).clone(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// A model named on the command line (`--agent`, `--judge`, …): the compact form, or a TOML file
/// holding one model table (what `[models.ROLE]` takes: `model`, `base_urls`, `supports_n`, …),
/// for servers whose limits the compact form cannot say (docs/model-access.md).
pub fn cli_model_spec(arg: &str) -> anyhow::Result<ModelSpec> {
    if !arg.ends_with(".toml") {
        return ModelEntry::Compact(arg.to_string()).spec();
    }
    let text = std::fs::read_to_string(arg).with_context(|| format!("model file {arg}"))?;
    let spec: ModelSpec = config_file::from_toml(Path::new(arg), &text)?;
    spec.validate()
        .with_context(|| format!("model file {arg}"))?;
    Ok(spec)
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

/// A model role of the pipeline. Exhaustive, so a role cannot be misspelled into another's
/// model (a string match once ended in `_ => emulator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Writes scenarios.
    Generator,
    /// Acts in episodes and regenerates under reflection.
    Agent,
    /// The step judge.
    Judge,
    /// The reflector.
    Reflector,
    /// The tool emulator.
    Emulator,
}

impl Role {
    /// Every role, in pipeline order.
    pub const ALL: [Role; 5] = [
        Role::Generator,
        Role::Agent,
        Role::Judge,
        Role::Reflector,
        Role::Emulator,
    ];

    /// Its key under `[models]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Generator => "generator",
            Role::Agent => "agent",
            Role::Judge => "judge",
            Role::Reflector => "reflector",
            Role::Emulator => "emulator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = anyhow::Error;

    /// A role by its key; an unknown key is an error naming the known ones.
    fn from_str(s: &str) -> anyhow::Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown model role `{s}` (known: generator, agent, judge, reflector, emulator)"
                )
            })
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
    pub fn embedded() -> Self {
        ModelsConfig {
            default: Some(ModelEntry::Compact(DEFAULT_LOCAL_MODEL.into())),
            ..Default::default()
        }
    }

    /// The entry of `role`: its own, else `default`.
    pub fn entry(&self, role: Role) -> Option<&ModelEntry> {
        let own = match role {
            Role::Generator => &self.generator,
            Role::Agent => &self.agent,
            Role::Judge => &self.judge,
            Role::Reflector => &self.reflector,
            Role::Emulator => &self.emulator,
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

/// Checks `[judge]` (also the flags of `eval judge`): at least one vote, an unsafe threshold
/// among them, a temperature in range.
pub(crate) fn check_judge(j: &JudgeOptions) -> Result<(), config_file::OutOfRange> {
    config_file::at_least_1("judge.votes", j.votes.into())?;
    let need = j.unsafe_needed();
    config_file::in_range(
        "judge.unsafe_votes",
        (1..=j.votes).contains(&need),
        need,
        "from 1 to judge.votes",
    )?;
    config_file::temperature("judge.temperature", j.temperature)
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
    /// How the step judge of elicitation decides (votes, second look; default: one greedy verdict).
    pub judge: JudgeOptions,
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
            judge: JudgeOptions::default(),
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

impl RunConfig {
    /// The model roles this run uses: the terminal environment plays its scenarios on real
    /// commands, so it has no emulator, and no generator unless `[synthesize] environment =
    /// "terminal"` writes them.
    pub(crate) fn roles_used(&self) -> Vec<Role> {
        let synth = self.synthesize.environment == EnvChoice::Terminal;
        let terminal = synth || self.elicit.environment == EnvChoice::Terminal;
        Role::ALL
            .into_iter()
            .filter(|role| match role {
                Role::Emulator => !terminal,
                Role::Generator => !terminal || synth,
                _ => true,
            })
            .collect()
    }

    /// The model of `role`; an error naming the file and the key when the config names none.
    pub fn entry(&self, role: Role) -> anyhow::Result<&ModelEntry> {
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
        check_judge(&self.judge)?;
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
    pub(crate) fn select_env(&mut self, env: Option<EnvChoice>, scenarios: &mut Option<PathBuf>) {
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
    pub(crate) fn apply_cache_flags(&mut self, no_cache: bool, path: Option<PathBuf>) {
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
    pub(crate) fn check_roles(&self) -> anyhow::Result<()> {
        for role in self.roles_used() {
            self.entry(role)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped example config, and every config an ablation in `docs/` was measured with,
    /// loads under the strict parser (unknown keys, numbers in range, models named) and names a
    /// model for every role its run uses.
    #[test]
    fn every_shipped_config_loads_and_names_its_roles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut n = 0;
        for dir in ["configs", "docs/ablation/shaping"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let config = RunConfig::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
                    config
                        .check_roles()
                        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                    n += 1;
                }
            }
        }
        assert!(n >= 9, "{n} configs");
    }

    /// `[synthesize] environment`: `terminal` brings the generator (and no emulator) into the
    /// run and plays in the terminal; an unknown value names file, line and key.
    #[test]
    fn a_terminal_synthesis_uses_the_generator_and_an_unknown_environment_is_refused() {
        let dir = std::env::temp_dir().join(format!("autosafe-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        let text = "[models]\ndefault = \"openai:m@http://127.0.0.1:1/v1\"\n\n[synthesize]\nenvironment = \"terminl\"\n";
        std::fs::write(&path, text).unwrap();
        let err = format!("{:#}", RunConfig::load(&path).unwrap_err());
        assert!(
            err.contains("c.toml:5: synthesize.environment: unknown variant `terminl`"),
            "{err}"
        );
        assert!(err.ends_with("did you mean `terminal`?"), "{err}");
        std::fs::write(&path, text.replace("terminl", "terminal")).unwrap();
        let config = RunConfig::load(&path).unwrap();
        assert_eq!(config.synthesize.environment, EnvChoice::Terminal);
        let roles = config.roles_used();
        assert!(roles.contains(&Role::Generator), "{roles:?}");
        assert!(!roles.contains(&Role::Emulator), "{roles:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A role is named by its key only: an unknown key is an error, not some other role's model.
    #[test]
    fn roles_parse_by_key_and_an_unknown_one_is_refused() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        let err = "emulater".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("unknown model role `emulater`"), "{err}");
        let models = ModelsConfig {
            judge: Some(ModelEntry::Compact("openai:j@http://127.0.0.1:1/v1".into())),
            ..Default::default()
        };
        assert!(
            models.entry(Role::Emulator).is_none(),
            "no fallback to another role"
        );
        assert!(models.entry(Role::Judge).is_some());
    }
}
