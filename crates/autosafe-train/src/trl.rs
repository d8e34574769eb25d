//! The TRL backend: the JSON config of `python/train_trl.py`.
//!
//! The script and the JSON schema it checks its config against are data files in `python/`,
//! embedded here and copied next to the config, so a training directory runs on its own.
//! The script trains with TRL's `SFTTrainer` on prompt/completion records and
//! `completion_only_loss: true`: the loss falls on the completion only, which is the final safe
//! action. Every earlier turn is prompt. The `sft` table is passed to `SFTConfig` as it is, so
//! `--set key=value` reaches any `SFTConfig` field. With `method: dpo` the script runs TRL's
//! `DPOTrainer` on prompt / chosen / rejected pairs instead: the `sft` table (less
//! `completion_only_loss`) and the `dpo` table go to `DPOConfig`.

use serde_json::{Value, json};

use crate::error::Result;
use crate::layout::TrainLayout;
use crate::llamafactory::abs;
use crate::spec::{Method, TrainSpec};

/// `python/train_trl.py`.
pub(crate) const SCRIPT: &str = include_str!("../../../python/train_trl.py");

/// `python/train_trl.schema.json`: the config schema the script enforces.
pub const SCHEMA: &str = include_str!("../../../python/train_trl.schema.json");

/// Config format version (the schema's `format_version`).
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The script's config for `spec`.
pub fn config(spec: &TrainSpec, layout: &TrainLayout) -> Result<Value> {
    let h = &spec.hyper;
    let (name_or_path, gguf_file) = if spec.base.ends_with(".gguf") {
        let p = std::path::Path::new(&spec.base);
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        (
            abs(dir.unwrap_or(std::path::Path::new("."))),
            Value::String(
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        )
    } else if std::path::Path::new(&spec.base).exists() {
        (abs(std::path::Path::new(&spec.base)), Value::Null)
    } else {
        (spec.base.clone(), Value::Null)
    };
    let lora = match spec.method {
        Method::Lora | Method::Dpo => json!({
            "r": h.lora_rank,
            "alpha": h.lora_alpha,
            "dropout": h.lora_dropout,
            "target_modules": lora_targets(&h.lora_target),
        }),
        Method::Full => Value::Null,
    };
    let mut sft = json!({
        "output_dir": abs(&layout.output_dir()),
        "num_train_epochs": h.epochs,
        "max_steps": h.max_steps.map(|s| s as i64).unwrap_or(-1),
        "per_device_train_batch_size": h.batch_size,
        "gradient_accumulation_steps": h.grad_accum,
        "learning_rate": h.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": h.warmup_ratio,
        "logging_steps": h.logging_steps,
        "save_steps": h.save_steps,
        "bf16": h.bf16,
        "seed": h.seed,
        "max_length": h.max_length,
        "completion_only_loss": true,
        "report_to": "none",
    });
    for (k, v) in &spec.extra {
        sft[k] = v.clone();
    }
    // DPOConfig cuts over-long sequences at their end (trl 1.16 deprecates `keep_end`), which
    // would cut the actions: max_length must cover prompt and action (or trim the prompt with
    // max_prompt_tokens).
    let dpo = match spec.method {
        Method::Dpo => json!({"beta": h.dpo_beta, "loss_type": ["sigmoid"]}),
        _ => Value::Null,
    };
    let merge = if spec.merge {
        json!({"output_dir": abs(&layout.merged_dir())})
    } else {
        Value::Null
    };
    Ok(json!({
        "format_version": FORMAT_VERSION,
        "model": {
            "name_or_path": name_or_path,
            "gguf_file": gguf_file,
            "trust_remote_code": false,
            "dtype": if h.bf16 { "bfloat16" } else { "float32" },
        },
        "data": {
            "train_file": abs(&layout.data_file(spec.export_format())),
            "format": spec.format.as_str(),
            "max_prompt_tokens": spec.max_prompt_tokens,
        },
        "method": spec.method.as_str(),
        "lora": lora,
        "sft": sft,
        "dpo": dpo,
        "merge": merge,
    }))
}

/// `all` → PEFT's `all-linear`; otherwise a comma-separated list of module names.
fn lora_targets(s: &str) -> Value {
    if s.trim() == "all" {
        json!("all-linear")
    } else {
        Value::Array(
            s.split(',')
                .map(|m| Value::String(m.trim().to_string()))
                .filter(|m| m.as_str() != Some(""))
                .collect(),
        )
    }
}

/// `python/hf_to_gguf.py`: writes a merged Llama model back into GGUF with the base GGUF's
/// metadata (the return path to the embedded engine).
pub const GGUF_SCRIPT: &str = include_str!("../../../python/hf_to_gguf.py");
