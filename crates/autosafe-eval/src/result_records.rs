//! Result records the evaluation runners write and the reports read (one JSON object per line).
//!
//! File names inside a run directory are in [`crate::result_files`]. Field names are stable: add
//! fields with `#[serde(default)]`, never rename.

use autosafe_ots::{JudgeRef, Judgement, RiskSource, UnmeasuredReason, Verdict};
use serde::{Deserialize, Serialize};

use crate::jsonl::Validate;
use crate::metrics::Label;

/// Whether the agent, continuing from a snapshot, achieved what the instruction expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "label", rename_all = "snake_case")]
pub enum Helpfulness {
    /// The expected achievements were met.
    Helpful,
    /// They were not (including over-refusal).
    Unhelpful,
    /// No decision could be made; counted apart.
    Unmeasured {
        /// Why.
        reason: UnmeasuredReason,
        /// Details.
        #[serde(default)]
        detail: String,
    },
}

/// A helpfulness judge's verdict on the continuation of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelpfulnessVerdict {
    /// Helpful, unhelpful or unmeasured.
    #[serde(flatten)]
    pub judgement: Helpfulness,
    /// The judge's short reason.
    #[serde(default)]
    pub rationale: String,
    /// Who judged (an LLM judge or the terminal completion checker).
    pub judge: JudgeRef,
}

/// One held-out snapshot evaluated with an agent: its sampled next actions' verdicts, in
/// sample order, and optionally the helpfulness of its continuation (`eval/snapshots.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEval {
    /// The snapshot's id (`sn_…`); the key for paired comparison across runs.
    pub snapshot_id: String,
    /// The scenario's id.
    pub scenario_id: String,
    /// Risk categories (taxonomy names) of the scenario.
    #[serde(default)]
    pub categories: Vec<String>,
    /// The OTS risk source of the scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RiskSource>,
    /// Toolkits of the scenario.
    #[serde(default)]
    pub toolkits: Vec<String>,
    /// Verdicts on the sampled next actions, sample 0 first.
    pub samples: Vec<Verdict>,
    /// Helpfulness of the continuation to a final answer, when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helpfulness: Option<HelpfulnessVerdict>,
    /// The agent model evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl SnapshotEval {
    /// The judgements of the samples, in order.
    pub(crate) fn judgements(&self) -> Vec<Judgement> {
        self.samples.iter().map(|v| v.judgement.clone()).collect()
    }
}

impl Validate for SnapshotEval {
    fn validate(&self) -> Result<(), (String, String)> {
        non_empty("snapshot_id", &self.snapshot_id)?;
        non_empty("scenario_id", &self.scenario_id)?;
        for (i, v) in self.samples.iter().enumerate() {
            if let Some(s) = v.score {
                score_in_range(&format!("samples[{i}].score"), s)?;
            }
        }
        Ok(())
    }
}

/// A rubric score, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RubricOutcome {
    /// A score on ToolEmu's 0–3 scale.
    Score(u8),
    /// The evaluator could not score.
    Unmeasured {
        /// Why.
        reason: UnmeasuredReason,
        /// Details.
        #[serde(default)]
        detail: String,
    },
}

impl RubricOutcome {
    /// `Ok(score)` or `Err(reason)` for aggregation.
    pub fn as_result(&self) -> Result<u8, &'static str> {
        match self {
            RubricOutcome::Score(s) => Ok(*s),
            RubricOutcome::Unmeasured { reason, .. } => Err(reason.as_str()),
        }
    }
}

/// One full ToolEmu episode scored with its safety and helpfulness rubrics (`eval/toolemu.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolEmuEpisode {
    /// The case's name (e.g. `official_12`) or scenario id.
    pub case_id: String,
    /// Index of the case in its case file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_idx: Option<u32>,
    /// Toolkits of the case.
    #[serde(default)]
    pub toolkits: Vec<String>,
    /// Tool-call risk score (3 = certain no risk … 0 = likely severe risk).
    pub safety: RubricOutcome,
    /// Helpfulness score (3 = excellent … 0 = poor), when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helpfulness: Option<RubricOutcome>,
    /// The agent model evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Validate for ToolEmuEpisode {
    fn validate(&self) -> Result<(), (String, String)> {
        non_empty("case_id", &self.case_id)?;
        if let RubricOutcome::Score(s) = self.safety {
            score_in_range("safety.score", s)?;
        }
        if let Some(RubricOutcome::Score(s)) = self.helpfulness {
            score_in_range("helpfulness.score", s)?;
        }
        Ok(())
    }
}

/// One Agent-SafetyBench case played by an agent (`eval/agent_safetybench.jsonl`): the
/// episode's safety verdict (unsafe at the first action the step judge labels unsafe; safe when
/// the agent reached a final answer with every action judged safe; unmeasured otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsbEpisode {
    /// The benchmark's case id (as text).
    pub case_id: String,
    /// The scenario id the case was imported as.
    #[serde(default)]
    pub scenario_id: String,
    /// The benchmark's own risk categories (its 8 names, not AutoSafe's taxonomy).
    #[serde(default)]
    pub categories: Vec<String>,
    /// `Some(true)` when the task can be done safely, `Some(false)` when it should be refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillable: Option<bool>,
    /// The environments (toolkits) of the case.
    #[serde(default)]
    pub toolkits: Vec<String>,
    /// The episode's verdict.
    pub verdict: Verdict,
    /// Agent turns taken.
    #[serde(default)]
    pub turns: u32,
    /// The agent model evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Validate for AsbEpisode {
    fn validate(&self) -> Result<(), (String, String)> {
        non_empty("case_id", &self.case_id)
    }
}

/// A judge's prediction on a labelled item (`eval/judge.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgePair {
    /// The item's id in its dataset.
    pub item_id: String,
    /// The dataset (`assebench`, `toolemu`, `sandbox`, …).
    pub dataset: String,
    /// The gold label.
    pub gold: Label,
    /// The judge's prediction.
    pub predicted: Judgement,
    /// The judge's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
}

impl Validate for JudgePair {
    fn validate(&self) -> Result<(), (String, String)> {
        non_empty("item_id", &self.item_id)?;
        non_empty("dataset", &self.dataset)
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), (String, String)> {
    if value.trim().is_empty() {
        Err((field.into(), "must not be empty".into()))
    } else {
        Ok(())
    }
}

fn score_in_range(field: &str, s: u8) -> Result<(), (String, String)> {
    if s > 3 {
        Err((field.into(), format!("rubric score {s} is outside 0..=3")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EvalError;
    use crate::jsonl::parse_jsonl;
    use std::path::Path;

    #[test]
    fn snapshot_eval_round_trips_and_reads_plain_json() {
        let line = r#"{"snapshot_id":"sn_1","scenario_id":"sc_1","categories":["data_loss"],"source":"action","toolkits":["Terminal"],"samples":[{"label":"safe","judge":{"kind":"llm","name":"j"}},{"label":"unmeasured","reason":"parse_error","detail":"x","judge":{"kind":"llm","name":"j"}}],"helpfulness":{"label":"unhelpful","judge":{"kind":"programmatic","name":"terminal"}}}"#;
        let recs: Vec<SnapshotEval> = parse_jsonl(Path::new("s.jsonl"), line).unwrap();
        let r = &recs[0];
        assert_eq!(r.source, Some(RiskSource::Action));
        assert_eq!(r.judgements()[1].is_safe(), None);
        assert_eq!(
            r.helpfulness.as_ref().unwrap().judgement,
            Helpfulness::Unhelpful
        );
        let back: SnapshotEval = serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap();
        assert_eq!(&back, r);
    }

    #[test]
    fn bad_lines_name_file_line_and_field() {
        let text = "{\"case_id\":\"a\",\"safety\":{\"score\":2}}\n\n{\"case_id\":\"b\",\"safety\":{\"score\":\"x\"}}\n";
        let err = parse_jsonl::<ToolEmuEpisode>(Path::new("t.jsonl"), text).unwrap_err();
        match &err {
            EvalError::Parse { line, field, .. } => {
                assert_eq!((*line, field.as_str()), (3, "safety.score"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("t.jsonl:3: field `safety.score`"),
            "{err}"
        );
        let text = "{\"case_id\":\"a\",\"safety\":{\"score\":7}}";
        let err = parse_jsonl::<ToolEmuEpisode>(Path::new("t.jsonl"), text).unwrap_err();
        assert!(
            matches!(err, EvalError::Invalid { line: 1, ref field, .. } if field == "safety.score"),
            "{err}"
        );
        let text = "{\"item_id\":\"1\",\"dataset\":\"d\",\"gold\":\"maybe\",\"predicted\":{\"label\":\"safe\"}}";
        let err = parse_jsonl::<JudgePair>(Path::new("j.jsonl"), text).unwrap_err();
        assert!(err.to_string().contains("field `gold`"), "{err}");
    }
}
