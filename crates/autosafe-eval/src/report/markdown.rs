//! `report.md`: the report's tables as Markdown (template `templates/report.md.j2`).

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, context};

use super::Report;
use super::view::View;
use crate::error::EvalError;

const TEMPLATE: &str = include_str!("../../templates/report.md.j2");

/// Render the Markdown report.
pub(super) fn render(report: &Report) -> Result<String, EvalError> {
    let err = |e: minijinja::Error| EvalError::Template {
        template: "report.md.j2".into(),
        message: format!("{e:#}"),
    };
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(err)?;
    env.set_syntax(syntax);
    env.add_template("report.md.j2", TEMPLATE).map_err(err)?;
    let tpl = env.get_template("report.md.j2").map_err(err)?;
    tpl.render(context! { v => Serde(View::new(report)) })
        .map_err(err)
}
