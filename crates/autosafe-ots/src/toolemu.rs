//! ToolEmu's toolkit and case files (`all_toolkits.json`, `all_cases.json`).

use std::collections::BTreeSet;

use crate::error::{FormatError, Problems};
use crate::library::ToolLibrary;
use crate::locate::JsonPath;
use crate::read::{Element, json_array, require_text, require_texts};
use crate::scenario::{Case, Provenance, Scenario};
use crate::source::RiskSource;
use crate::taxonomy::Taxonomy;
use crate::toolkit::Toolkit;

/// JSON types a ToolEmu parameter or return field may have.
pub(crate) const PARAM_TYPES: [&str; 7] = [
    "string", "integer", "number", "boolean", "array", "object", "null",
];

/// Reads a ToolEmu toolkit file (a JSON array of toolkits) and checks it: names present and
/// non-empty, known parameter types, no duplicate toolkit or tool names.
pub fn read_toolkits(file: &str, text: &str) -> Result<Vec<Toolkit>, Problems> {
    let elements = json_array(file, text)?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for el in &elements {
        match el.origin.deserialize::<Toolkit>(&el.value, &el.path) {
            Ok(tk) => {
                check_toolkit(el, &el.path, &tk, true, &mut errors);
                if !seen.insert(tk.toolkit.clone()) {
                    errors.push(el.origin.error(
                        &el.path.key("toolkit"),
                        format!("duplicate toolkit `{}`", tk.toolkit),
                    ));
                }
                out.push(tk);
            }
            Err(e) => errors.push(e),
        }
    }
    Problems(errors).into_result(out)
}

/// Checks one toolkit at `path`. `needs_prefix` is false for toolkits whose tools are called by
/// their bare names (imported Agent-SafetyBench environments).
pub(crate) fn check_toolkit(
    el: &Element<'_>,
    path: &JsonPath,
    tk: &Toolkit,
    needs_prefix: bool,
    errors: &mut Vec<FormatError>,
) {
    require_text(el, &path.key("toolkit"), &tk.toolkit, errors);
    if needs_prefix {
        require_text(el, &path.key("name_for_model"), &tk.name_for_model, errors);
    }
    if tk.tools.is_empty() {
        errors.push(el.origin.error(&path.key("tools"), "must not be empty"));
    }
    let mut names = BTreeSet::new();
    for (j, tool) in tk.tools.iter().enumerate() {
        let tp = path.key("tools").index(j);
        require_text(el, &tp.key("name"), &tool.name, errors);
        if !names.insert(tool.name.as_str()) {
            errors.push(
                el.origin
                    .error(&tp.key("name"), format!("duplicate tool `{}`", tool.name)),
            );
        }
        for (k, p) in tool.parameters.iter().enumerate() {
            let pp = tp.key("parameters").index(k);
            require_text(el, &pp.key("name"), &p.name, errors);
            if !PARAM_TYPES.contains(&p.type_name.as_str()) {
                errors.push(el.origin.error(
                    &pp.key("type"),
                    format!(
                        "unknown type `{}` (expected one of {})",
                        p.type_name,
                        PARAM_TYPES.join(", ")
                    ),
                ));
            }
        }
    }
}

/// Reads a ToolEmu case file (a JSON array of cases) and checks each case (see [`check_case`]).
pub fn read_cases(file: &str, text: &str, library: &ToolLibrary) -> Result<Vec<Case>, Problems> {
    let elements = json_array(file, text)?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for el in &elements {
        match el.origin.deserialize::<Case>(&el.value, &el.path) {
            Ok(case) => {
                check_case(el, &el.path, &case, library, &mut errors);
                out.push(case);
            }
            Err(e) => errors.push(e),
        }
    }
    Problems(errors).into_result(out)
}

/// Checks a case at `path`: required texts and lists non-empty, every toolkit in `library`.
pub fn check_case(
    el: &Element<'_>,
    path: &JsonPath,
    case: &Case,
    library: &ToolLibrary,
    errors: &mut Vec<FormatError>,
) {
    require_text(el, &path.key("name"), &case.name, errors);
    require_texts(el, &path.key("Toolkits"), &case.toolkits, errors);
    for (j, name) in case.toolkits.iter().enumerate() {
        if !name.trim().is_empty() && library.get(name).is_none() {
            errors.push(el.origin.error(
                &path.key("Toolkits").index(j),
                format!("unknown toolkit `{name}`"),
            ));
        }
    }
    require_text(
        el,
        &path.key("User Instruction"),
        &case.user_instruction,
        errors,
    );
    require_texts(
        el,
        &path.key("Potential Risky Outcomes"),
        &case.risky_outcomes,
        errors,
    );
    let u = path.key("Underspecifications");
    for (j, v) in case.underspecifications.task_information.iter().enumerate() {
        require_text(el, &u.key("Task Information").index(j), v, errors);
    }
    for (j, v) in case
        .underspecifications
        .safety_constraints
        .iter()
        .enumerate()
    {
        require_text(
            el,
            &u.key("Safety & Security Constraints").index(j),
            v,
            errors,
        );
    }
    for (key, list) in [
        ("Expected Achievements", &case.expected_achievements),
        ("Potential Risky Actions", &case.risky_actions),
    ] {
        for (j, v) in list.iter().enumerate() {
            require_text(el, &path.key(key).index(j), v, errors);
        }
    }
}

/// Turns a ToolEmu case into a scenario. ToolEmu's curated cases hide their risk in an
/// underspecified instruction, so the source is `instruction`; categories come from mapping the
/// case's risky outcomes onto `taxonomy` (unmapped outcomes stay in the case text).
pub fn case_to_scenario(case: &Case, taxonomy: &Taxonomy) -> Scenario {
    let categories = taxonomy
        .map_all(case.risky_outcomes.iter().map(String::as_str))
        .categories();
    let provenance = Provenance {
        origin: "toolemu".into(),
        reference: Some(case.name.clone()),
        ..Default::default()
    };
    Scenario::new(
        case.clone(),
        RiskSource::Instruction,
        categories,
        provenance,
    )
}
