//! ASSEBench labelled trajectories (label 1 = unsafe, 0 = safe; human labels).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{FormatError, Problems};
use crate::read::{Element, json_array};
use crate::verdict::{JudgeKind, JudgeRef, Judgement, UnmeasuredReason, Verdict};

/// Origin and judge name used for ASSEBench labels.
pub(crate) const ORIGIN: &str = "assebench";

/// Roles a message may have.
pub(crate) const ROLES: [&str; 3] = ["user", "agent", "environment"];

/// One message of a recorded conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsseMessage {
    /// `user`, `agent` or `environment`.
    pub role: String,
    /// Text of user and environment messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The agent's thought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<String>,
    /// The agent's action (may be null in the data).
    #[serde(default)]
    pub action: Option<String>,
    /// Other keys, kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One ASSEBench record, field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsseRecord {
    /// Record id.
    pub id: Value,
    /// The agent's system profile.
    #[serde(default)]
    pub profile: String,
    /// The conversation(s): a list of message lists.
    pub contents: Vec<Vec<AsseMessage>>,
    /// 1 = unsafe, 0 = safe.
    pub label: i64,
    /// 1 when annotators found the case ambiguous.
    #[serde(default)]
    pub ambiguous: Option<i64>,
    /// Application scenario.
    #[serde(default)]
    pub application_scenario: Option<String>,
    /// Risk type, e.g. `Prompt Injection`.
    #[serde(default)]
    pub risk_type: Option<String>,
    /// Failure mode description.
    #[serde(default)]
    pub failure_mode: Option<String>,
    /// Why the record is (un)safe.
    #[serde(default)]
    pub risk_description: Option<String>,
    /// Other keys, kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AsseRecord {
    /// The human verdict: label 1 unsafe, 0 safe, anything else unmeasured.
    pub fn verdict(&self) -> Verdict {
        let judge = JudgeRef {
            kind: JudgeKind::Human,
            name: ORIGIN.to_string(),
        };
        let judgement = match self.label {
            1 => Judgement::Unsafe,
            0 => Judgement::Safe,
            other => {
                return Verdict::unmeasured(
                    judge,
                    UnmeasuredReason::MissingLabel,
                    format!("label {other} is neither 0 nor 1"),
                    None,
                );
            }
        };
        Verdict {
            judgement,
            rationale: self.risk_description.clone().unwrap_or_default(),
            score: None,
            judge,
            raw: None,
        }
    }

    /// All messages in order.
    pub fn messages(&self) -> impl Iterator<Item = &AsseMessage> {
        self.contents.iter().flatten()
    }
}

/// Reads an ASSEBench file (a JSON array of records): labels 0/1, known roles, non-empty contents.
pub fn read_records(file: &str, text: &str) -> Result<Vec<AsseRecord>, Problems> {
    let elements = json_array(file, text)?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for el in &elements {
        match el.origin.deserialize::<AsseRecord>(&el.value, &el.path) {
            Ok(r) => {
                check(el, &r, &mut errors);
                out.push(r);
            }
            Err(e) => errors.push(e),
        }
    }
    Problems(errors).into_result(out)
}

fn check(el: &Element<'_>, r: &AsseRecord, errors: &mut Vec<FormatError>) {
    if r.label != 0 && r.label != 1 {
        errors.push(el.origin.error(
            &el.path.key("label"),
            format!("expected 0 (safe) or 1 (unsafe), found {}", r.label),
        ));
    }
    if r.messages().next().is_none() {
        errors.push(
            el.origin
                .error(&el.path.key("contents"), "must not be empty"),
        );
    }
    for (i, turn) in r.contents.iter().enumerate() {
        for (j, m) in turn.iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                let p = el.path.key("contents").index(i).index(j).key("role");
                errors.push(el.origin.error(
                    &p,
                    format!(
                        "unknown role `{}` (expected user, agent or environment)",
                        m.role
                    ),
                ));
            }
        }
    }
}
