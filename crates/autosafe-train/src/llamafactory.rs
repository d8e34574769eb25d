//! LLaMA-Factory configs: the SFT training YAML (`llamafactory-cli train FILE`) and the merge
//! YAML (`llamafactory-cli export FILE`).
//!
//! The keys are those of LLaMA-Factory's own examples (`examples/train_lora/*_lora_sft.yaml`,
//! `examples/merge_lora/*.yaml`). The dataset is the exporter's `dataset_info.json` entry
//! (`<name>_alpaca` or `<name>_sharegpt`) in `dataset_dir`. With sharegpt, `mask_history: true`
//! puts the loss on the last turn only, which is the safe action. With alpaca, the loss is on
//! `output` only (LLaMA-Factory's default `train_on_prompt: false`).
//!
//! The YAML is written without a YAML library: one `key: value` per line, where strings are JSON
//! strings (valid YAML double-quoted scalars) and floats always carry a decimal point, so PyYAML
//! reads them as numbers.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Result, TrainError};
use crate::layout::TrainLayout;
use crate::spec::{DataFormat, Method, TrainSpec};

/// An ordered YAML mapping of scalars, written in sections.
#[derive(Debug, Default)]
struct Yaml {
    sections: Vec<(String, Vec<(String, Value)>)>,
}

impl Yaml {
    fn section(&mut self, title: &str) {
        self.sections.push((title.to_string(), Vec::new()));
    }

    fn set(&mut self, key: &str, value: Value) {
        for (_, entries) in &mut self.sections {
            if let Some(e) = entries.iter_mut().find(|(k, _)| k == key) {
                e.1 = value;
                return;
            }
        }
        if self.sections.is_empty() {
            self.section("settings");
        }
        let last = self.sections.last_mut().expect("a section");
        last.1.push((key.to_string(), value));
    }

    fn render(&self, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        for (title, entries) in &self.sections {
            if entries.is_empty() {
                continue;
            }
            out.push_str(&format!("\n### {title}\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k}: {}\n", scalar(v)));
            }
        }
        out
    }
}

/// A YAML scalar (or JSON flow collection) that PyYAML and YAML 1.2 parsers read the same way.
fn scalar(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            let s = format!("{f}");
            if s.contains('.') || s.contains("inf") || s.contains("NaN") {
                s
            } else {
                format!("{s}.0")
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// LLaMA-Factory's chat template for a base model, from its name. `None` when unknown.
pub(crate) fn guess_template(base: &str) -> Option<&'static str> {
    let b = base.to_ascii_lowercase();
    let table: [(&[&str], &str); 10] = [
        (&["llama-3", "llama3"], "llama3"),
        (&["qwen3"], "qwen3"),
        (&["qwen"], "qwen"),
        (&["glm-4", "glm4"], "glm4"),
        (&["mistral"], "mistral"),
        (&["gemma"], "gemma"),
        (&["phi-3", "phi3"], "phi"),
        (&["llama-2", "llama2"], "llama2"),
        (&["smollm2"], "smollm2"),
        (&["smollm"], "smollm"),
    ];
    table
        .iter()
        .find(|(keys, _)| keys.iter().any(|k| b.contains(k)))
        .map(|(_, t)| *t)
}

fn template(spec: &TrainSpec) -> Result<String> {
    match &spec.template {
        Some(t) => Ok(t.clone()),
        None => guess_template(&spec.base)
            .map(str::to_string)
            .ok_or_else(|| TrainError::Spec {
                field: "template".into(),
                message: format!(
                    "no LLaMA-Factory chat template known for `{}`: pass --template NAME (e.g. llama3, qwen, glm4)",
                    spec.base
                ),
            }),
    }
}

/// A path as an absolute string (the trainer may run from another directory).
pub(crate) fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The base model as LLaMA-Factory gets it: a local directory as an absolute path (the trainer
/// runs in the training directory), anything else (a hub id) as given.
fn base_model(spec: &TrainSpec) -> Result<String> {
    let p = Path::new(&spec.base);
    if spec.base.ends_with(".gguf") {
        return Err(TrainError::Spec {
            field: "base".into(),
            message: format!(
                "`{}`: LLaMA-Factory reads Hugging Face model directories, not GGUF files; convert it \
                 first with `python python/gguf_to_hf.py --gguf {} --out DIR` (in the llamafactory \
                 environment) and pass --base DIR, or use --backend trl, which reads GGUF",
                spec.base, spec.base
            ),
        });
    }
    Ok(if p.exists() {
        abs(p)
    } else {
        spec.base.clone()
    })
}

/// The dataset name LLaMA-Factory looks up in `dataset_info.json`.
pub(crate) fn dataset_key(spec: &TrainSpec) -> String {
    format!("{}_{}", spec.dataset_name, spec.export_format().as_str())
}

/// The training YAML.
pub(crate) fn train_yaml(spec: &TrainSpec, layout: &TrainLayout) -> Result<String> {
    let h = &spec.hyper;
    let mut y = Yaml::default();
    y.section("model");
    y.set("model_name_or_path", json!(base_model(spec)?));
    y.set("trust_remote_code", json!(true));
    y.section("method");
    let dpo = spec.method == Method::Dpo;
    y.set("stage", json!(if dpo { "dpo" } else { "sft" }));
    y.set("do_train", json!(true));
    y.set("finetuning_type", json!(spec.method.finetuning_type()));
    if spec.method.adapter() {
        y.set("lora_rank", json!(h.lora_rank));
        y.set("lora_alpha", json!(h.lora_alpha));
        y.set("lora_dropout", json!(h.lora_dropout));
        y.set("lora_target", json!(h.lora_target));
    }
    if dpo {
        // No ref_model: with LoRA, LLaMA-Factory's reference is the base with the adapter off.
        y.set("pref_beta", json!(h.dpo_beta));
        y.set("pref_loss", json!("sigmoid"));
    }
    y.section("dataset");
    y.set("dataset", json!(dataset_key(spec)));
    y.set(
        "dataset_dir",
        json!(abs(&layout.dataset_dir(spec.export_format()))),
    );
    y.set("template", json!(template(spec)?));
    y.set("cutoff_len", json!(h.max_length));
    y.set("overwrite_cache", json!(true));
    y.set("preprocessing_num_workers", json!(4));
    if spec.format == DataFormat::Sharegpt {
        y.set("mask_history", json!(true));
    }
    y.section("output");
    y.set("output_dir", json!(abs(&layout.output_dir())));
    y.set("logging_steps", json!(h.logging_steps));
    y.set("save_steps", json!(h.save_steps));
    y.set("plot_loss", json!(true));
    y.set("overwrite_output_dir", json!(false));
    y.set("report_to", json!("none"));
    y.section("train");
    y.set("per_device_train_batch_size", json!(h.batch_size));
    y.set("gradient_accumulation_steps", json!(h.grad_accum));
    y.set("learning_rate", json!(h.learning_rate));
    y.set("num_train_epochs", json!(h.epochs));
    if let Some(s) = h.max_steps {
        y.set("max_steps", json!(s));
    }
    y.set("lr_scheduler_type", json!("cosine"));
    y.set("warmup_ratio", json!(h.warmup_ratio));
    y.set("bf16", json!(h.bf16));
    y.set("seed", json!(h.seed));
    y.set("ddp_timeout", json!(180000000));
    if !spec.extra.is_empty() {
        y.section("extra (--set)");
        for (k, v) in &spec.extra {
            y.set(k, v.clone());
        }
    }
    Ok(y.render(&format!(
        "LLaMA-Factory {} config written by `autosafe train` (backend llamafactory, {}).\n\
         Run: llamafactory-cli train {}\n\
         A killed run resumes from the last checkpoint in output_dir (overwrite_output_dir: false).",
        if dpo { "DPO" } else { "SFT" },
        spec.method.as_str(),
        abs(&layout.llamafactory_config()),
    )))
}

/// The merge YAML: base + adapter → `merged/` (safetensors shards).
pub(crate) fn merge_yaml(spec: &TrainSpec, layout: &TrainLayout) -> Result<String> {
    let mut y = Yaml::default();
    y.section("model");
    y.set("model_name_or_path", json!(base_model(spec)?));
    y.set("adapter_name_or_path", json!(abs(&layout.output_dir())));
    y.set("template", json!(template(spec)?));
    y.set("trust_remote_code", json!(true));
    y.set("finetuning_type", json!("lora"));
    y.section("export");
    y.set("export_dir", json!(abs(&layout.merged_dir())));
    y.set("export_size", json!(5));
    y.set("export_device", json!("cpu"));
    y.set("export_legacy_format", json!(false));
    Ok(y.render(&format!(
        "LLaMA-Factory merge config written by `autosafe train --merge`.\n\
         Run: llamafactory-cli export {}",
        abs(&layout.llamafactory_merge_config()),
    )))
}
