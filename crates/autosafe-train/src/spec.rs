//! What to train: backend, method, base model, data layout, hyperparameters.

use std::path::PathBuf;

use autosafe_pipeline::export::ExportFormat;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TrainError};

/// The trainer that runs the fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// LLaMA-Factory (`llamafactory-cli train config.yaml`), the paper's trainer.
    #[serde(rename = "llamafactory")]
    LlamaFactory,
    /// TRL's `SFTTrainer` through `python/train_trl.py`.
    Trl,
}

impl Backend {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::LlamaFactory => "llamafactory",
            Backend::Trl => "trl",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "llamafactory" | "llama-factory" => Ok(Backend::LlamaFactory),
            "trl" => Ok(Backend::Trl),
            _ => Err(format!(
                "unknown backend `{s}` (expected llamafactory or trl)"
            )),
        }
    }
}

/// Full fine-tuning, a LoRA adapter (both supervised, on D_safe), or DPO on preference pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A LoRA adapter (the paper's method).
    Lora,
    /// All weights.
    Full,
    /// DPO with a LoRA adapter on the run's preference pairs (chosen = the kept safe action,
    /// rejected = the caught unsafe one). The reference model is the base with the adapter
    /// disabled, so no second copy of the model is loaded.
    Dpo,
}

impl Method {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Lora => "lora",
            Method::Full => "full",
            Method::Dpo => "dpo",
        }
    }

    /// Whether training makes a LoRA adapter (which `--merge` folds into the base).
    pub fn adapter(self) -> bool {
        matches!(self, Method::Lora | Method::Dpo)
    }

    /// LLaMA-Factory's `finetuning_type`.
    pub(crate) fn finetuning_type(self) -> &'static str {
        if self.adapter() { "lora" } else { "full" }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lora" => Ok(Method::Lora),
            "full" => Ok(Method::Full),
            "dpo" => Ok(Method::Dpo),
            _ => Err(format!("unknown method `{s}` (expected lora, full or dpo)")),
        }
    }
}

/// The layout of the training data.
///
/// `alpaca` is the paper's ReAct text layout: the prompt the agent sees in AutoSafe's default
/// ReAct mode, the target `Thought k / Action k / Action Input k`. `sharegpt` (LLaMA-Factory) and
/// `trl` (TRL) hold native tool calls, for agents run with `agent.native = true` on a model whose
/// chat template knows tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Instruction / input / output (ReAct text).
    Alpaca,
    /// LLaMA-Factory ShareGPT with `function_call` / `observation` turns.
    Sharegpt,
    /// TRL conversational prompt / completion with `tools`.
    Trl,
}

impl DataFormat {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Alpaca => "alpaca",
            DataFormat::Sharegpt => "sharegpt",
            DataFormat::Trl => "trl",
        }
    }
}

impl std::str::FromStr for DataFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "alpaca" => Ok(DataFormat::Alpaca),
            "sharegpt" => Ok(DataFormat::Sharegpt),
            "trl" => Ok(DataFormat::Trl),
            _ => Err(format!(
                "unknown data format `{s}` (expected alpaca, sharegpt or trl)"
            )),
        }
    }
}

/// Training hyperparameters shared by both backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Epochs (ignored when `max_steps` is set).
    pub epochs: f64,
    /// Stop after this many optimizer steps.
    pub max_steps: Option<u64>,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Per-device batch size.
    pub batch_size: u32,
    /// Gradient accumulation steps.
    pub grad_accum: u32,
    /// Longest training sequence in tokens (longer ones are cut).
    pub max_length: u32,
    /// LoRA rank.
    pub lora_rank: u32,
    /// LoRA alpha.
    pub lora_alpha: u32,
    /// LoRA dropout.
    pub lora_dropout: f64,
    /// LoRA target modules: `all` (every linear layer) or a comma-separated list.
    pub lora_target: String,
    /// Train in bfloat16 (GPUs); float32 otherwise.
    pub bf16: bool,
    /// Seed.
    pub seed: u64,
    /// Log every N steps.
    pub logging_steps: u32,
    /// Save a checkpoint every N steps (a killed run resumes from the last one).
    pub save_steps: u32,
    /// Warm-up share of the steps.
    pub warmup_ratio: f64,
    /// DPO's beta: how far the policy may move from the reference (`--method dpo` only).
    #[serde(default = "default_dpo_beta")]
    pub dpo_beta: f64,
}

/// TRL's and LLaMA-Factory's default beta.
fn default_dpo_beta() -> f64 {
    0.1
}

impl Default for Hyper {
    /// LLaMA-Factory's LoRA SFT example settings (rank 8, lr 1e-4, 3 epochs, cosine, 10% warm-up),
    /// with an effective batch of 8 and room for tool descriptions (4096 tokens).
    fn default() -> Self {
        Hyper {
            epochs: 3.0,
            max_steps: None,
            learning_rate: 1e-4,
            batch_size: 1,
            grad_accum: 8,
            max_length: 4096,
            lora_rank: 8,
            lora_alpha: 16,
            lora_dropout: 0.05,
            lora_target: "all".into(),
            bf16: true,
            seed: 42,
            logging_steps: 10,
            save_steps: 500,
            warmup_ratio: 0.1,
            dpo_beta: default_dpo_beta(),
        }
    }
}

impl Hyper {
    /// Checks every number is finite and in range: a NaN or negative learning rate, or zero
    /// epochs, would otherwise be written into the trainer's config and fail (or train
    /// nothing) only once the trainer reads it.
    pub fn validate(&self) -> Result<()> {
        let check = |field: &str, ok: bool, value: &dyn std::fmt::Display, want: &str| {
            if ok {
                return Ok(());
            }
            Err(TrainError::Spec {
                field: field.into(),
                message: format!("{value}: must be {want}"),
            })
        };
        let positive = |x: f64| x.is_finite() && x > 0.0;
        check(
            "epochs",
            positive(self.epochs),
            &self.epochs,
            "a finite number above 0",
        )?;
        check(
            "lr",
            positive(self.learning_rate),
            &self.learning_rate,
            "a finite number above 0",
        )?;
        check(
            "dpo_beta",
            positive(self.dpo_beta),
            &self.dpo_beta,
            "a finite number above 0",
        )?;
        check(
            "lora_dropout",
            (0.0..1.0).contains(&self.lora_dropout),
            &self.lora_dropout,
            "from 0 to below 1",
        )?;
        check(
            "warmup_ratio",
            (0.0..=1.0).contains(&self.warmup_ratio),
            &self.warmup_ratio,
            "from 0 to 1",
        )?;
        if let Some(n) = self.max_steps {
            check("max_steps", n >= 1, &n, "at least 1")?;
        }
        for (field, n) in [
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
            ("max_length", self.max_length),
            ("lora_rank", self.lora_rank),
            ("lora_alpha", self.lora_alpha),
            ("logging_steps", self.logging_steps),
            ("save_steps", self.save_steps),
        ] {
            check(field, n >= 1, &n, "at least 1")?;
        }
        Ok(())
    }
}

/// One training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// The run directory holding `safe.jsonl` (and `utility.jsonl`).
    pub run: PathBuf,
    /// Name of this training under `RUN/train/`.
    pub name: String,
    /// Base model: a Hugging Face id or directory; for TRL also a `.gguf` file (dequantized by
    /// transformers).
    pub base: String,
    /// Trainer.
    pub backend: Backend,
    /// LoRA or full.
    pub method: Method,
    /// Data layout.
    pub format: DataFormat,
    /// LLaMA-Factory chat template (`llama3`, `qwen`, `glm4`, …); guessed from `base` when `None`.
    pub template: Option<String>,
    /// GPUs; more than one goes through the trainer's launcher (torchrun / accelerate).
    pub gpus: u32,
    /// Hyperparameters.
    pub hyper: Hyper,
    /// Merge the LoRA adapter into the base weights after training.
    pub merge: bool,
    /// Safe original steps mixed in (paper: 300).
    pub utility_share: usize,
    /// Dataset name (LLaMA-Factory `dataset`, `dataset_info.json` key prefix).
    pub dataset_name: String,
    /// The trainer's Python environment (default: `$AUTOSAFE_VENV_DIR/<train|llamafactory>`).
    pub venv: Option<PathBuf>,
    /// TRL only: keep only the last N tokens of each prompt (CPU smoke runs; `None` keeps all).
    pub max_prompt_tokens: Option<u32>,
    /// Extra trainer options (`--set key=value`): LLaMA-Factory YAML keys or TRL `SFTConfig`
    /// fields, written last (they override).
    pub extra: Vec<(String, Value)>,
}

impl TrainSpec {
    /// A spec with default hyperparameters.
    pub fn new(run: impl Into<PathBuf>, base: &str, backend: Backend) -> Self {
        let format = DataFormat::Alpaca;
        let method = Method::Lora;
        TrainSpec {
            run: run.into(),
            name: format!("{}-{}", backend.as_str(), method.as_str()),
            base: base.to_string(),
            backend,
            method,
            format,
            template: None,
            gpus: 1,
            hyper: Hyper::default(),
            merge: false,
            utility_share: 300,
            dataset_name: "autosafe".into(),
            venv: None,
            max_prompt_tokens: None,
            extra: Vec::new(),
        }
    }

    /// The export that holds this training's data: the pairwise layout of `format` for DPO.
    pub fn export_format(&self) -> ExportFormat {
        match (self.method, self.format) {
            (Method::Dpo, DataFormat::Trl) => ExportFormat::TrlDpo,
            (Method::Dpo, _) => ExportFormat::AlpacaPairwise,
            (_, DataFormat::Alpaca) => ExportFormat::Alpaca,
            (_, DataFormat::Sharegpt) => ExportFormat::Sharegpt,
            (_, DataFormat::Trl) => ExportFormat::Trl,
        }
    }

    /// Checks combinations the trainers cannot run.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(TrainError::Spec {
                field: field.into(),
                message,
            })
        };
        match (self.backend, self.format) {
            (Backend::LlamaFactory, DataFormat::Trl) => {
                return bad(
                    "format",
                    "LLaMA-Factory reads alpaca or sharegpt, not the trl layout".into(),
                );
            }
            (Backend::Trl, DataFormat::Sharegpt) => {
                return bad(
                    "format",
                    "the TRL script reads alpaca or trl, not sharegpt".into(),
                );
            }
            _ => {}
        }
        if self.method == Method::Dpo && self.format == DataFormat::Sharegpt {
            return bad(
                "format",
                "preference pairs are exported as alpaca (pairwise) or trl, not sharegpt".into(),
            );
        }
        if self.base.trim().is_empty() {
            return bad("base", "empty base model".into());
        }
        if self.base.ends_with(".gguf") && self.backend == Backend::LlamaFactory {
            return bad(
                "base",
                "LLaMA-Factory needs a Hugging Face model (id or directory), not a GGUF file"
                    .into(),
            );
        }
        if self.max_prompt_tokens.is_some() && self.backend != Backend::Trl {
            return bad(
                "max_prompt_tokens",
                "only the TRL backend trims prompts (LLaMA-Factory: cutoff_len)".into(),
            );
        }
        if self.gpus == 0 {
            return bad("gpus", "at least 1 (use 1 for CPU-only runs)".into());
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return bad(
                "name",
                format!("`{}` is not a plain directory name", self.name),
            );
        }
        self.hyper.validate()?;
        if self.method == Method::Full && self.merge {
            return bad("merge", "full fine-tuning has no adapter to merge".into());
        }
        for (k, _) in &self.extra {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return bad("set", format!("`{k}` is not an option name"));
            }
        }
        Ok(())
    }
}

/// Parses `key=value`; the value is JSON when it parses as JSON (`3`, `true`, `"x"`, `[..]`),
/// else a string.
pub fn parse_set(s: &str) -> std::result::Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.trim().to_string(), value))
}
