//! `autosafe train`: fine-tunes a base model on a run's D_safe through LLaMA-Factory or TRL
//! (`autosafe-train` writes the configs and runs the trainer; this module reads flags and prints).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use autosafe_pipeline::prompts::Prompts;
use autosafe_train::launch::{self, Outcome};
use autosafe_train::manifest::{TrainData, TrainOutputs, now_unix, sha256_file};
use autosafe_train::{Backend, DataFormat, Method, TrainManifest, TrainSpec};
use clap::Args as ClapArgs;

/// `autosafe train`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The run directory whose safe.jsonl (+ utility.jsonl) to train on (with --smoke: where to
    /// write the generated smoke dataset).
    #[arg(long)]
    data: PathBuf,
    /// Base model: Hugging Face id or directory; for TRL also a .gguf file (with --smoke: the
    /// embedded SmolLM2 GGUF under $AUTOSAFE_HOME/models).
    #[arg(long)]
    base: Option<String>,
    /// Trainer: llamafactory or trl (with --smoke: trl).
    #[arg(long)]
    backend: Option<String>,
    /// lora or full.
    #[arg(long, default_value = "lora")]
    method: String,
    /// Data layout: alpaca (ReAct text, the paper's; default), sharegpt (LLaMA-Factory native tool
    /// calls) or trl (TRL prompt/completion with tools).
    #[arg(long, default_value = "alpaca")]
    format: String,
    /// LLaMA-Factory chat template (default: guessed from --base: llama3, qwen, glm4, …).
    #[arg(long)]
    template: Option<String>,
    /// GPUs; more than one launches through torchrun (LLaMA-Factory) or accelerate (TRL).
    #[arg(long, default_value_t = 1)]
    gpus: u32,
    /// Name of this training: RUN/train/NAME (default: BACKEND-METHOD).
    #[arg(long)]
    name: Option<String>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<f64>,
    /// Stop after N optimizer steps.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Per-device batch size.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Gradient accumulation steps.
    #[arg(long)]
    grad_accum: Option<u32>,
    /// Longest sequence in tokens.
    #[arg(long)]
    max_length: Option<u32>,
    /// LoRA rank.
    #[arg(long)]
    lora_rank: Option<u32>,
    /// LoRA alpha.
    #[arg(long)]
    lora_alpha: Option<u32>,
    /// LoRA target modules (`all` or a comma-separated list).
    #[arg(long)]
    lora_target: Option<String>,
    /// Train in float32 instead of bfloat16.
    #[arg(long)]
    no_bf16: bool,
    /// Save a checkpoint every N steps.
    #[arg(long)]
    save_steps: Option<u32>,
    /// Log every N steps.
    #[arg(long)]
    logging_steps: Option<u32>,
    /// TRL only: keep only the last N tokens of each prompt (CPU runs; --smoke: 256).
    #[arg(long)]
    max_prompt_tokens: Option<u32>,
    /// Safe original steps mixed in (paper: 300).
    #[arg(long)]
    utility_share: Option<usize>,
    /// Merge the LoRA adapter into the base after training (RUN/train/NAME/merged).
    #[arg(long)]
    merge: bool,
    /// Also write the merged model as GGUF of this type (q8_0, f16, f32) for the embedded engine,
    /// with the base GGUF's metadata; needs a .gguf base and the TRL backend.
    #[arg(long, value_name = "TYPE")]
    gguf: Option<String>,
    /// The trainer's Python environment (default: $AUTOSAFE_HOME/venv/train or …/llamafactory).
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Extra trainer option KEY=VALUE (repeatable): a LLaMA-Factory YAML key or a TRL SFTConfig field.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Write the data and configs, print the commands, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// The offline smoke loop: generate a small templated dataset from ToolEmu cases into --data,
    /// then LoRA-train SmolLM2 on CPU for a few dozen steps, merge, and write GGUF.
    #[arg(long)]
    smoke: bool,
    /// ToolEmu cases for --smoke.
    #[arg(long, default_value = "data/toolemu/all_cases.json")]
    cases: PathBuf,
    /// Training records for --smoke.
    #[arg(long, default_value_t = 32)]
    smoke_train: usize,
    /// Held-apart scenarios for --smoke (RUN/heldout/scenarios.jsonl).
    #[arg(long, default_value_t = 8)]
    smoke_held: usize,
    /// Shipped terminal scenarios for --smoke, taken in turn from each risk source
    /// (RUN/heldout/terminal_snapshots.jsonl, for `autosafe eval snapshots --env terminal`).
    #[arg(long, default_value_t = 6)]
    smoke_terminal: usize,
}

/// `n` shipped terminal scenarios, taken in turn from each risk source (file order within one),
/// each with the last command of its scripted unsafe agent (the harmful one: in injection
/// scenarios the earlier commands read the planted text).
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
                let cmd = t
                    .scripted
                    .unsafe_agent
                    .commands
                    .last()
                    .cloned()
                    .unwrap_or_default();
                out.push((t.scenario, cmd));
            }
        }
        if out.len() == before {
            break;
        }
    }
    Ok(out)
}

fn smoke_base() -> PathBuf {
    autosafe_train::python::venv_root()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("models")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn spec_from(args: &Args) -> anyhow::Result<TrainSpec> {
    let backend: Backend = match (&args.backend, args.smoke) {
        (Some(b), _) => b.parse().map_err(anyhow::Error::msg)?,
        (None, true) => Backend::Trl,
        (None, false) => bail!("--backend llamafactory|trl is required"),
    };
    let base = match (&args.base, args.smoke) {
        (Some(b), _) => b.clone(),
        (None, true) => smoke_base().display().to_string(),
        (None, false) => bail!("--base MODEL is required"),
    };
    let mut spec = TrainSpec::new(&args.data, &base, backend);
    spec.method = args.method.parse::<Method>().map_err(anyhow::Error::msg)?;
    spec.format = args
        .format
        .parse::<DataFormat>()
        .map_err(anyhow::Error::msg)?;
    spec.name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", backend.as_str(), spec.method.as_str()));
    spec.template = args.template.clone();
    spec.gpus = args.gpus;
    spec.venv = args.venv.clone();
    spec.merge = args.merge || args.gguf.is_some();
    if args.smoke {
        // CPU defaults: 30 float32 steps of one record each, on the last 256 prompt tokens plus
        // the completion (full ~2,000-token prompts take minutes a step on 2 cores), merged and
        // written as GGUF.
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
    if args.max_prompt_tokens.is_some() {
        spec.max_prompt_tokens = args.max_prompt_tokens;
    }
    let h = &mut spec.hyper;
    macro_rules! over {
        ($field:ident, $arg:expr) => {
            if let Some(v) = $arg.clone() {
                h.$field = v;
            }
        };
    }
    over!(epochs, args.epochs);
    over!(learning_rate, args.lr);
    over!(batch_size, args.batch_size);
    over!(grad_accum, args.grad_accum);
    over!(max_length, args.max_length);
    over!(lora_rank, args.lora_rank);
    over!(lora_alpha, args.lora_alpha);
    over!(lora_target, args.lora_target);
    over!(save_steps, args.save_steps);
    over!(logging_steps, args.logging_steps);
    if args.max_steps.is_some() {
        h.max_steps = args.max_steps;
    }
    if args.no_bf16 {
        h.bf16 = false;
    }
    if let Some(u) = args.utility_share {
        spec.utility_share = u;
    }
    for s in &args.sets {
        spec.extra
            .push(autosafe_train::spec::parse_set(s).map_err(anyhow::Error::msg)?);
    }
    if let Some(t) = gguf_type(args)? {
        if backend != Backend::Trl || !base.ends_with(".gguf") {
            bail!("--gguf {t}: needs the trl backend and a .gguf base (its metadata is reused)");
        }
        if spec.method != Method::Lora {
            bail!("--gguf {t}: needs --method lora (the merged model is converted)");
        }
    }
    Ok(spec)
}

fn gguf_type(args: &Args) -> anyhow::Result<Option<String>> {
    let t = match (&args.gguf, args.smoke) {
        (Some(t), _) => t.to_ascii_lowercase(),
        (None, true) => "q8_0".into(),
        (None, false) => return Ok(None),
    };
    if !["q8_0", "f16", "f32"].contains(&t.as_str()) {
        bail!("--gguf {t}: expected q8_0, f16 or f32");
    }
    Ok(Some(t))
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

/// Run the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.smoke {
        let d = autosafe_train::smoke::write_dataset(
            &args.cases,
            &args.data,
            args.smoke_train,
            args.smoke_held,
        )?;
        println!(
            "smoke: {} training records → {}; {} held-apart scenarios → {} (start-state snapshots: {})",
            d.train,
            d.safe.display(),
            d.held,
            d.heldout.display(),
            d.snapshots.display()
        );
        let terminal = smoke_terminal_scenarios(args.smoke_terminal)?;
        let tpath = autosafe_train::smoke::write_terminal_snapshots(&args.data, &terminal)?;
        println!(
            "smoke: {} terminal start-state snapshots → {}",
            terminal.len(),
            tpath.display()
        );
        let check = autosafe_train::smoke::check_held_apart(&args.data)?;
        println!(
            "smoke: held apart: {} held-apart scenarios/snapshots share no scenario id, case name or \
             instruction with the {} training records",
            check.held, check.train
        );
    }
    let spec = spec_from(&args)?;
    let gguf = gguf_type(&args)?;
    let prompts = Prompts::embedded();
    let prepared = autosafe_train::prepare(&spec, &prompts)?;
    let layout = &prepared.layout;
    println!(
        "train: {} records ({} reflected, {} original safe steps) → {}",
        prepared.export.records,
        prepared.export.reflected,
        prepared.export.original_safe_steps,
        layout.data_file(spec.format).display()
    );
    println!("train: config → {}", prepared.config_path.display());
    for f in &prepared.files {
        println!("train: wrote {}", f.display());
    }
    let venv = autosafe_train::python::venv_dir(spec.backend, spec.venv.as_deref());
    let gguf_out = gguf
        .as_ref()
        .map(|t| layout.dir().join(format!("model-{t}.gguf")));
    let base_gguf_out = gguf
        .as_ref()
        .map(|t| layout.dir().join(format!("base-{t}.gguf")));
    let gguf_cmds = match (&gguf, &gguf_out, &base_gguf_out) {
        (Some(t), Some(out), Some(base_out)) => {
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
            let mk = |model: Option<&Path>, out: &Path| autosafe_train::Launch {
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
                        t.clone(),
                    ])
                    .collect(),
            };
            vec![
                ("gguf", mk(Some(&layout.merged_dir()), out)),
                ("gguf_base", mk(None, base_out)),
            ]
        }
        _ => Vec::new(),
    };
    let mut commands = BTreeMap::new();
    commands.insert("train".to_string(), prepared.train.to_shell());
    if let Some(m) = &prepared.merge {
        commands.insert("merge".into(), m.to_shell());
    }
    for (k, c) in &gguf_cmds {
        commands.insert(k.to_string(), c.to_shell());
    }
    println!("train: command: {}", prepared.train.to_shell());
    if let Some(m) = &prepared.merge {
        println!("train: merge command: {}", m.to_shell());
    }
    for (k, c) in &gguf_cmds {
        println!("train: {k} command: {}", c.to_shell());
    }
    let data_file = layout.data_file(spec.format);
    let config: serde_json::Value = match spec.backend {
        Backend::Trl => serde_json::from_str(&prepared.config_text)?,
        Backend::LlamaFactory => serde_json::Value::String(prepared.config_text.clone()),
    };
    let mut manifest = TrainManifest {
        format_version: 1,
        spec: spec.clone(),
        config_path: prepared.config_path.clone(),
        config,
        commands,
        data: TrainData {
            sha256: sha256_file(&data_file)?,
            file: data_file,
            records: prepared.export.records,
            reflected: prepared.export.reflected,
            original_safe_steps: prepared.export.original_safe_steps,
            rejected: prepared.export.rejected.clone(),
        },
        outputs: TrainOutputs {
            output_dir: layout.output_dir(),
            merged_dir: spec.merge.then(|| layout.merged_dir()),
            gguf: gguf_out.clone(),
        },
        trainer_versions: BTreeMap::new(),
        status: "prepared".into(),
        error: None,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: autosafe_pipeline::rundir::git_revision(Path::new(env!(
            "CARGO_MANIFEST_DIR"
        ))),
        started_unix: now_unix(),
        seconds: BTreeMap::new(),
        events: Vec::new(),
    };
    let mpath = layout.manifest();
    let old = TrainManifest::read(&mpath)
        .ok()
        .filter(|o| o.config == manifest.config && o.data.sha256 == manifest.data.sha256);
    // Steps a failed run finished before its failing one, with the same config, data and
    // command, and whose output is still there, are not run again (a training killed midway
    // resumes from its last checkpoint instead).
    let done_before = |what: &str| -> bool {
        let Some(o) = &old else { return false };
        let failed = o.error.as_deref().and_then(|e| e.split(':').next());
        let order = ["train", "merge", "gguf", "gguf_base"];
        let finished_before = o.status == "finished"
            || (failed.is_some()
                && order
                    .iter()
                    .take_while(|w| Some(**w) != failed)
                    .any(|w| *w == what));
        let output = match what {
            "train" => layout.output_dir(),
            "merge" => layout.merged_dir(),
            _ => return false,
        };
        finished_before
            && o.seconds.contains_key(what)
            && o.commands.get(what) == manifest.commands.get(what)
            && output.exists()
    };
    let skip: Vec<&str> = ["train", "merge"]
        .into_iter()
        .filter(|w| done_before(w))
        .collect();
    // A finished training with the same config and data is not run again.
    if !args.dry_run
        && let Some(old) = &old
        && old.status == "finished"
        && old.commands == manifest.commands
    {
        println!(
            "train: already finished with this config and data; nothing to do (manifest {})",
            mpath.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    manifest.write(&mpath)?;
    if args.dry_run {
        println!(
            "train: dry run: nothing started; manifest → {}",
            mpath.display()
        );
        return Ok(ExitCode::SUCCESS);
    }

    eprintln!(
        "train: checking the Python environment {} …",
        venv.display()
    );
    manifest.trainer_versions = autosafe_train::python::probe(spec.backend, &venv)?;
    println!(
        "train: {} with {}",
        spec.backend.as_str(),
        manifest
            .trainer_versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    manifest.status = "running".into();
    manifest.write(&mpath)?;
    let log = layout.log();
    let mut steps: Vec<(&str, &autosafe_train::Launch)> = vec![("train", &prepared.train)];
    if let Some(m) = &prepared.merge {
        steps.push(("merge", m));
    }
    for (k, c) in &gguf_cmds {
        steps.push((k, c));
    }
    for (what, cmd) in steps {
        if let Some(o) = old.as_ref().filter(|_| skip.contains(&what)) {
            println!(
                "train: {what}: done before with the same config, data and command (manifest {}); not run again",
                mpath.display()
            );
            if let Some(s) = o.seconds.get(what) {
                manifest.seconds.insert(what.into(), *s);
            }
            manifest
                .events
                .extend(o.events.iter().filter(|e| e["step"] == what).cloned());
            continue;
        }
        println!("train: {what}: {}", cmd.to_shell());
        let out = launch::run(cmd, layout.dir(), &log, "train | ")?;
        manifest
            .seconds
            .insert(what.into(), (out.seconds * 10.0).round() / 10.0);
        manifest.events.extend(
            out.events
                .iter()
                .map(|(m, v)| serde_json::json!({"step": what, "event": m, "data": v})),
        );
        if !out.success() {
            let err = step_failed(what, &out, &log);
            manifest.status = "failed".into();
            manifest.error = Some(format!("{what}: {:?}", out.code));
            manifest.write(&mpath)?;
            return Err(err);
        }
        println!("train: {what} done in {:.1} s", out.seconds);
    }
    manifest.status = "finished".into();
    manifest.write(&mpath)?;
    println!(
        "train: {} → {}",
        spec.method.as_str(),
        layout.output_dir().display()
    );
    if spec.merge {
        println!("train: merged → {}", layout.merged_dir().display());
    }
    if let (Some(g), Some(b)) = (&gguf_out, &base_gguf_out) {
        println!(
            "train: GGUF → {} (evaluate as local:{}; the base at the same precision: local:{})",
            g.display(),
            g.display(),
            b.display()
        );
    }
    println!("train: manifest → {}", mpath.display());
    Ok(ExitCode::SUCCESS)
}
