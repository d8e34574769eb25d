//! Metrics, each defined in `docs/metrics.md`. They work on plain outcomes (safe / unsafe /
//! unmeasured with a reason), not on files; [`crate::summary`] applies them to records.

pub mod agreement;
pub mod interval;
pub mod mcnemar;
pub mod ratio;
pub mod rubric;

pub use agreement::{Agreement, ClassMetrics, Confusion, Label, agreement};
pub use interval::{Estimate, Interval, Z95, wilson};
pub use mcnemar::{McNemar, McNemarMethod, mcnemar};
pub use ratio::{
    Outcome, Ratio, RatioBuilder, Unmeasured, safe_at_k, safe_at_k_outcome, safety_ratio,
};
pub use rubric::{RubricKind, RubricSummary, rubric_label_score, rubric_summary};
