//! Canonical JSON (sorted object keys, compact) and the content-addressed cache key.
//!
//! `serde_json` may be built with `preserve_order` (llguidance turns it on for the whole binary), so
//! key order is made explicit here instead of relying on map iteration order.

use crate::types::ChatRequest;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `value` as compact JSON with object keys sorted at every level.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
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
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The cache key of a request to the model configured as `model_name`: SHA-256 (hex) of the
/// canonical JSON of `{"model": model_name, "request": request}`. The request carries messages,
/// tools, response format, sampling parameters, seed, `n` and the sample index; it never holds an
/// API key or a base URL, so neither can enter the key.
pub fn cache_key(model_name: &str, request: &ChatRequest) -> String {
    let req = serde_json::to_value(request).unwrap_or(Value::Null);
    let doc = serde_json::json!({"model": model_name, "request": req, "key_version": 1});
    let digest = Sha256::digest(canonical_json(&doc).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    #[test]
    fn canonical_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":null}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn key_depends_on_model_request_and_sample_index() {
        let r = ChatRequest::new(vec![Message::user("hi")]);
        let mut r2 = r.clone();
        r2.sample_index = 1;
        let k = cache_key("m", &r);
        assert_eq!(k.len(), 64);
        assert_eq!(k, cache_key("m", &r.clone()));
        assert_ne!(k, cache_key("other", &r));
        assert_ne!(k, cache_key("m", &r2));
    }
}
