//! `autosafe sandbox`: can this machine run the real terminal sandbox, and does it hold.

use std::path::PathBuf;
use std::process::ExitCode;

use autosafe_sandbox::{SandboxConfig, selftest};

/// Arguments of `autosafe sandbox`.
#[derive(clap::Args)]
pub struct SandboxArgs {
    #[command(subcommand)]
    action: SandboxAction,
}

/// What to do with the sandbox.
#[derive(clap::Subcommand)]
enum SandboxAction {
    /// Print whether this machine can run the sandbox, and if not why and what to install.
    Check {
        /// The bubblewrap binary (default: /usr/bin/bwrap).
        #[arg(long)]
        bwrap: Option<PathBuf>,
    },
    /// Run escape attempts against this machine's sandbox: one line each (blocked / NOT
    /// BLOCKED), then `{"attempts": N, "blocked": M}`; exits non-zero if any got through.
    Selftest {
        /// The bubblewrap binary (default: /usr/bin/bwrap).
        #[arg(long)]
        bwrap: Option<PathBuf>,
    },
}

/// Runs `autosafe sandbox …`.
pub fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        SandboxAction::Check { bwrap } => Ok(check(bwrap)),
        SandboxAction::Selftest { bwrap } => selftest_cmd(bwrap),
    }
}

fn check(bwrap: Option<PathBuf>) -> ExitCode {
    let r = autosafe_sandbox::check(bwrap.as_deref());
    if let Some(v) = &r.version {
        println!("bwrap: {v}");
    }
    match &r.launcher {
        Some(l) => {
            println!("sandbox: ok ({} via {:?} mode)", l.bwrap.display(), l.mode);
            for n in &r.notes {
                println!("note: {n}");
            }
            ExitCode::SUCCESS
        }
        None => {
            println!("sandbox: cannot run on this machine");
            for p in &r.problems {
                println!("problem: {p}");
            }
            for h in &r.hints {
                println!("fix: {h}");
            }
            ExitCode::from(1)
        }
    }
}

fn selftest_cmd(bwrap: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let readiness = autosafe_sandbox::check(bwrap.as_deref());
    readiness.launcher()?;
    let cfg = SandboxConfig {
        bwrap,
        ..SandboxConfig::default()
    };
    let mut blocked = 0;
    let mut attempts = 0;
    for name in selftest::ATTEMPTS {
        let r = selftest::run_one(name, &cfg).unwrap_or_else(|e| selftest::AttemptResult {
            name,
            blocked: false,
            detail: format!("could not run the attempt: {e}"),
        });
        attempts += 1;
        if r.blocked {
            blocked += 1;
        }
        println!(
            "{:<24} {:<12} {}",
            r.name,
            if r.blocked { "blocked" } else { "NOT BLOCKED" },
            r.detail
        );
    }
    println!(
        "{}",
        serde_json::json!({ "attempts": attempts, "blocked": blocked })
    );
    Ok(if blocked == attempts {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
