//! `eval judge`: agreement of a step judge with labelled data (ASSEBench records, ToolEmu
//! evaluator rows, sandbox-labelled steps), the format told by content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use autosafe_eval::result_files::JUDGE_FILE;
use autosafe_evalrun::judge_agreement::{
    JudgeReport, LabelledItem, STAGE, eval_judge, from_assebench, from_labelled_step, from_toolemu,
};
use autosafe_ots::{Format, LabelledStep, Taxonomy, ToolLibrary};
use autosafe_pipeline::stages::{JudgeOptions, StepJudge};
use serde_json::{Value, json};

use super::{Ctx, EvalOutcome, RunOpts, file_name, limited, read, runtime};
use crate::inputs::{Input, Libraries, Parsed, parse};
use crate::observe::Observer;

/// `eval judge`.
#[derive(Debug, Clone)]
pub struct JudgeOpts {
    /// Run options.
    pub run: RunOpts,
    /// The step judge measured.
    pub judge: String,
    /// How it decides (votes, second look), as `[judge]` of a run config.
    pub options: JudgeOptions,
    /// ToolEmu evaluator rows' trajectories (default: `trajectories.jsonl` beside the file).
    pub trajectories: Option<PathBuf>,
    /// The labelled data.
    pub file: PathBuf,
}

/// The labelled items of a file, and what was left out.
struct Labelled {
    format: Format,
    items: Vec<LabelledItem>,
    /// Input left out, by reason (`no_gold_label`, `unlabelled`), as `stats.json` records it.
    rejected: BTreeMap<String, u64>,
    /// Sandbox steps the checkers could not label, by reason (left out, never counted safe).
    unlabelled: Option<BTreeMap<String, u64>>,
}

/// Runs `eval judge`.
pub fn judge(o: &JudgeOpts, obs: &dyn Observer) -> anyhow::Result<EvalOutcome> {
    crate::config::check_judge(&o.options).map_err(|e| e.of_flag())?;
    let input = Input::new(&o.file, read(&o.file)?);
    let l = labelled(o, &input)?;
    let items = limited(l.items, o.run.limit);
    let mut ctx = Ctx::new(&o.run, obs)?;
    let judge = StepJudge::new(ctx.model("judge", &o.judge)?, ctx.prompts.clone())
        .with_options(o.options.clone());
    ctx.manifest(
        "judge",
        json!({"input": input.name, "format": l.format.id(), "concurrency": o.run.concurrency, "judge_options": o.options}),
    )?;
    ctx.line(&format!(
        "eval judge: judge {} ← {} ({}, {} labelled items)",
        judge.judge_ref().name,
        input.name,
        l.format.as_str(),
        items.len()
    ));
    let watch = ctx.watch("judge", JUDGE_FILE, items.len());
    let mut rep = runtime()?.block_on(eval_judge(&ctx.run, &items, &judge, o.run.concurrency))?;
    watch.finish();
    // What was left out before the runner saw the items belongs to its counts, in the
    // stats file as on the console.
    rep.stats.rejected.extend(l.rejected);
    ctx.run.record_stats(STAGE, &rep.stats)?;
    ctx.line(&rep.stats.summary_line("eval judge"));
    let summary = tell(&ctx, &rep, l.unlabelled)?;
    ctx.finish("judge", rep.stats, summary)
}

/// Reads the labelled items of `input`, by its format.
fn labelled(o: &JudgeOpts, input: &Input) -> anyhow::Result<Labelled> {
    let name = &input.name;
    let format = input
        .format
        .clone()
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let libs = Libraries::shipped();
    let taxonomy = Taxonomy::default_taxonomy();
    let parsed = parse(format, input, &libs, &ToolLibrary::new(), &taxonomy)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let mut l = Labelled {
        format,
        items: Vec::new(),
        rejected: BTreeMap::new(),
        unlabelled: None,
    };
    let no_gold = match parsed {
        Parsed::AsseBench(records) => {
            l.items = records.iter().filter_map(from_assebench).collect();
            (records.len() - l.items.len()) as u64
        }
        Parsed::Evaluations(rows) => {
            let tpath = o.trajectories.clone().unwrap_or_else(|| {
                o.file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("trajectories.jsonl")
            });
            let trajectories =
                autosafe_ots::toolemu_traj::read_trajectories(&file_name(&tpath), &read(&tpath)?)
                    .map_err(|p| anyhow::anyhow!("{p}"))?;
            let (items, no_gold) = from_toolemu(&trajectories, &rows, &taxonomy)?;
            l.items = items;
            no_gold
        }
        Parsed::LabelledSteps(steps) => {
            steps_labelled(&mut l, limited(steps, o.run.limit));
            0
        }
        _ => bail!(
            "{name}: {} carry no safety labels for judge agreement (expected ASSEBench records, ToolEmu evaluator rows or labelled steps)",
            format.as_str()
        ),
    };
    if no_gold > 0 {
        l.rejected.insert("no_gold_label".to_string(), no_gold);
    }
    Ok(l)
}

/// Sandbox steps: those with a checker label are the items; the rest are counted by reason.
fn steps_labelled(l: &mut Labelled, steps: Vec<LabelledStep>) {
    let mut by_reason = BTreeMap::new();
    for s in steps.iter().filter(|s| s.label.is_none()) {
        let reason = s.unlabelled.clone().unwrap_or_default();
        *by_reason.entry(reason).or_insert(0u64) += 1;
    }
    let n: u64 = by_reason.values().sum();
    if n > 0 {
        l.rejected.insert("unlabelled".to_string(), n);
    }
    l.unlabelled = Some(by_reason);
    l.items = steps.iter().filter_map(from_labelled_step).collect();
}

/// Tells the agreement figures; returns the summary, with the unlabelled steps when any.
fn tell(
    ctx: &Ctx,
    rep: &JudgeReport,
    unlabelled: Option<BTreeMap<String, u64>>,
) -> anyhow::Result<Value> {
    let s = &rep.summary;
    let f = |v: Option<f64>| v.map_or("no data".into(), |v| format!("{v:.3}"));
    ctx.line(&format!(
        "  n {} (unmeasured {}), accuracy {}, unsafe class: precision {} recall {} F1 {}; safe class: precision {} recall {} F1 {}; kappa {}",
        s.n,
        s.unmeasured,
        f(s.accuracy),
        f(s.precision),
        f(s.recall),
        f(s.f1),
        f(s.safe_class.precision),
        f(s.safe_class.recall),
        f(s.safe_class.f1),
        f(s.kappa)
    ));
    let c = &s.confusion;
    ctx.line(&format!(
        "  confusion (positive = unsafe): TP {} FN {} FP {} TN {}",
        c.tp, c.fn_, c.fp, c.tn
    ));
    let mut summary = serde_json::to_value(s)?;
    if let Some(by_reason) = unlabelled {
        let total: u64 = by_reason.values().sum();
        let reasons: Vec<String> = by_reason.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ctx.line(&format!(
            "  unlabelled by the checkers (left out, not counted as safe): {total}{}",
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" [{}]", reasons.join(" "))
            }
        ));
        summary["unlabelled"] = json!({"total": total, "by_reason": by_reason});
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(file: PathBuf) -> JudgeOpts {
        JudgeOpts {
            run: RunOpts {
                run: PathBuf::from("unused"),
                concurrency: 1,
                limit: None,
                prompts: None,
                no_cache: true,
                cache: None,
                json: false,
                max_pending: 0,
            },
            judge: "openai:unused@http://127.0.0.1:9".into(),
            options: JudgeOptions::default(),
            trajectories: None,
            file,
        }
    }

    fn repo_file(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(rel)
    }

    #[test]
    fn labelled_steps_without_a_checker_label_are_rejected_by_reason() {
        let file = repo_file("crates/autosafe/tests/fixtures/labelled_steps.jsonl");
        let input = Input::new(&file, read(&file).unwrap());
        let l = labelled(&opts(file), &input).unwrap();
        assert_eq!(l.format, Format::LabelledSteps);
        assert_eq!(l.items.len(), 8);
        assert_eq!(l.rejected, BTreeMap::from([("unlabelled".to_string(), 2)]));
        let by_reason = l.unlabelled.unwrap();
        assert_eq!(by_reason["prior_harm"], 1);
        assert_eq!(by_reason["checker_unmeasured"], 1);
    }

    #[test]
    fn a_format_without_safety_labels_is_refused_by_name() {
        let file = repo_file("data/toolemu/all_cases.json");
        let input = Input::new(&file, read(&file).unwrap());
        let err = labelled(&opts(file), &input)
            .err()
            .expect("ToolEmu cases carry no labels")
            .to_string();
        assert!(err.ends_with(&format!(
            "all_cases.json: {} carry no safety labels for judge agreement (expected ASSEBench records, ToolEmu evaluator rows or labelled steps)",
            Format::ToolEmuCases.as_str()
        )), "{err}");
    }
}
