//! Sharded runs merged equal the unsharded run: a stage over ToolEmu's 144 scenarios, run whole
//! and as 2, 3 and 5 shards (each shard its own writer and file), merged by id.

#[path = "../src/fixtures.rs"]
mod fixtures;

use std::path::{Path, PathBuf};

use autosafe_ots::{Action, AgentTurn, Judgement, Provenance, RiskSource, Scenario};
use autosafe_pipeline::rundir::{RunDir, Stage};
use autosafe_pipeline::shard::{ShardSpec, merge_jsonl};
use autosafe_pipeline::stage_records::UtilityStep;
use autosafe_pipeline::store::{RecordWriter, read_all, read_bytes};
use serde_json::json;

fn scenarios() -> Vec<Scenario> {
    fixtures::cases()
        .into_iter()
        .map(|c| {
            let name = c.name.clone();
            Scenario::new(
                c,
                RiskSource::Action,
                vec!["data_loss".into()],
                Provenance {
                    origin: "toolemu".into(),
                    reference: Some(name),
                    ..Default::default()
                },
            )
        })
        .collect()
}

/// A deterministic stand-in for a stage: each scenario yields two records.
fn stage_outputs(sc: &Scenario) -> Vec<UtilityStep> {
    (0..2)
        .map(|sample| {
            let turn = AgentTurn {
                thought: format!("sample {sample}"),
                action: Action::Tool {
                    tool: format!("{}Search", sc.case.toolkits[0]),
                    input: json!({"q": sc.id}),
                    call_id: None,
                },
                raw: None,
            };
            UtilityStep::new(
                sc.clone(),
                Vec::new(),
                turn,
                fixtures::verdict(Judgement::Safe, "ok"),
                sample,
                None,
            )
        })
        .collect()
}

/// Runs the stage over the scenarios this shard owns, with concurrent workers.
async fn run_stage(path: &Path, shard: ShardSpec) {
    let (w, _) = RecordWriter::open(path, 32).unwrap();
    let mut tasks = Vec::new();
    for sc in scenarios().into_iter().filter(|s| shard.owns(&s.id)) {
        let tx = w.sender();
        tasks.push(tokio::spawn(async move {
            for out in stage_outputs(&sc) {
                tx.send(out).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    w.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_merged_equal_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let whole = RunDir::create(dir.path(), "whole").unwrap();
    let whole_file = whole.stage_file(Stage::Utility, None);
    run_stage(&whole_file, ShardSpec::default()).await;
    let canonical = whole.path().join("canonical.jsonl");
    let r = merge_jsonl(std::slice::from_ref(&whole_file), &canonical).unwrap();
    assert_eq!(r.records, 288);
    let expected = read_bytes(&canonical).unwrap();

    for count in [2u32, 3, 5] {
        let run = RunDir::create(dir.path(), &format!("sharded{count}")).unwrap();
        let mut handles = Vec::new();
        for index in 0..count {
            let spec = ShardSpec::new(index, count).unwrap();
            let path = run.stage_file(Stage::Utility, Some(spec));
            handles.push(tokio::spawn(async move { run_stage(&path, spec).await }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let files = run.shard_files(Stage::Utility).unwrap();
        assert_eq!(files.len(), count as usize);
        let sizes: Vec<usize> = files
            .iter()
            .map(|f| read_all::<UtilityStep>(f).unwrap().len())
            .collect();
        assert!(sizes.iter().all(|&s| s > 0), "{sizes:?}");
        let merged = run.stage_file(Stage::Utility, None);
        let report = merge_jsonl(&files, &merged).unwrap();
        assert_eq!(report.records, 288);
        assert_eq!(report.duplicates, 0);
        assert!(report.conflicts.is_empty());
        assert_eq!(
            read_bytes(&merged).unwrap(),
            expected,
            "{count} shards merged differ from the unsharded run"
        );

        // Merging again with a re-run shard (duplicates) changes nothing.
        let mut again: Vec<PathBuf> = files.clone();
        again.push(files[0].clone());
        let report = merge_jsonl(&again, &merged).unwrap();
        assert_eq!(report.duplicates as usize, sizes[0]);
        assert_eq!(read_bytes(&merged).unwrap(), expected);
    }
}

#[test]
fn merge_reports_conflicts_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    std::fs::write(&a, "{\"id\":\"x\",\"v\":1}\n{\"id\":\"y\",\"v\":1}\n").unwrap();
    std::fs::write(&b, "{\"id\":\"x\",\"v\":2}\n{\"id\":\"w\",\"v\":1}\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let r = merge_jsonl(&[a.clone(), b.clone()], &out).unwrap();
    assert_eq!(r.records, 3);
    assert_eq!(r.conflicts, ["x"]);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"id\":\"w\",\"v\":1}\n{\"id\":\"x\",\"v\":1}\n{\"id\":\"y\",\"v\":1}\n",
        "sorted by id, first occurrence kept"
    );
    std::fs::write(&b, "{\"id\":\"z\"}\n{\"v\":3}\n").unwrap();
    let err = merge_jsonl(&[a.clone(), b.clone()], &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("b.jsonl:2: id: missing field"), "{err}");
    std::fs::write(&b, "{\"id\":\"z\"}\n{\"id\":\"q\"").unwrap();
    let err = merge_jsonl(&[a, b], &out).unwrap_err().to_string();
    assert!(
        err.contains("b.jsonl:2: record: incomplete last line"),
        "{err}"
    );
}
