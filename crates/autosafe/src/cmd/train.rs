//! `autosafe train`: fine-tunes a base model on a run's D_safe through LLaMA-Factory or TRL.
//! Flags only: the work is `autosafe_run::train`'s, the printing the console's.

use std::path::PathBuf;
use std::process::ExitCode;

use autosafe_run::train::{self, HeldApartOptions, HyperFlags, SmokeOptions, TrainOptions};
use clap::Args as ClapArgs;

use super::console::Console;

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
    /// lora, full, or dpo (LoRA DPO on the run's preference pairs: chosen = the kept safe action,
    /// rejected = the snapshot's unsafe one; reference = the base with the adapter off). For SFT
    /// then DPO, pass the SFT run's merged directory or GGUF as --base.
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
    /// DPO's beta (--method dpo; default 0.1).
    #[arg(long)]
    dpo_beta: Option<f64>,
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
    /// Extra trainer option KEY=VALUE (repeatable): a LLaMA-Factory YAML key or a TRL SFTConfig
    /// (DPOConfig with --method dpo) field.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Write the data and configs, print the commands, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// The offline smoke loop: generate a small templated dataset from ToolEmu cases into --data,
    /// then LoRA-train SmolLM2 on CPU for a few dozen steps, merge, and write GGUF.
    #[arg(long)]
    smoke: bool,
    /// An experiment's held-apart split (e.g. data/experiment/split.toml): its terminal
    /// scenarios and ToolEmu cases go to RUN/heldout/ and training refuses to start when a
    /// training record comes from one of them; recorded in RUN/heldout/split.json.
    #[arg(long, value_name = "SPLIT")]
    held_apart: Option<PathBuf>,
    /// ToolEmu cases for --smoke and --held-apart.
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

/// Run the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let hyper = HyperFlags {
        epochs: args.epochs,
        max_steps: args.max_steps,
        lr: args.lr,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_length: args.max_length,
        lora_rank: args.lora_rank,
        lora_alpha: args.lora_alpha,
        lora_target: args.lora_target,
        no_bf16: args.no_bf16,
        save_steps: args.save_steps,
        logging_steps: args.logging_steps,
        dpo_beta: args.dpo_beta,
    };
    let held_apart = args.held_apart.map(|split| HeldApartOptions {
        split,
        cases: args.cases.clone(),
    });
    let smoke = args.smoke.then_some(SmokeOptions {
        cases: args.cases,
        train: args.smoke_train,
        held: args.smoke_held,
        terminal: args.smoke_terminal,
    });
    let opts = TrainOptions {
        data: args.data,
        base: args.base,
        backend: args.backend,
        method: args.method,
        format: args.format,
        template: args.template,
        gpus: args.gpus,
        name: args.name,
        hyper,
        max_prompt_tokens: args.max_prompt_tokens,
        utility_share: args.utility_share,
        merge: args.merge,
        gguf: args.gguf,
        venv: args.venv,
        sets: args.sets,
        dry_run: args.dry_run,
        smoke,
        held_apart,
    };
    train::train(&opts, &Console)?;
    Ok(ExitCode::SUCCESS)
}
