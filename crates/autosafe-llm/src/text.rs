//! Reply-text helpers: where a reply's first step ends, for the engine (to stop generating) and
//! for callers (to cut a server's reply at the same point): after the first complete JSON value
//! that follows a marker such as `Action Input` or `<tool_call>`; and [`strip_fence`], which every
//! JSON reply parser uses.

/// Removes one surrounding Markdown code fence (```` ```json … ``` ````), which models often
/// add; anything else comes back trimmed.
pub fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
        if let Some(inner) = rest.trim_end().strip_suffix("```") {
            return inner.trim();
        }
    }
    t
}

/// The byte offset just after the JSON object or array at the start of `s` (leading
/// whitespace skipped), or `None` while it is not closed yet. Strings and escapes are honoured;
/// the value is not validated beyond its brackets.
pub(crate) fn json_value_end(s: &str) -> Option<usize> {
    let start = s.len() - s.trim_start().len();
    let bytes = s.as_bytes();
    if !matches!(bytes.get(start), Some(b'{' | b'[')) {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Where a reply ends when it must end after the value that follows `marker` (matched without
/// regard to ASCII case): the first occurrence of `marker`, then any of ` *_:` and digits (so
/// `**Action Input 2:**` matches `Action Input`), then either a JSON object or array (ends after
/// its closing bracket) or other text (ends at the end of its line). `None` while the marker or
/// the end of its value has not been written yet.
pub fn end_after_json(text: &str, marker: &str) -> Option<usize> {
    if marker.is_empty() {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let at = lower.find(&marker.to_ascii_lowercase())? + marker.len();
    let rest = &text[at..];
    let mut start = at + rest.len()
        - rest
            .trim_start_matches(|c: char| " \t*_:".contains(c) || c.is_ascii_digit())
            .len();
    // Whitespace, line breaks and a code fence opener (```json) may come before the value.
    loop {
        let t = &text[start..];
        let t_value = t.trim_start();
        start += t.len() - t_value.len();
        if !t_value.starts_with("```") {
            break;
        }
        start += t_value.find('\n')? + 1;
    }
    let value = &text[start..];
    if value.is_empty() {
        return None;
    }
    if value.starts_with(['{', '[']) {
        return json_value_end(value).map(|end| start + end);
    }
    value.find('\n').map(|nl| start + nl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_surrounding_fence_is_removed() {
        assert_eq!(strip_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(strip_fence("  ```\n[1]\n```  "), "[1]");
        assert_eq!(strip_fence("```python\nx\n```\n"), "x");
        assert_eq!(strip_fence(" {\"a\":1} "), "{\"a\":1}");
        // An unclosed fence, or text after the closing one, is left as it is (trimmed).
        assert_eq!(strip_fence("```json\n{}"), "```json\n{}");
        assert_eq!(
            strip_fence("```json\n{}\n``` and more"),
            "```json\n{}\n``` and more"
        );
    }

    #[test]
    fn json_values_end_at_their_closing_bracket() {
        assert_eq!(json_value_end(r#"{"a": 1} tail"#), Some(8));
        assert_eq!(json_value_end(r#"  [1, [2]]x"#), Some(10));
        assert_eq!(json_value_end(r#"{"a": "}{\"}"}"#), Some(14));
        assert_eq!(json_value_end(r#"{"a": {"b": 1}"#), None);
        assert_eq!(json_value_end("ls -la"), None);
        assert_eq!(json_value_end(""), None);
    }

    #[test]
    fn a_step_ends_after_the_value_that_follows_its_marker() {
        let step = "Thought: look\nAction: TerminalExecute\nAction Input: {\"command\": \"ls\"}";
        let text = format!("{step}\nObservation: made up\nThought: more");
        assert_eq!(end_after_json(&text, "Action Input"), Some(step.len()));
        // Not closed yet, and no marker yet.
        assert_eq!(
            end_after_json(&step[..step.len() - 1], "Action Input"),
            None
        );
        assert_eq!(end_after_json("Thought: hm", "Action Input"), None);
        // Markdown, step numbers and case.
        let md = "**Action Input 2:** {\"a\": 1}\n\nmore";
        assert_eq!(
            end_after_json(md, "action input"),
            Some(md.find('}').unwrap() + 1)
        );
        // A value on the next line.
        assert_eq!(end_after_json("Action Input:\n", "Action Input"), None);
        assert_eq!(
            end_after_json("Action Input:\n{}", "Action Input"),
            Some(16)
        );
        // Text that is not JSON ends with its line.
        assert_eq!(end_after_json("Action Input: ls -la", "Action Input"), None);
        assert_eq!(
            end_after_json("Action Input: ls -la\nx", "Action Input"),
            Some(20)
        );
        // A fenced value.
        let fenced = "Action Input:\n```json\n{\"a\": 1}\n```\nmore";
        assert_eq!(
            end_after_json(fenced, "Action Input"),
            Some(fenced.find('}').unwrap() + 1)
        );
        assert_eq!(end_after_json("Action Input:\n```js", "Action Input"), None);
        // A native tool call.
        let call = "Let me look.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}";
        let text = format!("{call}\n</tool_call>\n<tool_call>\n{{}}");
        assert_eq!(end_after_json(&text, "<tool_call>"), Some(call.len()));
        assert_eq!(end_after_json("x", ""), None);
    }
}
