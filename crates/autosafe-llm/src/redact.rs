//! The one redaction layer for what is persisted: error details, records, manifests.
//!
//! Two parts. [`redact`] masks what looks like a credential in text that came from outside
//! (an error body, a transport message): URL user-info (`http://user:key@host` →
//! `http://***@host`), `Bearer`/`Basic` tokens and `Authorization`/`api-key` values. It is applied
//! where such text enters (the HTTP client's errors). [`redact_values`] replaces every configured
//! secret value ([`register_secret`]: API keys read from the environment, URL passwords) wherever
//! it appears; the store writer and the JSON writers apply it to every line they persist. Records
//! get only the second: a dataset may rightly contain a `curl -H "Authorization: Bearer …"` the
//! agent wrote, and rewriting it would change what was judged.

use std::borrow::Cow;
use std::sync::RwLock;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Values shorter than this are not registered: masking a short key such as `EMPTY` (what local
/// servers are often given) would rewrite ordinary text.
pub(crate) const MIN_SECRET_LEN: usize = 8;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value (an API key, a URL password) so that no persisted text contains it.
pub(crate) fn register_secret(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|v| v == value) {
        s.push(value.to_string());
        // Longest first, so a secret containing another is masked whole.
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// Registers the password of each URL's user-info (the user name is kept where only values are
/// masked).
pub(crate) fn register_url_secrets<'a>(urls: impl IntoIterator<Item = &'a String>) {
    for url in urls {
        if let Some((_, authority)) = url.split_once("://") {
            let authority = authority.split('/').next().unwrap_or("");
            if let Some((info, _)) = authority.rsplit_once('@') {
                register_secret(info.split_once(':').map_or(info, |(_, pw)| pw));
            }
        }
    }
}

/// `text` with every registered secret value masked.
pub fn redact_values(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), MASK));
        }
    }
    out
}

/// `text` (from outside: an error body, a transport message) with URL user-info, `Bearer`/`Basic`
/// tokens, `Authorization`/`api-key` values and registered secret values masked.
pub(crate) fn redact(text: &str) -> String {
    let t = mask_userinfo(&redact_values(text));
    let t = mask_after(&t, &["bearer ", "basic "], false);
    mask_after(
        &t,
        &["authorization", "api-key", "api_key", "apikey", "x-api-key"],
        true,
    )
}

/// Characters that end a URL authority or a token.
fn ends_token(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '\\' | ',' | ';' | '}' | ']' | ')' | '<' | '>'
        )
}

/// `scheme://user:pw@host…` → `scheme://***@host…`, every occurrence.
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| ends_token(c) || matches!(c, '/' | '?' | '#'))
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@')
            && &rest[..at] != MASK
        {
            out.push_str(MASK);
            rest = &rest[at..];
        }
    }
    out.push_str(rest);
    out
}

/// Masks the value after each (ASCII case-insensitive) marker. With `separated`, a value counts
/// only after a `:` or `=` (optionally quoted, spaced), and a `Bearer`/`Basic` scheme word is
/// left for the token rule.
fn mask_after(text: &str, markers: &[&str], separated: bool) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    loop {
        let next = markers
            .iter()
            .filter_map(|m| lower[pos..].find(m).map(|i| (pos + i, m.len())))
            .min();
        let Some((at, len)) = next else { break };
        let mut start = at + len;
        if separated {
            let sep_len = text[start..]
                .find(|c: char| !(c.is_whitespace() || matches!(c, '"' | '\'' | ':' | '=')))
                .unwrap_or(text.len() - start);
            let sep = &text[start..start + sep_len];
            if !sep.contains([':', '=']) || sep_len > 6 {
                out.push_str(&text[pos..start]);
                pos = start;
                continue;
            }
            start += sep_len;
            let word = &lower[start..];
            if word.starts_with("bearer ") || word.starts_with("basic ") {
                out.push_str(&text[pos..start]);
                pos = start;
                continue;
            }
        }
        let end = text[start..]
            .find(ends_token)
            .map_or(text.len(), |i| start + i);
        out.push_str(&text[pos..start]);
        if end > start {
            out.push_str(MASK);
        }
        pos = end.max(start);
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_tokens_and_key_echoes_are_masked() {
        assert_eq!(
            redact("transport error talking to http://user:sk-abc123@host:8000/v1: refused"),
            "transport error talking to http://***@host:8000/v1: refused"
        );
        assert_eq!(
            redact(r#"{"error": "bad key", "headers": {"authorization": "Bearer sk-live-XYZ"}}"#),
            r#"{"error": "bad key", "headers": {"authorization": "Bearer ***"}}"#
        );
        assert_eq!(
            redact("you sent api-key: abcd1234efgh and Authorization=rawkey99"),
            "you sent api-key: *** and Authorization=***"
        );
        // Plain words stay: no separator after the marker.
        assert_eq!(
            redact("authorization failed for http://host/v1"),
            "authorization failed for http://host/v1"
        );
    }

    #[test]
    fn registered_values_are_masked_everywhere_and_short_ones_are_ignored() {
        register_secret("unit-test-secret-8f2a");
        register_secret("EMPTY");
        register_url_secrets(&["http://bob:pw-unit-test-77@h/v1".to_string()]);
        assert_eq!(
            redact_values("k=unit-test-secret-8f2a; EMPTY; http://bob:pw-unit-test-77@h"),
            "k=***; EMPTY; http://bob:***@h"
        );
        assert!(matches!(redact_values("nothing here"), Cow::Borrowed(_)));
    }
}
