//! Usage accounting per model and per stage label: requests, cache hits, retries by cause, errors,
//! repairs of invalid replies, tokens and cost. A [`UsageLedger`] is shared by the layers of a
//! model stack; [`Metered`] records what reaches the model.

use crate::spec::Price;
use crate::types::{CallContext, ChatModel, ChatReply, ChatRequest, LlmError, Usage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Counters for one (model, stage) pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageStats {
    /// Calls that reached the model (each may have taken several HTTP attempts).
    pub requests: u64,
    /// Calls answered by the cache (or by an identical request in flight) without a request.
    pub cache_hits: u64,
    /// Retried attempts by cause (`429`, `503`, `5xx`, `timeout`, `connect`, `dropped`, `malformed`, ...).
    pub retries: BTreeMap<String, u64>,
    /// Calls that ended in an error, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Re-asks after a reply failed schema validation.
    pub repairs: u64,
    /// Prompt tokens of requests that reached the model.
    pub prompt_tokens: u64,
    /// Completion tokens of requests that reached the model.
    pub completion_tokens: u64,
    /// Cost in dollars, when the model has a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl UsageStats {
    fn add(&mut self, o: &UsageStats) {
        self.requests += o.requests;
        self.cache_hits += o.cache_hits;
        for (k, v) in &o.retries {
            *self.retries.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.repairs += o.repairs;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        if let Some(c) = o.cost_usd {
            self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + c);
        }
    }

    /// All retries, whatever the cause.
    pub fn total_retries(&self) -> u64 {
        self.retries.values().sum()
    }

    /// All errors, whatever the kind.
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// Model name.
    pub model: String,
    /// Stage label (`-` when the caller gave none).
    pub stage: String,
    /// Its counters.
    #[serde(flatten)]
    pub stats: UsageStats,
}

/// Everything recorded, per (model, stage), plus the total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Rows sorted by model then stage.
    pub rows: Vec<UsageRow>,
    /// Sum of all rows.
    pub total: UsageStats,
}

/// The shared ledger.
#[derive(Debug, Default)]
pub struct UsageLedger {
    rows: Mutex<BTreeMap<(String, String), UsageStats>>,
    prices: Mutex<BTreeMap<String, Price>>,
}

/// A short kind label for an error.
pub(crate) fn error_kind(e: &LlmError) -> String {
    match e {
        LlmError::Http { status, .. } => format!("http_{status}"),
        LlmError::Transport { .. } => "transport".into(),
        LlmError::InvalidReply { .. } => "invalid_reply".into(),
        LlmError::Config(_) => "config".into(),
        LlmError::Engine(_) => "engine".into(),
        LlmError::Cache(_) => "cache".into(),
    }
}

impl UsageLedger {
    /// An empty ledger.
    pub fn new() -> Arc<UsageLedger> {
        Arc::new(UsageLedger::default())
    }

    fn with(&self, model: &str, stage: &str, f: impl FnOnce(&mut UsageStats)) {
        let stage = if stage.is_empty() { "-" } else { stage };
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        f(rows
            .entry((model.to_string(), stage.to_string()))
            .or_default());
    }

    /// Sets the price used for this model's cost.
    pub(crate) fn set_price(&self, model: &str, price: Price) {
        self.prices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(model.to_string(), price);
    }

    /// A call that reached the model and used these tokens.
    pub(crate) fn record_request(&self, model: &str, stage: &str, usage: &Usage) {
        self.with(model, stage, |s| {
            s.requests += 1;
            s.prompt_tokens += usage.prompt_tokens;
            s.completion_tokens += usage.completion_tokens;
        });
    }

    /// A call answered without a request.
    pub(crate) fn record_cache_hit(&self, model: &str, stage: &str) {
        self.with(model, stage, |s| s.cache_hits += 1);
    }

    /// A retried attempt.
    pub(crate) fn record_retry(&self, model: &str, stage: &str, cause: &str) {
        self.with(model, stage, |s| {
            *s.retries.entry(cause.to_string()).or_default() += 1
        });
    }

    /// A call that failed.
    pub(crate) fn record_error(&self, model: &str, stage: &str, error: &LlmError) {
        self.with(model, stage, |s| {
            *s.errors.entry(error_kind(error)).or_default() += 1
        });
    }

    /// A re-ask after an invalid reply.
    pub(crate) fn record_repair(&self, model: &str, stage: &str) {
        self.with(model, stage, |s| s.repairs += 1);
    }

    /// The counters of one (model, stage) pair.
    pub fn stats(&self, model: &str, stage: &str) -> UsageStats {
        let stage = if stage.is_empty() { "-" } else { stage };
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(model.to_string(), stage.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// A report with costs filled in from the price table.
    pub fn report(&self) -> UsageReport {
        let prices = self
            .prices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut total = UsageStats::default();
        let rows: Vec<UsageRow> = rows
            .into_iter()
            .map(|((model, stage), mut stats)| {
                stats.cost_usd = prices.get(&model).map(|p| {
                    (stats.prompt_tokens as f64 * p.prompt_per_mtok
                        + stats.completion_tokens as f64 * p.completion_per_mtok)
                        / 1e6
                });
                total.add(&stats);
                UsageRow {
                    model,
                    stage,
                    stats,
                }
            })
            .collect();
        UsageReport { rows, total }
    }

    /// A plain-text table of the report.
    pub fn summary_table(&self) -> String {
        let r = self.report();
        let mut out = format!(
            "{:<24} {:<14} {:>9} {:>9} {:>8} {:>7} {:>8} {:>12} {:>12} {:>10}\n",
            "model",
            "stage",
            "requests",
            "cache",
            "retries",
            "errors",
            "repairs",
            "prompt_tok",
            "compl_tok",
            "cost_usd"
        );
        let mut line = |model: &str, stage: &str, s: &UsageStats| {
            out.push_str(&format!(
                "{:<24} {:<14} {:>9} {:>9} {:>8} {:>7} {:>8} {:>12} {:>12} {:>10}\n",
                model,
                stage,
                s.requests,
                s.cache_hits,
                s.total_retries(),
                s.total_errors(),
                s.repairs,
                s.prompt_tokens,
                s.completion_tokens,
                s.cost_usd.map_or("-".to_string(), |c| format!("{c:.4}"))
            ));
        };
        for row in &r.rows {
            line(&row.model, &row.stage, &row.stats);
        }
        line("total", "", &r.total);
        out
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(&self.report()).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }
}

/// Records every call that reaches `inner` (requests, tokens, errors) under `inner.name()` and the
/// call's stage label. Put it directly around the model, under the cache.
pub struct Metered<M> {
    inner: M,
    ledger: Arc<UsageLedger>,
}

impl<M> Metered<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, ledger: Arc<UsageLedger>) -> Metered<M> {
        Metered { inner, ledger }
    }
}

#[async_trait::async_trait]
impl<M: ChatModel> ChatModel for Metered<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: &ChatRequest, ctx: &CallContext) -> Result<ChatReply, LlmError> {
        let result = self.inner.chat(request, ctx).await;
        match &result {
            Ok(reply) if reply.cached => {
                self.ledger.record_cache_hit(self.inner.name(), &ctx.stage)
            }
            Ok(reply) => self
                .ledger
                .record_request(self.inner.name(), &ctx.stage, &reply.usage),
            Err(e) => self.ledger.record_error(self.inner.name(), &ctx.stage, e),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_sums_rows_and_prices_cost() {
        let l = UsageLedger::new();
        l.set_price(
            "m",
            Price {
                prompt_per_mtok: 1.0,
                completion_per_mtok: 2.0,
            },
        );
        l.record_request(
            "m",
            "judge",
            &Usage {
                prompt_tokens: 1_000_000,
                completion_tokens: 500_000,
            },
        );
        l.record_request(
            "m",
            "",
            &Usage {
                prompt_tokens: 10,
                completion_tokens: 0,
            },
        );
        l.record_retry("m", "judge", "429");
        l.record_cache_hit("n", "judge");
        l.record_error(
            "n",
            "judge",
            &LlmError::Http {
                status: 400,
                endpoint: "e".into(),
                body: String::new(),
            },
        );
        let r = l.report();
        assert_eq!(r.rows.len(), 3);
        let judge = r
            .rows
            .iter()
            .find(|x| x.model == "m" && x.stage == "judge")
            .unwrap();
        assert_eq!(judge.stats.cost_usd, Some(2.0));
        assert_eq!(r.total.requests, 2);
        assert_eq!(r.total.errors.get("http_400"), Some(&1));
        assert_eq!(r.total.retries.get("429"), Some(&1));
        let table = l.summary_table();
        assert!(table.contains("judge") && table.lines().last().unwrap().starts_with("total"));
    }
}
