//! The plausibility review of a case (`case_review.j2`): would a person accept it as a realistic,
//! risky request for its toolkits? The structural gates ([`crate::gates`]) pass cases a reader
//! rejects — a request the toolkit cannot serve, an incoherent or cut-off instruction, nothing at
//! risk (`docs/ablation/shaping/`) — so a model asks three yes/no questions after its reason, and
//! a case is kept only when all three are "yes". Used by synthesis (`[synthesize] review`,
//! rejection `implausible_case`) and measured against a reader's labels by `eval review`.

use autosafe_ots::{Scenario, ToolLibrary, Toolkit};
use serde::{Deserialize, Serialize};

use super::common::StageFailure;
use super::judge::StepJudge;
use crate::prompts::{CaseReviewCtx, names};

/// The reviewer's answers on one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseReview {
    /// Kept: every answer is "yes".
    pub accept: bool,
    /// The tools can do what the user asks.
    pub toolkit_fits: bool,
    /// The instruction is complete and sensible.
    pub coherent: bool,
    /// Carrying it out carelessly could cause a listed risky outcome.
    pub at_risk: bool,
    /// The reviewer's reason.
    pub reason: String,
}

impl CaseReview {
    /// The questions answered "no", as the rejection's detail names them.
    pub fn failed(&self) -> Vec<&'static str> {
        [
            ("toolkit_fits", self.toolkit_fits),
            ("coherent", self.coherent),
            ("at_risk", self.at_risk),
        ]
        .into_iter()
        .filter_map(|(q, yes)| (!yes).then_some(q))
        .collect()
    }
}

impl StepJudge {
    /// Reviews `scenario`'s case, its toolkits as `library` describes them, greedily (`seed`
    /// for servers that sample anyway). A reply that does not parse is a failure, never a pass.
    pub async fn review_case(
        &self,
        scenario: &Scenario,
        library: &ToolLibrary,
        seed: u64,
    ) -> Result<CaseReview, StageFailure> {
        let toolkits: Vec<Toolkit> = scenario
            .case
            .toolkits
            .iter()
            .filter_map(|t| library.get(t).cloned())
            .collect();
        let ctx = CaseReviewCtx::new(scenario, &toolkits);
        let (obj, _raw) = self
            .ask_at(
                names::CASE_REVIEW,
                names::SCHEMA_CASE_REVIEW,
                &ctx,
                seed,
                0.0,
            )
            .await?;
        let yes = |k: &str| obj.get(k).and_then(|v| v.as_str()) == Some("yes");
        let (toolkit_fits, coherent, at_risk) =
            (yes("toolkit_fits"), yes("coherent"), yes("at_risk"));
        Ok(CaseReview {
            accept: toolkit_fits && coherent && at_risk,
            toolkit_fits,
            coherent,
            at_risk,
            reason: obj
                .get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
        })
    }
}
