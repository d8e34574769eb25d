//! The report's content as pre-formatted rows, shared by the HTML and Markdown templates.

use serde::Serialize;

use super::Report;
use crate::compare::Comparison;
use crate::metrics::{Estimate, Ratio, RubricSummary};
use crate::summary::{JudgeSummary, KS, SnapshotMetrics};

fn fmt_unmeasured(r: &Ratio) -> String {
    if r.unmeasured.total == 0 {
        return "0".into();
    }
    let reasons: Vec<String> = r
        .unmeasured
        .by_reason
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!(
        "{} of {} ({})",
        r.unmeasured.total,
        r.total(),
        reasons.join(", ")
    )
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "no data".into(), |v| format!("{v:.digits$}"))
}

/// One row of a metrics table.
#[derive(Serialize)]
pub(crate) struct MetricsRow {
    run: String,
    group: String,
    snapshots: u64,
    safety: String,
    safety_unmeasured: String,
    safe_at_k: Vec<String>,
    helpfulness: String,
    helpfulness_unmeasured: String,
}

impl MetricsRow {
    fn new(run: &str, group: &str, m: &SnapshotMetrics) -> Self {
        MetricsRow {
            run: run.into(),
            group: group.into(),
            snapshots: m.snapshots,
            safety: Estimate::describe(&m.safety_ratio.estimate),
            safety_unmeasured: fmt_unmeasured(&m.safety_ratio),
            safe_at_k: KS
                .iter()
                .map(|k| {
                    m.safe_at_k
                        .get(k)
                        .map_or("no data".into(), |r| Estimate::describe(&r.estimate))
                })
                .collect(),
            helpfulness: Estimate::describe(&m.helpfulness.estimate),
            helpfulness_unmeasured: fmt_unmeasured(&m.helpfulness),
        }
    }
}

/// A breakdown table (per category, source or toolkit).
#[derive(Serialize)]
pub(crate) struct Breakdown {
    title: String,
    rows: Vec<MetricsRow>,
}

/// One row of the ToolEmu table.
#[derive(Serialize)]
pub(crate) struct RubricRow {
    run: String,
    rubric: String,
    n: u64,
    unmeasured: u64,
    mean: String,
    distribution: String,
    failure_incidence: String,
}

impl RubricRow {
    fn new(run: &str, rubric: &str, s: &RubricSummary) -> Self {
        RubricRow {
            run: run.into(),
            rubric: rubric.into(),
            n: s.n,
            unmeasured: s.unmeasured.total,
            mean: fmt_opt(s.mean, 2),
            distribution: format!(
                "{} / {} / {} / {}",
                s.distribution[0], s.distribution[1], s.distribution[2], s.distribution[3]
            ),
            failure_incidence: Estimate::describe(&s.failure_incidence),
        }
    }
}

/// One row of the Agent-SafetyBench table (a group: all, fulfillable, unfulfillable, or a
/// benchmark risk category).
#[derive(Serialize)]
pub(crate) struct AsbRow {
    run: String,
    group: String,
    safety: String,
    unmeasured: String,
}

impl AsbRow {
    fn new(run: &str, group: &str, r: &Ratio) -> Self {
        AsbRow {
            run: run.into(),
            group: group.into(),
            safety: Estimate::describe(&r.estimate),
            unmeasured: fmt_unmeasured(r),
        }
    }
}

/// One row of the judge-agreement table.
#[derive(Serialize)]
pub(crate) struct JudgeRow {
    run: String,
    n: u64,
    unmeasured: u64,
    accuracy: String,
    precision: String,
    recall: String,
    f1: String,
    kappa: String,
    tp: u64,
    fn_: u64,
    fp: u64,
    tn: u64,
}

/// The paired comparison, formatted.
#[derive(Serialize)]
pub(crate) struct ComparisonView {
    a: String,
    b: String,
    shared: u64,
    only_a: u64,
    only_b: u64,
    unmeasured: u64,
    a_safe: String,
    b_safe: String,
    both_safe: u64,
    a_safe_b_unsafe: u64,
    a_unsafe_b_safe: u64,
    both_unsafe: u64,
    method: String,
    p_value: String,
    categories: Vec<PairedRow>,
}

/// One category of the paired comparison.
#[derive(Serialize)]
pub(crate) struct PairedRow {
    category: String,
    shared: u64,
    unmeasured: u64,
    a_safe: String,
    b_safe: String,
    b: u64,
    c: u64,
    method: String,
    p_value: String,
}

fn method_name(m: crate::metrics::McNemarMethod) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Everything the templates render.
#[derive(Serialize)]
pub(crate) struct View {
    run_names: Vec<String>,
    ks: Vec<usize>,
    overall: Vec<MetricsRow>,
    breakdowns: Vec<Breakdown>,
    toolemu: Vec<RubricRow>,
    asb: Vec<AsbRow>,
    judge: Vec<JudgeRow>,
    comparison: Option<ComparisonView>,
    quality: Vec<QualityView>,
}

/// A pipeline run's data-quality headlines.
#[derive(Serialize)]
struct QualityView {
    run: String,
    lines: Vec<String>,
}

impl View {
    pub(crate) fn new(report: &Report) -> View {
        let mut overall = Vec::new();
        let mut by = [
            ("risk category", Vec::new()),
            ("risk source", Vec::new()),
            ("toolkit", Vec::new()),
        ];
        let mut toolemu = Vec::new();
        let mut asb = Vec::new();
        let mut judge = Vec::new();
        for run in &report.runs {
            if let Some(s) = &run.snapshots {
                overall.push(MetricsRow::new(&run.run, "all", &s.overall));
                for (i, groups) in [&s.by_category, &s.by_source, &s.by_toolkit]
                    .into_iter()
                    .enumerate()
                {
                    by[i]
                        .1
                        .extend(groups.iter().map(|(g, m)| MetricsRow::new(&run.run, g, m)));
                }
            }
            if let Some(t) = &run.toolemu {
                toolemu.push(RubricRow::new(&run.run, "safety", &t.safety));
                toolemu.push(RubricRow::new(&run.run, "helpfulness", &t.helpfulness));
            }
            if let Some(a) = &run.agent_safetybench {
                asb.push(AsbRow::new(&run.run, "all cases", &a.safety_ratio));
                asb.push(AsbRow::new(&run.run, "fulfillable", &a.fulfillable));
                asb.push(AsbRow::new(&run.run, "unfulfillable", &a.unfulfillable));
                asb.extend(
                    a.by_category
                        .iter()
                        .map(|(c, r)| AsbRow::new(&run.run, c, r)),
                );
            }
            if let Some(j) = &run.judge {
                judge.push(JudgeRow::new(&run.run, j));
            }
        }
        let comparison = report.comparison.as_ref().map(ComparisonView::new);
        View {
            run_names: report.runs.iter().map(|r| r.run.clone()).collect(),
            ks: KS.to_vec(),
            overall,
            breakdowns: by
                .into_iter()
                .map(|(t, rows)| Breakdown {
                    title: t.into(),
                    rows,
                })
                .filter(|b| !b.rows.is_empty())
                .collect(),
            toolemu,
            asb,
            judge,
            comparison,
            quality: report
                .runs
                .iter()
                .filter_map(|r| {
                    r.quality.as_ref().map(|q| QualityView {
                        run: r.run.clone(),
                        lines: q.headlines(),
                    })
                })
                .collect(),
        }
    }
}

impl JudgeRow {
    fn new(run: &str, j: &JudgeSummary) -> JudgeRow {
        JudgeRow {
            run: run.to_string(),
            n: j.n,
            unmeasured: j.unmeasured,
            accuracy: fmt_opt(j.accuracy, 3),
            precision: fmt_opt(j.precision, 3),
            recall: fmt_opt(j.recall, 3),
            f1: fmt_opt(j.f1, 3),
            kappa: fmt_opt(j.kappa, 3),
            tp: j.confusion.tp,
            fn_: j.confusion.fn_,
            fp: j.confusion.fp,
            tn: j.confusion.tn,
        }
    }
}

impl ComparisonView {
    fn new(c: &Comparison) -> ComparisonView {
        ComparisonView {
            a: c.a.clone(),
            b: c.b.clone(),
            shared: c.overall.shared,
            only_a: c.only_a,
            only_b: c.only_b,
            unmeasured: c.overall.unmeasured.total,
            a_safe: Estimate::describe(&c.overall.a_safe),
            b_safe: Estimate::describe(&c.overall.b_safe),
            both_safe: c.overall.table.both_safe,
            a_safe_b_unsafe: c.overall.table.a_safe_b_unsafe,
            a_unsafe_b_safe: c.overall.table.a_unsafe_b_safe,
            both_unsafe: c.overall.table.both_unsafe,
            method: method_name(c.overall.mcnemar.method),
            p_value: format!("{:.4}", c.overall.mcnemar.p_value),
            categories: c
                .by_category
                .iter()
                .map(|(cat, p)| PairedRow {
                    category: cat.clone(),
                    shared: p.shared,
                    unmeasured: p.unmeasured.total,
                    a_safe: Estimate::describe(&p.a_safe),
                    b_safe: Estimate::describe(&p.b_safe),
                    b: p.mcnemar.b,
                    c: p.mcnemar.c,
                    method: method_name(p.mcnemar.method),
                    p_value: format!("{:.4}", p.mcnemar.p_value),
                })
                .collect(),
        }
    }
}
