//! Schema-constrained decoding on the packaged model: every reply parses and validates.

mod common;

use autosafe_llm::{ChatRequest, FinishReason, JsonSchemaFormat, Message, ResponseFormat};
use serde_json::{Value, json};

async fn constrained(prompt: &str, schema: Value) -> Value {
    let engine = common::engine();
    let req = ChatRequest {
        max_tokens: Some(200),
        temperature: Some(0.0),
        response_format: Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "reply".into(),
            schema: schema.clone(),
            strict: true,
        })),
        ..ChatRequest::new(vec![Message::user(prompt)])
    };
    let reply = engine.complete(&req).await.unwrap();
    assert_eq!(
        reply.choices[0].finish_reason,
        FinishReason::Stop,
        "cut reply: {:?}",
        reply.text()
    );
    let value: Value =
        serde_json::from_str(reply.text()).unwrap_or_else(|e| panic!("{e}: {:?}", reply.text()));
    let validator = jsonschema::validator_for(&schema).unwrap();
    if let Err(e) = validator.validate(&value) {
        panic!("{value} does not validate: {e}");
    }
    value
}

#[tokio::test]
async fn object_with_typed_fields() {
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let v = constrained("Describe a person as JSON with a name and an age.", schema).await;
    assert!(v["age"].is_i64());
}

#[tokio::test]
async fn enum_field() {
    let schema = json!({
        "type": "object",
        "properties": {"verdict": {"enum": ["safe", "unsafe", "unsure"]}},
        "required": ["verdict"],
        "additionalProperties": false
    });
    let v = constrained("Is deleting all files in / safe? Answer as JSON.", schema).await;
    assert!(["safe", "unsafe", "unsure"].contains(&v["verdict"].as_str().unwrap()));
}

#[tokio::test]
async fn array_of_strings() {
    let schema = json!({
        "type": "array",
        "items": {"type": "string", "maxLength": 16},
        "minItems": 2,
        "maxItems": 4
    });
    let v = constrained("List three fruits as a JSON array.", schema).await;
    let n = v.as_array().unwrap().len();
    assert!((2..=4).contains(&n));
}

#[tokio::test]
async fn nested_objects_and_arrays() {
    let schema = json!({
        "type": "object",
        "properties": {
            "scenario": {"type": "string", "maxLength": 40},
            "risk": {
                "type": "object",
                "properties": {
                    "level": {"enum": ["low", "medium", "high"]},
                    "tools": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 2}
                },
                "required": ["level", "tools"],
                "additionalProperties": false
            }
        },
        "required": ["scenario", "risk"],
        "additionalProperties": false
    });
    let v = constrained("Describe a risky agent scenario as JSON.", schema).await;
    assert!(v["risk"]["tools"].is_array());
}

#[tokio::test]
async fn json_object_mode_gives_an_object() {
    let engine = common::engine();
    let req = ChatRequest {
        max_tokens: Some(120),
        temperature: Some(0.0),
        response_format: Some(ResponseFormat::JsonObject),
        ..ChatRequest::new(vec![Message::user("Give me a JSON object about a cat.")])
    };
    let reply = engine.complete(&req).await.unwrap();
    // An unbounded object can exhaust the budget: then the reply is reported as cut, never as done.
    if reply.choices[0].finish_reason == FinishReason::Stop {
        let v: Value = serde_json::from_str(reply.text()).unwrap();
        assert!(v.is_object());
    } else {
        assert_eq!(reply.choices[0].finish_reason, FinishReason::Length);
        assert_eq!(reply.usage.completion_tokens, 120);
    }
    assert!(reply.text().starts_with('{'));
}

#[tokio::test]
async fn unsupported_schema_is_an_error_not_free_text() {
    let engine = common::engine();
    let req = ChatRequest {
        max_tokens: Some(10),
        response_format: Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "bad".into(),
            schema: json!({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}, "required": ["a"]}),
            strict: true,
        })),
        ..ChatRequest::new(vec![Message::user("x")])
    };
    let err = engine.complete(&req).await.unwrap_err().to_string();
    assert!(
        err.contains("constraint") || err.contains("schema"),
        "{err}"
    );
}
