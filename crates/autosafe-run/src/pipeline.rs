//! The pipeline commands: `synthesize`, `elicit`, `reflect`, `export`, `merge`, and `run`, which
//! chains synthesize → elicit → reflect → export (or, in the terminal, the shipped scenarios →
//! elicit → reflect → export) from one config. Each stage's counts go to the stats file and its
//! account to the [`Observer`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use autosafe_env::{EmulatorOptions, EnvChoice, EnvOptions};
use autosafe_eval::quality::{COST_LEDGER, Cost, CostLine, QUALITY_FILE, Quality};
use autosafe_ots::{Taxonomy, ToolLibrary};
use autosafe_pipeline::export::{ExportConfig, ExportFormat, ExportInputs, ToolkitLibrary};
use autosafe_pipeline::stages::elicit::ElicitParts;
use autosafe_pipeline::stages::reflect::ReflectParts;
use autosafe_pipeline::stages::synthesize::{SynthInputs, coverage_table, planned_attempts};
use autosafe_pipeline::stages::{Agent, ElicitConfig, StepJudge};
use autosafe_pipeline::{RunDir, RunFile, ShardSpec, Stage, StageStats, Stats};

use crate::config::{Role, RunConfig};
use crate::environment;
use crate::observe::{Observer, StagePlan, count_episodes, count_snapshots};
use crate::pending::PendingStatus;
use crate::session::Session;

/// Where a stage command works: the config file (none: the embedded-model demo config), the
/// run directory, the shard and the reply cache flags.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// TOML config.
    pub config: Option<PathBuf>,
    /// Run directory (default: `<out>/<name>` from the config).
    pub run: Option<PathBuf>,
    /// `I/N`: work on shard I of N (else from SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX).
    pub shard: Option<String>,
    /// Shard count for JOB_COMPLETION_INDEX.
    pub shard_count: Option<u32>,
    /// No reply cache.
    pub no_cache: bool,
    /// Reply cache database.
    pub cache: Option<PathBuf>,
}

impl Target {
    /// The config with the flags applied, and the shard.
    fn resolve(&self) -> anyhow::Result<(RunConfig, Option<ShardSpec>)> {
        let mut config = match &self.config {
            Some(p) => RunConfig::load(p)?,
            None => RunConfig::default(),
        };
        config.apply_cache_flags(self.no_cache, self.cache.clone());
        let shard = match &self.shard {
            Some(s) => Some(s.parse::<ShardSpec>()?),
            None => ShardSpec::from_env(self.shard_count)?,
        };
        Ok((config, shard))
    }

    fn open(&self, obs: &dyn Observer) -> anyhow::Result<Session> {
        let (config, shard) = self.resolve()?;
        Session::open(config, self.run.clone(), shard, obs)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

fn line(obs: &dyn Observer, name: &str, s: &StageStats) {
    obs.line(&s.summary_line(name));
}

fn synth_inputs(
    sandbox: autosafe_sandbox::SandboxConfig,
    reviewer: Option<StepJudge>,
) -> anyhow::Result<SynthInputs> {
    let risks: BTreeMap<String, Vec<String>> =
        serde_json::from_str(include_str!("../../../data/toolemu/toolkit_risks.json"))
            .context("data/toolemu/toolkit_risks.json")?;
    let examples: Vec<serde_json::Value> = serde_json::from_str(include_str!(
        "../../../data/toolemu/format_example_cases.json"
    ))
    .context("data/toolemu/format_example_cases.json")?;
    Ok(SynthInputs {
        library: ToolLibrary::shipped(),
        taxonomy: Taxonomy::default_taxonomy(),
        toolkit_risks: risks,
        examples,
        sandbox,
        reviewer,
    })
}

/// The run's agent: its model, the prompt set and `[agent]`.
fn agent(s: &mut Session, obs: &dyn Observer) -> anyhow::Result<Agent> {
    let model = s.model(Role::Agent, obs)?;
    Ok(Agent::new(model, s.prompts.clone(), s.config.agent.clone()))
}

async fn synthesize_stage(s: &mut Session, obs: &dyn Observer) -> anyhow::Result<PathBuf> {
    let generator = s.model(Role::Generator, obs)?;
    obs.line(&format!(
        "synthesize: generator {} → {}",
        generator.name(),
        s.run.path().display()
    ));
    if s.config.synthesize.environment == EnvChoice::Terminal {
        // Every candidate is proved in the sandbox: say why it cannot run before any generation.
        environment::terminal_factory(&s.config.sandbox)?;
    }
    // `[synthesize] review`: the judge's model reviews each case's plausibility.
    let reviewer = if s.config.synthesize.review {
        Some(StepJudge::new(
            s.model(Role::Judge, obs)?,
            s.prompts.clone(),
        ))
    } else {
        None
    };
    let inputs = synth_inputs(s.config.sandbox.config(), reviewer)?;
    let watch = obs.stage(StagePlan {
        stage: "synthesize".into(),
        log: s.run.file(RunFile::SynthesizeLog, s.shard),
        total: planned_attempts(
            &s.config.synthesize,
            &inputs.library,
            &inputs.taxonomy,
            s.shard,
        )
        .ok(),
        ledger: s.stack.ledger.clone(),
    });
    let rep = autosafe_pipeline::stages::synthesize(
        &s.run,
        s.shard,
        generator,
        s.prompts.clone(),
        &inputs,
        &s.config.synthesize,
    )
    .await?;
    watch.finish();
    obs.stdout(&coverage_table(&rep.coverage));
    line(obs, "synthesize", &rep.stats);
    s.record_stats(Stage::Synthesize, &rep.stats)?;
    s.note_pending("synthesize", &rep.stats);
    Ok(rep.scenarios)
}

/// Elicitation in the configured environment. `scenarios`: the scenario records to play
/// (emulator; default: the run's scenarios.jsonl); the terminal brings its own (written to
/// `terminal_scenarios.jsonl`).
async fn elicit_stage(
    s: &mut Session,
    scenarios: Option<PathBuf>,
    obs: &dyn Observer,
) -> anyhow::Result<()> {
    let agent = agent(s, obs)?;
    let judge = StepJudge::new(s.model(Role::Judge, obs)?, s.prompts.clone())
        .with_options(s.config.judge.clone());
    let library = ToolLibrary::shipped();
    let options = EnvOptions {
        emulator_mode: s.config.elicit.emulator_mode,
        // The run's prompt set, so a `--prompts` override of `emulator.j2` reaches the emulator.
        emulator: EmulatorOptions {
            prompts: s.prompts.clone(),
            ..Default::default()
        },
        library: Arc::new(library.clone()),
        sandbox: s.config.sandbox.config(),
        scenarios: s.config.elicit.terminal_scenarios.clone(),
    };
    let choice = s.config.elicit.environment;
    let sel = environment::build(choice, options, || s.model(Role::Emulator, obs))?;
    let scenarios = match &sel.scenarios {
        Some(list) => environment::write_scenarios(&s.run, list)?,
        None => scenarios.unwrap_or_else(|| s.run.stage_file(Stage::Synthesize, None)),
    };
    let env = sel.factory;
    obs.line(&format!(
        "elicit: agent {} judge {} environment {} ← {}",
        agent.name(),
        judge.judge_ref().name,
        env.name(),
        scenarios.display()
    ));
    let scenarios = scenarios.as_path();
    let parts = ElicitParts {
        agent: &agent,
        judge: &judge,
        env: env.as_ref(),
        library: &library,
    };
    let e = &s.config.elicit;
    let cfg = ElicitConfig {
        samples: e.samples,
        max_steps: e.max_steps,
        concurrency: e.concurrency,
        probe_flagged: e.probe_flagged,
        labels: e.labels,
    };
    let watch = obs.stage(StagePlan {
        stage: "elicit".into(),
        log: s.run.file(RunFile::ElicitLog, s.shard),
        total: count_episodes(scenarios, cfg.samples, s.shard),
        ledger: s.stack.ledger.clone(),
    });
    let rep = autosafe_pipeline::stages::elicit(&s.run, s.shard, scenarios, &parts, &cfg).await?;
    watch.finish();
    line(obs, "elicit", &rep.elicit);
    line(obs, "utility", &rep.utility);
    if rep.disagreements > 0 {
        obs.line(&format!(
            "elicit: {} disagreements between the LLM judge and the checkers (disagreements.jsonl)",
            rep.disagreements
        ));
    }
    if !rep.labelled.is_empty() {
        let n = |k: &str| rep.labelled.get(k).copied().unwrap_or(0);
        obs.line(&format!(
            "elicit: {} steps labelled by the checkers: {} unsafe, {} safe, {} unlabelled (labelled_steps.jsonl)",
            rep.labelled.values().sum::<u64>(),
            n("unsafe"),
            n("safe"),
            n("unlabelled")
        ));
    }
    s.record_stats(Stage::Elicit, &rep.elicit)?;
    s.record_stats(Stage::Utility, &rep.utility)?;
    s.note_pending("elicit", &rep.elicit);
    Ok(())
}

async fn reflect_stage(
    s: &mut Session,
    snapshots: &Path,
    obs: &dyn Observer,
) -> anyhow::Result<()> {
    let agent = agent(s, obs)?;
    let reflector =
        StepJudge::new(s.model(Role::Reflector, obs)?, s.prompts.clone()).labelled("reflector");
    let judge = StepJudge::new(s.model(Role::Judge, obs)?, s.prompts.clone()).labelled("verify");
    let library = ToolLibrary::shipped();
    let sandbox = match s.config.elicit.environment {
        EnvChoice::Terminal => Some(environment::terminal_factory(&s.config.sandbox)?),
        EnvChoice::Emulator => None,
    };
    obs.line(&format!(
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
    ));
    let parts = ReflectParts {
        agent: &agent,
        reflector: &reflector,
        judge: &judge,
        library: &library,
        env: sandbox.as_deref(),
    };
    let watch = obs.stage(StagePlan {
        stage: "reflect".into(),
        log: s.run.file(RunFile::ReflectLog, s.shard),
        total: count_snapshots(snapshots, s.shard),
        ledger: s.stack.ledger.clone(),
    });
    let rep =
        autosafe_pipeline::stages::reflect(&s.run, s.shard, snapshots, &parts, &s.config.reflect)
            .await?;
    watch.finish();
    line(obs, "reflect", &rep.stats);
    obs.line(&format!(
        "reflect: kept by rounds used {:?}",
        rep.rounds_histogram
    ));
    if rep.disagreements > 0 {
        obs.line(&format!(
            "reflect: {} judge-verified actions the checkers found harmful (disagreements.jsonl)",
            rep.disagreements
        ));
    }
    s.record_stats(Stage::Reflect, &rep.stats)?;
    s.note_pending("reflect", &rep.stats);
    Ok(())
}

fn export_stage(
    s: &Session,
    formats: &[ExportFormat],
    utility_share: usize,
    obs: &dyn Observer,
) -> anyhow::Result<()> {
    let safe = s.run.stage_file(Stage::Reflect, None);
    if !safe.exists() {
        bail!(
            "{}: no safe.jsonl (run reflect first, or merge the shards)",
            s.run.path().display()
        );
    }
    let utility = s.run.stage_file(Stage::Utility, None);
    let snapshots = s.run.stage_file(Stage::Elicit, None);
    let cfg = ExportConfig {
        formats: formats.to_vec(),
        utility_share,
        dataset_name: s.config.export.dataset_name.clone(),
        ..Default::default()
    };
    let models: BTreeMap<String, String> = s
        .config
        .roles_used()
        .into_iter()
        .filter_map(|r| {
            let spec = s.config.models.entry(r)?.spec().ok()?;
            Some((r.as_str().to_string(), spec.display_name().to_string()))
        })
        .collect();
    let lib = ToolkitLibrary::new(ToolLibrary::shipped().toolkits().cloned());
    let out = s.run.path().join("export");
    let (rep, _card) = autosafe_pipeline::export::export(
        ExportInputs {
            safe: &safe,
            utility: utility.exists().then_some(utility.as_path()),
            snapshots: snapshots.exists().then_some(snapshots.as_path()),
        },
        &out,
        &lib,
        &s.prompts,
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
    line(obs, "export", &stats);
    for (f, p) in &rep.files {
        obs.line(&format!("export: {f} → {}", p.display()));
    }
    if let Some(p) = &rep.pairs {
        let by: Vec<String> = p
            .by_labeller
            .iter()
            .map(|(k, v)| format!("{v} by {k}"))
            .collect();
        obs.line(&format!(
            "export: {} preference pairs (rejected side labelled {}); {} confirmed unsafe snapshots had no kept safe action; left out: {} judge-labelled where checkers exist, {} not labelled unsafe",
            p.pairs,
            if by.is_empty() { "by none".into() } else { by.join(", ") },
            p.snapshots_without_safe_action,
            p.unconfirmed_label,
            p.not_unsafe
        ));
    }
    s.record_stats(Stage::Export, &stats)?;
    Ok(())
}

/// `autosafe synthesize`: `env` as `--env` (over `[synthesize] environment`).
pub fn synthesize(
    target: &Target,
    env: Option<EnvChoice>,
    obs: &dyn Observer,
) -> anyhow::Result<PendingStatus> {
    let mut s = target.open(obs)?;
    if let Some(e) = env {
        s.config.synthesize.environment = e;
    }
    s.write_manifest()?;
    runtime()?.block_on(synthesize_stage(&mut s, obs))?;
    Ok(s.pending())
}

/// A run whose `[synthesize] environment` is `terminal` plays its own synthesized scenarios in
/// the terminal, unless `--scenarios` / `[elicit] terminal_scenarios` name others.
fn own_terminal_scenarios(s: &mut Session) {
    if s.config.synthesize.environment == EnvChoice::Terminal {
        s.config.elicit.environment = EnvChoice::Terminal;
        if s.config.elicit.terminal_scenarios.is_empty() {
            s.config.elicit.terminal_scenarios = vec![s.run.stage_file(Stage::Synthesize, None)];
        }
    }
}

/// `autosafe elicit`: `scenarios` and `env` as `--scenarios` and `--env`.
pub fn elicit(
    target: &Target,
    scenarios: Option<PathBuf>,
    env: Option<EnvChoice>,
    obs: &dyn Observer,
) -> anyhow::Result<PendingStatus> {
    let mut s = target.open(obs)?;
    let mut scenarios = scenarios;
    s.config.select_env(env, &mut scenarios);
    own_terminal_scenarios(&mut s);
    s.write_manifest()?;
    runtime()?.block_on(elicit_stage(&mut s, scenarios, obs))?;
    Ok(s.pending())
}

/// `autosafe reflect`: `snapshots` default to the run's (or its shard's) snapshot file.
pub fn reflect(
    target: &Target,
    snapshots: Option<PathBuf>,
    env: Option<EnvChoice>,
    obs: &dyn Observer,
) -> anyhow::Result<PendingStatus> {
    let mut s = target.open(obs)?;
    s.config.select_env(env, &mut None);
    own_terminal_scenarios(&mut s);
    s.write_manifest()?;
    let snapshots = snapshots.unwrap_or_else(|| s.run.stage_file(Stage::Elicit, s.shard));
    runtime()?.block_on(reflect_stage(&mut s, &snapshots, obs))?;
    Ok(s.pending())
}

/// `autosafe export`: `formats` by name (none: the config's), `utility_share` over the config's.
pub fn export(
    target: &Target,
    formats: &[String],
    utility_share: Option<usize>,
    obs: &dyn Observer,
) -> anyhow::Result<()> {
    let s = target.open(obs)?;
    let formats = if formats.is_empty() {
        s.config.export.formats.clone()
    } else {
        formats
            .iter()
            .map(|f| f.parse::<ExportFormat>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let share = utility_share.unwrap_or(s.config.export.utility_share);
    export_stage(&s, &formats, share, obs)
}

/// Sums the shards' `stats.shard-*.json` into `stats.json`; how many there were.
fn merge_stats(run: &RunDir) -> anyhow::Result<usize> {
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
    }
    Ok(n)
}

/// How `merge` re-applies the near-duplicate filter to the merged scenarios.
#[derive(Debug, Clone, Copy)]
pub enum MergeDedup {
    /// At the run's `synthesize.dedup.threshold` (else 0.7), or this one.
    Threshold(Option<f64>),
    /// Not at all.
    Off,
}

/// `autosafe merge`: joins every stage's shard files (records and outcome logs) by id, sums the
/// shards' stats into `stats.json`, and filters near-duplicate scenarios across shards.
pub fn merge(run: &Path, dedup: MergeDedup, obs: &dyn Observer) -> anyhow::Result<()> {
    let run = RunDir::at(run)?;
    let mut merged_any = false;
    let mut merged_scenarios = false;
    for file in RunFile::ALL {
        let files = run.shard_files_of(file)?;
        if files.is_empty() {
            continue;
        }
        let (stem, out) = (file.stem(), run.file(file, None));
        let rep = autosafe_pipeline::merge_jsonl(&files, &out)?;
        merged_any = true;
        merged_scenarios |= file == RunFile::Scenarios;
        obs.line(&format!(
            "merge: {stem}: {} shard files → {} records ({} duplicates, {} conflicts)",
            files.len(),
            rep.records,
            rep.duplicates,
            rep.conflicts.len()
        ));
        for c in &rep.conflicts {
            obs.line(&format!("merge: conflict: {c}"));
        }
    }
    let n = merge_stats(&run)?;
    if n > 0 {
        obs.line(&format!(
            "merge: summed {n} shard stats into {}",
            run.stats_path().display()
        ));
    }
    if !merged_any {
        bail!("{}: no shard files to merge", run.path().display());
    }
    if let (true, MergeDedup::Threshold(threshold)) = (merged_scenarios, dedup) {
        let mut cfg = autosafe_pipeline::cross_dedup::config_of_run(&run)?;
        if let Some(t) = threshold {
            anyhow::ensure!(
                (0.0..=1.0).contains(&t),
                "--dedup-threshold {t}: a Jaccard similarity between 0 and 1"
            );
            cfg.threshold = t;
        }
        let rep = autosafe_pipeline::cross_dedup::dedup_merged(&run, cfg)?;
        obs.line(&format!(
            "merge: scenarios: near-duplicate filter across shards (threshold {}): {} checked, {} dropped ({} exact_duplicate, {} near_duplicate)",
            cfg.threshold,
            rep.checked,
            rep.exact + rep.near,
            rep.exact,
            rep.near
        ));
        for (f, n) in &rep.derived {
            obs.line(&format!(
                "merge: {f}: dropped {n} records of the dropped scenarios"
            ));
        }
    }
    Ok(())
}

/// Appends this process's tokens and wall time to the run's cost ledger, however it ended.
fn record_cost(s: &Session, started: std::time::Instant, outcome: &str) -> anyhow::Result<()> {
    let total = s.stack.ledger.report().total;
    let line = CostLine {
        tokens: total.prompt_tokens + total.completion_tokens,
        seconds: started.elapsed().as_secs_f64(),
        outcome: outcome.to_string(),
    };
    Ok(Cost::record(s.run.path(), &line)?)
}

/// Writes `quality.json` for the run (cost: every process of the run, from the cost ledger) and
/// tells its headline lines.
fn write_quality(s: &Session, obs: &dyn Observer) -> anyhow::Result<()> {
    let cost = Cost::of_run(s.run.path())?;
    let quality = Quality::from_run(s.run.path(), cost)?;
    autosafe_pipeline::rundir::write_json_atomic(&s.run.path().join(QUALITY_FILE), &quality)?;
    for line in quality.headlines() {
        obs.line(&format!("quality: {line}"));
    }
    Ok(())
}

/// What `autosafe run` takes beside the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// TOML config (none: every role on the embedded model, small counts).
    pub config: Option<PathBuf>,
    /// Base directory of runs over the config's `out`.
    pub out: Option<PathBuf>,
    /// No reply cache.
    pub no_cache: bool,
    /// Reply cache database.
    pub cache: Option<PathBuf>,
    /// Environment over the config's.
    pub env: Option<EnvChoice>,
    /// Terminal scenarios (`--env terminal` only).
    pub scenarios: Option<PathBuf>,
}

/// Synthesis (or the terminal's scenarios), elicitation and reflection; `true` when a stage left
/// more items pending than `max_pending` and the chain stopped (the next stages would work on
/// what is missing).
async fn chain(s: &mut Session, terminal: bool, obs: &dyn Observer) -> anyhow::Result<bool> {
    let scenarios = if s.config.synthesize.environment == EnvChoice::Terminal {
        synthesize_stage(s, obs).await?;
        if s.over_threshold() {
            return Ok(true);
        }
        obs.line("run: environment terminal: the synthesized, proved scenarios are played");
        None
    } else if terminal {
        obs.line("run: environment terminal: no synthesis, the terminal's scenarios are played");
        None
    } else {
        let scenarios = synthesize_stage(s, obs).await?;
        if s.over_threshold() {
            return Ok(true);
        }
        Some(scenarios)
    };
    elicit_stage(s, scenarios, obs).await?;
    if s.over_threshold() {
        return Ok(true);
    }
    let snaps = s.run.stage_file(Stage::Elicit, None);
    reflect_stage(s, &snaps, obs).await?;
    Ok(s.over_threshold())
}

/// The chain, then export unless the chain stopped; `true` when it stopped (as [`chain`]).
fn chain_and_export(s: &mut Session, terminal: bool, obs: &dyn Observer) -> anyhow::Result<bool> {
    if runtime()?.block_on(chain(s, terminal, obs))? {
        return Ok(true);
    }
    let formats = s.config.export.formats.clone();
    export_stage(s, &formats, s.config.export.utility_share, obs)?;
    Ok(false)
}

/// `autosafe run`: synthesize → elicit → reflect → export, then `quality.json`.
pub fn run(opts: RunOptions, obs: &dyn Observer) -> anyhow::Result<PendingStatus> {
    let mut config = match &opts.config {
        Some(p) => RunConfig::load(p)?,
        None => RunConfig::default(),
    };
    if let Some(out) = opts.out {
        config.out = out;
    }
    config.apply_cache_flags(opts.no_cache, opts.cache);
    let mut scenarios = opts.scenarios;
    config.select_env(opts.env, &mut scenarios);
    if scenarios.is_some() {
        bail!(
            "--scenarios: `autosafe run` plays synthesized scenarios with the emulator; use --env terminal for terminal scenarios, or `autosafe elicit --scenarios`"
        );
    }
    if config.synthesize.environment == EnvChoice::Terminal {
        anyhow::ensure!(
            opts.env != Some(EnvChoice::Emulator),
            "--env emulator: `[synthesize] environment = \"terminal\"` writes terminal scenarios, which the terminal plays"
        );
        config.elicit.environment = EnvChoice::Terminal;
    }
    if let Some(var) = ShardSpec::array_task_var() {
        bail!(
            "{var} is set: `autosafe run` is one process and does not shard; in a job array run the stages instead (synthesize, merge, elicit + reflect, merge, export), as deploy/slurm-run.sh does"
        );
    }
    let terminal = config.elicit.environment == EnvChoice::Terminal;
    let started = std::time::Instant::now();
    config.check_roles()?;
    let mut s = Session::open(config, None, None, obs)?;
    own_terminal_scenarios(&mut s);
    s.write_manifest()?;
    obs.line(&format!("run: {}", s.run.path().display()));
    let ended = chain_and_export(&mut s, terminal, obs);
    let outcome = match &ended {
        Ok(true) => "stopped",
        Ok(false) => "done",
        Err(_) => "failed",
    };
    // However the run ended, its cost goes on the ledger; the run's own error comes first.
    let recorded = record_cost(&s, started, outcome);
    let stopped = ended?;
    recorded?;
    if stopped {
        obs.stdout(&s.stack.ledger.summary_table());
        obs.line(&format!(
            "run: stopped before export; {}",
            s.run.path().display()
        ));
        return Ok(s.pending());
    }
    obs.stdout(&s.stack.ledger.summary_table());
    for l in crate::models::engine_summaries() {
        obs.line(&l);
    }
    write_quality(&s, obs)?;
    obs.line(&format!(
        "run: done. Everything is in {}:",
        s.run.path().display()
    ));
    let inputs = if s.config.synthesize.environment == EnvChoice::Terminal {
        vec![
            "coverage.json".to_string(),
            RunFile::Scenarios.file_name(),
            environment::TERMINAL_SCENARIOS.to_string(),
            RunFile::ElicitLog.file_name(),
            RunFile::LabelledSteps.file_name(),
        ]
    } else if terminal {
        vec![
            environment::TERMINAL_SCENARIOS.to_string(),
            RunFile::ElicitLog.file_name(),
            RunFile::Disagreements.file_name(),
            RunFile::LabelledSteps.file_name(),
        ]
    } else {
        vec![
            "coverage.json".to_string(),
            RunFile::Scenarios.file_name(),
            RunFile::ElicitLog.file_name(),
        ]
    };
    let outputs = [RunFile::Snapshots, RunFile::Utility, RunFile::Safe].map(RunFile::file_name);
    let files = ["manifest.json", "stats.json", QUALITY_FILE, COST_LEDGER]
        .map(String::from)
        .into_iter()
        .chain(inputs)
        .chain(outputs)
        .chain(["export/".to_string()]);
    for f in files {
        obs.line(&format!("  {}", s.run.path().join(f).display()));
    }
    Ok(s.pending())
}
