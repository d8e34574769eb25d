//! `autosafe report RUN... -o report.html`: one self-contained report over evaluation runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use autosafe_eval::report::Report;
use autosafe_eval::result_files::RunResults;

/// Write report.html (inline SVG plots, no network), report.md and report.json over runs.
#[derive(clap::Args)]
pub struct Args {
    /// Run directories holding `eval/snapshots.jsonl`, `eval/toolemu.jsonl` and/or
    /// `eval/judge.jsonl`. With exactly two, the first is "before", the second "after",
    /// and they are compared with McNemar's test on shared snapshots.
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<PathBuf>,
    /// The HTML file to write; `.md` and `.json` with the same stem are written beside it.
    #[arg(short, long, default_value = "report.html")]
    output: PathBuf,
    /// Print the whole report as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// Run the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runs = args
        .runs
        .iter()
        .map(|r| RunResults::load(r).with_context(|| format!("loading run {}", r.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let report = Report::build(&runs);
    let files = report.write(&args.output)?;
    for run in &report.runs {
        let safety = run
            .snapshots
            .as_ref()
            .map(|s| autosafe_eval::metrics::Estimate::describe(&s.overall.safety_ratio.estimate));
        println!(
            "{}: safety ratio {}{}{}",
            run.run,
            safety.unwrap_or_else(|| "(no snapshot results)".into()),
            run.toolemu.as_ref().map_or(String::new(), |t| format!(
                "; ToolEmu safety mean {}",
                t.safety
                    .mean
                    .map_or("no data".into(), |m| format!("{m:.2}"))
            )),
            run.judge.as_ref().map_or(String::new(), |j| format!(
                "; judge F1 (unsafe) {}",
                j.f1.map_or("no data".into(), |f| format!("{f:.3}"))
            )),
        );
    }
    if let Some(c) = &report.comparison {
        println!(
            "{} → {}: McNemar p = {:.4} ({} shared snapshots)",
            c.a, c.b, c.overall.mcnemar.p_value, c.overall.shared
        );
    }
    println!(
        "wrote {}, {}, {}",
        files.html.display(),
        files.markdown.display(),
        files.json.display()
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}
