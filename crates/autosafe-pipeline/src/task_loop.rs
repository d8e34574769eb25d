//! The one task loop of every stage and evaluation runner: items are worked on `concurrency` at
//! a time, each under the transient-failure watch ([`crate::stages::common::attempt`]), and the
//! results are handed to a sink in input order, one at a time, so a single writer per file sees
//! them in the order an uninterrupted run writes them.
//!
//! An item whose work met a transient failure never reaches the sink: nothing of it is written,
//! it is counted as pending in the returned [`StageStats`], and the next run tries it again.

use std::future::Future;

use futures_util::StreamExt;

use crate::rundir::StageStats;
use crate::stages::common::{StageError, attempt};

/// Runs `work` over `items` with at most `concurrency` items in flight (at least one) and hands
/// each finished result to `sink`, in the order of `items`. `items` is consumed lazily, so a
/// stage can stream its input from a file with flat memory. Returns the items left pending (only
/// `pending` and `pending_detail` are set), or the first error of a sink or of the run (a
/// template that does not render); the loop stops there.
pub async fn run_items<I, W, Fut, S, E>(
    items: I,
    concurrency: usize,
    mut work: W,
    mut sink: S,
) -> Result<StageStats, E>
where
    I: IntoIterator,
    W: FnMut(I::Item) -> Fut,
    Fut: Future,
    S: AsyncFnMut(Fut::Output) -> Result<(), E>,
    E: From<StageError>,
{
    let mut stream = futures_util::stream::iter(items)
        .map(|item| attempt(work(item)))
        .buffered(concurrency.max(1));
    let mut left = StageStats::default();
    while let Some(r) = stream.next().await {
        // A template error (not the item's) stops the loop: nothing of the item is written.
        match r.map_err(E::from)? {
            Ok(out) => sink(out).await?,
            Err(failure) => left.pending(&failure),
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use autosafe_llm::{
        CallContext, ChatModel, ChatReply, ChatRequest, LlmError, Message, Structured,
    };

    use super::*;

    /// A model server that answers every request with HTTP 503 (a transient failure).
    struct Down;

    #[async_trait::async_trait]
    impl ChatModel for Down {
        fn name(&self) -> &str {
            "down"
        }
        async fn chat(&self, _: &ChatRequest, _: &CallContext) -> Result<ChatReply, LlmError> {
            Err(LlmError::Http {
                status: 503,
                endpoint: "test".into(),
                body: String::new(),
            })
        }
    }

    /// Work that sleeps longer for earlier items (so they finish out of order), tracks how many
    /// run at once, and meets a transient failure on multiples of 4.
    async fn work(n: u32, live: &AtomicUsize, peak: &AtomicUsize) -> u32 {
        let now = live.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(u64::from(20 - n))).await;
        live.fetch_sub(1, Ordering::SeqCst);
        if n.is_multiple_of(4) {
            let model = Structured::new(Down, 0, None);
            let req = ChatRequest::new(vec![Message::user(format!("item {n}"))]);
            let _ = model.chat(&req, &CallContext::stage("test")).await;
        }
        n
    }

    #[tokio::test]
    async fn keeps_input_order_counts_transient_failures_pending_and_bounds_concurrency() {
        let (live, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let mut written = Vec::new();
        let left = run_items(
            0..20u32,
            3,
            |n| work(n, &live, &peak),
            async |n| {
                written.push(n);
                Ok::<(), StageError>(())
            },
        )
        .await
        .unwrap();
        let expect: Vec<u32> = (0..20u32).filter(|n| !n.is_multiple_of(4)).collect();
        assert_eq!(written, expect, "input order, failed items not written");
        assert_eq!(left.pending_total(), 5);
        assert!(
            left.pending_detail
                .as_deref()
                .is_some_and(|d| d.contains("503"))
        );
        assert_eq!((left.input, left.output), (0, 0));
        assert_eq!(peak.load(Ordering::SeqCst), 3, "at most 3 in flight");
    }

    #[tokio::test]
    async fn stops_at_the_first_sink_error_and_treats_zero_concurrency_as_one() {
        let (live, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let mut seen = 0;
        let err = run_items(
            1..10u32,
            0,
            |n| work(n, &live, &peak),
            async |n| {
                seen += 1;
                if n == 3 {
                    Err(StageError::Config(format!("sink failed at {n}")))
                } else {
                    Ok(())
                }
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            (err.to_string().contains("sink failed at 3"), seen),
            (true, 3)
        );
        assert_eq!(peak.load(Ordering::SeqCst), 1);
    }
}
