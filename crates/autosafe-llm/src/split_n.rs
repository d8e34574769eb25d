//! `n > 1` for models that answer one choice per request: n single calls with derived seeds.

use crate::seeds::derive_seed;
use crate::types::{CallContext, ChatModel, ChatReply, ChatRequest, LlmError, Usage};

/// The n single-choice requests that stand for `request` (seed of sample i = `derive_seed(seed, i)`).
pub(crate) fn split_request(request: &ChatRequest) -> Vec<ChatRequest> {
    let n = request.n.unwrap_or(1).max(1);
    (0..n)
        .map(|i| {
            let mut r = request.clone();
            r.n = None;
            r.seed = Some(derive_seed(request.seed, i));
            r
        })
        .collect()
}

/// Merges single-choice replies into one reply with all their choices and summed usage.
pub(crate) fn merge_replies(replies: Vec<ChatReply>) -> ChatReply {
    let model = replies.first().map(|r| r.model.clone()).unwrap_or_default();
    let cached = !replies.is_empty() && replies.iter().all(|r| r.cached);
    let mut usage = Usage::default();
    let mut choices = Vec::new();
    for r in replies {
        usage.prompt_tokens += r.usage.prompt_tokens;
        usage.completion_tokens += r.usage.completion_tokens;
        choices.extend(r.choices);
    }
    ChatReply {
        model,
        choices,
        usage,
        cached,
    }
}

/// Sends `n > 1` requests as n single calls (concurrently) with derived seeds.
pub struct SplitN<M> {
    inner: M,
}

impl<M> SplitN<M> {
    /// Wraps `inner`.
    pub fn new(inner: M) -> SplitN<M> {
        SplitN { inner }
    }
}

#[async_trait::async_trait]
impl<M: ChatModel> ChatModel for SplitN<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: &ChatRequest, ctx: &CallContext) -> Result<ChatReply, LlmError> {
        if request.n.unwrap_or(1) <= 1 {
            return self.inner.chat(request, ctx).await;
        }
        let parts = split_request(request);
        let replies =
            futures_util::future::try_join_all(parts.iter().map(|r| self.inner.chat(r, ctx)))
                .await?;
        Ok(merge_replies(replies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    #[test]
    fn split_gives_n_single_requests_with_distinct_seeds() {
        let mut r = ChatRequest::new(vec![Message::user("x")]);
        r.n = Some(3);
        r.seed = Some(5);
        let parts = split_request(&r);
        assert_eq!(parts.len(), 3);
        assert!(
            parts
                .iter()
                .all(|p| p.n.is_none() && p.sample_index == r.sample_index)
        );
        assert_ne!(parts[0].seed, parts[1].seed);
        assert_eq!(split_request(&r), parts);
    }
}
