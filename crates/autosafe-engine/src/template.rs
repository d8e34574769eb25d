//! Renders a conversation into the model's prompt with the GGUF's own `tokenizer.chat_template`
//! (Jinja, rendered by minijinja the way Hugging Face's `apply_chat_template` does).
//!
//! Templates that know about tools get `tools` and OpenAI-shaped `tool_calls`; for templates
//! that do not (SmolLM2's, for one) tools are described in a system-prompt section
//! (`prompts/tools_fallback.j2`), assistant tool calls are written as `<tool_call>{…}</tool_call>`
//! lines and tool results become user turns wrapped in `<tool_response>` tags.

use crate::error::EngineError;
use autosafe_llm::{Message, Role, ToolSpec};
use serde_json::{Value, json};

const TOOLS_FALLBACK: &str = include_str!("../prompts/tools_fallback.j2");
const TEMPLATE_NAME: &str = "chat_template";
const FALLBACK_NAME: &str = "tools_fallback";

/// A compiled chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    supports_tools: bool,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("supports_tools", &self.supports_tools)
            .finish()
    }
}

fn raise_exception(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        message,
    ))
}

fn strftime_now(format: String) -> String {
    // Templates use it for "today's date" lines; a fixed date keeps prompts reproducible.
    let _ = format;
    "01 Jan 2025".to_string()
}

impl ChatTemplate {
    /// Compiles `source` (a Jinja chat template). `bos_token`/`eos_token` are exposed to it.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, EngineError> {
        let mut env = autosafe_llm::prompts::environment();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| {
                EngineError::Template(format!("cannot compile the model's chat template: {e}"))
            })?;
        env.add_template_owned(FALLBACK_NAME, TOOLS_FALLBACK)
            .map_err(|e| EngineError::Template(format!("tools_fallback.j2: {e}")))?;
        Ok(ChatTemplate {
            env,
            supports_tools: source.contains("tools"),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Renders the conversation with the generation prompt appended.
    pub fn render(&self, messages: &[Message], tools: &[ToolSpec]) -> Result<String, EngineError> {
        let tools_json: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        let native = self.supports_tools || tools.is_empty();
        let mut msgs: Vec<Value> = messages.iter().map(|m| message_json(m, native)).collect();
        if !native {
            let section = self
                .env
                .get_template(FALLBACK_NAME)
                .and_then(|t| t.render(minijinja::context! { tools => minijinja::Value::from(minijinja::value::Serde(&tools_json)) }))
                .map_err(|e| EngineError::Template(format!("tools_fallback.j2: {e}")))?;
            let section = section.trim_end().to_string();
            match msgs.first_mut() {
                Some(first) if first["role"] == "system" => {
                    let text = first["content"].as_str().unwrap_or("").to_string();
                    first["content"] = Value::String(format!("{text}\n\n{section}"));
                }
                _ => msgs.insert(0, json!({"role": "system", "content": section})),
            }
        }
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| EngineError::Template(e.to_string()))?;
        let tools_value = if native && !tools.is_empty() {
            Some(tools_json)
        } else {
            None
        };
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(&msgs)),
            tools => minijinja::Value::from(minijinja::value::Serde(&tools_value)),
            add_generation_prompt => true,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(|e| EngineError::Template(format!("rendering the model's chat template: {e:#}")))
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// One message in the shape HF templates expect. `native`: the template handles tools itself.
fn message_json(m: &Message, native: bool) -> Value {
    let content = m.content.clone().unwrap_or_default();
    if native {
        let mut v = json!({"role": role_name(m.role), "content": content});
        if !m.tool_calls.is_empty() {
            v["tool_calls"] = m
                .tool_calls
                .iter()
                .map(|c| {
                    let args = serde_json::from_str::<Value>(&c.arguments)
                        .unwrap_or_else(|_| Value::String(c.arguments.clone()));
                    json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": args}})
                })
                .collect();
        }
        if let Some(id) = &m.tool_call_id {
            v["tool_call_id"] = Value::String(id.clone());
        }
        if let Some(name) = &m.name {
            v["name"] = Value::String(name.clone());
        }
        return v;
    }
    match m.role {
        Role::Tool => {
            json!({"role": "user", "content": format!("<tool_response>\n{content}\n</tool_response>")})
        }
        Role::Assistant if !m.tool_calls.is_empty() => {
            let mut text = content;
            for c in &m.tool_calls {
                let args = serde_json::from_str::<Value>(&c.arguments)
                    .unwrap_or(Value::String(c.arguments.clone()));
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!(
                    "<tool_call>{}</tool_call>",
                    json!({"name": c.name, "arguments": args})
                ));
            }
            json!({"role": "assistant", "content": text})
        }
        role => json!({"role": role_name(role), "content": content}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autosafe_llm::ToolCall;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_keeps_default_system_prompt() {
        let t = ChatTemplate::new(SMOL, "", "<|im_end|>").unwrap();
        let out = t.render(&[Message::user("Hi")], &[]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn fallback_renders_tools_calls_and_results() {
        let t = ChatTemplate::new(SMOL, "", "<|im_end|>").unwrap();
        assert!(!t.supports_tools);
        let tool = ToolSpec {
            name: "get_weather".into(),
            description: "Weather for a city".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        };
        let mut call = Message::assistant("");
        call.content = None;
        call.tool_calls = vec![ToolCall {
            id: "c1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        }];
        let msgs = vec![
            Message::user("Weather?"),
            call,
            Message::tool("c1", "get_weather", "sunny"),
        ];
        let out = t.render(&msgs, &[tool]).unwrap();
        assert!(
            out.starts_with("<|im_start|>system\nYou can call functions."),
            "{out}"
        );
        assert!(out.contains(r#""name": "get_weather""#), "{out}");
        assert!(
            out.contains(
                r#"<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>"#
            ),
            "{out}"
        );
        assert!(
            out.contains("<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>"),
            "{out}"
        );
        assert!(out.ends_with("<|im_start|>assistant\n"));
    }

    #[test]
    fn native_tool_template_gets_tools() {
        let src = "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}[{{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}{% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert!(t.supports_tools);
        let tool = ToolSpec {
            name: "f".into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
        };
        let mut call = Message::assistant("");
        call.tool_calls = vec![ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments: r#"{"a":1}"#.into(),
        }];
        let out = t.render(&[Message::user("u"), call], &[tool]).unwrap();
        // trim_blocks eats the newline after each block tag, as in Jinja2.
        assert_eq!(out, "TOOLS:f;user:uassistant:[f {\"a\": 1}]");
    }

    #[test]
    fn raise_exception_surfaces_as_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = t
            .render(&[Message::user("x")], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }
}
