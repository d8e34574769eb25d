//! The content-addressed cache key, over canonical JSON (sorted object keys, compact; the one
//! implementation in `autosafe-ots`, shared with record ids). `serde_json` may be built with
//! `preserve_order` (llguidance turns it on for the whole binary), so key order is made explicit
//! instead of relying on map iteration order.

pub use autosafe_ots::canonical_json;

use crate::types::ChatRequest;
use serde_json::Value;
use sha2::{Digest, Sha256};

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
