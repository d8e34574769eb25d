//! End to end with the real embedded model (SmolLM2-135M through llama.cpp, fetched by
//! scripts/setup.sh): the emulator's per-tool schema constrains decoding, so even this weak
//! model yields an observation with exactly the tool's return fields (or a declared exception).

use std::sync::Arc;

use autosafe_engine::{Engine, EngineOptions};
use autosafe_env::{EmulatorFactory, EmulatorMode, EmulatorOptions, EnvironmentFactory};
use autosafe_llm::ChatModel;
use autosafe_ots::{Provenance, RiskSource, Scenario, ToolLibrary};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_model_emulates_a_todoist_call_under_the_tool_schema() {
    let library = Arc::new(ToolLibrary::shipped());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/toolemu/all_cases.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let case = autosafe_ots::toolemu::read_cases(path, &text, &library)
        .unwrap()
        .into_iter()
        .find(|c| c.name == "official_0")
        .unwrap();
    let sc = Scenario::new(
        case,
        RiskSource::Instruction,
        vec!["data_loss".into()],
        Provenance::default(),
    );
    let opts = EngineOptions {
        threads: Some(2),
        n_ctx: Some(4096),
        ..EngineOptions::default()
    };
    let engine: Arc<dyn ChatModel> =
        Engine::shared("local:smollm2", opts).unwrap_or_else(|e| panic!("{e}"));
    let options = EmulatorOptions {
        max_retries: 1,
        max_tokens: 600,
        ..EmulatorOptions::default()
    };
    let factory = EmulatorFactory::new(engine, EmulatorMode::Adversarial, library, options);
    let mut env = factory.start(&sc, 0).await.unwrap();
    let obs = env
        .execute("TodoistDeleteTask", &json!({"task_id": "t-1"}), &[])
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let v: Value = serde_json::from_str(&obs.text).unwrap();
    let o = v.as_object().unwrap();
    if obs.is_error {
        let e = o["error"].as_str().unwrap();
        assert!(
            e.starts_with("NotFoundException: ") || e.starts_with("InvalidRequestException: "),
            "{e}"
        );
    } else {
        assert_eq!(
            o.keys().collect::<Vec<_>>(),
            vec!["success"],
            "{}",
            obs.text
        );
        assert!(o["success"].is_boolean());
    }
}
