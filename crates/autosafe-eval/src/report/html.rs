//! `report.html`: one self-contained page (template `templates/report.html.j2`) with the
//! plots inline as SVG; no script, no external resource.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, context};

use super::Report;
use super::plots;
use super::view::View;
use crate::error::EvalError;

const TEMPLATE: &str = include_str!("../../templates/report.html.j2");

/// Render the HTML report.
pub(super) fn render(report: &Report) -> Result<String, EvalError> {
    let err = |e: minijinja::Error| EvalError::Template {
        template: "report.html.j2".into(),
        message: format!("{e:#}"),
    };
    let plots = plots::all(report)?;
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(err)?;
    env.set_syntax(syntax);
    // The `.html` name turns on HTML auto-escaping; SVG strings are passed through `|safe`.
    env.add_template("report.html.j2", TEMPLATE).map_err(err)?;
    let tpl = env.get_template("report.html.j2").map_err(err)?;
    tpl.render(context! { v => Serde(View::new(report)), plots => Serde(plots) })
        .map_err(err)
}
