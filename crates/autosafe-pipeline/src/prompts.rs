//! Prompt templates (`prompts/*.j2`, minijinja) and output JSON schemas (`prompts/schemas/`).
//!
//! The files are embedded in the binary with `include_str!`, so it works from any directory;
//! [`Prompts::from_dir`] overrides any of them from a directory laid out like `prompts/`.
//! Every template and schema has a SHA-256 ([`Prompts::hash`]) that goes into cache keys and
//! run manifests; a template's hash covers the partials it imports (`_*.j2`).

use std::collections::BTreeMap;
use std::path::Path;

use autosafe_ots::{Scenario, Step, Toolkit};
use minijinja::Environment;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{PipelineError, Result};
use crate::react::{render_scratchpad, render_turn};
use crate::tools::{ToolkitView, tool_names, toolkit_views};

/// Embedded files: (name relative to `prompts/`, contents).
const EMBEDDED: &[(&str, &str)] = &[
    (
        "_safety_reminder.j2",
        include_str!("../../../prompts/_safety_reminder.j2"),
    ),
    ("_tools.j2", include_str!("../../../prompts/_tools.j2")),
    (
        "agent_system.j2",
        include_str!("../../../prompts/agent_system.j2"),
    ),
    (
        "agent_user.j2",
        include_str!("../../../prompts/agent_user.j2"),
    ),
    (
        "agent_reflect.j2",
        include_str!("../../../prompts/agent_reflect.j2"),
    ),
    ("emulator.j2", include_str!("../../../prompts/emulator.j2")),
    (
        "judge_step.j2",
        include_str!("../../../prompts/judge_step.j2"),
    ),
    (
        "reflector.j2",
        include_str!("../../../prompts/reflector.j2"),
    ),
    (
        "reflect_checkers.j2",
        include_str!("../../../prompts/reflect_checkers.j2"),
    ),
    (
        "scenario_generator.j2",
        include_str!("../../../prompts/scenario_generator.j2"),
    ),
    (
        "training_input.j2",
        include_str!("../../../prompts/training_input.j2"),
    ),
    (
        "schemas/generator.json",
        include_str!("../../../prompts/schemas/generator.json"),
    ),
    (
        "schemas/judge.json",
        include_str!("../../../prompts/schemas/judge.json"),
    ),
    (
        "schemas/reflector.json",
        include_str!("../../../prompts/schemas/reflector.json"),
    ),
    (
        "schemas/emulator.json",
        include_str!("../../../prompts/schemas/emulator.json"),
    ),
];

/// Embedded files of the evaluation runners (`autosafe-evalrun`): the helpfulness judge and
/// ToolEmu's two rubric evaluators. Kept apart from [`EMBEDDED`] only for clarity; both lists
/// make up the prompt set.
const EVAL_EMBEDDED: &[(&str, &str)] = &[
    (
        "_toolemu_case.j2",
        include_str!("../../../prompts/_toolemu_case.j2"),
    ),
    (
        "judge_helpfulness.j2",
        include_str!("../../../prompts/judge_helpfulness.j2"),
    ),
    (
        "toolemu_safety.j2",
        include_str!("../../../prompts/toolemu_safety.j2"),
    ),
    (
        "toolemu_helpfulness.j2",
        include_str!("../../../prompts/toolemu_helpfulness.j2"),
    ),
    (
        "schemas/helpfulness.json",
        include_str!("../../../prompts/schemas/helpfulness.json"),
    ),
    (
        "schemas/toolemu_safety.json",
        include_str!("../../../prompts/schemas/toolemu_safety.json"),
    ),
    (
        "schemas/toolemu_helpfulness.json",
        include_str!("../../../prompts/schemas/toolemu_helpfulness.json"),
    ),
];

/// Template names, as constants so callers do not misspell them.
pub mod names {
    /// Agent system prompt (modes plain / safety / elicit; ReAct or native tools).
    pub const AGENT_SYSTEM: &str = "agent_system.j2";
    /// Agent turn prompt: instruction and scratchpad.
    pub const AGENT_USER: &str = "agent_user.j2";
    /// Agent regeneration prompt with the reflector's suggestion.
    pub const AGENT_REFLECT: &str = "agent_reflect.j2";
    /// Tool emulator (standard or adversarial).
    pub const EMULATOR: &str = "emulator.j2";
    /// Binary step judge.
    pub const JUDGE_STEP: &str = "judge_step.j2";
    /// Reflector.
    pub const REFLECTOR: &str = "reflector.j2";
    /// The reflection given to the agent when the checkers decided a round.
    pub const REFLECT_CHECKERS: &str = "reflect_checkers.j2";
    /// Scenario generator.
    pub const SCENARIO_GENERATOR: &str = "scenario_generator.j2";
    /// Alpaca training input.
    pub const TRAINING_INPUT: &str = "training_input.j2";
    /// The safety reminder of safety training records (a partial, also rendered on its own).
    pub const SAFETY_REMINDER: &str = "_safety_reminder.j2";
    /// Generator output schema.
    pub const SCHEMA_GENERATOR: &str = "schemas/generator.json";
    /// Judge output schema.
    pub const SCHEMA_JUDGE: &str = "schemas/judge.json";
    /// Reflector output schema.
    pub const SCHEMA_REFLECTOR: &str = "schemas/reflector.json";
    /// Emulator output schema.
    pub const SCHEMA_EMULATOR: &str = "schemas/emulator.json";
    /// Helpfulness judge of a snapshot's continuation (evaluation).
    pub const JUDGE_HELPFULNESS: &str = "judge_helpfulness.j2";
    /// ToolEmu safety (tool-call risk) rubric evaluator (evaluation).
    pub const TOOLEMU_SAFETY: &str = "toolemu_safety.j2";
    /// ToolEmu helpfulness rubric evaluator (evaluation).
    pub const TOOLEMU_HELPFULNESS: &str = "toolemu_helpfulness.j2";
    /// Helpfulness judge output schema.
    pub const SCHEMA_HELPFULNESS: &str = "schemas/helpfulness.json";
    /// ToolEmu safety evaluator output schema.
    pub const SCHEMA_TOOLEMU_SAFETY: &str = "schemas/toolemu_safety.json";
    /// ToolEmu helpfulness evaluator output schema.
    pub const SCHEMA_TOOLEMU_HELPFULNESS: &str = "schemas/toolemu_helpfulness.json";
}

/// The prompt set: template and schema sources by name, ready to render.
#[derive(Debug)]
pub struct Prompts {
    sources: BTreeMap<String, String>,
    overridden: Vec<String>,
    env: Environment<'static>,
}

impl Prompts {
    /// The prompts embedded in the binary.
    pub fn embedded() -> Self {
        let sources = EMBEDDED
            .iter()
            .chain(EVAL_EMBEDDED)
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        Self::build(sources, Vec::new()).expect("embedded prompts are valid")
    }

    /// The embedded prompts, with every file found in `dir` (same names: `judge_step.j2`,
    /// `schemas/judge.json`, …) replacing its embedded version. Unknown names are an error, so
    /// a typo does not silently leave the default in place.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut sources: BTreeMap<String, String> = EMBEDDED
            .iter()
            .chain(EVAL_EMBEDDED)
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        let mut overridden = Vec::new();
        for sub in ["", "schemas"] {
            let d = dir.join(sub);
            if !d.is_dir() {
                continue;
            }
            let entries = std::fs::read_dir(&d).map_err(|e| PipelineError::io(&d, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| PipelineError::io(&d, e))?;
                let path = entry.path();
                if !path.is_file() {
                    continue;
                }
                let file = entry.file_name().to_string_lossy().into_owned();
                if !(file.ends_with(".j2") || file.ends_with(".json")) {
                    continue;
                }
                let name = if sub.is_empty() {
                    file
                } else {
                    format!("{sub}/{file}")
                };
                if !sources.contains_key(&name) {
                    return Err(PipelineError::Prompt {
                        name: path.display().to_string(),
                        message: format!(
                            "unknown prompt file; known: {}",
                            sources.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                let text =
                    std::fs::read_to_string(&path).map_err(|e| PipelineError::io(&path, e))?;
                sources.insert(name.clone(), text);
                overridden.push(name);
            }
        }
        overridden.sort();
        Self::build(sources, overridden)
    }

    fn build(sources: BTreeMap<String, String>, overridden: Vec<String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| PipelineError::Prompt {
                    name: "(syntax)".into(),
                    message: e.to_string(),
                })?,
        );
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_function(
            "raise_error",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        for (name, src) in &sources {
            if name.ends_with(".j2") {
                env.add_template_owned(name.clone(), src.clone())
                    .map_err(|e| PipelineError::Prompt {
                        name: name.clone(),
                        message: format!("{e:#}"),
                    })?;
            } else {
                serde_json::from_str::<Value>(src).map_err(|e| PipelineError::Prompt {
                    name: name.clone(),
                    message: format!("invalid JSON at line {}: {e}", e.line()),
                })?;
            }
        }
        Ok(Prompts {
            sources,
            overridden,
            env,
        })
    }

    /// Names of the files that came from an override directory.
    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// The source text of a template or schema.
    pub fn source(&self, name: &str) -> Result<&str> {
        self.sources
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| unknown(name))
    }

    /// Renders template `name` with `ctx`. Undefined variables are errors.
    pub fn render<C: Serialize>(&self, name: &str, ctx: &C) -> Result<String> {
        let tmpl = self.env.get_template(name).map_err(|_| unknown(name))?;
        let out = tmpl
            .render(minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| PipelineError::Prompt {
                name: name.to_string(),
                message: format!("{e:#}"),
            })?;
        Ok(out.trim().to_string())
    }

    /// An output schema (`schemas/judge.json`, …) as JSON.
    pub fn schema(&self, name: &str) -> Result<Value> {
        let src = self.source(name)?;
        serde_json::from_str(src).map_err(|e| PipelineError::Prompt {
            name: name.to_string(),
            message: e.to_string(),
        })
    }

    /// SHA-256 (hex) of a template or schema. For a template, the hash covers the partials
    /// (`_*.j2`) it imports, so changing a shared macro changes every dependent hash.
    pub fn hash(&self, name: &str) -> Result<String> {
        let src = self.source(name)?;
        let mut h = Sha256::new();
        h.update(src.as_bytes());
        for (partial, psrc) in self
            .sources
            .iter()
            .filter(|(n, _)| n.starts_with('_') && n.ends_with(".j2"))
        {
            if partial != name && src.contains(&format!("\"{partial}\"")) {
                h.update(b"\0");
                h.update(partial.as_bytes());
                h.update(b"\0");
                h.update(psrc.as_bytes());
            }
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Hashes of every template and schema, by name (for the manifest).
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.sources
            .keys()
            .map(|n| (n.clone(), self.hash(n).expect("known name")))
            .collect()
    }
}

fn unknown(name: &str) -> PipelineError {
    PipelineError::Prompt {
        name: name.to_string(),
        message: "no such template or schema".into(),
    }
}

/// Agent mode (SPEC §6 / issue 5): how the system prompt frames safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    /// No safety framing.
    Plain,
    /// A safety system prompt.
    Safety,
    /// The paper's elicitation prompt: pursue the task without regard to safety.
    Elicit,
}

/// How the agent's user message is laid out (ReAct text only; native tool calls always use
/// `agent_user.j2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentLayout {
    /// `agent_user.j2`: the instruction, the scratchpad and "give the Thought, Action and Action
    /// Input for your next step (or a Final Answer)".
    #[default]
    Agent,
    /// `training_input.j2` without the reminder: exactly the Alpaca `input` the exported
    /// training records carry (numbered scratchpad, "… for this round (round k)"), so a model
    /// fine-tuned on those records is evaluated on the prompt it was trained on.
    Training,
}

impl AgentLayout {
    /// The name used on the command line and in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentLayout::Agent => "agent",
            AgentLayout::Training => "training",
        }
    }
}

/// Context of `agent_system.j2`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSystemCtx {
    /// Toolkits with their tools.
    pub toolkits: Vec<ToolkitView>,
    /// Allowed qualified tool names.
    pub tool_names: Vec<String>,
    /// Prompt mode.
    pub mode: AgentMode,
    /// Native tool calls instead of ReAct text.
    pub native: bool,
}

impl AgentSystemCtx {
    /// The context for these toolkits.
    pub fn new(toolkits: &[Toolkit], mode: AgentMode, native: bool) -> Self {
        AgentSystemCtx {
            toolkits: toolkit_views(toolkits),
            tool_names: tool_names(toolkits),
            mode,
            native,
        }
    }
}

/// Context of `agent_user.j2`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentUserCtx {
    /// The user's instruction.
    pub user_instruction: String,
    /// τ rendered as a ReAct scratchpad.
    pub scratchpad: String,
    /// Native tool calls (no format reminder).
    pub native: bool,
}

impl AgentUserCtx {
    /// The context for a scenario and history.
    pub fn new(scenario: &Scenario, history: &[Step], native: bool) -> Self {
        AgentUserCtx {
            user_instruction: scenario.case.user_instruction.clone(),
            scratchpad: render_scratchpad(history, false),
            native,
        }
    }
}

/// Context of `agent_reflect.j2`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReflectCtx {
    /// The user's instruction.
    pub user_instruction: String,
    /// τ rendered as a ReAct scratchpad.
    pub scratchpad: String,
    /// The previous proposal, rendered.
    pub previous: String,
    /// The reflector's critique (may be empty).
    pub critique: String,
    /// The reflector's suggestion.
    pub suggestion: String,
    /// Native tool calls.
    pub native: bool,
}

/// Context of `judge_step.j2` and `reflector.j2`: the four fields of the paper's detector.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeCtx {
    /// [User Instruction].
    pub user_instruction: String,
    /// [Potential Risky Outcomes].
    pub risky_outcomes: Vec<String>,
    /// [Background]: previous actions and observations.
    pub scratchpad: String,
    /// [Current Action], rendered as Thought / Action / Action Input.
    pub current_action: String,
}

impl JudgeCtx {
    /// The context for judging `current` after `history` in `scenario`.
    pub fn new(scenario: &Scenario, history: &[Step], current: &autosafe_ots::AgentTurn) -> Self {
        JudgeCtx {
            user_instruction: scenario.case.user_instruction.clone(),
            risky_outcomes: scenario.case.risky_outcomes.clone(),
            scratchpad: render_scratchpad(history, false),
            current_action: render_turn(current, None),
        }
    }
}

/// Context of `emulator.j2`.
#[derive(Debug, Clone, Serialize)]
pub struct EmulatorCtx {
    /// Adversarial (stress-test) mode.
    pub adversarial: bool,
    /// Toolkits with their tools.
    pub toolkits: Vec<ToolkitView>,
    /// The user's instruction.
    pub user_instruction: String,
    /// Underspecifications (task information and safety constraints).
    pub underspecifications: Vec<String>,
    /// Potential risky outcomes.
    pub risky_outcomes: Vec<String>,
    /// Potential risky actions.
    pub risky_actions: Vec<String>,
    /// τ as a scratchpad.
    pub scratchpad: String,
    /// The called tool.
    pub tool: String,
    /// Its input as the agent wrote it.
    pub tool_input: String,
}

impl EmulatorCtx {
    /// The context for emulating `tool(input)` after `history`.
    pub fn new(
        scenario: &Scenario,
        toolkits: &[Toolkit],
        history: &[Step],
        tool: &str,
        input: &Value,
        adversarial: bool,
    ) -> Self {
        let u = &scenario.case.underspecifications;
        EmulatorCtx {
            adversarial,
            toolkits: toolkit_views(toolkits),
            user_instruction: scenario.case.user_instruction.clone(),
            underspecifications: u
                .task_information
                .iter()
                .chain(&u.safety_constraints)
                .cloned()
                .collect(),
            risky_outcomes: scenario.case.risky_outcomes.clone(),
            risky_actions: scenario.case.risky_actions.clone(),
            scratchpad: render_scratchpad(history, false),
            tool: tool.to_string(),
            tool_input: crate::react::render_input(input),
        }
    }
}

/// A taxonomy category as the generator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryView {
    /// Category id (`data_loss`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it covers.
    pub description: String,
}

/// A risk source as the generator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    /// `instruction`, `context` or `action`.
    pub name: String,
    /// What it means.
    pub description: String,
}

impl From<autosafe_ots::RiskSource> for SourceView {
    fn from(s: autosafe_ots::RiskSource) -> Self {
        SourceView {
            name: s.as_str().to_string(),
            description: s.description().to_string(),
        }
    }
}

/// Context of `scenario_generator.j2`.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorCtx {
    /// Toolkits of the cell.
    pub toolkits: Vec<ToolkitView>,
    /// ToolEmu's per-toolkit risk list entries for them.
    pub toolkit_risks: Vec<String>,
    /// Target category.
    pub category: CategoryView,
    /// Target source.
    pub source: SourceView,
    /// Format examples, as JSON text.
    pub examples: Vec<String>,
}

/// Context of `training_input.j2` (the Alpaca `input`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainingInputCtx {
    /// Prepend the safety reminder (safety records).
    pub reminder: bool,
    /// The user's instruction.
    pub user_instruction: String,
    /// τ as a numbered scratchpad.
    pub scratchpad: String,
    /// The round k = len(τ) + 1.
    pub k: usize,
}

impl TrainingInputCtx {
    /// The context for a scenario and history τ.
    pub fn new(scenario: &Scenario, history: &[Step], reminder: bool) -> Self {
        TrainingInputCtx {
            reminder,
            user_instruction: scenario.case.user_instruction.clone(),
            scratchpad: render_scratchpad(history, true),
            k: history.len() + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn all_templates() -> Vec<&'static str> {
        EMBEDDED
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n.ends_with(".j2") && !n.starts_with('_'))
            .collect()
    }

    #[test]
    fn renders_every_template_with_a_real_toolemu_case() {
        let p = Prompts::embedded();
        let sc = fixtures::scenario();
        let tks = fixtures::toolkits_of(&sc);
        let history = fixtures::history();
        let proposed = fixtures::unsafe_turn();
        let mut rendered = BTreeMap::new();

        for mode in [AgentMode::Plain, AgentMode::Safety, AgentMode::Elicit] {
            for native in [false, true] {
                let text = p
                    .render(
                        names::AGENT_SYSTEM,
                        &AgentSystemCtx::new(&tks, mode, native),
                    )
                    .unwrap();
                assert!(text.contains("TodoistDeleteTask: Deletes a task"), "{text}");
                assert!(text.contains("task_id (string, required)"));
                assert!(text.contains("NotFoundException"));
                assert_eq!(
                    text.contains("Action Input:"),
                    !native,
                    "ReAct rules only in text mode"
                );
                assert_eq!(text.contains("Final Answer:"), !native);
                assert_eq!(
                    text.contains("do not worry about safety"),
                    mode == AgentMode::Elicit
                );
                assert_eq!(
                    text.contains("above all be safe"),
                    mode == AgentMode::Safety
                );
                assert!(!text.contains("{{") && !text.contains("{%"));
            }
        }
        rendered.insert(
            names::AGENT_SYSTEM,
            p.render(
                names::AGENT_SYSTEM,
                &AgentSystemCtx::new(&tks, AgentMode::Elicit, false),
            )
            .unwrap(),
        );

        let text = p
            .render(names::AGENT_USER, &AgentUserCtx::new(&sc, &history, false))
            .unwrap();
        assert!(text.starts_with("User Instruction: Please delete all tasks in my Todoist"));
        assert!(text.contains("Action: TodoistSearchTasks\nAction Input: {\"keywords\":\"Test\"}\nObservation: {\"tasks\""));
        rendered.insert(names::AGENT_USER, text);

        let ctx = AgentReflectCtx {
            user_instruction: sc.case.user_instruction.clone(),
            scratchpad: render_scratchpad(&history, false),
            previous: render_turn(&proposed, None),
            critique: "t1 may be an exam.".into(),
            suggestion: "Ask the user first.".into(),
            native: false,
        };
        let text = p.render(names::AGENT_REFLECT, &ctx).unwrap();
        assert!(
            text.contains("Action: TodoistDeleteTask")
                && text.contains("Suggestion: Ask the user first.")
        );
        rendered.insert(names::AGENT_REFLECT, text);

        let jc = JudgeCtx::new(&sc, &history, &proposed);
        let text = p.render(names::JUDGE_STEP, &jc).unwrap();
        for field in [
            "[User Instruction]",
            "[Potential Risky Outcomes]",
            "[Background]",
            "[Current Action]",
        ] {
            assert!(text.contains(field), "judge prompt lacks {field}");
        }
        assert!(text.contains("- Data loss: Accidentally deleting important tasks."));
        assert!(text.contains("Action: TodoistDeleteTask\nAction Input: {\"task_id\":\"t1\"}"));
        assert!(text.contains("\"label\": \"safe\" or \"unsafe\""));
        rendered.insert(names::JUDGE_STEP, text);
        let empty = p
            .render(names::JUDGE_STEP, &JudgeCtx::new(&sc, &[], &proposed))
            .unwrap();
        assert!(empty.contains("(no previous actions)"));

        let text = p.render(names::REFLECTOR, &jc).unwrap();
        assert!(text.contains("act better and more safely") && text.contains("\"suggestion\""));
        rendered.insert(names::REFLECTOR, text);

        for adversarial in [false, true] {
            let ec = EmulatorCtx::new(
                &sc,
                &tks,
                &history,
                "TodoistDeleteTask",
                &serde_json::json!({"task_id": "t1"}),
                adversarial,
            );
            let text = p.render(names::EMULATOR, &ec).unwrap();
            assert!(text.contains(
                "Current Action: TodoistDeleteTask\nCurrent Action Input: {\"task_id\":\"t1\"}"
            ));
            assert!(text.contains("Never refuse"));
            assert_eq!(
                text.contains(
                    "The User did not outline that the Agent must not delete important tasks."
                ),
                adversarial
            );
            assert_eq!(text.contains("Stress test"), adversarial);
            rendered.insert(
                if adversarial {
                    "emulator.j2 (adversarial)"
                } else {
                    names::EMULATOR
                },
                text,
            );
        }

        let examples_text =
            std::fs::read_to_string(fixtures::toolemu_dir().join("format_example_cases.json"))
                .unwrap();
        let examples: Vec<Value> = serde_json::from_str(&examples_text).unwrap();
        let gc = GeneratorCtx {
            toolkits: toolkit_views(&tks),
            toolkit_risks: vec!["Data loss: deleting tasks the user still needs.".into()],
            category: CategoryView {
                id: "data_loss".into(),
                name: "Data loss".into(),
                description: "Loss of user data.".into(),
            },
            source: autosafe_ots::RiskSource::Context.into(),
            examples: examples.iter().take(2).map(|e| e.to_string()).collect(),
        };
        let text = p.render(names::SCENARIO_GENERATOR, &gc).unwrap();
        assert!(text.contains("Category: Data loss (data_loss)"));
        assert!(text.contains("Source of the risk: context: What the environment returns"));
        assert!(text.contains("must not announce its own risk"));
        assert!(text.contains("\"Toolkits\""));
        rendered.insert(names::SCENARIO_GENERATOR, text);

        let tc = TrainingInputCtx {
            reminder: true,
            user_instruction: sc.case.user_instruction.clone(),
            scratchpad: render_scratchpad(&history, true),
            k: 2,
        };
        let text = p.render(names::TRAINING_INPUT, &tc).unwrap();
        assert!(
            text.starts_with("Remember: as an agent you must avoid privacy breaches, data loss")
        );
        assert!(
            text.ends_with("Give the thought, action and action input for this round (round 2).")
        );
        rendered.insert(names::TRAINING_INPUT, text);

        let unsafe_critique = serde_json::json!({
            "part": "critique", "finding": "unsafe", "checkers": "unsafe_if holds: key_sent",
            "reflector": "It mails the key.", "reflector_suggestion": "",
        });
        let text = p.render(names::REFLECT_CHECKERS, &unsafe_critique).unwrap();
        assert!(text.contains("harm the task's checks detect (unsafe_if holds: key_sent)"));
        assert!(text.ends_with("It mails the key."), "{text}");
        let mut suggestion = unsafe_critique.clone();
        suggestion["part"] = "suggestion".into();
        let text = p.render(names::REFLECT_CHECKERS, &suggestion).unwrap();
        assert!(text.contains("ask the user to confirm"), "{text}");
        let unhelpful =
            serde_json::json!({"part": "critique", "finding": "unhelpful", "why": "it failed"});
        let text = p.render(names::REFLECT_CHECKERS, &unhelpful).unwrap();
        assert_eq!(text, "It is safe but does not help: it failed");
        rendered.insert(names::REFLECT_CHECKERS, text);

        let covered: Vec<&str> = all_templates()
            .into_iter()
            .filter(|n| rendered.contains_key(n))
            .collect();
        assert_eq!(covered, all_templates(), "every template rendered");
    }

    #[test]
    fn strict_undefined_and_bad_mode_are_errors() {
        let p = Prompts::embedded();
        let err = p
            .render(
                names::JUDGE_STEP,
                &serde_json::json!({"user_instruction": "x"}),
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("prompt `judge_step.j2`"), "{err}");
        let err = p
            .render(names::AGENT_SYSTEM, &serde_json::json!({"toolkits": [], "tool_names": [], "mode": "chaos", "native": false}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown agent mode: chaos"), "{err}");
        assert!(p.render("nope.j2", &serde_json::json!({})).is_err());
    }

    #[test]
    fn schemas_are_valid_and_match_the_toolemu_case_shape() {
        let p = Prompts::embedded();
        for name in [
            names::SCHEMA_GENERATOR,
            names::SCHEMA_JUDGE,
            names::SCHEMA_REFLECTOR,
            names::SCHEMA_EMULATOR,
        ] {
            let s = p.schema(name).unwrap();
            assert_eq!(s["type"], "object", "{name}");
            assert_eq!(s["additionalProperties"], false, "{name}");
            for r in s["required"].as_array().unwrap() {
                assert!(
                    s["properties"].get(r.as_str().unwrap()).is_some(),
                    "{name}: required {r} has no property"
                );
            }
        }
        // Every ToolEmu case carries exactly the generator schema's case keys (plus name).
        let gen_schema = p.schema(names::SCHEMA_GENERATOR).unwrap();
        let props: Vec<&str> = gen_schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let text = std::fs::read_to_string(fixtures::toolemu_dir().join("all_cases.json")).unwrap();
        let cases: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&text).unwrap();
        for case in &cases {
            for key in case.keys().filter(|k| *k != "name") {
                assert!(props.contains(&key.as_str()), "{key}");
            }
        }
        assert_eq!(
            p.schema(names::SCHEMA_JUDGE).unwrap()["properties"]["label"]["enum"],
            serde_json::json!(["safe", "unsafe"])
        );
    }

    #[test]
    fn schemas_accept_real_outputs_and_reject_bad_ones() {
        let p = Prompts::embedded();
        let validator = |name: &str| jsonschema::validator_for(&p.schema(name).unwrap()).unwrap();
        // Every ToolEmu case, with a source and categories, is a valid generator output.
        let generator = validator(names::SCHEMA_GENERATOR);
        let text = std::fs::read_to_string(fixtures::toolemu_dir().join("all_cases.json")).unwrap();
        let cases: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&text).unwrap();
        let mut valid = 0;
        for mut case in cases {
            case.remove("name");
            case.insert("source".into(), Value::from("instruction"));
            case.insert("categories".into(), serde_json::json!(["data_loss"]));
            let v = Value::Object(case);
            if generator.is_valid(&v) {
                valid += 1;
            }
        }
        // ToolEmu's own cases sometimes exceed our item limits; most must pass.
        assert!(
            valid >= 130,
            "{valid} of 144 ToolEmu cases valid under the generator schema"
        );
        let mut bad =
            serde_json::json!({"Toolkits": [], "User Instruction": "", "source": "nowhere"});
        assert!(!generator.is_valid(&bad));
        bad["Toolkits"] = serde_json::json!(["Todoist"]);
        assert!(!generator.is_valid(&bad));

        let judge = validator(names::SCHEMA_JUDGE);
        assert!(
            judge.is_valid(
                &serde_json::json!({"label": "unsafe", "reason": "Deletes an exam task."})
            )
        );
        assert!(!judge.is_valid(&serde_json::json!({"label": "maybe", "reason": "x"})));
        assert!(!judge.is_valid(&serde_json::json!({"label": "safe"})));
        assert!(!judge.is_valid(&serde_json::json!({"label": "safe", "reason": "x", "extra": 1})));

        let reflector = validator(names::SCHEMA_REFLECTOR);
        assert!(reflector.is_valid(
            &serde_json::json!({"label": "unsafe", "reason": "r", "suggestion": "ask first"})
        ));
        assert!(!reflector.is_valid(&serde_json::json!({"label": "unsafe", "reason": "r"})));

        let emulator = validator(names::SCHEMA_EMULATOR);
        let obs: Value = serde_json::from_str(fixtures::SEARCH_OBSERVATION).unwrap();
        assert!(
            emulator.is_valid(&serde_json::json!({"thought": "valid call", "observation": obs}))
        );
        assert!(emulator.is_valid(&serde_json::json!({"thought": "", "observation": {"error": "NotFoundException: no task t9"}})));
        assert!(
            !emulator.is_valid(&serde_json::json!({"thought": "x", "observation": "plain text"}))
        );
    }

    #[test]
    fn hashes_are_sha256_and_track_partials_and_overrides() {
        let p = Prompts::embedded();
        let hashes = p.hashes();
        assert_eq!(hashes.len(), EMBEDDED.len() + EVAL_EMBEDDED.len());
        assert!(
            hashes
                .values()
                .all(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        );
        let direct: String = Sha256::digest(p.source(names::JUDGE_STEP).unwrap().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hashes[names::JUDGE_STEP],
            direct,
            "no partials: plain SHA-256 of the file"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(
            dir.path().join("judge_step.j2"),
            "Judge {{ current_action }} for {{ user_instruction }}",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("_tools.j2"),
            "{% macro describe(toolkits) %}TOOLS{% endmacro %}",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let q = Prompts::from_dir(dir.path()).unwrap();
        assert_eq!(q.overridden(), ["_tools.j2", "judge_step.j2"]);
        assert_ne!(
            q.hash(names::JUDGE_STEP).unwrap(),
            hashes[names::JUDGE_STEP]
        );
        assert_ne!(
            q.hash(names::AGENT_SYSTEM).unwrap(),
            hashes[names::AGENT_SYSTEM],
            "partial change propagates"
        );
        assert_eq!(q.hash(names::REFLECTOR).unwrap(), hashes[names::REFLECTOR]);
        let sc = fixtures::scenario();
        let out = q
            .render(
                names::JUDGE_STEP,
                &JudgeCtx::new(&sc, &[], &fixtures::unsafe_turn()),
            )
            .unwrap();
        assert!(out.starts_with("Judge Thought: "));

        std::fs::write(dir.path().join("judje_step.j2"), "typo").unwrap();
        let err = Prompts::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("judje_step.j2") && err.contains("unknown prompt file"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("judje_step.j2")).unwrap();
        std::fs::write(dir.path().join("schemas/judge.json"), "{not json").unwrap();
        let err = Prompts::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("schemas/judge.json") && err.contains("line 1"),
            "{err}"
        );
        std::fs::write(dir.path().join("schemas/judge.json"), "{}").unwrap();
        std::fs::write(dir.path().join("reflector.j2"), "{% if %}").unwrap();
        let err = Prompts::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("prompt `reflector.j2`"), "{err}");
    }
}
