//! `report.md`: the report's tables as Markdown (template `templates/report.md.j2`).

use minijinja::context;
use minijinja::value::Serde;

use super::Report;
use super::view::View;
use crate::error::EvalError;

const TEMPLATE: &str = include_str!("../../templates/report.md.j2");

/// Render the Markdown report.
pub(super) fn render(report: &Report) -> Result<String, EvalError> {
    let ctx = context! { v => Serde(View::new(report)) };
    super::template::render("report.md.j2", TEMPLATE, ctx)
}
