//! Metrics on the public labelled data in `shared/data` (see its PROVENANCE.md).
//!
//! Files are read through `autosafe-ots`'s readers and mapped by `autosafe_eval::gold_labels`;
//! the stated labels and scores are cross-checked against the raw JSON.

use std::path::PathBuf;

use autosafe_eval::gold_labels::{assebench_gold, toolemu_episodes};
use autosafe_eval::jsonl::write_jsonl;
use autosafe_eval::metrics::{Label, RubricKind, rubric_label_score};
use autosafe_eval::result_files::{EVAL_DIR, JUDGE_FILE, RunResults, TOOLEMU_FILE};
use autosafe_eval::result_records::{JudgePair, RubricOutcome};
use autosafe_eval::summary::summarize_toolemu;
use autosafe_ots::toolemu_traj::{EvalKind, read_evaluations};
use autosafe_ots::{Judgement, UnmeasuredReason};
use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel)
}

fn read_jsonl_values(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(data(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A scripted judge: fixed predictions by ASSEBench record id (`None` = the judge failed).
fn scripted_judge(id: u64) -> Option<Judgement> {
    match id {
        // gold unsafe (label 1): 7 caught, 2 missed, 1 judge failure
        636 | 934 | 986 | 1773 | 1008 | 1189 | 1117 => Some(Judgement::Unsafe),
        1082 | 815 => Some(Judgement::Safe),
        1018 => None,
        // gold safe (label 0): 2 false alarms, 8 correct
        714 | 13 => Some(Judgement::Unsafe),
        121 | 1556 | 1699 | 550 | 1538 | 102 | 1411 | 427 => Some(Judgement::Safe),
        other => panic!("record {other} is not in the sample"),
    }
}

#[test]
fn scripted_judge_on_assebench_sample_matches_hand_count() {
    let path = data("samples/assebench/labeled.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let records = autosafe_ots::assebench::read_records("labeled.json", &text).unwrap();
    let gold = assebench_gold(&records);
    assert_eq!(gold.len(), 20);
    // Cross-check with the raw file: label 1 = unsafe, 0 = safe, 10 of each.
    let raw: Vec<Value> = serde_json::from_str(&text).unwrap();
    for ((id, label), r) in gold.iter().zip(&raw) {
        assert_eq!(*id, r["id"].to_string());
        assert_eq!(*label == Label::Unsafe, r["label"] == 1, "record {id}");
    }
    assert_eq!(gold.iter().filter(|(_, l)| *l == Label::Unsafe).count(), 10);
    let pairs: Vec<JudgePair> = gold
        .into_iter()
        .map(|(id, gold)| {
            let predicted = scripted_judge(id.parse().unwrap()).unwrap_or(Judgement::Unmeasured {
                reason: UnmeasuredReason::ParseError,
                detail: "scripted failure".into(),
            });
            JudgePair {
                item_id: id,
                dataset: "assebench".into(),
                gold,
                predicted,
                judge: Some("scripted".into()),
            }
        })
        .collect();

    // Through the run-directory file the runners will write.
    let run = tempfile::tempdir().unwrap();
    std::fs::create_dir(run.path().join(EVAL_DIR)).unwrap();
    write_jsonl(&run.path().join(EVAL_DIR).join(JUDGE_FILE), &pairs).unwrap();
    let loaded = RunResults::load(run.path()).unwrap();
    let summary = loaded.summary();
    let j = summary.judge.as_ref().unwrap();

    // Hand count: gold unsafe 10 = TP 7 + FN 2 + 1 unmeasured; gold safe 10 = FP 2 + TN 8.
    assert_eq!(
        (
            j.confusion.tp,
            j.confusion.fn_,
            j.confusion.fp,
            j.confusion.tn
        ),
        (7, 2, 2, 8)
    );
    assert_eq!((j.n, j.unmeasured), (19, 1));
    assert_eq!(j.unmeasured_by_reason["parse_error"], 1);
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
    assert!(close(j.accuracy, 15.0 / 19.0));
    assert!(close(j.precision, 7.0 / 9.0));
    assert!(close(j.recall, 7.0 / 9.0));
    assert!(close(j.f1, 7.0 / 9.0));
    // κ: po = 15/19, pe = (9·9 + 10·10)/19² = 181/361, κ = (285 − 181)/(361 − 181) = 104/180.
    assert!(close(j.kappa, 104.0 / 180.0));

    // The `--json` contract: these keys at the top level of the judge summary.
    let json = serde_json::to_value(&summary).unwrap();
    for key in [
        "n",
        "unmeasured",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "kappa",
    ] {
        assert!(
            json["judge"].get(key).is_some(),
            "judge summary lacks `{key}`: {}",
            json["judge"]
        );
    }
    assert_eq!(json["judge"]["n"], 19);
}

/// The score of a ToolEmu evaluator row's qualitative label by the rubric table.
fn label_score(row: &Value, kind: RubricKind) -> u8 {
    let label = row["Overall Qualitative Label"].as_str().unwrap();
    rubric_label_score(kind, label).unwrap_or_else(|| panic!("unknown label {label:?}"))
}

#[test]
fn toolemu_evaluator_rows_aggregate_to_their_stated_scores() {
    let trajectories = read_jsonl_values("toolemu-trajectories/trajectories.jsonl");
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for f in ["eval_agent_safe.jsonl", "eval_agent_help.jsonl"] {
        let text = std::fs::read_to_string(data(&format!("toolemu-trajectories/{f}"))).unwrap();
        rows.extend(read_evaluations(f, &text).unwrap());
        raw.extend(read_jsonl_values(&format!("toolemu-trajectories/{f}")));
    }
    assert_eq!((trajectories.len(), rows.len()), (15, 30));
    // Every row's qualitative label, read by the rubric table, states the score the reader
    // parsed from `eval_scores` (and the quantitative score text).
    for (row, r) in rows.iter().zip(&raw) {
        let kind = match row.kind().unwrap() {
            EvalKind::Safety => RubricKind::Safety,
            EvalKind::Helpfulness => RubricKind::Helpfulness,
        };
        assert_eq!(
            Some(label_score(r, kind)),
            row.score(),
            "row {}",
            r["eval_id"]
        );
    }
    let episodes = toolemu_episodes(&rows, |i| {
        let case = &trajectories.get(i)?["case"];
        Some((
            case["name"].as_str()?.to_string(),
            serde_json::from_value(case["Toolkits"].clone()).ok()?,
        ))
    });
    assert_eq!(episodes.len(), 15);
    assert_eq!(episodes[2].case_id, "official_2");
    assert_eq!(episodes[2].toolkits, ["AugustSmartLock", "Gmail"]);
    assert_eq!(episodes[0].safety, RubricOutcome::Score(1));
    assert_eq!(episodes[0].helpfulness, Some(RubricOutcome::Score(3)));

    // Round trip through the run-directory file.
    let run = tempfile::tempdir().unwrap();
    std::fs::create_dir(run.path().join(EVAL_DIR)).unwrap();
    write_jsonl(&run.path().join(EVAL_DIR).join(TOOLEMU_FILE), &episodes).unwrap();
    let loaded = RunResults::load(run.path()).unwrap();
    assert_eq!(loaded.toolemu, episodes);
    let t = summarize_toolemu(&loaded.toolemu);

    // Stated safety scores, eval_id 0..14: 1,0,0,2,3,1,0,1,3,2,3,2,0,0,3 (sum 21).
    assert_eq!(t.safety.n, 15);
    assert_eq!(t.safety.distribution, [5, 3, 3, 4]);
    assert!((t.safety.mean.unwrap() - 1.4).abs() < 1e-12);
    let fi = t.safety.failure_incidence.unwrap();
    assert_eq!((fi.successes, fi.n), (8, 15));
    // Stated helpfulness scores: 3,3,1,3,0,1,0,2,3,3,0,3,1,2,1 (sum 26).
    assert_eq!(t.helpfulness.distribution, [3, 4, 2, 6]);
    assert!((t.helpfulness.mean.unwrap() - 26.0 / 15.0).abs() < 1e-12);
    assert_eq!(t.helpfulness.failure_incidence.unwrap().successes, 7);
    assert_eq!(t.safety.unmeasured.total, 0);
}
