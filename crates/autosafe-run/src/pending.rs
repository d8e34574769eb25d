//! Items left pending by transient failures (a model server unreachable or failing, the reply
//! cache unreadable): nothing was recorded for them, and a command's status says whether more
//! are pending than `max_pending` allows.

use autosafe_pipeline::StageStats;

/// Exit status of a command whose items were left pending over `max_pending`.
pub const EXIT_PENDING: u8 = 3;

/// How a command ended as to pending items.
#[derive(Debug, Clone, PartialEq)]
pub enum PendingStatus {
    /// None pending.
    None,
    /// Some, within `max_pending`: a notice.
    Within {
        /// What is pending and why.
        summary: String,
        /// The threshold.
        max_pending: u64,
    },
    /// More than `max_pending`: the command failed (exit status [`EXIT_PENDING`]).
    Over {
        /// What is pending and why.
        summary: String,
    },
}

impl PendingStatus {
    /// The status given the counts of the stages (or runners) that have pending items.
    pub fn of(left: &[(&str, &StageStats)], max_pending: u64) -> PendingStatus {
        let total: u64 = left.iter().map(|(_, s)| s.pending_total()).sum();
        if total == 0 {
            return PendingStatus::None;
        }
        let by_stage: Vec<String> = left
            .iter()
            .map(|(name, s)| {
                let reasons: Vec<String> =
                    s.pending.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{name}: {}", reasons.join(" "))
            })
            .collect();
        let first = left
            .iter()
            .find_map(|(_, s)| s.pending_detail.as_deref())
            .unwrap_or("");
        let summary = format!(
            "{total} items failed for infrastructure reasons and are pending ({}); first: {first}. \
             Nothing was recorded for them: run the same command again once the model server (or \
             cache) works",
            by_stage.join("; ")
        );
        if total > max_pending {
            PendingStatus::Over { summary }
        } else {
            PendingStatus::Within {
                summary,
                max_pending,
            }
        }
    }

    /// The line for standard error of `command`, if any.
    pub fn message(&self, command: &str) -> Option<String> {
        match self {
            PendingStatus::None => None,
            PendingStatus::Within {
                summary,
                max_pending,
            } => Some(format!(
                "{command}: {summary} (within max_pending = {max_pending})"
            )),
            PendingStatus::Over { summary } => Some(format!("{command}: failed: {summary}")),
        }
    }

    /// The process exit status: 0, or [`EXIT_PENDING`] over the threshold.
    pub fn exit_status(&self) -> u8 {
        match self {
            PendingStatus::Over { .. } => EXIT_PENDING,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_items_over_the_threshold_fail_the_command_and_within_it_are_a_notice() {
        let mut s = StageStats::default();
        assert_eq!(PendingStatus::of(&[("elicit", &s)], 0), PendingStatus::None);
        *s.pending.entry("unreachable".into()).or_default() += 2;
        s.pending_detail = Some("connection refused".into());
        let over = PendingStatus::of(&[("elicit", &s)], 1);
        assert_eq!(over.exit_status(), EXIT_PENDING);
        let msg = over.message("run").unwrap();
        assert!(msg.starts_with("run: failed: 2 items failed"), "{msg}");
        assert!(msg.contains("elicit: unreachable=2"), "{msg}");
        assert!(msg.contains("first: connection refused"), "{msg}");
        let within = PendingStatus::of(&[("elicit", &s)], 2);
        assert_eq!(within.exit_status(), 0);
        assert!(
            within
                .message("run")
                .unwrap()
                .ends_with("(within max_pending = 2)")
        );
    }
}
