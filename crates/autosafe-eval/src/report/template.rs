//! The one template setup of the reports: trimmed blocks, the template named by its file name
//! (an `.html` name turns on HTML auto-escaping), errors naming the template.

use minijinja::Environment;
use minijinja::syntax::SyntaxConfig;

use crate::error::EvalError;

/// Renders `source` (known as `name`) with `ctx`.
pub(super) fn render(
    name: &'static str,
    source: &'static str,
    ctx: minijinja::Value,
) -> Result<String, EvalError> {
    let err = |e: minijinja::Error| EvalError::Template {
        template: name.into(),
        message: format!("{e:#}"),
    };
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(err)?;
    env.set_syntax(syntax);
    env.add_template(name, source).map_err(err)?;
    env.get_template(name)
        .map_err(err)?
        .render(ctx)
        .map_err(err)
}
