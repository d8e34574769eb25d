//! Preference pairs: a reflected record (chosen = the verified safe action) joined with the
//! snapshot it repairs (rejected = the unsafe action that was caught), through the record's
//! `parent_id`, which is the snapshot's id.
//!
//! Only confirmed unsafe labels make a rejected side: where the scenario has checkers (the
//! terminal) the checkers must have labelled the snapshot; elsewhere the judge is the label of
//! record, and each pair says who labelled its rejected side.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use autosafe_ots::{AgentTurn, LabelSource, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::RecordReader;

/// The rejected side of a pair: a snapshot's caught unsafe action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejected {
    /// The snapshot's id (the chosen record's `parent_id`).
    pub(crate) snapshot_id: String,
    /// The unsafe action.
    pub(crate) turn: AgentTurn,
    /// Who labelled it unsafe.
    pub(crate) labelled_by: LabelSource,
}

/// What the pairwise export found: pairs by the rejected side's labeller, and the confirmed
/// unsafe snapshots that got no pair because no safe action of theirs was kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PairReport {
    /// Pairs written (each pairwise format holds all of them).
    pub pairs: u64,
    /// Pairs by who labelled the rejected side (`checkers`, `judge`).
    pub by_labeller: BTreeMap<String, u64>,
    /// Snapshots with a confirmed unsafe label and no kept (exported) safe action.
    pub snapshots_without_safe_action: u64,
    /// Snapshots left out because their unsafe label is not confirmed: labelled by the judge
    /// where the scenario has checkers.
    pub unconfirmed_label: u64,
    /// Snapshots not labelled unsafe (unmeasured verdicts), left out.
    pub not_unsafe: u64,
}

/// The rejected sides of `snapshots`, by snapshot id, with the report's skip counts filled in.
/// Holds one action per confirmed unsafe snapshot (not the snapshot's history or scenario).
pub(crate) fn load_rejected(
    snapshots: &Path,
    report: &mut PairReport,
) -> Result<HashMap<String, Rejected>> {
    let mut out = HashMap::new();
    for snap in RecordReader::<Snapshot>::open(snapshots)? {
        let snap = snap?;
        if snap.verdict.judgement.is_safe() != Some(false) {
            report.not_unsafe += 1;
            continue;
        }
        if snap.scenario.terminal.is_some() && snap.labelled_by != LabelSource::Checkers {
            report.unconfirmed_label += 1;
            continue;
        }
        out.insert(
            snap.id.clone(),
            Rejected {
                snapshot_id: snap.id,
                turn: snap.proposed,
                labelled_by: snap.labelled_by,
            },
        );
    }
    Ok(out)
}
