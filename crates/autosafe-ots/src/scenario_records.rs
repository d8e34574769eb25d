//! AutoSafe's own JSON Lines records: scenarios and snapshots, with validation.

use crate::error::{FormatError, Problems};
use crate::library::ToolLibrary;
use crate::locate::JsonPath;
use crate::read::{DuplicateIds, Element, json_lines, require_text};
use crate::scenario::Scenario;
use crate::taxonomy::Taxonomy;
use crate::trajectory::{Snapshot, Step};

/// What scenarios and snapshots are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Toolkits scenarios may name.
    pub library: &'a ToolLibrary,
    /// Categories scenarios may name.
    pub taxonomy: &'a Taxonomy,
}

/// Checks a scenario at `path`: its case (see [`crate::toolemu::check_case`]), a non-empty id,
/// known categories, a tool subset and seeded history naming only tools of its toolkits.
pub(crate) fn check_scenario(
    el: &Element<'_>,
    path: &JsonPath,
    s: &Scenario,
    cx: Context<'_>,
    errors: &mut Vec<FormatError>,
) {
    require_text(el, &path.key("id"), &s.id, errors);
    crate::toolemu::check_case(el, &path.key("case"), &s.case, cx.library, errors);
    for (i, c) in s.categories.iter().enumerate() {
        if cx.taxonomy.get(c).is_none() {
            errors.push(el.origin.error(
                &path.key("categories").index(i),
                format!("unknown category `{c}`"),
            ));
        }
    }
    let known = |tool: &str| match &s.tools {
        Some(subset) => subset.iter().any(|t| t == tool),
        None => cx.library.find_tool(&s.case.toolkits, tool).is_some(),
    };
    if let Some(subset) = &s.tools {
        for (i, t) in subset.iter().enumerate() {
            if cx.library.find_tool(&s.case.toolkits, t).is_none() {
                errors.push(el.origin.error(
                    &path.key("tools").index(i),
                    format!("unknown tool `{t}` (not in the case's toolkits)"),
                ));
            }
        }
    }
    check_steps(el, &path.key("history"), &s.history, &known, errors);
}

fn check_steps(
    el: &Element<'_>,
    path: &JsonPath,
    steps: &[Step],
    known: &dyn Fn(&str) -> bool,
    errors: &mut Vec<FormatError>,
) {
    for (i, step) in steps.iter().enumerate() {
        if let Some(tool) = step.turn.action.tool_name()
            && !known(tool)
        {
            errors.push(
                el.origin
                    .error(&path.index(i).key("tool"), format!("unknown tool `{tool}`")),
            );
        }
    }
}

/// Reads a JSON Lines file of scenarios and checks each one.
pub fn read_scenarios(file: &str, text: &str, cx: Context<'_>) -> Result<Vec<Scenario>, Problems> {
    let (records, mut errors) = json_lines(file, text);
    let mut out = Vec::new();
    let mut ids = DuplicateIds::default();
    for el in &records {
        match el.origin.deserialize::<Scenario>(&el.value, &el.path) {
            Ok(s) => {
                check_scenario(el, &el.path, &s, cx, &mut errors);
                ids.check(el, &el.path.key("id"), &s.id, &mut errors);
                out.push(s);
            }
            Err(e) => errors.push(e),
        }
    }
    Problems(errors).into_result(out)
}

/// Reads a JSON Lines file of snapshots and checks each one's scenario and history.
pub fn read_snapshots(file: &str, text: &str, cx: Context<'_>) -> Result<Vec<Snapshot>, Problems> {
    let (records, mut errors) = json_lines(file, text);
    let mut out = Vec::new();
    let mut ids = DuplicateIds::default();
    for el in &records {
        match el.origin.deserialize::<Snapshot>(&el.value, &el.path) {
            Ok(s) => {
                require_text(el, &el.path.key("id"), &s.id, &mut errors);
                ids.check(el, &el.path.key("id"), &s.id, &mut errors);
                check_scenario(el, &el.path.key("scenario"), &s.scenario, cx, &mut errors);
                let known = |tool: &str| match &s.scenario.tools {
                    Some(subset) => subset.iter().any(|t| t == tool),
                    None => cx
                        .library
                        .find_tool(&s.scenario.case.toolkits, tool)
                        .is_some(),
                };
                check_steps(el, &el.path.key("history"), &s.history, &known, &mut errors);
                out.push(s);
            }
            Err(e) => errors.push(e),
        }
    }
    Problems(errors).into_result(out)
}
