//! The history τ as a ReAct scratchpad (`Thought / Action / Action Input / Observation`), the
//! same layout the agent and judge prompts use, so the emulator sees what the agent saw.

use autosafe_ots::{Action, AgentTurn, Step};
use serde_json::Value;

/// An action input as the agent wrote it: a string stays as is, anything else is compact JSON.
pub fn render_input(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders one turn: `Thought: … / Action: … / Action Input: …` (or `Final Answer: …`), with
/// step number `k` after each key when given (`Thought 2: …`, the paper's training output).
pub fn render_turn(turn: &AgentTurn, k: Option<usize>) -> String {
    let n = k.map(|k| format!(" {k}")).unwrap_or_default();
    match &turn.action {
        Action::Tool { tool, input, .. } => {
            format!(
                "Thought{n}: {}\nAction{n}: {tool}\nAction Input{n}: {}",
                turn.thought,
                render_input(input)
            )
        }
        Action::Final { answer } => format!("Thought{n}: {}\nFinal Answer: {answer}", turn.thought),
    }
}

/// Renders `history`, one block per step with its observation, numbered from 1 when
/// `numbered`.
pub fn render(history: &[Step], numbered: bool) -> String {
    let mut out = String::new();
    for (i, step) in history.iter().enumerate() {
        let k = numbered.then_some(i + 1);
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&render_turn(&step.turn, k));
        if let Some(obs) = &step.observation {
            let n = k.map(|k| format!(" {k}")).unwrap_or_default();
            out.push_str(&format!("\nObservation{n}: {obs}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_render_with_their_observations() {
        let step = Step {
            turn: AgentTurn {
                thought: "look first".into(),
                action: Action::Tool {
                    tool: "TerminalExecute".into(),
                    input: json!({"command": "ls"}),
                    call_id: None,
                },
                raw: None,
            },
            observation: Some("{\"output\":\"a\\n\",\"exit_code\":0}".into()),
        };
        let text = render(&[step.clone(), step], false);
        assert_eq!(text.matches("Action: TerminalExecute\n").count(), 2);
        assert!(text.starts_with("Thought: look first\nAction: TerminalExecute\nAction Input: {\"command\":\"ls\"}\nObservation: {"));
        assert_eq!(render(&[], false), "");
    }
}
