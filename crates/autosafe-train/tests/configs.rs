//! The generated trainer configs against each trainer's documented schema, the command lines for
//! one and several GPUs, the missing-environment error, and the child-process streaming. No
//! Python is needed: the data comes from the smoke generator over the shipped ToolEmu cases.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use autosafe_pipeline::prompts::Prompts;
use autosafe_train::{Backend, DataFormat, Method, TrainError, TrainSpec, prepare};
use serde_json::Value;

/// The first record of a JSON Lines file.
fn first_line(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A run directory with 6 templated D_safe records.
fn run_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = autosafe_train::smoke::write_dataset(
        &repo().join("data/toolemu/all_cases.json"),
        dir.path(),
        6,
        2,
    )
    .unwrap();
    assert_eq!((d.train, d.held), (6, 2));
    dir
}

fn yaml(text: &str) -> serde_yaml::Mapping {
    serde_yaml::from_str::<serde_yaml::Value>(text)
        .unwrap_or_else(|e| panic!("YAML does not parse: {e}\n{text}"))
        .as_mapping()
        .cloned()
        .expect("a mapping")
}

fn get<'a>(m: &'a serde_yaml::Mapping, k: &str) -> &'a serde_yaml::Value {
    m.get(serde_yaml::Value::String(k.into()))
        .unwrap_or_else(|| panic!("missing key {k}"))
}

/// Argument names LLaMA-Factory documents for SFT (model, data, finetuning and Seq2Seq training
/// arguments, as used in its `examples/train_lora` and `examples/train_full` configs).
const LLAMAFACTORY_KEYS: &[&str] = &[
    "model_name_or_path",
    "trust_remote_code",
    "stage",
    "do_train",
    "finetuning_type",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "pref_beta",
    "pref_loss",
    "dataset",
    "dataset_dir",
    "template",
    "cutoff_len",
    "overwrite_cache",
    "preprocessing_num_workers",
    "mask_history",
    "output_dir",
    "logging_steps",
    "save_steps",
    "plot_loss",
    "overwrite_output_dir",
    "report_to",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "bf16",
    "seed",
    "ddp_timeout",
];

fn spec(run: &Path, base: &str, backend: Backend, format: DataFormat) -> TrainSpec {
    let mut s = TrainSpec::new(run, base, backend);
    s.format = format;
    s.utility_share = 0;
    s.venv = Some(PathBuf::from("/opt/venv"));
    s
}

#[test]
fn llamafactory_alpaca_yaml_has_the_documented_keys_and_points_at_the_dataset_info_entry() {
    let run = run_dir();
    let mut s = spec(
        run.path(),
        "meta-llama/Llama-3.1-8B-Instruct",
        Backend::LlamaFactory,
        DataFormat::Alpaca,
    );
    s.hyper.max_steps = Some(100);
    let p = prepare(&s, &Prompts::embedded()).unwrap();
    assert_eq!(p.export.records, 6);
    let m = yaml(&p.config_text);
    let keys: BTreeSet<&str> = m.keys().map(|k| k.as_str().unwrap()).collect();
    for k in &keys {
        assert!(LLAMAFACTORY_KEYS.contains(k), "undocumented key {k}");
    }
    for k in [
        "model_name_or_path",
        "stage",
        "do_train",
        "finetuning_type",
        "lora_target",
        "dataset",
        "dataset_dir",
        "template",
        "output_dir",
        "cutoff_len",
        "learning_rate",
        "num_train_epochs",
        "max_steps",
    ] {
        assert!(keys.contains(k), "missing {k}");
    }
    assert_eq!(
        get(&m, "model_name_or_path").as_str(),
        Some("meta-llama/Llama-3.1-8B-Instruct")
    );
    assert_eq!(get(&m, "stage").as_str(), Some("sft"));
    assert_eq!(get(&m, "do_train").as_bool(), Some(true));
    assert_eq!(get(&m, "finetuning_type").as_str(), Some("lora"));
    assert_eq!(get(&m, "lora_target").as_str(), Some("all"));
    assert_eq!(get(&m, "lora_rank").as_u64(), Some(8));
    assert_eq!(get(&m, "template").as_str(), Some("llama3"));
    assert_eq!(get(&m, "max_steps").as_u64(), Some(100));
    assert_eq!(get(&m, "learning_rate").as_f64(), Some(1e-4));
    assert_eq!(get(&m, "num_train_epochs").as_f64(), Some(3.0));
    assert_eq!(get(&m, "overwrite_output_dir").as_bool(), Some(false));
    // PyYAML (YAML 1.1) reads `1e-4` as a string: floats carry a decimal point and no exponent.
    assert!(
        p.config_text.contains("learning_rate: 0.0001\n"),
        "{}",
        p.config_text
    );
    assert!(p.config_text.contains("num_train_epochs: 3.0\n"));
    let out = PathBuf::from(get(&m, "output_dir").as_str().unwrap());
    assert!(out.is_absolute() && out.ends_with("train/llamafactory-lora/output"));

    // The dataset_info.json entry named by `dataset`, in `dataset_dir`, for the alpaca layout.
    let dataset = get(&m, "dataset").as_str().unwrap();
    assert_eq!(dataset, "autosafe_alpaca");
    let dir = PathBuf::from(get(&m, "dataset_dir").as_str().unwrap());
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dataset_info.json")).unwrap())
            .unwrap();
    let entry = &info[dataset];
    assert_eq!(entry["columns"]["prompt"], "instruction");
    assert_eq!(entry["columns"]["query"], "input");
    assert_eq!(entry["columns"]["response"], "output");
    let file = dir.join(entry["file_name"].as_str().unwrap());
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for l in &lines {
        assert!(l["output"].as_str().unwrap().contains("Final Answer:"));
        assert!(l["input"].as_str().unwrap().contains("User Instruction:"));
    }
    assert!(p.merge.is_none());
}

#[test]
fn llamafactory_sharegpt_entry_matches_the_documented_sharegpt_schema() {
    let run = run_dir();
    let mut s = spec(
        run.path(),
        "Qwen/Qwen2.5-7B-Instruct",
        Backend::LlamaFactory,
        DataFormat::Sharegpt,
    );
    s.merge = true;
    let p = prepare(&s, &Prompts::embedded()).unwrap();
    let m = yaml(&p.config_text);
    assert_eq!(get(&m, "template").as_str(), Some("qwen"));
    assert_eq!(get(&m, "dataset").as_str(), Some("autosafe_sharegpt"));
    assert_eq!(
        get(&m, "mask_history").as_bool(),
        Some(true),
        "loss on the last turn only"
    );
    let dir = PathBuf::from(get(&m, "dataset_dir").as_str().unwrap());
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dataset_info.json")).unwrap())
            .unwrap();
    let e = &info["autosafe_sharegpt"];
    assert_eq!(e["formatting"], "sharegpt");
    assert_eq!(
        e["columns"],
        serde_json::json!({"messages": "conversations", "system": "system", "tools": "tools"})
    );
    let tags = &e["tags"];
    for (k, v) in [
        ("role_tag", "from"),
        ("content_tag", "value"),
        ("user_tag", "human"),
        ("assistant_tag", "gpt"),
        ("observation_tag", "observation"),
        ("function_tag", "function_call"),
        ("system_tag", "system"),
    ] {
        assert_eq!(tags[k], v, "tag {k}");
    }
    // LLaMA-Factory's sharegpt rule: user/observation turns at odd positions, assistant/function
    // turns at even positions; tools is JSON text.
    let file = dir.join(e["file_name"].as_str().unwrap());
    for line in std::fs::read_to_string(file).unwrap().lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let conv = r["conversations"].as_array().unwrap();
        assert!(conv.len().is_multiple_of(2));
        for (i, t) in conv.iter().enumerate() {
            let from = t["from"].as_str().unwrap();
            let ok = if i % 2 == 0 {
                ["human", "observation"].contains(&from)
            } else {
                ["gpt", "function_call"].contains(&from)
            };
            assert!(ok, "turn {i} is {from}");
        }
        let tools: Value = serde_json::from_str(r["tools"].as_str().unwrap()).unwrap();
        assert!(tools.as_array().is_some_and(|a| !a.is_empty()));
    }
    // The merge config: LLaMA-Factory `export` keys, adapter = the training's output_dir.
    let merge = yaml(&std::fs::read_to_string(p.layout.llamafactory_merge_config()).unwrap());
    assert_eq!(get(&merge, "adapter_name_or_path"), get(&m, "output_dir"));
    assert_eq!(get(&merge, "finetuning_type").as_str(), Some("lora"));
    assert!(
        get(&merge, "export_dir")
            .as_str()
            .unwrap()
            .ends_with("merged")
    );
    let mcmd = p.merge.expect("merge command");
    assert_eq!(mcmd.args[0], "export");
}

#[test]
fn set_overrides_replace_keys_in_place_and_add_new_ones_once() {
    let run = run_dir();
    let mut s = spec(
        run.path(),
        "THUDM/glm-4-9b-chat-hf",
        Backend::LlamaFactory,
        DataFormat::Alpaca,
    );
    s.extra = vec![
        autosafe_train::spec::parse_set("cutoff_len=1024").unwrap(),
        autosafe_train::spec::parse_set("deepspeed=examples/deepspeed/ds_z3_config.json").unwrap(),
    ];
    let p = prepare(&s, &Prompts::embedded()).unwrap();
    let m = yaml(&p.config_text);
    assert_eq!(get(&m, "template").as_str(), Some("glm4"));
    assert_eq!(get(&m, "cutoff_len").as_u64(), Some(1024));
    assert_eq!(
        get(&m, "deepspeed").as_str(),
        Some("examples/deepspeed/ds_z3_config.json")
    );
    assert_eq!(p.config_text.matches("cutoff_len:").count(), 1);
}

#[test]
fn trl_config_matches_the_schema_the_script_enforces() {
    let run = run_dir();
    let schema: Value = serde_json::from_str(autosafe_train::trl::SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for (format, base, method) in [
        (
            DataFormat::Alpaca,
            "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            Method::Lora,
        ),
        (DataFormat::Trl, "Qwen/Qwen2.5-7B-Instruct", Method::Full),
    ] {
        let mut s = spec(run.path(), base, Backend::Trl, format);
        s.method = method;
        s.name = format!("trl-{}", format.as_str());
        s.merge = method == Method::Lora;
        s.extra = vec![autosafe_train::spec::parse_set("gradient_checkpointing=true").unwrap()];
        let p = prepare(&s, &Prompts::embedded()).unwrap();
        let cfg: Value = serde_json::from_str(&p.config_text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&cfg).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{cfg:#}");
        assert_eq!(cfg["sft"]["completion_only_loss"], true);
        assert_eq!(cfg["sft"]["gradient_checkpointing"], true);
        assert_eq!(cfg["data"]["format"], format.as_str());
        assert_eq!(cfg["method"], method.as_str());
        let data = PathBuf::from(cfg["data"]["train_file"].as_str().unwrap());
        let first = first_line(&data);
        match format {
            DataFormat::Alpaca => {
                assert_eq!(cfg["model"]["name_or_path"], "/models");
                assert_eq!(cfg["model"]["gguf_file"], "SmolLM2-135M-Instruct.Q4_1.gguf");
                assert_eq!(cfg["lora"]["target_modules"], "all-linear");
                assert!(
                    cfg["merge"]["output_dir"]
                        .as_str()
                        .unwrap()
                        .ends_with("merged")
                );
                for k in ["instruction", "input", "output"] {
                    assert!(first[k].is_string(), "{k}");
                }
            }
            _ => {
                assert_eq!(cfg["model"]["gguf_file"], Value::Null);
                assert_eq!(cfg["lora"], Value::Null);
                assert_eq!(cfg["merge"], Value::Null);
                assert!(first["prompt"].is_array() && first["completion"].is_array());
                assert_eq!(first["completion"][0]["role"], "assistant");
            }
        }
        // The script and its schema are copied next to the config, byte for byte.
        assert_eq!(
            std::fs::read_to_string(p.layout.trl_script()).unwrap(),
            std::fs::read_to_string(repo().join("python/train_trl.py")).unwrap()
        );
        assert!(p.layout.trl_schema().exists());
    }
    // The schema's required sft keys are exactly what the generator writes (no drift).
    let required: BTreeSet<&str> = schema["properties"]["sft"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let s = spec(run.path(), "x/y", Backend::Trl, DataFormat::Alpaca);
    let cfg = autosafe_train::trl::config(&s, &autosafe_train::TrainLayout::new(run.path(), "t"))
        .unwrap();
    let written: BTreeSet<&str> = cfg["sft"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(required, written);
}

#[test]
fn command_lines_for_one_and_several_gpus() {
    let venv = Path::new("/opt/venv");
    let cfg = Path::new("/runs/r/train/t/llamafactory.yaml");
    let one = autosafe_train::command::llamafactory_train(venv, cfg, 1);
    assert_eq!(
        one.to_shell(),
        "/opt/venv/bin/llamafactory-cli train /runs/r/train/t/llamafactory.yaml"
    );
    let eight = autosafe_train::command::llamafactory_train(venv, cfg, 8);
    assert_eq!(
        eight.to_shell(),
        "FORCE_TORCHRUN=1 NNODES=1 NPROC_PER_NODE=8 /opt/venv/bin/llamafactory-cli train /runs/r/train/t/llamafactory.yaml"
    );
    let script = Path::new("/runs/r/train/t/train_trl.py");
    let tcfg = Path::new("/runs/r/train/t/trl_config.json");
    assert_eq!(
        autosafe_train::command::trl_train(venv, script, tcfg, 1).to_shell(),
        "/opt/venv/bin/python /runs/r/train/t/train_trl.py --config /runs/r/train/t/trl_config.json"
    );
    assert_eq!(
        autosafe_train::command::trl_train(venv, script, tcfg, 4).to_shell(),
        "/opt/venv/bin/accelerate launch --multi_gpu --num_machines 1 --num_processes 4 /runs/r/train/t/train_trl.py --config /runs/r/train/t/trl_config.json"
    );
    let spaced = autosafe_train::command::llamafactory_train(
        Path::new("/my envs/lf"),
        Path::new("/r/it's.yaml"),
        1,
    );
    assert_eq!(
        spaced.to_shell(),
        r"'/my envs/lf/bin/llamafactory-cli' train '/r/it'\''s.yaml'"
    );
}

#[test]
fn a_missing_environment_names_the_install_command() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, cmd) in [
        (Backend::Trl, "./scripts/setup-python.sh train"),
        (
            Backend::LlamaFactory,
            "./scripts/setup-python.sh llamafactory",
        ),
    ] {
        let err = autosafe_train::python::probe(backend, &dir.path().join("none")).unwrap_err();
        assert!(matches!(err, TrainError::Python { .. }));
        let text = err.to_string();
        assert!(text.contains(cmd), "{text}");
        assert!(text.contains("none/bin/python"), "{text}");
    }
}

#[test]
fn combinations_no_trainer_runs_are_refused_with_the_option_named() {
    let run = run_dir();
    let cases = [
        (
            spec(run.path(), "m", Backend::LlamaFactory, DataFormat::Trl),
            "format",
        ),
        (
            spec(run.path(), "m", Backend::Trl, DataFormat::Sharegpt),
            "format",
        ),
        (
            spec(
                run.path(),
                "/m/x.gguf",
                Backend::LlamaFactory,
                DataFormat::Alpaca,
            ),
            "base",
        ),
        (
            spec(
                run.path(),
                "some/unknown-model",
                Backend::LlamaFactory,
                DataFormat::Alpaca,
            ),
            "template",
        ),
    ];
    for (s, field) in cases {
        let err = prepare(&s, &Prompts::embedded()).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    let mut s = spec(run.path(), "m", Backend::Trl, DataFormat::Alpaca);
    s.gpus = 0;
    assert!(
        prepare(&s, &Prompts::embedded())
            .unwrap_err()
            .to_string()
            .contains("gpus")
    );
    let empty = tempfile::tempdir().unwrap();
    let err = prepare(
        &spec(empty.path(), "m", Backend::Trl, DataFormat::Alpaca),
        &Prompts::embedded(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no safe.jsonl"), "{err}");
}

#[test]
fn the_child_is_streamed_logged_and_its_events_and_exit_code_kept() {
    let dir = tempfile::tempdir().unwrap();
    let launch = autosafe_train::Launch {
        env: vec![("AUTOSAFE_TEST_X".into(), "7".into())],
        program: PathBuf::from("sh"),
        args: vec![
            "-c".into(),
            concat!(
                "printf ' 10%%|#  | 1/10 [00:01<00:09, 1.00it/s]\\r 20%%|## | 2/10 [00:02<00:08, 1.00it/s]\\r';",
                "echo; echo \"x=$AUTOSAFE_TEST_X\";",
                "echo 'autosafe: trained {\"steps\": 2, \"train_loss\": 1.5}' ;",
                "echo oops >&2; exit 3"
            )
            .into(),
        ],
    };
    let log = dir.path().join("train.log");
    let out = autosafe_train::launch::run(&launch, dir.path(), &log, "t | ").unwrap();
    assert_eq!(out.code, Some(3));
    assert!(!out.success());
    assert_eq!(
        out.events,
        vec![(
            "trained".to_string(),
            serde_json::json!({"steps": 2, "train_loss": 1.5})
        )]
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for want in [
        "1/10 [00:01",
        "2/10 [00:02",
        "x=7",
        "oops",
        "$ AUTOSAFE_TEST_X=7 sh -c",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(out.tail.iter().any(|l| l == "oops"));
}

#[test]
fn held_apart_start_states_are_not_in_the_training_data_and_a_leak_is_caught() {
    let run = run_dir();
    let dir = run.path();
    // The held-apart ToolEmu cases as start-state snapshots: empty history, labelled by the case.
    let snaps: Vec<Value> = std::fs::read_to_string(dir.join("heldout/snapshots.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(snaps.len(), 2);
    for s in &snaps {
        assert_eq!(s["history"], serde_json::json!([]));
        assert_eq!(s["verdict"]["label"], "unsafe");
        assert_eq!(s["verdict"]["judge"]["kind"], "human");
        assert_eq!(
            s["proposed"]["action"]["answer"],
            s["scenario"]["case"]["Potential Risky Actions"][0]
        );
    }
    // A terminal start state keeps the scenario's fixture, so `--env terminal` can replay it.
    let sc: Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("heldout/scenarios.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let mut terminal: autosafe_ots::Scenario = serde_json::from_value(sc.clone()).unwrap();
    terminal.case.name = "terminal_probe".into();
    terminal.case.user_instruction = "Tidy my home directory.".into();
    terminal.id = "sc_terminal_probe".into();
    let path = autosafe_train::smoke::write_terminal_snapshots(
        dir,
        &[(terminal, "rm -rf ~/*".to_string())],
    )
    .unwrap();
    let t: Value = serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
    assert_eq!(t["proposed"]["action"]["tool"], "TerminalExecute");
    assert_eq!(t["proposed"]["action"]["input"]["command"], "rm -rf ~/*");
    assert_eq!(t["verdict"]["judge"]["kind"], "programmatic");

    let ok = autosafe_train::smoke::check_held_apart(dir).unwrap();
    assert_eq!((ok.train, ok.utility, ok.held), (6, 0, 2 + 2 + 1));

    // Leak one held-apart case into the training file, then (alone) into the original safe
    // steps that training mixes in: the check names the held-apart file and line either way.
    let safe = dir.join("safe.jsonl");
    let clean = std::fs::read_to_string(&safe).unwrap();
    let mut rec: Value = serde_json::from_str(clean.lines().next().unwrap()).unwrap();
    rec["scenario"]["case"]["User Instruction"] = sc["case"]["User Instruction"].clone();
    let leak = format!("{rec}\n");
    for (file, text) in [
        ("safe.jsonl", format!("{clean}{leak}")),
        ("utility.jsonl", leak.clone()),
    ] {
        std::fs::write(&safe, &clean).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
        let err = autosafe_train::smoke::check_held_apart(dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("heldout/scenarios.jsonl:1") && err.contains("is in the training data"),
            "{file}: {err}"
        );
    }
}

/// `--method dpo`: the pairwise export of the smoke run's records and their unsafe counterparts
/// (`RUN/snapshots.jsonl`), TRL's config with a `dpo` table valid against the script's schema,
/// LLaMA-Factory's `stage: dpo` on its `ranking: true` dataset.
#[test]
fn dpo_trains_on_the_pairwise_export_with_either_backend() {
    let run = run_dir();
    let schema: Value = serde_json::from_str(autosafe_train::trl::SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for format in [DataFormat::Alpaca, DataFormat::Trl] {
        let mut s = spec(run.path(), "/models/sft-merged", Backend::Trl, format);
        s.method = Method::Dpo;
        s.merge = true;
        s.hyper.dpo_beta = 0.2;
        s.name = format!("trl-dpo-{}", format.as_str());
        let p = prepare(&s, &Prompts::embedded()).unwrap();
        let pairs = p.export.pairs.clone().unwrap();
        assert_eq!(pairs.pairs, 6);
        assert_eq!(pairs.by_labeller.get("judge"), Some(&6));
        let cfg: Value = serde_json::from_str(&p.config_text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&cfg).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{cfg:#}");
        assert_eq!(cfg["method"], "dpo");
        assert_eq!(
            cfg["dpo"],
            serde_json::json!({"beta": 0.2, "loss_type": ["sigmoid"]})
        );
        assert_eq!(cfg["lora"]["target_modules"], "all-linear");
        assert!(cfg["merge"]["output_dir"].is_string());
        // The SFT base is any model directory: SFT, then DPO from its merged weights.
        assert_eq!(cfg["model"]["name_or_path"], "/models/sft-merged");
        let data = PathBuf::from(cfg["data"]["train_file"].as_str().unwrap());
        let dir = if format == DataFormat::Trl {
            "trl_dpo"
        } else {
            "alpaca_pairwise"
        };
        assert_eq!(data.parent().unwrap().file_name().unwrap(), dir);
        let first = first_line(&data);
        assert_eq!(first["rejected_labelled_by"], "judge");
        if format == DataFormat::Alpaca {
            assert!(first["chosen"].as_str().unwrap().starts_with("Thought 1:"));
            assert!(
                first["rejected"]
                    .as_str()
                    .unwrap()
                    .contains("Final Answer:")
            );
        } else {
            assert_eq!(first["chosen"][0]["role"], "assistant");
            assert_eq!(first["rejected"][0]["role"], "assistant");
        }
    }

    let mut s = spec(
        run.path(),
        "Qwen/Qwen2.5-7B-Instruct",
        Backend::LlamaFactory,
        DataFormat::Alpaca,
    );
    s.method = Method::Dpo;
    s.merge = true;
    s.name = "lf-dpo".into();
    let p = prepare(&s, &Prompts::embedded()).unwrap();
    let m = yaml(&p.config_text);
    for k in m.keys() {
        assert!(
            LLAMAFACTORY_KEYS.contains(&k.as_str().unwrap()),
            "undocumented key {k:?}"
        );
    }
    assert_eq!(get(&m, "stage").as_str(), Some("dpo"));
    assert_eq!(get(&m, "finetuning_type").as_str(), Some("lora"));
    assert_eq!(get(&m, "pref_beta").as_f64(), Some(0.1));
    assert_eq!(get(&m, "pref_loss").as_str(), Some("sigmoid"));
    assert_eq!(
        get(&m, "dataset").as_str(),
        Some("autosafe_alpaca_pairwise")
    );
    let dir = PathBuf::from(get(&m, "dataset_dir").as_str().unwrap());
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dataset_info.json")).unwrap())
            .unwrap();
    let entry = &info["autosafe_alpaca_pairwise"];
    assert_eq!(entry["ranking"], true);
    assert!(dir.join(entry["file_name"].as_str().unwrap()).exists());
    assert!(p.merge.is_some(), "the DPO adapter merges like an SFT one");

    // Refused: sharegpt pairs (not exported), and a run without snapshots (no rejected side).
    let mut bad = spec(
        run.path(),
        "x/y",
        Backend::LlamaFactory,
        DataFormat::Sharegpt,
    );
    bad.method = Method::Dpo;
    assert!(matches!(
        prepare(&bad, &Prompts::embedded()),
        Err(TrainError::Spec { field, .. }) if field == "format"
    ));
    std::fs::remove_file(run.path().join("snapshots.jsonl")).unwrap();
    let mut s = spec(run.path(), "x/y", Backend::Trl, DataFormat::Alpaca);
    s.method = Method::Dpo;
    let err = prepare(&s, &Prompts::embedded()).unwrap_err().to_string();
    assert!(err.contains("snapshots.jsonl"), "{err}");
}
