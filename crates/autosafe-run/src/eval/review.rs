//! `eval review`: the plausibility reviewer of synthesized cases (`case_review.j2`, the gate of
//! `[synthesize] review`) on scenario records or ToolEmu cases, and, with a reader's labels, how
//! well it agrees with the reader. The positive class is "reject": a reviewer that keeps what a
//! reader rejects has low recall. Results in `RUN/eval/review.jsonl`, one line a case, written
//! as they finish (a rerun skips the cases on file).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::bail;
use autosafe_eval::metrics::{Label, agreement};
use autosafe_ots::{Judgement, Scenario, Taxonomy, ToolLibrary, UnmeasuredReason};
use autosafe_pipeline::StageStats;
use autosafe_pipeline::stages::{CaseReview, StageError, StepJudge, seed_for};
use autosafe_pipeline::store::{Record, RecordWriter, read_all};
use autosafe_pipeline::task_loop::run_items;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Ctx, EvalOutcome, RunOpts, limited, read, runtime};
use crate::inputs::{Input, Libraries, Parsed, parse};
use crate::observe::Observer;

/// The result file in `RUN/eval/`.
const REVIEW_FILE: &str = "review.jsonl";
/// The stage name in `stats.json`.
const STAGE: &str = "eval_review";

/// `eval review`.
#[derive(Debug, Clone)]
pub struct ReviewOpts {
    /// Run options.
    pub run: RunOpts,
    /// The reviewing model.
    pub judge: String,
    /// Scenario records (`scenarios.jsonl`) or ToolEmu cases.
    pub file: PathBuf,
    /// A reader's verdicts, one JSON object a line: `{"id": SCENARIO_ID, "accept": BOOL}`.
    pub labels: Option<PathBuf>,
}

/// A reader's verdict on one case.
#[derive(Debug, Clone, Deserialize)]
struct ReaderLabel {
    id: String,
    accept: bool,
}

/// One reviewed case.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reviewed {
    id: String,
    instruction: String,
    /// The reviewer's answers; absent when its reply could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    review: Option<CaseReview>,
    /// Why there is no review (`parse_error: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

impl Record for Reviewed {
    fn record_id(&self) -> &str {
        &self.id
    }
}

/// Runs `eval review`.
pub fn review(o: &ReviewOpts, obs: &dyn Observer) -> anyhow::Result<EvalOutcome> {
    let library = ToolLibrary::shipped();
    let input = Input::new(&o.file, read(&o.file)?);
    let scenarios = limited(scenarios(&input, &library)?, o.run.limit);
    let ids: HashSet<&str> = scenarios.iter().map(|s| s.id.as_str()).collect();
    let labels = o.labels.as_deref().map(reader_labels).transpose()?;
    if let Some(l) = &labels
        && let Some(id) = l.keys().find(|id| !ids.contains(id.as_str()))
    {
        bail!(
            "{}: label for `{id}`, which is not a case of {}",
            o.labels.as_ref().expect("labels read").display(),
            input.name
        );
    }
    let mut ctx = Ctx::new(&o.run, obs)?;
    let reviewer =
        StepJudge::new(ctx.model("judge", &o.judge)?, ctx.prompts.clone()).labelled("review");
    ctx.manifest(
        "review",
        json!({"input": input.name, "concurrency": o.run.concurrency}),
    )?;
    ctx.line(&format!(
        "eval review: reviewer {} ← {} ({} cases)",
        reviewer.judge_ref().name,
        input.name,
        scenarios.len()
    ));
    let path = ctx.run.eval_file(REVIEW_FILE);
    let watch = ctx.watch("review", REVIEW_FILE, scenarios.len());
    let stats = runtime()?.block_on(async {
        let (writer, resume) = RecordWriter::<Reviewed>::open(&path, 16)?;
        let todo = scenarios
            .iter()
            .filter(|s| !resume.finished.contains(&s.id));
        let left = run_items(
            todo,
            o.run.concurrency,
            |sc| review_one(&reviewer, sc, &library),
            async |r: Reviewed| -> Result<(), StageError> {
                writer.write(r).await?;
                Ok(())
            },
        )
        .await?;
        writer.finish().await?;
        Ok::<_, anyhow::Error>(left)
    })?;
    watch.finish();
    // The file may hold cases of an earlier input: only the cases given count.
    let done: Vec<Reviewed> = read_all::<Reviewed>(&path)?
        .into_iter()
        .filter(|r| ids.contains(r.id.as_str()))
        .collect();
    let stats = count(scenarios.len(), &done, stats);
    ctx.run.record_stats(STAGE, &stats)?;
    ctx.line(&stats.summary_line("eval review"));
    let summary = tell(&ctx, &done, labels.as_ref())?;
    ctx.finish("review", stats, summary)
}

/// The cases of `input`: scenario records, or ToolEmu cases as scenarios.
fn scenarios(input: &Input, library: &ToolLibrary) -> anyhow::Result<Vec<Scenario>> {
    let name = &input.name;
    let format = input
        .format
        .clone()
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let taxonomy = Taxonomy::default_taxonomy();
    let parsed = parse(format, input, &Libraries::shipped(), library, &taxonomy)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    Ok(match parsed {
        Parsed::Scenarios(s) => s,
        Parsed::ToolEmuCases(cases) => cases
            .iter()
            .map(|c| autosafe_ots::toolemu::case_to_scenario(c, &taxonomy))
            .collect(),
        _ => bail!(
            "{name}: {} are not cases to review (expected scenario records or ToolEmu cases)",
            format.as_str()
        ),
    })
}

/// The reader's labels by scenario id; an error names the file, line and field.
fn reader_labels(path: &Path) -> anyhow::Result<BTreeMap<String, bool>> {
    let mut out = BTreeMap::new();
    for (i, line) in read(path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: ReaderLabel = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        if out.insert(l.id.clone(), l.accept).is_some() {
            bail!(
                "{}:{}: id: `{}` labelled twice",
                path.display(),
                i + 1,
                l.id
            );
        }
    }
    Ok(out)
}

async fn review_one(reviewer: &StepJudge, sc: &Scenario, library: &ToolLibrary) -> Reviewed {
    let seed = seed_for(&sc.id, "review", 0, 0);
    let (review, failure) = match reviewer.review_case(sc, library, seed).await {
        Ok(r) => (Some(r), None),
        Err(f) => (None, Some(format!("{}: {}", f.reason.as_str(), f.detail))),
    };
    Reviewed {
        id: sc.id.clone(),
        instruction: sc.case.user_instruction.clone(),
        review,
        failure,
    }
}

/// The counts over the `input` cases given: accepted are output, rejected by the first question
/// answered "no", unreadable reviews unmeasured; `left` holds the pending ones.
fn count(input: usize, done: &[Reviewed], left: StageStats) -> StageStats {
    let mut stats = StageStats {
        input: input as u64,
        ..left
    };
    for r in done {
        match &r.review {
            Some(rv) if rv.accept => stats.output += 1,
            Some(rv) => stats.reject(rv.failed()[0]),
            None => stats.unmeasured("parse_error"),
        }
    }
    stats
}

/// Tells the accept share and, with labels, the agreement with the reader (positive: reject).
fn tell(
    ctx: &Ctx,
    done: &[Reviewed],
    labels: Option<&BTreeMap<String, bool>>,
) -> anyhow::Result<serde_json::Value> {
    let accepted = done
        .iter()
        .filter(|r| r.review.as_ref().is_some_and(|v| v.accept))
        .count();
    ctx.line(&format!(
        "  accepted {accepted} of {} reviewed ({} unreadable)",
        done.len(),
        done.iter().filter(|r| r.review.is_none()).count()
    ));
    let mut summary = json!({"reviewed": done.len(), "accepted": accepted});
    let Some(labels) = labels else {
        return Ok(summary);
    };
    let reject = |accept: bool| if accept { Label::Safe } else { Label::Unsafe };
    let pairs: Vec<(Label, Judgement)> = done
        .iter()
        .filter_map(|r| {
            let gold = reject(*labels.get(&r.id)?);
            let pred = match &r.review {
                Some(v) if v.accept => Judgement::Safe,
                Some(_) => Judgement::Unsafe,
                None => Judgement::Unmeasured {
                    reason: UnmeasuredReason::ParseError,
                    detail: r.failure.clone().unwrap_or_default(),
                },
            };
            Some((gold, pred))
        })
        .collect();
    let a = agreement(pairs.iter().map(|(g, p)| (*g, p)));
    let f = |v: Option<f64>| v.map_or("no data".into(), |v| format!("{v:.3}"));
    let c = &a.confusion;
    ctx.line(&format!(
        "  against the reader ({} labelled, {} unmeasured): reject class precision {} recall {}; kappa {}; confusion (positive = reject): TP {} FN {} FP {} TN {}",
        a.n,
        a.unmeasured.total,
        f(a.unsafe_class.precision),
        f(a.unsafe_class.recall),
        f(a.kappa),
        c.tp,
        c.fn_,
        c.fp,
        c.tn
    ));
    summary["agreement"] = serde_json::to_value(&a)?;
    Ok(summary)
}
