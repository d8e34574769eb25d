//! Agent-SafetyBench: environment schemas (imported as toolkits) and cases (imported as scenarios).
//!
//! An environment schema file is a JSON list of `{name, description, parameters}` functions; it
//! becomes a toolkit named after the environment with an empty `name_for_model`, so the
//! qualified tool names are exactly the benchmark's (`read_file`), as its pre-filled dialogs use.
//! A case's environments become the scenario's toolkits, the tools it lists become
//! `Scenario::tools`, its `parameters` become `Scenario::initial_state` (`{env: parameters}`),
//! its risks become taxonomy categories, a pre-filled `dialog` becomes the seeded history
//! (source `context`; else `instruction`), and `fulfillable`, `failure_modes` and the original
//! risk names are kept in the provenance.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{FormatError, Problems};
use crate::library::ToolLibrary;
use crate::locate::JsonPath;
use crate::read::{Element, json_array, kind_of, require_text, require_texts};
use crate::scenario::{Case, Provenance, Scenario, Underspecifications};
use crate::source::RiskSource;
use crate::taxonomy::Taxonomy;
use crate::toolkit::Toolkit;
use crate::trajectory::{Action, AgentTurn, Step};

/// Origin name used in provenance.
pub(crate) const ORIGIN: &str = "agent-safetybench";

/// Reads an environment schema file as a toolkit named `env_name` (usually the file stem).
pub fn read_environment(file: &str, text: &str, env_name: &str) -> Result<Toolkit, Problems> {
    let elements = json_array(file, text)?;
    let mut errors = Vec::new();
    let mut tools = Vec::new();
    for el in &elements {
        if !el.value.is_object() {
            errors.push(el.origin.error(
                &el.path,
                format!("expected a function object, found {}", kind_of(&el.value)),
            ));
            continue;
        }
        match crate::openai::from_openai(&el.value) {
            Ok((tool, _)) => {
                require_text(el, &el.path.key("name"), &tool.name, &mut errors);
                tools.push(tool);
            }
            Err(e) => {
                let field = e.field.trim_start_matches("$.").to_string();
                let path = field
                    .split('.')
                    .fold(el.path.clone(), |p, k| if k == "$" { p } else { p.key(k) });
                errors.push(el.origin.error(&path, e.message));
            }
        }
    }
    let tk = Toolkit {
        toolkit: env_name.to_string(),
        category: None,
        name_for_model: String::new(),
        name_for_human: env_name.to_string(),
        description_for_model: format!("Tools of the Agent-SafetyBench `{env_name}` environment."),
        description_for_human: format!("Agent-SafetyBench environment {env_name}"),
        tools,
        extra: Map::from_iter([("origin".to_string(), json!(ORIGIN))]),
    };
    if let Some(el) = elements.first() {
        crate::toolemu::check_toolkit(el, &JsonPath::root(), &tk, false, &mut errors);
    }
    Problems(errors).into_result(tk)
}

/// One environment a case uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsbEnvironment {
    /// Environment name (schema file stem); empty in a few tool-less cases.
    pub name: String,
    /// Tool names the agent may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Initial state of the environment.
    #[serde(default)]
    pub parameters: Value,
}

/// One Agent-SafetyBench case, field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsbCase {
    /// Benchmark id.
    pub id: Value,
    /// Risk category names (one of the benchmark's 8).
    pub risks: Vec<String>,
    /// The user instruction.
    pub instruction: String,
    /// Environments and tools.
    pub environments: Vec<AsbEnvironment>,
    /// Failure-mode numbers, e.g. `"2,6"`.
    #[serde(default)]
    pub failure_modes: Value,
    /// 1 when the task can be done safely, 0 when it should be refused.
    #[serde(default)]
    pub fulfillable: Value,
    /// A pre-filled dialog (OpenAI-format messages), for context-borne risks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialog: Option<Vec<Value>>,
    /// Other keys, kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AsbCase {
    /// The environments that have a name (tool-less cases carry an unnamed empty one).
    pub(crate) fn named_environments(&self) -> impl Iterator<Item = &AsbEnvironment> {
        self.environments.iter().filter(|e| !e.name.is_empty())
    }

    /// The dialog as OTS steps: each assistant tool call with the tool message answering it;
    /// assistant text without tool calls becomes a final answer. User and system messages are
    /// not steps (the instruction is the case's).
    pub fn history(&self) -> Result<Vec<Step>, (JsonPath, String)> {
        let mut steps = Vec::new();
        let Some(dialog) = &self.dialog else {
            return Ok(steps);
        };
        let base = JsonPath::root().key("dialog");
        for (i, msg) in dialog.iter().enumerate() {
            let mp = base.index(i);
            let role = msg
                .get("role")
                .and_then(Value::as_str)
                .ok_or((mp.key("role"), "missing required field".to_string()))?;
            if role != "assistant" {
                continue;
            }
            let content = msg
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let calls = msg
                .get("tool_calls")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if calls.is_empty() {
                steps.push(Step {
                    turn: AgentTurn {
                        thought: String::new(),
                        action: Action::Final { answer: content },
                        raw: None,
                    },
                    observation: None,
                });
                continue;
            }
            for (k, call) in calls.iter().enumerate() {
                let cp = mp.key("tool_calls").index(k);
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or((
                        cp.key("function").key("name"),
                        "missing required field".to_string(),
                    ))?;
                let args = call
                    .pointer("/function/arguments")
                    .cloned()
                    .unwrap_or(Value::Null);
                let input = match &args {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(args.clone()),
                    _ => args.clone(),
                };
                let id = call.get("id").and_then(Value::as_str).map(str::to_string);
                let observation = dialog[i + 1..]
                    .iter()
                    .find(|m| {
                        m.get("role").and_then(Value::as_str) == Some("tool")
                            && (id.is_none()
                                || m.get("tool_call_id").and_then(Value::as_str) == id.as_deref())
                    })
                    .and_then(|m| m.get("content"))
                    .map(|c| {
                        c.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| c.to_string())
                    });
                let thought = if k == 0 {
                    content.clone()
                } else {
                    String::new()
                };
                steps.push(Step {
                    turn: AgentTurn {
                        thought,
                        action: Action::Tool {
                            tool: name.to_string(),
                            input,
                            call_id: id,
                        },
                        raw: None,
                    },
                    observation,
                });
            }
        }
        Ok(steps)
    }

    /// Converts the case into a scenario (see the module docs).
    pub fn to_scenario(&self, taxonomy: &Taxonomy) -> Result<Scenario, (JsonPath, String)> {
        let history = self.history()?;
        let id_text = match &self.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let case = Case {
            name: format!("asb_{id_text}"),
            toolkits: self.named_environments().map(|e| e.name.clone()).collect(),
            user_instruction: self.instruction.clone(),
            underspecifications: Underspecifications::default(),
            expected_achievements: Vec::new(),
            risky_outcomes: self.risks.clone(),
            risky_actions: Vec::new(),
            extra: Map::new(),
        };
        let categories = taxonomy
            .map_all(self.risks.iter().map(String::as_str))
            .categories();
        let source = if history.is_empty() {
            RiskSource::Instruction
        } else {
            RiskSource::Context
        };
        let mut extra = Map::new();
        extra.insert("fulfillable".into(), self.fulfillable.clone());
        extra.insert("failure_modes".into(), self.failure_modes.clone());
        extra.insert("risks".into(), json!(self.risks));
        let provenance = Provenance {
            origin: ORIGIN.into(),
            reference: Some(format!("id {id_text}")),
            extra,
            ..Default::default()
        };
        let mut s = Scenario::new(case, source, categories, provenance);
        s.history = history;
        let state: Map<String, Value> = self
            .named_environments()
            .filter(|e| !e.parameters.is_null())
            .map(|e| (e.name.clone(), e.parameters.clone()))
            .collect();
        s.initial_state = (!state.is_empty()).then_some(Value::Object(state));
        s.tools = Some(
            self.named_environments()
                .flat_map(|e| e.tools.iter().cloned())
                .collect(),
        );
        s.id = s.compute_id();
        Ok(s)
    }
}

/// Reads an Agent-SafetyBench case file and checks each case against the environments in
/// `environments`: every environment and tool exists, every dialog tool call names a listed tool.
pub fn read_cases(
    file: &str,
    text: &str,
    environments: &ToolLibrary,
) -> Result<Vec<AsbCase>, Problems> {
    let elements = json_array(file, text)?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for el in &elements {
        match el.origin.deserialize::<AsbCase>(&el.value, &el.path) {
            Ok(case) => {
                check_case(el, &case, environments, &mut errors);
                out.push(case);
            }
            Err(e) => errors.push(e),
        }
    }
    Problems(errors).into_result(out)
}

fn check_case(
    el: &Element<'_>,
    case: &AsbCase,
    environments: &ToolLibrary,
    errors: &mut Vec<FormatError>,
) {
    let path = &el.path;
    require_text(el, &path.key("instruction"), &case.instruction, errors);
    require_texts(el, &path.key("risks"), &case.risks, errors);
    let mut allowed = Vec::new();
    for (j, env) in case.environments.iter().enumerate() {
        let ep = path.key("environments").index(j);
        if env.name.is_empty() {
            if !env.tools.is_empty() {
                errors.push(
                    el.origin
                        .error(&ep.key("name"), "must not be empty when tools are listed"),
                );
            }
            continue;
        }
        let Some(tk) = environments.get(&env.name) else {
            errors.push(el.origin.error(
                &ep.key("name"),
                format!(
                    "unknown environment `{}` (no schema loaded for it)",
                    env.name
                ),
            ));
            continue;
        };
        for (k, tool) in env.tools.iter().enumerate() {
            if tk.find_tool(tool).is_none() {
                errors.push(el.origin.error(
                    &ep.key("tools").index(k),
                    format!("unknown tool `{tool}` in environment `{}`", env.name),
                ));
            }
            allowed.push(tool.clone());
        }
    }
    match case.history() {
        Err((p, m)) => errors.push(el.origin.error(&JsonPath::join(path, &p), m)),
        Ok(steps) => {
            let mut call_no = 0;
            for step in &steps {
                if let Some(tool) = step.turn.action.tool_name() {
                    if !allowed.iter().any(|a| a == tool) {
                        let at = tool_call_path(case, call_no)
                            .map(|p| JsonPath::join(path, &p))
                            .unwrap_or_else(|| path.key("dialog"));
                        errors.push(el.origin.error(
                            &at,
                            format!(
                                "unknown tool `{tool}` (not among the case's environment tools)"
                            ),
                        ));
                    }
                    call_no += 1;
                }
            }
        }
    }
}

fn tool_call_path(case: &AsbCase, n: usize) -> Option<JsonPath> {
    let mut seen = 0;
    for (i, msg) in case.dialog.as_ref()?.iter().enumerate() {
        if msg.get("role").and_then(Value::as_str) != Some("assistant") {
            continue;
        }
        for k in 0..msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
        {
            if seen == n {
                return Some(
                    JsonPath::root()
                        .key("dialog")
                        .index(i)
                        .key("tool_calls")
                        .index(k)
                        .key("function")
                        .key("name"),
                );
            }
            seen += 1;
        }
    }
    None
}
