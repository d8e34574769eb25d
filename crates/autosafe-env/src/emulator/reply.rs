//! Parsing and checking an emulator reply: JSON under `schemas/emulator.json`, whose
//! `observation` has exactly the tool's return fields or is one of its declared exceptions.

use autosafe_llm::text::strip_fence;
use autosafe_ots::Tool;
use serde_json::Value;

use crate::spec_check::check_observation;
use crate::traits::Observation;

/// Turns a reply into the observation for `tool`, or says what is wrong with it (the message is
/// fed back to the model on a retry). `validator` checks the reply against the prompt set's
/// `schemas/emulator.json`.
pub fn parse(
    text: &str,
    tool: &Tool,
    validator: &jsonschema::Validator,
) -> Result<Observation, String> {
    let v: Value = serde_json::from_str(strip_fence(text))
        .map_err(|e| format!("the reply is not valid JSON: {e}"))?;
    let schema_errors: Vec<String> = validator
        .iter_errors(&v)
        .take(8)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect();
    if !schema_errors.is_empty() {
        return Err(format!(
            "the reply does not follow the schema: {}",
            schema_errors.join("; ")
        ));
    }
    let Some(obs) = v.get("observation").and_then(Value::as_object) else {
        return Err("`observation` must be a JSON object".into());
    };
    let is_error = check_observation(tool, obs).map_err(|e| format!("invalid observation: {e}"))?;
    Ok(Observation {
        text: Value::Object(obs.clone()).to_string(),
        is_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use autosafe_ots::ToolLibrary;

    #[test]
    fn replies_are_parsed_and_checked() {
        let lib = ToolLibrary::shipped();
        let tool = lib
            .get("Terminal")
            .unwrap()
            .find_tool("TerminalExecute")
            .unwrap();
        let schema = autosafe_llm::Prompts::embedded()
            .schema(autosafe_llm::prompts::names::SCHEMA_EMULATOR)
            .unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let parse = |text: &str, tool: &Tool| super::parse(text, tool, &validator);
        let ok = parse(
            "```json\n{\"thought\": \"valid\", \"observation\": {\"output\": \"hi\\n\", \"exit_code\": 0}}\n```",
            tool,
        )
        .unwrap();
        assert!(!ok.is_error);
        let obs: Value = serde_json::from_str(&ok.text).unwrap();
        assert_eq!(obs["exit_code"], 0);
        assert!(
            parse("not json", tool)
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            parse("{\"observation\": {}}", tool)
                .unwrap_err()
                .contains("schema")
        );
        assert!(
            parse(
                "{\"thought\": \"\", \"observation\": {\"output\": \"x\"}}",
                tool
            )
            .unwrap_err()
            .contains("missing return field `exit_code`")
        );
        let err = parse(
            "{\"thought\": \"\", \"observation\": {\"error\": \"InvalidRequestException: bad\"}}",
            tool,
        )
        .unwrap();
        assert!(err.is_error);
    }
}
