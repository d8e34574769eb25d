//! `report.html`: one self-contained page (template `templates/report.html.j2`) with the
//! plots inline as SVG; no script, no external resource.

use minijinja::context;
use minijinja::value::Serde;

use super::Report;
use super::plots;
use super::view::View;
use crate::error::EvalError;

const TEMPLATE: &str = include_str!("../../templates/report.html.j2");

/// Render the HTML report. SVG strings are passed through `|safe`.
pub(super) fn render(report: &Report) -> Result<String, EvalError> {
    let plots = plots::all(report)?;
    let ctx = context! { v => Serde(View::new(report)), plots => Serde(plots) };
    super::template::render("report.html.j2", TEMPLATE, ctx)
}
