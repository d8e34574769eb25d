//! `autosafe compare A B`: the paired comparison of two runs on their shared snapshots.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use autosafe_eval::compare::compare;
use autosafe_eval::result_files::RunResults;

/// Compare run A (before) with run B (after): safe@1 on shared snapshots and McNemar's test.
#[derive(clap::Args)]
pub struct Args {
    /// Run directory A (before), with `eval/snapshots.jsonl`.
    a: PathBuf,
    /// Run directory B (after), with `eval/snapshots.jsonl`.
    b: PathBuf,
    /// Print the comparison as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// Run the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let load =
        |p: &PathBuf| RunResults::load(p).with_context(|| format!("loading run {}", p.display()));
    let (a, b) = (load(&args.a)?, load(&args.b)?);
    for r in [&a, &b] {
        if r.snapshots.is_empty() {
            bail!(
                "{}: no snapshot results to compare (eval/snapshots.jsonl is missing or empty)",
                r.dir.display()
            );
        }
    }
    let c = compare(&a.name, &a.snapshots, &b.name, &b.snapshots);
    print!("{}", c.to_text());
    if args.json {
        println!("{}", serde_json::to_string(&c)?);
    }
    Ok(ExitCode::SUCCESS)
}
