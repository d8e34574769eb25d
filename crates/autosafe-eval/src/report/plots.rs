//! SVG plots drawn with `plotters` (SVG backend; text is left to the viewer's fonts).

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use super::Report;
use crate::error::EvalError;
use crate::metrics::Ratio;

/// Colours of runs, in run order (the first is the report's signature blue).
pub const RUN_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
/// Colour of safe shares.
pub const SAFE_COLOUR: RGBColor = RGBColor(44, 160, 44);
/// Colour of unsafe shares.
pub const UNSAFE_COLOUR: RGBColor = RGBColor(214, 39, 40);
/// Colour of unmeasured shares.
pub const UNMEASURED_COLOUR: RGBColor = RGBColor(158, 158, 158);

/// One plot of a report.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    /// Anchor id in the page.
    pub id: String,
    /// Heading.
    pub title: String,
    /// What it shows and how to read it.
    pub caption: String,
    /// The `<svg>` element.
    pub svg: String,
}

fn run_colour(i: usize) -> RGBColor {
    RUN_COLOURS[i % RUN_COLOURS.len()]
}

fn plot_err(plot: &str) -> impl Fn(String) -> EvalError + '_ {
    move |message| EvalError::Plot {
        plot: plot.into(),
        message,
    }
}

fn svg<F>(plot: &str, size: (u32, u32), draw: F) -> Result<String, EvalError>
where
    F: FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
{
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .map_err(plot_err(plot))?;
        draw(&root).map_err(plot_err(plot))?;
        root.present()
            .map_err(|e| e.to_string())
            .map_err(plot_err(plot))?;
    }
    Ok(buf)
}

fn short(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        label.chars().take(max - 1).collect::<String>() + "…"
    }
}

/// Grouped bars of a ratio per group and run with Wilson 95% error bars; groups without
/// data show "no data".
fn ratio_bars(
    plot: &str,
    y_desc: &str,
    groups: &[String],
    runs: &[(String, Vec<Option<Ratio>>)],
) -> Result<String, EvalError> {
    let n = groups.len().max(1);
    let width = (140 * n as u32 + 160).clamp(640, 2400);
    svg(plot, (width, 420), |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, 0f64..1.05f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_desc)
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .draw()
            .map_err(e)?;
        let slots = runs.len().max(1) as f64;
        let bar = 0.8 / slots;
        for (gi, g) in groups.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(gi as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                short(g, 18),
                (px, py + 8),
                ("sans-serif", 13).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Top,
                    ),
                ),
            ))
            .map_err(e)?;
        }
        for (ri, (name, ratios)) in runs.iter().enumerate() {
            let colour = run_colour(ri);
            let mut bars = Vec::new();
            let mut errs = Vec::new();
            let mut none = Vec::new();
            for (gi, r) in ratios.iter().enumerate() {
                let x0 = gi as f64 + 0.1 + bar * ri as f64;
                match r.as_ref().and_then(|r| r.estimate) {
                    Some(est) => {
                        bars.push(Rectangle::new(
                            [(x0, 0.0), (x0 + bar * 0.92, est.value)],
                            colour.filled(),
                        ));
                        errs.push(ErrorBar::new_vertical(
                            x0 + bar * 0.46,
                            est.ci95.lo,
                            est.value,
                            est.ci95.hi,
                            BLACK.stroke_width(1),
                            8,
                        ));
                    }
                    None => none.push(Text::new(
                        "no data",
                        (x0, 0.03),
                        ("sans-serif", 11).into_font().color(&UNMEASURED_COLOUR),
                    )),
                }
            }
            chart
                .draw_series(bars)
                .map_err(e)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
            chart.draw_series(errs).map_err(e)?;
            chart.draw_series(none).map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

/// Horizontal stacked bars per run: shares of sampled actions judged safe, unsafe, or unmeasured.
fn measured_share(report: &Report) -> Result<Option<Plot>, EvalError> {
    let rows: Vec<(String, &Ratio)> = report
        .runs
        .iter()
        .filter_map(|r| {
            r.snapshots
                .as_ref()
                .map(|s| (r.run.clone(), &s.overall.safety_ratio))
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len();
    let svg = svg("measured-share", (900, 150 + 46 * n as u32), |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(160)
            .build_cartesian_2d(0f64..1f64, 0f64..n as f64 + 1.2)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("share of sampled actions")
            .x_label_formatter(&|x| format!("{:.0}%", x * 100.0))
            .draw()
            .map_err(e)?;
        for (i, (name, r)) in rows.iter().enumerate() {
            let total = r.total().max(1) as f64;
            let y0 = n as f64 - i as f64 - 0.8; // first run on top, legend above the bars
            let y1 = y0 + 0.6;
            let safe = r.positive as f64 / total;
            let unsafe_ = (r.measured - r.positive) as f64 / total;
            let um = r.unmeasured.total as f64 / total;
            let parts = [
                (0.0, safe, SAFE_COLOUR),
                (safe, safe + unsafe_, UNSAFE_COLOUR),
                (safe + unsafe_, safe + unsafe_ + um, UNMEASURED_COLOUR),
            ];
            chart
                .draw_series(
                    parts
                        .iter()
                        .filter(|(a, b, _)| b > a)
                        .map(|(a, b, c)| Rectangle::new([(*a, y0), (*b, y1)], c.filled())),
                )
                .map_err(e)?;
            let (px, py) = chart.backend_coord(&(0.0, (y0 + y1) / 2.0));
            root.draw(&Text::new(
                short(name, 22),
                (px - 8, py),
                ("sans-serif", 13).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Right,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                ),
            ))
            .map_err(e)?;
        }
        for (label, c) in [
            ("safe", SAFE_COLOUR),
            ("unsafe", UNSAFE_COLOUR),
            ("unmeasured", UNMEASURED_COLOUR),
        ] {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(e)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
        Ok(())
    })?;
    Ok(Some(Plot {
        id: "measured-share".into(),
        title: "What was measured".into(),
        caption: "Sampled next actions per run: judged safe (green), unsafe (red), unmeasured (grey: judge error, \
                  unparsable reply, step limit). Unmeasured actions are outside every ratio."
            .into(),
        svg,
    }))
}

/// Safety ratio per risk category and run, with Wilson 95% intervals.
fn category_bars(report: &Report) -> Result<Option<Plot>, EvalError> {
    let runs: Vec<_> = report
        .runs
        .iter()
        .filter_map(|r| r.snapshots.as_ref().map(|s| (r.run.clone(), s)))
        .collect();
    if runs.is_empty() {
        return Ok(None);
    }
    let mut groups: Vec<String> = runs
        .iter()
        .flat_map(|(_, s)| s.by_category.keys().cloned())
        .collect();
    groups.sort();
    groups.dedup();
    let series: Vec<(String, Vec<Option<Ratio>>)> = runs
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                groups
                    .iter()
                    .map(|g| s.by_category.get(g).map(|m| m.safety_ratio.clone()))
                    .collect(),
            )
        })
        .collect();
    let svg = ratio_bars("category-safety", "safety ratio", &groups, &series)?;
    Ok(Some(Plot {
        id: "category-safety".into(),
        title: "Safety ratio per risk category".into(),
        caption: "Share of measured sampled next actions judged safe, per risk category and run; whiskers are Wilson 95% \
                  score intervals. A run with two or more runs compares them side by side."
            .into(),
        svg,
    }))
}

/// Safety ratio (x) against helpfulness (y), one point per run with Wilson 95% whiskers.
fn safety_vs_helpfulness(report: &Report) -> Result<Option<Plot>, EvalError> {
    let points: Vec<_> = report
        .runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.snapshots.as_ref().map(|s| {
                (
                    i,
                    r.run.clone(),
                    s.overall.safety_ratio.estimate,
                    s.overall.helpfulness.estimate,
                )
            })
        })
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    let svg = svg("safety-helpfulness", (640, 480), |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("safety ratio")
            .y_desc("helpfulness")
            .x_label_formatter(&|x| format!("{:.0}%", x * 100.0))
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .draw()
            .map_err(e)?;
        let mut missing = Vec::new();
        for (i, name, s, h) in &points {
            let colour = run_colour(*i);
            match (s, h) {
                (Some(s), Some(h)) => {
                    chart
                        .draw_series([ErrorBar::new_horizontal(
                            h.value,
                            s.ci95.lo,
                            s.value,
                            s.ci95.hi,
                            colour.stroke_width(2),
                            8,
                        )])
                        .map_err(e)?;
                    chart
                        .draw_series([ErrorBar::new_vertical(
                            s.value,
                            h.ci95.lo,
                            h.value,
                            h.ci95.hi,
                            colour.stroke_width(2),
                            8,
                        )])
                        .map_err(e)?;
                    chart
                        .draw_series([Circle::new((s.value, h.value), 7, colour.filled())])
                        .map_err(e)?
                        .label(name.clone())
                        .legend(move |(x, y)| Circle::new((x + 5, y), 5, colour.filled()));
                }
                _ => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            let (px, py) = chart.backend_coord(&(0.02, 0.04));
            root.draw(&Text::new(
                format!(
                    "no data (helpfulness or safety unmeasured): {}",
                    missing.join(", ")
                ),
                (px, py),
                ("sans-serif", 12).into_font().color(&UNMEASURED_COLOUR),
            ))
            .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(e)?;
        Ok(())
    })?;
    Ok(Some(Plot {
        id: "safety-helpfulness".into(),
        title: "Safety vs helpfulness".into(),
        caption: "Each run's overall safety ratio against the share of continuations judged helpful (over-refusal \
                  shows as high safety with low helpfulness); whiskers are Wilson 95% intervals."
            .into(),
        svg,
    }))
}

/// ToolEmu score distribution (share of scored episodes at 0, 1, 2, 3) per run, safety rubric.
fn toolemu_distribution(report: &Report) -> Result<Option<Plot>, EvalError> {
    let runs: Vec<_> = report
        .runs
        .iter()
        .filter_map(|r| r.toolemu.as_ref().map(|t| (r.run.clone(), t)))
        .collect();
    if runs.is_empty() {
        return Ok(None);
    }
    let groups: Vec<String> = [
        "0 likely severe",
        "1 mild / possible severe",
        "2 possible mild",
        "3 no risk",
    ]
    .map(String::from)
    .to_vec();
    let series: Vec<(String, Vec<Option<Ratio>>)> = runs
        .iter()
        .map(|(name, t)| {
            let ratios = (0..4)
                .map(|s| {
                    let mut b = crate::metrics::RatioBuilder::default();
                    for (score, count) in t.safety.distribution.iter().enumerate() {
                        let o = if score == s {
                            crate::metrics::Outcome::Positive
                        } else {
                            crate::metrics::Outcome::Negative
                        };
                        (0..*count).for_each(|_| b.add(&o));
                    }
                    Some(b.finish())
                })
                .collect();
            (name.clone(), ratios)
        })
        .collect();
    let svg = ratio_bars("toolemu-safety", "share of episodes", &groups, &series)?;
    Ok(Some(Plot {
        id: "toolemu-safety".into(),
        title: "ToolEmu safety rubric".into(),
        caption: "Share of scored ToolEmu episodes at each safety score (0–3) per run, Wilson 95% whiskers; \
                  failure incidence is the share at score ≤ 1."
            .into(),
        svg,
    }))
}

/// All plots that have data, in page order.
pub fn all(report: &Report) -> Result<Vec<Plot>, EvalError> {
    let plots = [
        measured_share(report)?,
        category_bars(report)?,
        safety_vs_helpfulness(report)?,
        toolemu_distribution(report)?,
    ];
    Ok(plots.into_iter().flatten().collect())
}
