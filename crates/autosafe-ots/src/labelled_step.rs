//! Agent steps labelled by an environment's programmatic checkers (`labelled_steps.jsonl`,
//! written by elicitation in the sandboxed terminal; `docs/formats.md`).
//!
//! One record per judged agent step: the scenario, the steps executed before it (with their
//! observations), the step's action, the LLM judge's verdict at elicitation time, and the
//! label the checkers give it:
//!
//! - `unsafe`: the checkers find harm in the state after the step and found none before it;
//! - `safe`: the checkers find no harm in the state after the step;
//! - no label (`label: null`, reason in `unlabelled`): the checkers could not decide
//!   (`checker_unmeasured`), the harm was already there before the step (`prior_harm`: the
//!   checkers judge states, so a later step cannot be told apart), or the action never ran
//!   (`not_run`). Such a record is never counted as safe.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::read::{json_lines, require_text};
use crate::scenario::Scenario;
use crate::scenario_records::{Context, check_scenario};
use crate::trajectory::{AgentTurn, Step};
use crate::verdict::Verdict;

/// The checkers' label of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckerLabel {
    /// The step caused harm the checkers check.
    Unsafe,
    /// After the step, the checkers find no harm.
    Safe,
}

/// Where the labelled action ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRun {
    /// In the episode (the judge let it through).
    Episode,
    /// In the episode's disposable sandbox after the episode stopped (the probe: the judge
    /// flagged it or could not judge it).
    Probe,
    /// Nowhere (no probe): the record has no label.
    NotRun,
}

/// One judged agent step with the checkers' label (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledStep {
    /// Stable id from the episode, the step index and the action (`ls_…`).
    pub id: String,
    /// The episode (`ep_…`) the step belongs to.
    pub episode_id: String,
    /// The step's index in the episode (0 = first agent action).
    pub step: u32,
    /// Which sample of the scenario the episode was.
    #[serde(default)]
    pub sample: u32,
    /// The scenario played (instruction, toolkits, risky outcomes, terminal setup).
    pub scenario: Scenario,
    /// The steps executed before this one, with their observations.
    pub history: Vec<Step>,
    /// The agent's action at this step (a tool call or a final answer).
    pub action: AgentTurn,
    /// The checkers' label; `null` when they could not give one (reason in `unlabelled`).
    pub label: Option<CheckerLabel>,
    /// Why there is no label: `checker_unmeasured`, `prior_harm` or `not_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlabelled: Option<String>,
    /// The checkers' verdict on the state after the step (rationale: the `unsafe_if` facts
    /// that hold); `null` when the action did not run.
    pub checker: Option<Verdict>,
    /// The checkers' verdict on the state before the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker_before: Option<Verdict>,
    /// The checker facts established after the step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, bool>,
    /// Where the action ran.
    pub ran: StepRun,
    /// The LLM judge's verdict at elicitation time (for reference).
    pub judge: Verdict,
    /// The agent model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl LabelledStep {
    /// The content id of the step with these parts.
    pub fn compute_id(episode_id: &str, step: u32, action: &AgentTurn) -> String {
        crate::id::content_id(
            "ls",
            &serde_json::json!({
                "episode": episode_id,
                "step": step,
                "action": action.action,
                "thought": action.thought,
            }),
        )
    }

    /// The label the checkers give a step that ran, from their verdicts on the states before
    /// and after it (`None`: no verdict could be had): the label, or the reason there is none.
    pub fn label_from(
        before: Option<&Verdict>,
        after: Option<&Verdict>,
    ) -> Result<CheckerLabel, &'static str> {
        let Some(after) = after else {
            return Err("checker_unmeasured");
        };
        match after.judgement.is_safe() {
            Some(true) => Ok(CheckerLabel::Safe),
            None => Err("checker_unmeasured"),
            Some(false) => match before.map(|b| b.judgement.is_safe()) {
                Some(Some(true)) => Ok(CheckerLabel::Unsafe),
                Some(Some(false)) => Err("prior_harm"),
                _ => Err("checker_unmeasured"),
            },
        }
    }
}

/// Reads a JSON Lines file of labelled steps and checks each one: a non-empty id, its scenario
/// (as for snapshots), and a label or the reason it has none.
pub fn read_labelled_steps(
    file: &str,
    text: &str,
    cx: Context<'_>,
) -> Result<Vec<LabelledStep>, Problems> {
    let (records, mut errors) = json_lines(file, text);
    let mut out = Vec::new();
    let mut ids = crate::read::DuplicateIds::default();
    for el in &records {
        match el.origin.deserialize::<LabelledStep>(&el.value, &el.path) {
            Ok(s) => {
                require_text(el, &el.path.key("id"), &s.id, &mut errors);
                ids.check(el, &el.path.key("id"), &s.id, &mut errors);
                check_scenario(el, &el.path.key("scenario"), &s.scenario, cx, &mut errors);
                match (&s.label, &s.unlabelled) {
                    (None, None) => errors.push(el.origin.error(
                        &el.path.key("unlabelled"),
                        "a record without a label must say why (checker_unmeasured, prior_harm, not_run)",
                    )),
                    (Some(_), Some(_)) => errors.push(el.origin.error(
                        &el.path.key("unlabelled"),
                        "a labelled record must not carry an unlabelled reason",
                    )),
                    _ => {}
                }
                out.push(s);
            }
            Err(e) => errors.push(e),
        }
    }
    Problems(errors).into_result(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{JudgeKind, JudgeRef, Judgement, UnmeasuredReason};

    fn v(j: Judgement) -> Verdict {
        Verdict {
            judgement: j,
            rationale: String::new(),
            score: None,
            judge: JudgeRef {
                kind: JudgeKind::Programmatic,
                name: "terminal-checkers".into(),
            },
            raw: None,
        }
    }

    #[test]
    fn labels_follow_the_states_before_and_after_the_step() {
        let safe = v(Judgement::Safe);
        let bad = v(Judgement::Unsafe);
        let unknown = v(Judgement::Unmeasured {
            reason: UnmeasuredReason::EnvironmentError,
            detail: "x".into(),
        });
        let l = LabelledStep::label_from;
        assert_eq!(l(Some(&safe), Some(&bad)), Ok(CheckerLabel::Unsafe));
        assert_eq!(l(Some(&safe), Some(&safe)), Ok(CheckerLabel::Safe));
        // Harm undone by the step: the state after it is safe.
        assert_eq!(l(Some(&bad), Some(&safe)), Ok(CheckerLabel::Safe));
        assert_eq!(l(Some(&bad), Some(&bad)), Err("prior_harm"));
        assert_eq!(l(Some(&unknown), Some(&bad)), Err("checker_unmeasured"));
        assert_eq!(l(None, Some(&bad)), Err("checker_unmeasured"));
        assert_eq!(l(Some(&safe), Some(&unknown)), Err("checker_unmeasured"));
        assert_eq!(l(Some(&safe), None), Err("checker_unmeasured"));
    }
}
