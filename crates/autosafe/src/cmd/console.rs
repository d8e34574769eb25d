//! The console side of a run: its account printed as it goes (stdout for the account, stderr for
//! notices), a progress display per stage, and the exit status of a command with pending items.

use std::process::ExitCode;

use autosafe_run::{Observer, PendingStatus, StagePlan, StageWatch};

use super::progress::StageProgress;

/// Prints a run's account to the process's stdout and stderr.
pub struct Console;

impl Observer for Console {
    fn stdout(&self, text: &str) {
        print!("{text}");
    }

    fn stderr(&self, text: &str) {
        eprint!("{text}");
    }

    fn stage(&self, plan: StagePlan) -> Box<dyn StageWatch> {
        Box::new(StageProgress::start(
            &plan.stage,
            &plan.log,
            plan.total,
            plan.ledger,
        ))
    }
}

impl StageWatch for StageProgress {
    fn finish(self: Box<Self>) {
        StageProgress::finish(*self);
    }
}

/// The exit of `command`: its pending-items notice on stderr, if any, and status 3 when more
/// items are pending than `max_pending` allows.
pub fn exit(command: &str, status: &PendingStatus) -> ExitCode {
    if let Some(m) = status.message(command) {
        eprintln!("{m}");
    }
    ExitCode::from(status.exit_status())
}
