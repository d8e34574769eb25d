//! What a run tells whoever started it, as it goes. The run layer never prints: the binary
//! implements [`Observer`] (plain lines on stdout and stderr, a progress bar or line per stage),
//! and a test can collect the same account.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use autosafe_llm::UsageLedger;
use autosafe_pipeline::ShardSpec;
use autosafe_pipeline::stages::elicit::episode_id;
use autosafe_pipeline::store::{IdOnly, RecordReader};

/// The receiver of a run's account.
pub trait Observer {
    /// Text for standard output, as is (callers end lines themselves).
    fn stdout(&self, text: &str);
    /// Text for standard error, as is: notices and failures beside the account.
    fn stderr(&self, text: &str);
    /// A stage starts making `plan.log` durable; what it returns is finished when the stage
    /// ends well, and dropped (the stage stopped) otherwise.
    fn stage(&self, plan: StagePlan) -> Box<dyn StageWatch>;

    /// A line on standard output.
    fn line(&self, text: &str) {
        self.stdout(&format!("{text}\n"));
    }
}

/// The watch of one stage's progress.
pub trait StageWatch {
    /// The stage ended well.
    fn finish(self: Box<Self>);
}

/// What a stage will do: its name, the outcome log it grows by one line per finished item, how
/// many items it plans (when known), and the ledger of the tokens it spends.
pub struct StagePlan {
    /// The stage (`synthesize`, `elicit`, `reflect`, or an eval runner).
    pub stage: String,
    /// Its outcome log.
    pub log: PathBuf,
    /// Items planned.
    pub total: Option<u64>,
    /// Tokens and cost so far.
    pub ledger: Arc<UsageLedger>,
}

/// Episodes to play: scenarios in `path` whose episodes this shard owns, × `samples`.
pub(crate) fn count_episodes(path: &Path, samples: u32, shard: Option<ShardSpec>) -> Option<u64> {
    let spec = shard.unwrap_or_default();
    let mut n = 0;
    for sc in RecordReader::<IdOnly>::open(path).ok()? {
        let sc = sc.ok()?;
        n += (0..samples)
            .filter(|&s| spec.owns(&episode_id(&sc.id, s)))
            .count() as u64;
    }
    Some(n)
}

/// Snapshots to repair: those in `path` whose episodes this shard owns (distinct ids).
pub(crate) fn count_snapshots(path: &Path, shard: Option<ShardSpec>) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct ScenarioId {
        id: String,
    }
    #[derive(serde::Deserialize)]
    struct SnapshotKey {
        id: String,
        scenario: ScenarioId,
        sample: u32,
    }
    let spec = shard.unwrap_or_default();
    let mut ids = std::collections::HashSet::new();
    for s in RecordReader::<SnapshotKey>::open(path).ok()? {
        let s = s.ok()?;
        if spec.owns(&episode_id(&s.scenario.id, s.sample)) {
            ids.insert(s.id);
        }
    }
    Some(ids.len() as u64)
}
