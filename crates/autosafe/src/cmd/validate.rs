//! `autosafe validate`: detect each file's format, parse and check it, print counts and
//! taxonomy coverage. Exit 0 when every file is valid, 1 with every problem listed as
//! `FILE:LINE: field: message`, 2 on usage or I/O errors. Arguments only: the work is
//! `autosafe_run::validate`'s, the printing the console's.

use std::path::PathBuf;
use std::process::ExitCode;

use autosafe_run::inputs::Limits;
use autosafe_run::validate::{ValidateOpts, validate};

use super::console::Console;

/// Arguments of `autosafe validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Toolkit file cases are checked against (ToolEmu toolkits or Agent-SafetyBench environment
    /// schemas); repeatable. Default: toolkit files among FILE, else the shipped ToolEmu toolkits.
    #[arg(long = "toolkits", value_name = "FILE")]
    pub toolkits: Vec<PathBuf>,
    /// Taxonomy file (default: the shipped data/taxonomy.toml).
    #[arg(long, value_name = "FILE")]
    pub taxonomy: Option<PathBuf>,
    /// Also print the report as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Largest file read, in bytes (a larger one is an error naming it).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().file_bytes)]
    pub max_file_size: u64,
    /// Longest line read, in bytes (a longer one is an error naming file and line).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().line_bytes)]
    pub max_line_size: u64,
    /// Files to check; the format of each is detected from its content.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = ValidateOpts {
        toolkits: args.toolkits,
        taxonomy: args.taxonomy,
        json: args.json,
        limits: Limits {
            file_bytes: args.max_file_size,
            line_bytes: args.max_line_size,
        },
        files: args.files,
    };
    let valid = validate(&opts, &Console)?;
    Ok(ExitCode::from(if valid { 0 } else { 1 }))
}
