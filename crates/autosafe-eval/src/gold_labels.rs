//! Labelled public data as evaluation inputs: ASSEBench human labels as gold labels, ToolEmu
//! evaluator rows as scored episodes. Parsing is `autosafe_ots`'s; this module only maps.

use std::collections::HashMap;

use autosafe_ots::assebench::AsseRecord;
use autosafe_ots::toolemu_traj::{EvalKind, EvaluatorRow};
use autosafe_ots::{Judgement, UnmeasuredReason, Verdict};
use serde_json::Value;

use crate::metrics::Label;
use crate::result_records::{RubricOutcome, ToolEmuEpisode};

/// The gold label of a human or dataset verdict; `None` when it is unmeasured.
pub fn gold_label(v: &Verdict) -> Option<Label> {
    match v.judgement {
        Judgement::Safe => Some(Label::Safe),
        Judgement::Unsafe => Some(Label::Unsafe),
        Judgement::Unmeasured { .. } => None,
    }
}

/// An id value (number or string) as text.
fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ASSEBench records as `(item id, gold label)`; records without a usable label are left out
/// (the reader already rejects labels other than 0 and 1).
pub fn assebench_gold(records: &[AsseRecord]) -> Vec<(String, Label)> {
    records
        .iter()
        .filter_map(|r| gold_label(&r.verdict()).map(|l| (id_text(&r.id), l)))
        .collect()
}

/// The rubric outcome of an evaluator row: its 0–3 score, or unmeasured (`missing_label`).
pub(crate) fn row_outcome(row: &EvaluatorRow) -> RubricOutcome {
    match row.score() {
        Some(s) => RubricOutcome::Score(s),
        None => RubricOutcome::Unmeasured {
            reason: UnmeasuredReason::MissingLabel,
            detail: format!(
                "no 0-3 score (Overall Quantitative Score = {})",
                row.quantitative_score
            ),
        },
    }
}

/// ToolEmu episodes from evaluator rows: one per safety row, with the helpfulness row of the
/// same `eval_id` when present. `case_of(eval_index)` names the case and its toolkits (from
/// the trajectory file); episodes without one are named `eval_<index>`.
pub fn toolemu_episodes(
    rows: &[EvaluatorRow],
    case_of: impl Fn(usize) -> Option<(String, Vec<String>)>,
) -> Vec<ToolEmuEpisode> {
    let help: HashMap<usize, &EvaluatorRow> = rows
        .iter()
        .filter(|r| r.kind() == Some(EvalKind::Helpfulness))
        .filter_map(|r| r.eval_index().map(|i| (i, r)))
        .collect();
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.kind() == Some(EvalKind::Safety))
        .map(|(pos, r)| {
            let idx = r.eval_index().unwrap_or(pos);
            let (case_id, toolkits) =
                case_of(idx).unwrap_or_else(|| (format!("eval_{idx}"), Vec::new()));
            ToolEmuEpisode {
                case_id,
                case_idx: Some(idx as u32),
                toolkits,
                safety: row_outcome(r),
                helpfulness: help.get(&idx).map(|h| row_outcome(h)),
                agent: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::summarize_toolemu;

    fn row(json: &str) -> EvaluatorRow {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rows_without_a_score_are_unmeasured_not_safe() {
        let rows = vec![
            row(
                r#"{"Overall Quantitative Score":"N/A","eval_scores":{"ToolCallRisk":null},"eval_id":0}"#,
            ),
            row(
                r#"{"Overall Quantitative Score":"2","eval_scores":{"Helpfulness":2},"eval_id":0}"#,
            ),
        ];
        let eps = toolemu_episodes(&rows, |_| None);
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].case_id, "eval_0");
        assert!(matches!(
            eps[0].safety,
            RubricOutcome::Unmeasured {
                reason: UnmeasuredReason::MissingLabel,
                ..
            }
        ));
        assert_eq!(eps[0].helpfulness, Some(RubricOutcome::Score(2)));
        let t = summarize_toolemu(&eps);
        assert_eq!(
            (t.safety.n, t.safety.mean, t.safety.failure_incidence),
            (0, None, None)
        );
        assert_eq!(t.safety.unmeasured.by_reason["missing_label"], 1);
    }
}
