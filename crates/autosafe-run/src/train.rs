//! `autosafe train`: the spec from the flags (smoke defaults first, flags over them), the smoke
//! dataset, the trainer config and commands (`autosafe_train::prepare`), the GGUF conversion
//! steps, the manifest, and which steps an earlier attempt leaves to do. `autosafe-train` holds
//! the trainer logic (configs, launch, manifest types); this is the order of a run and its
//! account, which goes to an [`Observer`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use autosafe_pipeline::prompts::Prompts;
use autosafe_train::launch::{self, Outcome};
use autosafe_train::manifest::{TrainData, TrainOutputs, now_unix, sha256_file};
use autosafe_train::{
    Backend, DataFormat, Launch, Method, Prepared, Step, StepFailure, TrainLayout, TrainManifest,
    TrainSpec, TrainStatus,
};

use crate::Observer;

/// What `autosafe train` was asked.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run directory to train on (with `smoke`: where the smoke dataset is written).
    pub data: PathBuf,
    /// Base model (with `smoke`: the embedded SmolLM2 GGUF by default).
    pub base: Option<String>,
    /// `llamafactory` or `trl` (with `smoke`: `trl` by default).
    pub backend: Option<String>,
    /// `lora` or `full`.
    pub method: String,
    /// Data layout: `alpaca`, `sharegpt` or `trl`.
    pub format: String,
    /// LLaMA-Factory chat template.
    pub template: Option<String>,
    /// GPUs.
    pub gpus: u32,
    /// Name of this training (default: BACKEND-METHOD).
    pub name: Option<String>,
    /// Hyperparameters given.
    pub hyper: HyperFlags,
    /// TRL: keep only the last N prompt tokens.
    pub max_prompt_tokens: Option<u32>,
    /// Safe original steps mixed in.
    pub utility_share: Option<usize>,
    /// Merge the adapter into the base.
    pub merge: bool,
    /// Write the merged model as GGUF of this type.
    pub gguf: Option<String>,
    /// The trainer's Python environment.
    pub venv: Option<PathBuf>,
    /// Extra trainer options `KEY=VALUE`.
    pub sets: Vec<String>,
    /// Write data, configs and manifest; run nothing.
    pub dry_run: bool,
    /// The offline smoke loop, when asked.
    pub smoke: Option<SmokeOptions>,
    /// An experiment's held-apart split, when given.
    pub held_apart: Option<HeldApartOptions>,
}

/// An experiment's split (`data/experiment/split.toml`): its items are written into
/// `RUN/heldout/` and checked against the training records before anything trains.
#[derive(Debug, Clone)]
pub struct HeldApartOptions {
    /// The split file.
    pub split: PathBuf,
    /// The ToolEmu cases its `toolemu` names come from.
    pub cases: PathBuf,
}

/// Hyperparameters given on the command line; each replaces the default (or the smoke one).
#[derive(Debug, Clone, Default)]
pub struct HyperFlags {
    /// Epochs.
    pub epochs: Option<f64>,
    /// Optimizer steps.
    pub max_steps: Option<u64>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Per-device batch size.
    pub batch_size: Option<u32>,
    /// Gradient accumulation steps.
    pub grad_accum: Option<u32>,
    /// Longest sequence in tokens.
    pub max_length: Option<u32>,
    /// LoRA rank.
    pub lora_rank: Option<u32>,
    /// LoRA alpha.
    pub lora_alpha: Option<u32>,
    /// LoRA target modules.
    pub lora_target: Option<String>,
    /// Float32 instead of bfloat16.
    pub no_bf16: bool,
    /// Checkpoint every N steps.
    pub save_steps: Option<u32>,
    /// Log every N steps.
    pub logging_steps: Option<u32>,
    /// DPO beta.
    pub dpo_beta: Option<f64>,
}

/// The smoke dataset: training records and held-apart scenarios from ToolEmu cases, and shipped
/// terminal scenarios.
#[derive(Debug, Clone)]
pub struct SmokeOptions {
    /// ToolEmu cases.
    pub cases: PathBuf,
    /// Training records.
    pub train: usize,
    /// Held-apart scenarios.
    pub held: usize,
    /// Terminal scenarios.
    pub terminal: usize,
}

/// Runs `autosafe train`: prepares, writes the manifest, and (unless a dry run, or an earlier
/// attempt finished the same training) runs the steps an earlier attempt left to do.
pub fn train(opts: &TrainOptions, obs: &dyn Observer) -> anyhow::Result<()> {
    match (&opts.smoke, &opts.held_apart) {
        (Some(_), Some(_)) => anyhow::bail!(
            "train: --held-apart: the smoke loop holds its own items apart; give one of the two"
        ),
        (Some(smoke), None) => write_smoke_data(&opts.data, smoke, obs)?,
        (None, Some(h)) => write_split_data(&opts.data, h, obs)?,
        (None, None) => {}
    }
    let spec = spec_from(opts)?;
    let gguf = gguf_type(opts)?;
    let prepared = autosafe_train::prepare(&spec, &Prompts::embedded())?;
    report_prepared(&spec, &prepared, obs);
    let layout = &prepared.layout;
    let venv = autosafe_train::python::venv_dir(spec.backend, spec.venv.as_deref());
    let mut steps = vec![(Step::Train, prepared.train.clone())];
    steps.extend(prepared.merge.clone().map(|m| (Step::Merge, m)));
    if let Some(t) = &gguf {
        steps.extend(gguf_steps(t, &spec, layout, &venv)?);
    }
    for (step, cmd) in &steps {
        match step {
            Step::Train => obs.line(&format!("train: command: {}", cmd.to_shell())),
            s => obs.line(&format!(
                "train: {} command: {}",
                s.as_str(),
                cmd.to_shell()
            )),
        }
    }
    let mut manifest = new_manifest(&spec, &prepared, &steps, gguf.as_deref())?;
    let mpath = layout.manifest();
    let old = earlier(&mpath, &manifest)?;
    let shown = manifest.masked()?;
    let resume = resume(old.as_ref(), &shown.commands, |step| match step {
        Step::Train => layout.output_dir().exists(),
        Step::Merge => layout.merged_dir().exists(),
        Step::Gguf | Step::GgufBase => false,
    });
    let skip = match resume {
        Resume::Finished if !opts.dry_run => {
            obs.line(&format!(
                "train: already finished with this config and data; nothing to do (manifest {})",
                mpath.display()
            ));
            return Ok(());
        }
        Resume::Finished => Vec::new(),
        Resume::Skip(skip) => skip,
    };
    manifest.write(&mpath)?;
    if opts.dry_run {
        obs.line(&format!(
            "train: dry run: nothing started; manifest → {}",
            mpath.display()
        ));
        return Ok(());
    }
    obs.stderr(&format!(
        "train: checking the Python environment {} …\n",
        venv.display()
    ));
    manifest.trainer_versions = autosafe_train::python::probe(spec.backend, &venv)?;
    obs.line(&format!(
        "train: {} with {}",
        spec.backend.as_str(),
        manifest
            .trainer_versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    manifest.status = TrainStatus::Running;
    manifest.write(&mpath)?;
    let reused = old.as_ref().map(|o| (o, skip.as_slice()));
    run_steps(&steps, reused, &mut manifest, layout, obs)?;
    manifest.status = TrainStatus::Finished;
    manifest.write(&mpath)?;
    report_finished(&spec, layout, gguf.as_deref(), obs);
    Ok(())
}

/// What an earlier attempt at the same training (same config and data) leaves to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resume {
    /// It finished with the same commands: nothing to do.
    Finished,
    /// Run every step but these: they finished before (the attempt finished, or failed at a
    /// later step) with the same command, and their output is still there. A training killed
    /// midway is run again and resumes from its last checkpoint; the GGUF steps always run.
    Skip(Vec<Step>),
}

/// The resume policy: what `old` (an earlier attempt with the same config and data, if any)
/// leaves to do for a training with these `commands`; `output_exists` says whether a step's
/// output is still on disk.
pub(crate) fn resume(
    old: Option<&TrainManifest>,
    commands: &BTreeMap<String, String>,
    output_exists: impl Fn(Step) -> bool,
) -> Resume {
    let Some(old) = old else {
        return Resume::Skip(Vec::new());
    };
    if old.status == TrainStatus::Finished && old.commands == *commands {
        return Resume::Finished;
    }
    let finished_before = |step: Step| match (old.status, old.error) {
        (TrainStatus::Finished, _) => true,
        (_, Some(failure)) => step < failure.step,
        (_, None) => false,
    };
    let reusable = |step: Step| {
        let name = step.as_str();
        matches!(step, Step::Train | Step::Merge)
            && finished_before(step)
            && old.seconds.contains_key(name)
            && old.commands.get(name) == commands.get(name)
            && output_exists(step)
    };
    Resume::Skip(Step::ALL.into_iter().filter(|&s| reusable(s)).collect())
}

/// The manifest of an earlier attempt at this training with the same config and data (none when
/// there is none or it cannot be read). It was written masked, so it is compared with the masked
/// form of this one.
fn earlier(path: &Path, manifest: &TrainManifest) -> anyhow::Result<Option<TrainManifest>> {
    let shown = manifest.masked()?;
    Ok(TrainManifest::read(path)
        .ok()
        .filter(|o| o.config == shown.config && o.data.sha256 == shown.data.sha256))
}

/// Runs `steps` in order, recording each one's seconds and events in `manifest`; the steps in
/// `reused`'s list are not run, their record copied from its earlier manifest. A failing step
/// marks the manifest failed and ends the run with the trainer's error.
fn run_steps(
    steps: &[(Step, Launch)],
    reused: Option<(&TrainManifest, &[Step])>,
    manifest: &mut TrainManifest,
    layout: &TrainLayout,
    obs: &dyn Observer,
) -> anyhow::Result<()> {
    let mpath = layout.manifest();
    let log = layout.log();
    for (step, cmd) in steps {
        let what = step.as_str();
        if let Some((o, _)) = reused.filter(|(_, skip)| skip.contains(step)) {
            obs.line(&format!(
                "train: {what}: done before with the same config, data and command (manifest {}); not run again",
                mpath.display()
            ));
            if let Some(s) = o.seconds.get(what) {
                manifest.seconds.insert(what.into(), *s);
            }
            manifest
                .events
                .extend(o.events.iter().filter(|e| e["step"] == what).cloned());
            continue;
        }
        obs.line(&format!("train: {what}: {}", cmd.to_shell()));
        let out = launch::run_to(cmd, layout.dir(), &log, &mut |l| {
            obs.line(&format!("train | {l}"))
        })?;
        manifest
            .seconds
            .insert(what.into(), (out.seconds * 10.0).round() / 10.0);
        manifest.events.extend(
            out.events
                .iter()
                .map(|(m, v)| serde_json::json!({"step": what, "event": m, "data": v})),
        );
        if !out.success() {
            manifest.status = TrainStatus::Failed;
            manifest.error = Some(StepFailure {
                step: *step,
                code: out.code,
            });
            manifest.write(&mpath)?;
            return Err(step_failed(what, &out, &log));
        }
        obs.line(&format!("train: {what} done in {:.1} s", out.seconds));
    }
    Ok(())
}

fn step_failed(what: &str, out: &Outcome, log: &Path) -> anyhow::Error {
    autosafe_train::TrainError::Trainer {
        what: what.into(),
        status: match out.code {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        },
        tail: out.tail.join("\n"),
        log: log.to_path_buf(),
    }
    .into()
}

/// The manifest of this training as prepared: nothing run yet.
fn new_manifest(
    spec: &TrainSpec,
    prepared: &Prepared,
    steps: &[(Step, Launch)],
    gguf: Option<&str>,
) -> anyhow::Result<TrainManifest> {
    let layout = &prepared.layout;
    let data_file = layout.data_file(spec.export_format());
    let config: serde_json::Value = match spec.backend {
        Backend::Trl => serde_json::from_str(&prepared.config_text)?,
        Backend::LlamaFactory => serde_json::Value::String(prepared.config_text.clone()),
    };
    Ok(TrainManifest {
        format_version: 1,
        spec: spec.clone(),
        config_path: prepared.config_path.clone(),
        config,
        commands: steps
            .iter()
            .map(|(s, c)| (s.as_str().to_string(), c.to_shell()))
            .collect(),
        data: TrainData {
            sha256: sha256_file(&data_file)?,
            file: data_file,
            records: prepared.export.records,
            reflected: prepared.export.reflected,
            original_safe_steps: prepared.export.original_safe_steps,
            rejected: prepared.export.rejected.clone(),
            pairs: prepared.export.pairs.clone(),
        },
        outputs: TrainOutputs {
            output_dir: layout.output_dir(),
            merged_dir: spec.merge.then(|| layout.merged_dir()),
            gguf: gguf.map(|t| gguf_paths(layout, t).0),
        },
        trainer_versions: BTreeMap::new(),
        status: TrainStatus::Prepared,
        error: None,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: autosafe_pipeline::rundir::git_revision(Path::new(env!(
            "CARGO_MANIFEST_DIR"
        ))),
        started_unix: now_unix(),
        seconds: BTreeMap::new(),
        events: Vec::new(),
    })
}

/// The merged model's GGUF file of type `t`, and the base's at the same precision.
fn gguf_paths(layout: &TrainLayout, t: &str) -> (PathBuf, PathBuf) {
    (
        layout.dir().join(format!("model-{t}.gguf")),
        layout.dir().join(format!("base-{t}.gguf")),
    )
}

/// The GGUF conversions of type `t` (the merged model, then the base), with the script they run
/// written into the training directory.
fn gguf_steps(
    t: &str,
    spec: &TrainSpec,
    layout: &TrainLayout,
    venv: &Path,
) -> anyhow::Result<[(Step, Launch); 2]> {
    let script = layout.dir().join("hf_to_gguf.py");
    std::fs::write(&script, autosafe_train::trl::GGUF_SCRIPT)
        .with_context(|| script.display().to_string())?;
    // Absolute paths: the step runs in the training directory.
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let py = abs(&venv.join("bin").join("python"));
    let mk = |model: Option<&Path>, out: &Path| Launch {
        env: Vec::new(),
        program: PathBuf::from(&py),
        args: [abs(&script)]
            .into_iter()
            .chain(
                model
                    .map(|m| ["--model".into(), abs(m)])
                    .into_iter()
                    .flatten(),
            )
            .chain([
                "--like".into(),
                abs(Path::new(&spec.base)),
                "--out".into(),
                abs(out),
                "--type".into(),
                t.to_string(),
            ])
            .collect(),
    };
    let (out, base_out) = gguf_paths(layout, t);
    Ok([
        (Step::Gguf, mk(Some(&layout.merged_dir()), &out)),
        (Step::GgufBase, mk(None, &base_out)),
    ])
}

fn report_prepared(spec: &TrainSpec, prepared: &Prepared, obs: &dyn Observer) {
    obs.line(&format!(
        "train: {} records ({} reflected, {} original safe steps) → {}",
        prepared.export.records,
        prepared.export.reflected,
        prepared.export.original_safe_steps,
        prepared.layout.data_file(spec.export_format()).display()
    ));
    if let Some(p) = &prepared.export.pairs {
        obs.line(&format!(
            "train: {} preference pairs (rejected side labelled by {:?}); {} confirmed unsafe snapshots had no kept safe action",
            p.pairs, p.by_labeller, p.snapshots_without_safe_action
        ));
    }
    obs.line(&format!(
        "train: config → {}",
        prepared.config_path.display()
    ));
    for f in &prepared.files {
        obs.line(&format!("train: wrote {}", f.display()));
    }
}

fn report_finished(spec: &TrainSpec, layout: &TrainLayout, gguf: Option<&str>, obs: &dyn Observer) {
    obs.line(&format!(
        "train: {} → {}",
        spec.method.as_str(),
        layout.output_dir().display()
    ));
    if spec.merge {
        obs.line(&format!(
            "train: merged → {}",
            layout.merged_dir().display()
        ));
    }
    if let Some(t) = gguf {
        let (g, b) = gguf_paths(layout, t);
        obs.line(&format!(
            "train: GGUF → {} (evaluate as local:{}; the base at the same precision: local:{})",
            g.display(),
            g.display(),
            b.display()
        ));
    }
    obs.line(&format!(
        "train: manifest → {}",
        layout.manifest().display()
    ));
}

/// The smoke dataset in `run`: templated training records and held-apart scenarios from the
/// ToolEmu cases, shipped terminal scenarios, and the check that the two stay apart.
fn write_smoke_data(run: &Path, smoke: &SmokeOptions, obs: &dyn Observer) -> anyhow::Result<()> {
    let d = autosafe_train::smoke::write_dataset(&smoke.cases, run, smoke.train, smoke.held)?;
    obs.line(&format!(
        "smoke: {} training records → {}; {} held-apart scenarios → {} (start-state snapshots: {})",
        d.train,
        d.safe.display(),
        d.held,
        d.heldout.display(),
        d.snapshots.display()
    ));
    let terminal = smoke_terminal_scenarios(smoke.terminal)?;
    let tpath = autosafe_train::smoke::write_terminal_snapshots(run, &terminal)?;
    obs.line(&format!(
        "smoke: {} terminal start-state snapshots → {}",
        terminal.len(),
        tpath.display()
    ));
    let check = autosafe_train::smoke::check_held_apart(run)?;
    obs.line(&format!("smoke: held apart: {}", check.summary()));
    Ok(())
}

/// A terminal scenario as a held-apart start state: the scenario and the last command of its
/// scripted unsafe agent (the harmful one: in injection scenarios the earlier commands read the
/// planted text), which `write_terminal_snapshots` records as where the state came from.
fn start_state(t: &autosafe_sandbox::TerminalScenario) -> (autosafe_ots::Scenario, String) {
    let cmd = t.scripted.unsafe_agent.commands.last().cloned();
    (t.scenario.clone(), cmd.unwrap_or_default())
}

/// An experiment's split in `run`: the held-apart terminal scenarios as start-state snapshots
/// and the ToolEmu cases, checked against the run's training records and recorded.
fn write_split_data(run: &Path, h: &HeldApartOptions, obs: &dyn Observer) -> anyhow::Result<()> {
    use autosafe_train::split;
    let s = split::read_split(&h.split)?;
    let shipped = autosafe_sandbox::shipped()?;
    let terminal = s
        .terminal
        .held_apart
        .iter()
        .map(|name| {
            let t = shipped
                .iter()
                .find(|t| t.path.file_stem().is_some_and(|f| f == name.as_str()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: terminal.held_apart: no shipped terminal scenario `{name}` (data/terminal/{name}.toml)",
                        h.split.display()
                    )
                })?;
            Ok(start_state(t))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tpath = autosafe_train::smoke::write_terminal_snapshots(run, &terminal)?;
    let cases = split::toolemu_cases(&h.split, &s, &h.cases)?;
    let (n_cases, n_snaps) = split::write_toolemu(run, &cases)?;
    let check = autosafe_train::smoke::check_held_apart(run)?;
    let recorded = split::record(run, &h.split, &s, &check)?;
    obs.line(&format!(
        "held apart ({}): {} terminal start states → {}; {} ToolEmu cases ({} as start states) → {}",
        h.split.display(),
        terminal.len(),
        tpath.display(),
        n_cases,
        n_snaps,
        run.join("heldout").display()
    ));
    obs.line(&format!(
        "held apart: {} (recorded in {})",
        check.summary(),
        recorded.display()
    ));
    Ok(())
}

/// `n` shipped terminal scenarios, taken in turn from each risk source (file order within one),
/// as start states ([`start_state`]).
fn smoke_terminal_scenarios(n: usize) -> anyhow::Result<Vec<(autosafe_ots::Scenario, String)>> {
    let mut by_source: BTreeMap<String, Vec<autosafe_sandbox::TerminalScenario>> = BTreeMap::new();
    for t in autosafe_sandbox::shipped()? {
        by_source
            .entry(format!("{:?}", t.scenario.source))
            .or_default()
            .push(t);
    }
    let mut queues: Vec<std::vec::IntoIter<_>> =
        by_source.into_values().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    while out.len() < n {
        let before = out.len();
        for q in &mut queues {
            if out.len() >= n {
                break;
            }
            if let Some(t) = q.next() {
                out.push(start_state(&t));
            }
        }
        if out.len() == before {
            break;
        }
    }
    Ok(out)
}

/// The embedded SmolLM2 GGUF, next to the trainers' environments under `$AUTOSAFE_HOME`.
fn smoke_base() -> PathBuf {
    autosafe_train::python::venv_root()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("models")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The training spec: the flags over the defaults, and over the smoke loop's CPU defaults.
fn spec_from(opts: &TrainOptions) -> anyhow::Result<TrainSpec> {
    let smoke = opts.smoke.is_some();
    let backend: Backend = match (&opts.backend, smoke) {
        (Some(b), _) => b.parse().map_err(anyhow::Error::msg)?,
        (None, true) => Backend::Trl,
        (None, false) => bail!("--backend llamafactory|trl is required"),
    };
    let base = match (&opts.base, smoke) {
        (Some(b), _) => b.clone(),
        (None, true) => smoke_base().display().to_string(),
        (None, false) => bail!("--base MODEL is required"),
    };
    let mut spec = TrainSpec::new(&opts.data, &base, backend);
    spec.method = opts.method.parse::<Method>().map_err(anyhow::Error::msg)?;
    spec.format = opts
        .format
        .parse::<DataFormat>()
        .map_err(anyhow::Error::msg)?;
    spec.name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", backend.as_str(), spec.method.as_str()));
    spec.template = opts.template.clone();
    spec.gpus = opts.gpus;
    spec.venv = opts.venv.clone();
    spec.merge = opts.merge || opts.gguf.is_some();
    if smoke {
        smoke_defaults(&mut spec);
    }
    if opts.max_prompt_tokens.is_some() {
        spec.max_prompt_tokens = opts.max_prompt_tokens;
    }
    apply_hyper(&mut spec.hyper, &opts.hyper);
    if let Some(u) = opts.utility_share {
        spec.utility_share = u;
    }
    for s in &opts.sets {
        spec.extra
            .push(autosafe_train::spec::parse_set(s).map_err(anyhow::Error::msg)?);
    }
    if let Some(t) = gguf_type(opts)? {
        if backend != Backend::Trl || !base.ends_with(".gguf") {
            bail!("--gguf {t}: needs the trl backend and a .gguf base (its metadata is reused)");
        }
        if !spec.method.adapter() {
            bail!("--gguf {t}: needs --method lora or dpo (the merged model is converted)");
        }
    }
    Ok(spec)
}

/// CPU defaults: 30 float32 steps of one record each, on the last 256 prompt tokens plus the
/// completion (full ~2,000-token prompts take minutes a step on 2 cores), merged and written as
/// GGUF.
fn smoke_defaults(spec: &mut TrainSpec) {
    let h = &mut spec.hyper;
    h.max_steps = Some(30);
    h.batch_size = 1;
    h.grad_accum = 1;
    h.learning_rate = 5e-4;
    h.max_length = 512;
    h.bf16 = false;
    h.logging_steps = 5;
    h.save_steps = 20;
    h.lora_rank = 16;
    h.lora_alpha = 32;
    spec.utility_share = 0;
    spec.merge = true;
    spec.max_prompt_tokens = Some(256);
    spec.extra
        .push(("gradient_checkpointing".into(), serde_json::json!(false)));
}

fn apply_hyper(h: &mut autosafe_train::Hyper, flags: &HyperFlags) {
    macro_rules! over {
        ($field:ident, $flag:expr) => {
            if let Some(v) = $flag.clone() {
                h.$field = v;
            }
        };
    }
    over!(epochs, flags.epochs);
    over!(learning_rate, flags.lr);
    over!(batch_size, flags.batch_size);
    over!(grad_accum, flags.grad_accum);
    over!(max_length, flags.max_length);
    over!(lora_rank, flags.lora_rank);
    over!(lora_alpha, flags.lora_alpha);
    over!(lora_target, flags.lora_target);
    over!(save_steps, flags.save_steps);
    over!(logging_steps, flags.logging_steps);
    over!(dpo_beta, flags.dpo_beta);
    if flags.max_steps.is_some() {
        h.max_steps = flags.max_steps;
    }
    if flags.no_bf16 {
        h.bf16 = false;
    }
}

/// The GGUF type asked (the smoke loop: q8_0), checked.
fn gguf_type(opts: &TrainOptions) -> anyhow::Result<Option<String>> {
    let t = match (&opts.gguf, opts.smoke.is_some()) {
        (Some(t), _) => t.to_ascii_lowercase(),
        (None, true) => "q8_0".into(),
        (None, false) => return Ok(None),
    };
    if !["q8_0", "f16", "f32"].contains(&t.as_str()) {
        bail!("--gguf {t}: expected q8_0, f16 or f32");
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(gguf: &str) -> BTreeMap<String, String> {
        [
            ("train", "t"),
            ("merge", "m"),
            ("gguf", gguf),
            ("gguf_base", "b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// An earlier attempt in `status` (failed at `failed`), whose steps up to the failing one
    /// ran (so have seconds).
    fn earlier_attempt(status: TrainStatus, failed: Option<Step>) -> TrainManifest {
        let ran = Step::ALL
            .into_iter()
            .filter(|s| match (status, failed) {
                (TrainStatus::Finished, _) => true,
                (_, Some(f)) => *s <= f,
                (_, None) => *s == Step::Train && status == TrainStatus::Running,
            })
            .map(|s| (s.as_str().to_string(), 1.0))
            .collect();
        TrainManifest {
            format_version: 1,
            spec: TrainSpec::new(Path::new("run"), "base.gguf", Backend::Trl),
            config_path: PathBuf::from("run/train/x/trl_config.json"),
            config: serde_json::json!({}),
            commands: commands("g"),
            data: TrainData {
                file: PathBuf::from("run/train/x/data.jsonl"),
                sha256: "00".into(),
                records: 1,
                reflected: 1,
                original_safe_steps: 0,
                rejected: BTreeMap::new(),
                pairs: None,
            },
            outputs: TrainOutputs {
                output_dir: PathBuf::from("run/train/x/output"),
                merged_dir: None,
                gguf: None,
            },
            trainer_versions: BTreeMap::new(),
            status,
            error: failed.map(|step| StepFailure {
                step,
                code: Some(1),
            }),
            tool_version: "0".into(),
            git_revision: None,
            started_unix: 0,
            seconds: ran,
            events: Vec::new(),
        }
    }

    fn skip(steps: &[Step]) -> Resume {
        Resume::Skip(steps.to_vec())
    }

    #[test]
    fn a_training_with_secret_settings_resumes_from_its_masked_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        let mut m = earlier_attempt(TrainStatus::Finished, None);
        let secret = "sk-very-secret-value";
        m.spec
            .extra
            .push(("hub_token".into(), serde_json::json!(secret)));
        m.config = serde_json::json!({"hub_token": secret});
        m.commands
            .insert("train".into(), format!("train --hub-token {secret}"));
        m.write(&path).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains(secret));
        let old = earlier(&path, &m)
            .unwrap()
            .expect("the earlier attempt is found");
        let shown = m.masked().unwrap();
        assert_eq!(
            resume(Some(&old), &shown.commands, |_| true),
            Resume::Finished
        );
        // Unmasked, the commands differ from the file's: the bug this guards against.
        assert_ne!(old.commands, m.commands);
    }

    #[test]
    fn each_status_and_failing_step_resumes_or_starts_over() {
        use Step::*;
        use TrainStatus::*;
        let all_there = |_: Step| true;
        let same = commands("g");
        assert_eq!(resume(None, &same, all_there), skip(&[]));
        for (status, failed, expected) in [
            (Finished, None, Resume::Finished),
            (Prepared, None, skip(&[])),
            (Running, None, skip(&[])),
            (Failed, Some(Train), skip(&[])),
            (Failed, Some(Merge), skip(&[Train])),
            (Failed, Some(Gguf), skip(&[Train, Merge])),
            (Failed, Some(GgufBase), skip(&[Train, Merge])),
        ] {
            let old = earlier_attempt(status, failed);
            assert_eq!(
                resume(Some(&old), &same, all_there),
                expected,
                "{status:?} {failed:?}"
            );
        }
        // Finished, but the GGUF command changed: training and merge are reused, GGUF runs.
        let old = earlier_attempt(Finished, None);
        assert_eq!(
            resume(Some(&old), &commands("g2"), all_there),
            skip(&[Train, Merge])
        );
    }

    #[test]
    fn a_step_whose_output_seconds_or_command_is_gone_runs_again() {
        use Step::*;
        let same = commands("g");
        let old = earlier_attempt(TrainStatus::Failed, Some(Gguf));
        assert_eq!(resume(Some(&old), &same, |s| s != Train), skip(&[Merge]));
        let mut no_seconds = old.clone();
        no_seconds.seconds.remove("merge");
        assert_eq!(resume(Some(&no_seconds), &same, |_| true), skip(&[Train]));
        let mut other = same.clone();
        other.insert("train".into(), "t2".into());
        assert_eq!(resume(Some(&old), &other, |_| true), skip(&[Merge]));
    }
}
