//! `autosafe taxonomy`: list the risk categories and, for given files, which outcomes map
//! onto them and which do not.

use std::path::PathBuf;
use std::process::ExitCode;

use autosafe_run::inputs::{Limits, libraries, load, load_taxonomy};
use autosafe_run::validate::check_file;

/// Arguments of `autosafe taxonomy`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Taxonomy file (default: the shipped data/taxonomy.toml).
    #[arg(long, value_name = "FILE")]
    pub taxonomy: Option<PathBuf>,
    /// Files whose risky outcomes to map (ToolEmu cases or trajectories, Agent-SafetyBench cases, scenarios).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let taxonomy = match load_taxonomy(args.taxonomy.as_deref())? {
        Ok(t) => t,
        Err(problems) => {
            println!("{problems}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("{} categories:", taxonomy.categories().len());
    for c in taxonomy.categories() {
        println!(
            "  {:<24} {:<6} {} ({} aliases): {}",
            c.id,
            c.severity.as_str(),
            c.name,
            c.aliases.len(),
            c.description
        );
    }
    let inputs = args
        .files
        .iter()
        .map(|p| load(p, Limits::default()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let refs: Vec<_> = inputs.iter().collect();
    let libs = libraries(&refs, &mut Vec::new());
    let mut failed = false;
    for input in &inputs {
        let report = check_file(input, &libs, &taxonomy)?;
        if !report.problems.is_empty() {
            failed = true;
            for p in &report.problems {
                println!("{p}");
            }
            continue;
        }
        let m = taxonomy.map_all(report.outcomes.iter().map(String::as_str));
        println!(
            "{}: {} of {} outcomes mapped ({:.1}%), {} unmapped",
            input.name,
            m.mapped.len(),
            m.total(),
            100.0 * m.share_mapped(),
            m.unmapped.len()
        );
        for c in taxonomy.categories() {
            let n = m.mapped.iter().filter(|x| x.category == c.id).count();
            if n > 0 {
                println!("  {:<24} {n}", c.id);
            }
        }
        for u in &m.unmapped {
            println!("  unmapped: {u}");
        }
    }
    Ok(ExitCode::from(if failed { 1 } else { 0 }))
}
