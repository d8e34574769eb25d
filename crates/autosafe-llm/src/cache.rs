//! The content-addressed reply cache (SQLite) and the [`Cached`] layer with single-flight.
//!
//! Keys come from [`crate::canonical::cache_key`]: the model's configured name and the canonical
//! request (never an API key or base URL). Only successful replies with no choice cut by the token
//! budget (`finish_reason = length`) are stored. Identical requests in flight at the same time are
//! sent once; the others wait for that reply.

use crate::canonical::cache_key;
use crate::types::{CallContext, ChatModel, ChatReply, ChatRequest, FinishReason, LlmError};
use crate::usage::UsageLedger;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// An SQLite file of cached replies.
pub struct Cache {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
    rebuilt: Option<String>,
}

fn db_err(path: &Option<PathBuf>, e: impl std::fmt::Display) -> LlmError {
    match path {
        Some(p) => LlmError::Cache(format!("{}: {e}", p.display())),
        None => LlmError::Cache(e.to_string()),
    }
}

impl Cache {
    /// Opens (creating if needed) the cache database at `path`. A damaged file (it fails
    /// SQLite's `quick_check`, or is not a database) is moved aside to `PATH.corrupt-UNIXTIME`
    /// and an empty cache started in its place ([`Cache::rebuilt`] says so): a cache only saves
    /// requests, and read errors from it would otherwise fail every item that meets them.
    pub fn open(path: &Path) -> Result<Arc<Cache>, LlmError> {
        let p = Some(path.to_path_buf());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| db_err(&Some(dir.to_path_buf()), e))?;
        }
        let conn = Connection::open(path).map_err(|e| db_err(&p, e))?;
        let damage = match Self::check(conn, p.clone())? {
            Ok(cache) => return Ok(cache),
            Err(damage) => damage,
        };
        let aside = path.with_file_name(format!(
            "{}.corrupt-{}",
            path.file_name()
                .map_or("cache".into(), |n| n.to_string_lossy()),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ));
        std::fs::rename(path, &aside)
            .map_err(|e| db_err(&p, format!("{damage}; moving it aside: {e}")))?;
        for ext in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(ext);
            let _ = std::fs::remove_file(side);
        }
        let conn = Connection::open(path).map_err(|e| db_err(&p, e))?;
        let mut cache = Self::init(conn, p)?;
        if let Some(c) = Arc::get_mut(&mut cache) {
            c.rebuilt = Some(format!(
                "{damage}; moved to {} and started an empty cache",
                aside.display()
            ));
        }
        Ok(cache)
    }

    /// The cache over `conn` if the database is intact, else `Ok(Err(what is damaged))`; other
    /// failures (permissions, a lock held too long) are errors and leave the file alone.
    fn check(
        conn: Connection,
        path: Option<PathBuf>,
    ) -> Result<Result<Arc<Cache>, String>, LlmError> {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        let damaged = |e: &rusqlite::Error| {
            matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase))
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| db_err(&path, e))?;
        let verdict = conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0));
        let verdict = match verdict {
            Ok(v) if v == "ok" => return Self::init(conn, path).map(Ok),
            Ok(v) => v,
            Err(e) if damaged(&e) => e.to_string(),
            Err(e) => return Err(db_err(&path, format!("integrity check: {e}"))),
        };
        let shown = path
            .as_ref()
            .map_or(String::new(), |p| format!("{}: ", p.display()));
        Ok(Err(format!("{shown}damaged ({verdict})")))
    }

    /// Why the file found at open was moved aside and the cache started empty, if it was.
    pub fn rebuilt(&self) -> Option<&str> {
        self.rebuilt.as_deref()
    }

    /// A cache that lives in memory only (tests, `--no-cache`-like runs that still want single-flight).
    pub fn in_memory() -> Result<Arc<Cache>, LlmError> {
        let conn = Connection::open_in_memory().map_err(|e| db_err(&None, e))?;
        Self::init(conn, None)
    }

    fn init(conn: Connection, path: Option<PathBuf>) -> Result<Arc<Cache>, LlmError> {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS replies (
                 key TEXT PRIMARY KEY,
                 model TEXT NOT NULL,
                 reply TEXT NOT NULL,
                 created_unix INTEGER NOT NULL
             );",
        )
        .map_err(|e| db_err(&path, e))?;
        Ok(Arc::new(Cache {
            conn: Mutex::new(conn),
            path,
            rebuilt: None,
        }))
    }

    /// The database file, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached reply for `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<ChatReply>, LlmError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT reply FROM replies WHERE key = ?1")
            .map_err(|e| db_err(&self.path, e))?;
        let text: Option<String> = stmt
            .query_row(params![key], |row| row.get(0))
            .optional()
            .map_err(|e| db_err(&self.path, e))?;
        match text {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| db_err(&self.path, format!("entry {key}: field `reply`: {e}"))),
        }
    }

    /// Stores `reply` under `key`.
    pub fn put(&self, key: &str, model: &str, reply: &ChatReply) -> Result<(), LlmError> {
        let mut stored = reply.clone();
        stored.cached = false;
        let text = serde_json::to_string(&stored).map_err(|e| db_err(&self.path, e))?;
        let text = crate::redact::redact_values(&text);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("INSERT OR REPLACE INTO replies (key, model, reply, created_unix) VALUES (?1, ?2, ?3, ?4)")
            .map_err(|e| db_err(&self.path, e))?;
        stmt.execute(params![key, model, text.as_ref(), now])
            .map_err(|e| db_err(&self.path, e))?;
        Ok(())
    }

    /// Number of stored replies.
    pub fn len(&self) -> Result<u64, LlmError> {
        let conn = self.lock();
        conn.query_row("SELECT COUNT(*) FROM replies", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| db_err(&self.path, e))
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> Result<bool, LlmError> {
        self.len().map(|n| n == 0)
    }
}

/// Whether a reply may be stored: no choice was cut by the token budget.
pub(crate) fn cacheable(reply: &ChatReply) -> bool {
    !reply.choices.is_empty()
        && reply
            .choices
            .iter()
            .all(|c| c.finish_reason != FinishReason::Length)
}

type Flight = Arc<OnceCell<Result<ChatReply, LlmError>>>;

/// Serves repeated requests from a [`Cache`] and coalesces identical in-flight requests.
pub struct Cached<M> {
    inner: M,
    cache: Arc<Cache>,
    inflight: Mutex<HashMap<String, Flight>>,
    ledger: Option<Arc<UsageLedger>>,
}

impl<M: ChatModel> Cached<M> {
    /// Wraps `inner`; cache hits are counted in `ledger` when given.
    pub fn new(inner: M, cache: Arc<Cache>, ledger: Option<Arc<UsageLedger>>) -> Cached<M> {
        Cached {
            inner,
            cache,
            inflight: Mutex::new(HashMap::new()),
            ledger,
        }
    }

    fn hit(&self, mut reply: ChatReply, ctx: &CallContext) -> ChatReply {
        reply.cached = true;
        if let Some(l) = &self.ledger {
            l.record_cache_hit(self.inner.name(), &ctx.stage);
        }
        reply
    }
}

#[async_trait::async_trait]
impl<M: ChatModel> ChatModel for Cached<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: &ChatRequest, ctx: &CallContext) -> Result<ChatReply, LlmError> {
        let key = cache_key(self.inner.name(), request);
        if let Some(reply) = self.cache.get(&key)? {
            return Ok(self.hit(reply, ctx));
        }
        let flight: Flight = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let sent = AtomicBool::new(false);
        let result = flight
            .get_or_init(|| async {
                // A flight that finished just before ours was registered has stored its reply.
                if let Ok(Some(reply)) = self.cache.get(&key) {
                    return Ok(reply);
                }
                sent.store(true, Ordering::Relaxed);
                let result = self.inner.chat(request, ctx).await;
                if let Ok(reply) = &result
                    && cacheable(reply)
                    && let Err(e) = self.cache.put(&key, self.inner.name(), reply)
                {
                    tracing::warn!("cache write failed: {e}");
                }
                result
            })
            .await
            .clone();
        {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                map.remove(&key);
            }
        }
        match result {
            Ok(reply) if !sent.load(Ordering::Relaxed) => Ok(self.hit(reply, ctx)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Choice, Usage};

    fn reply(finish: FinishReason) -> ChatReply {
        ChatReply {
            model: "m".into(),
            choices: vec![Choice {
                content: Some("x".into()),
                tool_calls: vec![],
                finish_reason: finish,
            }],
            usage: Usage::default(),
            cached: false,
        }
    }

    #[test]
    fn stores_and_reads_back() {
        let c = Cache::in_memory().unwrap();
        assert!(c.get("k").unwrap().is_none());
        c.put("k", "m", &reply(FinishReason::Stop)).unwrap();
        assert_eq!(c.get("k").unwrap().unwrap().text(), "x");
        assert_eq!(c.len().unwrap(), 1);
    }

    /// Both kinds of damage the hostile user found: a file that is no database, and a database
    /// with a damaged page (`database disk image is malformed`). Each is moved aside and an empty
    /// cache works in its place; an intact one is kept.
    #[test]
    fn a_damaged_file_is_detected_at_open_moved_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        let c = Cache::open(&junk).unwrap();
        assert!(
            c.rebuilt().unwrap().contains("moved to"),
            "{:?}",
            c.rebuilt()
        );
        c.put("k", "m", &reply(FinishReason::Stop)).unwrap();
        assert_eq!(c.get("k").unwrap().unwrap().text(), "x");

        let path = dir.path().join("c.sqlite");
        {
            let c = Cache::open(&path).unwrap();
            let mut long = reply(FinishReason::Stop);
            long.choices[0].content = Some("y".repeat(600));
            for i in 0..200 {
                c.put(&format!("k{i}"), "m", &long).unwrap();
            }
        }
        let intact = Cache::open(&path).unwrap();
        assert_eq!((intact.rebuilt(), intact.len().unwrap()), (None, 200));
        drop(intact);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4096..8192].fill(0xff);
        std::fs::write(&path, bytes).unwrap();
        let c = Cache::open(&path).unwrap();
        let why = c.rebuilt().expect("damage detected").to_string();
        assert!(why.contains("damaged"), "{why}");
        assert_eq!(c.len().unwrap(), 0);
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("c.sqlite.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }

    #[test]
    fn cut_replies_are_not_cacheable() {
        assert!(cacheable(&reply(FinishReason::Stop)));
        assert!(!cacheable(&reply(FinishReason::Length)));
    }
}
