//! Verdicts of judges. A judge that could not judge yields [`Judgement::Unmeasured`], never safe.

use serde::{Deserialize, Serialize};

/// Why a judgement could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmeasuredReason {
    /// The model API failed (HTTP error, timeout, connection).
    ApiError,
    /// The judge's reply could not be parsed.
    ParseError,
    /// The reply was cut off by the token budget.
    Truncated,
    /// The episode hit its step limit before a decision.
    StepLimit,
    /// The environment could not run (sandbox failure).
    EnvironmentError,
    /// The source data carried no usable label.
    MissingLabel,
}

impl UnmeasuredReason {
    /// The snake_case name used in files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            UnmeasuredReason::ApiError => "api_error",
            UnmeasuredReason::ParseError => "parse_error",
            UnmeasuredReason::Truncated => "truncated",
            UnmeasuredReason::StepLimit => "step_limit",
            UnmeasuredReason::EnvironmentError => "environment_error",
            UnmeasuredReason::MissingLabel => "missing_label",
        }
    }
}

/// The label of a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "label", rename_all = "snake_case")]
pub enum Judgement {
    /// The action (or trajectory) is safe.
    Safe,
    /// The action (or trajectory) is unsafe.
    Unsafe,
    /// No judgement could be made; counted apart, never as safe.
    Unmeasured {
        /// Why.
        reason: UnmeasuredReason,
        /// Details (error message).
        detail: String,
    },
}

impl Judgement {
    /// `Some(true)` for safe, `Some(false)` for unsafe, `None` when unmeasured.
    pub fn is_safe(&self) -> Option<bool> {
        match self {
            Judgement::Safe => Some(true),
            Judgement::Unsafe => Some(false),
            Judgement::Unmeasured { .. } => None,
        }
    }
}

/// What kind of judge made a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeKind {
    /// An LLM step judge or evaluator.
    Llm,
    /// Code checking the real state of an environment.
    Programmatic,
    /// A human label from a dataset.
    Human,
}

/// Who gave a record its label of record: the LLM judge (the paper's labelling, and the only
/// one in environments without checkers) or the environment's programmatic checkers (the
/// sandboxed terminal: a step is unsafe when running it makes an `unsafe_if` fact hold). The
/// other labeller's verdict, where there is one, is kept beside for measuring it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// The LLM step judge.
    #[default]
    Judge,
    /// The environment's checkers.
    Checkers,
}

impl LabelSource {
    /// The name used in configs, records and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelSource::Judge => "judge",
            LabelSource::Checkers => "checkers",
        }
    }

    /// True for the record default, so records labelled by the judge keep their old shape.
    pub fn is_judge(&self) -> bool {
        *self == LabelSource::Judge
    }
}

/// Which judge made a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeRef {
    /// Kind of judge.
    pub kind: JudgeKind,
    /// Its name: model name, checker set, dataset.
    pub name: String,
}

/// A judge's verdict on an action or a trajectory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Safe, unsafe or unmeasured.
    #[serde(flatten)]
    pub judgement: Judgement,
    /// The judge's short reason.
    #[serde(default)]
    pub rationale: String,
    /// ToolEmu 0–3 rubric score, when the judge gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// Who judged.
    pub judge: JudgeRef,
    /// The judge's raw output, kept for unparsable replies and audits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl Verdict {
    /// An unmeasured verdict with its reason and the raw text that could not be used.
    pub fn unmeasured(
        judge: JudgeRef,
        reason: UnmeasuredReason,
        detail: impl Into<String>,
        raw: Option<String>,
    ) -> Self {
        Verdict {
            judgement: Judgement::Unmeasured {
                reason,
                detail: detail.into(),
            },
            rationale: String::new(),
            score: None,
            judge,
            raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmeasured_is_never_safe_and_round_trips() {
        let judge = JudgeRef {
            kind: JudgeKind::Llm,
            name: "m".into(),
        };
        let v = Verdict::unmeasured(
            judge,
            UnmeasuredReason::ParseError,
            "no label",
            Some("garbage".into()),
        );
        assert_eq!(v.judgement.is_safe(), None);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["label"], "unmeasured");
        assert_eq!(json["reason"], "parse_error");
        let back: Verdict = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }
}
