//! Stable, content-derived record ids.
//!
//! An id is a short kind prefix and the first 16 hex digits of the SHA-256 of the record's
//! canonical JSON (object keys sorted at every level, no whitespace). Canonicalisation is done
//! explicitly because `serde_json` may be built with `preserve_order` by other crates.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Serialises `value` to canonical JSON: keys sorted recursively, compact separators.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> String {
    let v = serde_json::to_value(value).expect("serialisable value");
    let mut out = String::new();
    write_canonical(&v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Returns `"{kind}_{16 hex digits}"` derived from the canonical JSON of `value`.
pub fn content_id<T: Serialize + ?Sized>(kind: &str, value: &T) -> String {
    let digest = Sha256::digest(canonical_json(value).as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{kind}_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_id() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, 2]}, "b": 1});
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
        assert_eq!(content_id("sc", &a), content_id("sc", &b));
        assert!(content_id("sc", &a).starts_with("sc_"));
        assert_eq!(content_id("sc", &a).len(), 3 + 16);
    }

    #[test]
    fn different_content_gives_different_ids() {
        assert_ne!(
            content_id("sc", &json!({"a": 1})),
            content_id("sc", &json!({"a": 2}))
        );
    }
}
