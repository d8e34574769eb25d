//! The generated LLaMA-Factory configs against LLaMA-Factory itself. They need the `llamafactory`
//! environment (`./scripts/setup-python.sh llamafactory`, ~6 GB). Without it, each test says so
//! and checks nothing else.
//!
//! - `generated_configs_pass_llamafactorys_own_argument_parser` (about 30 s): the training YAML
//!   of every format and method, and the merge YAML, go through LLaMA-Factory's own parsers
//!   (`python/llamafactory_check.py`: `get_train_args`, `get_dataset_list`, `get_infer_args`),
//!   so a key LLaMA-Factory renamed or dropped fails here.
//! - `llamafactory_trains_smollm2_two_steps_on_cpu_and_merges` (ignored: a few minutes on 2
//!   cores): the embedded SmolLM2 GGUF becomes a Hugging Face directory (`python/gguf_to_hf.py`),
//!   `llamafactory-cli train` runs 2 LoRA steps on our data, and `llamafactory-cli export` merges.
//!   Run it with `cargo test -p autosafe-train --test llamafactory -- --ignored`.

mod support;

use std::path::{Path, PathBuf};

use autosafe_pipeline::prompts::Prompts;
use autosafe_train::{Backend, DataFormat, Launch, Method, TrainSpec, launch, prepare, python};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv() -> Option<PathBuf> {
    let v = python::venv_dir(Backend::LlamaFactory, None);
    match python::probe(Backend::LlamaFactory, &v) {
        Ok(_) => Some(v),
        Err(e) => {
            eprintln!("skipped (no LLaMA-Factory environment): {e}");
            None
        }
    }
}

fn data(run: &Path, records: usize) {
    let d = autosafe_train::smoke::write_dataset(
        &repo().join("data/toolemu/all_cases.json"),
        run,
        records,
        0,
    )
    .unwrap();
    assert_eq!(d.train, records);
}

/// Runs a script of `python/` in the environment; returns whether it succeeded and its
/// `autosafe: NAME {...}` events.
fn run_python(
    venv: &Path,
    dir: &Path,
    script: &str,
    args: &[String],
) -> (bool, Vec<(String, Value)>, String) {
    let l = Launch {
        env: vec![("HF_HUB_OFFLINE".into(), "1".into())],
        program: venv.join("bin/python"),
        args: [repo().join("python").join(script).display().to_string()]
            .into_iter()
            .chain(args.iter().cloned())
            .collect(),
    };
    let out = launch::run(&l, dir, &dir.join(format!("{script}.log")), "lf | ").unwrap();
    (out.success(), out.events, out.tail.join("\n"))
}

/// [`run_python`] that must succeed.
fn python(venv: &Path, dir: &Path, script: &str, args: &[String]) -> Vec<(String, Value)> {
    let (ok, events, tail) = run_python(venv, dir, script, args);
    assert!(ok, "{script} failed:\n{tail}");
    events
}

#[test]
fn generated_configs_pass_llamafactorys_own_argument_parser() {
    let Some(venv) = venv() else { return };
    let run = tempfile::tempdir().unwrap();
    data(run.path(), 4);
    // (format, method, base, merge): the paper's LoRA on alpaca with the merge config, native
    // tool turns on sharegpt, and full fine-tuning.
    let cases = [
        (
            DataFormat::Alpaca,
            Method::Lora,
            "meta-llama/Llama-3.1-8B-Instruct",
            true,
        ),
        (
            DataFormat::Sharegpt,
            Method::Lora,
            "Qwen/Qwen2.5-7B-Instruct",
            false,
        ),
        (
            DataFormat::Alpaca,
            Method::Full,
            "THUDM/glm-4-9b-chat-hf",
            false,
        ),
    ];
    let mut files = Vec::new();
    let mut specs = Vec::new();
    for (i, (format, method, base, merge)) in cases.into_iter().enumerate() {
        let mut s = TrainSpec::new(run.path(), base, Backend::LlamaFactory);
        s.format = format;
        s.method = method;
        s.merge = merge;
        s.utility_share = 0;
        s.name = format!("case{i}");
        s.hyper.max_steps = Some(7);
        s.hyper.bf16 = false;
        let p = prepare(&s, &Prompts::embedded()).unwrap();
        files.push(p.config_path.display().to_string());
        if merge {
            files.push(p.layout.llamafactory_merge_config().display().to_string());
        }
        specs.push((s, p));
    }
    // One config with a misspelt key (as schema drift would make it): LLaMA-Factory must refuse
    // it, which shows the check has teeth.
    let mut bad = TrainSpec::new(
        run.path(),
        "Qwen/Qwen2.5-7B-Instruct",
        Backend::LlamaFactory,
    );
    bad.utility_share = 0;
    bad.hyper.bf16 = false;
    bad.name = "misspelt".into();
    bad.extra
        .push(autosafe_train::spec::parse_set("lora_rnak=8").unwrap());
    let bad = prepare(&bad, &Prompts::embedded()).unwrap();
    files.push(bad.config_path.display().to_string());
    let (ok, events, tail) = run_python(&venv, run.path(), "llamafactory_check.py", &files);
    assert!(!ok, "the misspelt key was accepted:\n{tail}");
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|(m, _)| m == "llamafactory rejected")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(rejected.len(), 1, "{events:?}");
    assert_eq!(
        rejected[0]["config"],
        bad.config_path.display().to_string().as_str()
    );
    assert!(
        rejected[0]["error"].as_str().unwrap().contains("lora_rnak"),
        "{}",
        rejected[0]
    );
    files.pop();
    let parsed: Vec<&Value> = events
        .iter()
        .filter(|(m, _)| m == "llamafactory config")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(parsed.len(), files.len(), "{events:?}");
    let by_file = |f: &Path| {
        parsed
            .iter()
            .find(|v| v["config"] == f.display().to_string())
            .unwrap_or_else(|| panic!("no result for {}", f.display()))
    };
    for (s, p) in &specs {
        let v = by_file(&p.config_path);
        assert_eq!(v["kind"], "train");
        assert_eq!(v["stage"], "sft");
        assert_eq!(v["finetuning_type"], s.method.as_str());
        assert_eq!(v["model_name_or_path"], s.base.as_str());
        assert_eq!(v["max_steps"], 7);
        assert_eq!(v["bf16"], false);
        assert_eq!(v["train_on_prompt"], false, "loss on the response only");
        assert_eq!(
            v["output_dir"],
            p.layout.output_dir().display().to_string().as_str()
        );
        let ds = &v["datasets"][0];
        assert_eq!(ds["formatting"], s.format.as_str());
        assert_eq!(ds["absent_optional_columns"], serde_json::json!([]));
        match s.format {
            DataFormat::Alpaca => {
                assert_eq!(
                    ds["columns"],
                    serde_json::json!({"prompt": "instruction", "query": "input", "response": "output"})
                );
                assert_eq!(v["mask_history"], false);
            }
            _ => {
                assert_eq!(v["mask_history"], true, "loss on the last turn only");
                let roles = ds["roles"].as_array().unwrap();
                assert_eq!(roles.first().unwrap(), "human");
                assert_eq!(roles.last().unwrap(), "gpt", "{roles:?}");
            }
        }
        if s.method == Method::Lora {
            assert_eq!(v["lora_target"], serde_json::json!(["all"]));
            assert_eq!(v["lora_rank"], s.hyper.lora_rank);
        }
        if s.merge {
            let e = by_file(&p.layout.llamafactory_merge_config());
            assert_eq!(e["kind"], "export");
            assert_eq!(
                e["adapter_name_or_path"],
                serde_json::json!([v["output_dir"]])
            );
            assert_eq!(
                e["export_dir"],
                p.layout.merged_dir().display().to_string().as_str()
            );
            assert_eq!(e["template"], v["template"]);
        }
    }
    let templates: Vec<&str> = specs
        .iter()
        .map(|(_, p)| by_file(&p.config_path)["template"].as_str().unwrap())
        .collect();
    assert_eq!(templates, ["llama3", "qwen", "glm4"]);
}

#[test]
#[ignore = "a real LLaMA-Factory training on CPU (minutes): cargo test -p autosafe-train --test llamafactory -- --ignored"]
fn llamafactory_trains_smollm2_two_steps_on_cpu_and_merges() {
    let Some(venv) = venv() else { return };
    let gguf = python::venv_root()
        .parent()
        .unwrap()
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(gguf.exists(), "{} (run scripts/setup.sh)", gguf.display());
    let run = tempfile::tempdir().unwrap();
    data(run.path(), 4);
    let base = run.path().join("smollm2-hf");
    let ev = python(
        &venv,
        run.path(),
        "gguf_to_hf.py",
        &[
            "--gguf".into(),
            gguf.display().to_string(),
            "--out".into(),
            base.display().to_string(),
        ],
    );
    let conv = &ev.iter().find(|(m, _)| m == "gguf_to_hf").unwrap().1;
    assert_eq!(conv["special_tokens"]["eos"], "<|im_end|>", "{conv}");
    assert_eq!(conv["special_tokens"]["add_bos_token"], false, "{conv}");
    assert_eq!(conv["ids_of_hello"].as_array().unwrap().len(), 1, "{conv}");

    let s = support::two_cpu_steps(run.path(), &base, Backend::LlamaFactory, 384);
    let p = prepare(&s, &Prompts::embedded()).unwrap();
    assert!(
        p.config_text.contains("template: \"smollm2\""),
        "template guessed from the directory name"
    );
    let log = p.layout.log();
    let out = launch::run(&p.train, p.layout.dir(), &log, "lf | ").unwrap();
    assert!(
        out.success(),
        "exit {:?}:\n{}",
        out.code,
        out.tail.join("\n")
    );
    let outdir = p.layout.output_dir();
    assert!(outdir.join("adapter_model.safetensors").exists());
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(outdir.join("train_results.json")).unwrap())
            .unwrap();
    let loss = results["train_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{results}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(outdir.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["global_step"], 2);

    let merge = p.merge.as_ref().expect("merge command");
    let out = launch::run(merge, p.layout.dir(), &log, "lf | ").unwrap();
    assert!(
        out.success(),
        "exit {:?}:\n{}",
        out.code,
        out.tail.join("\n")
    );
    assert!(p.layout.merged_dir().join("model.safetensors").exists());
    assert!(p.layout.merged_dir().join("config.json").exists());
}
