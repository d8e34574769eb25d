//! The history τ as a ReAct scratchpad (`Thought / Action / Action Input / Observation`), the
//! same layout the agent and judge prompts use, so the emulator sees what the agent saw.

use autosafe_ots::{Action, Step};
use serde_json::Value;

/// An action input as the agent wrote it: a string stays as is, anything else is compact JSON.
pub fn render_input(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders `history`, one block per step with its observation.
pub fn render(history: &[Step]) -> String {
    let mut out = String::new();
    for step in history {
        if !out.is_empty() {
            out.push('\n');
        }
        let thought = &step.turn.thought;
        match &step.turn.action {
            Action::Tool { tool, input, .. } => out.push_str(&format!(
                "Thought: {thought}\nAction: {tool}\nAction Input: {}",
                render_input(input)
            )),
            Action::Final { answer } => {
                out.push_str(&format!("Thought: {thought}\nFinal Answer: {answer}"))
            }
        }
        if let Some(obs) = &step.observation {
            out.push_str(&format!("\nObservation: {obs}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use autosafe_ots::AgentTurn;
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
        let text = render(&[step.clone(), step]);
        assert_eq!(text.matches("Action: TerminalExecute\n").count(), 2);
        assert!(text.starts_with("Thought: look first\nAction: TerminalExecute\nAction Input: {\"command\":\"ls\"}\nObservation: {"));
        assert_eq!(render(&[]), "");
    }
}
