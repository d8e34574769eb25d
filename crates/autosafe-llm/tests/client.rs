//! The model-access stack against the scripted OpenAI-compatible server on loopback.

use autosafe_llm::client::ClientOptions;
use autosafe_llm::pool::PoolConfig;
use autosafe_llm::retry::Backoff;
use autosafe_llm::{
    Cache, CallContext, ChatModel, ChatRequest, FinishReason, JsonSchemaFormat, LlmError, Message,
    ModelSpec, OpenAiClient, ResponseFormat, StackOptions, ToolSpec, UsageLedger, wrap_model,
};
use autosafe_scripted_server::{FaultRates, Reply, ScriptedServer, ServerConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const MODEL: &str = "test-model";

fn spec(urls: Vec<String>, max_concurrency: usize) -> ModelSpec {
    let mut s = ModelSpec::openai(MODEL, urls);
    s.max_concurrency = max_concurrency;
    s.max_attempts = 12;
    s.request_timeout_s = 30.0;
    s
}

fn fast(spec: &ModelSpec) -> ClientOptions {
    let mut pool = PoolConfig::with_max(spec.max_concurrency);
    pool.cooldown = Duration::from_millis(10);
    pool.max_cooldown = Duration::from_millis(50);
    ClientOptions {
        backoff: Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(20),
        },
        pool,
    }
}

struct Stack {
    model: Arc<dyn ChatModel>,
    client: Arc<OpenAiClient>,
    ledger: Arc<UsageLedger>,
}

fn stack_for(spec: &ModelSpec, cache: Option<Arc<Cache>>) -> Stack {
    let ledger = UsageLedger::new();
    let client = Arc::new(
        OpenAiClient::with_options(spec, fast(spec))
            .unwrap()
            .with_ledger(ledger.clone()),
    );
    let opts = StackOptions {
        cache,
        ledger: ledger.clone(),
        max_repairs: 2,
    };
    let model = wrap_model(client.clone(), &opts, !spec.supports_n);
    Stack {
        model,
        client,
        ledger,
    }
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![Message::system("be brief"), Message::user(text)])
}

fn ctx() -> CallContext {
    CallContext::stage("test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hit_sends_no_request_and_a_rerun_sends_zero() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cache").join("replies.sqlite");
    {
        let s = stack_for(
            &spec(vec![server.base_url()], 8),
            Some(Cache::open(&db).unwrap()),
        );
        for i in 0..20 {
            let r = s.model.chat(&ask(&format!("q{i}")), &ctx()).await.unwrap();
            assert_eq!(r.text(), format!("echo: q{i}"));
            assert!(!r.cached);
        }
        assert_eq!(server.request_count(), 20);
        let again = s.model.chat(&ask("q3"), &ctx()).await.unwrap();
        assert!(again.cached);
        assert_eq!(again.text(), "echo: q3");
        assert_eq!(
            server.request_count(),
            20,
            "a cache hit must not send a request"
        );
        let mut other_sample = ask("q3");
        other_sample.sample_index = 1;
        s.model.chat(&other_sample, &ctx()).await.unwrap();
        assert_eq!(
            server.request_count(),
            21,
            "another sample index is another cache entry"
        );
    }
    // A re-run with a fresh stack on the same cache file sends nothing.
    let s = stack_for(
        &spec(vec![server.base_url()], 8),
        Some(Cache::open(&db).unwrap()),
    );
    for i in 0..20 {
        let r = s.model.chat(&ask(&format!("q{i}")), &ctx()).await.unwrap();
        assert!(r.cached);
        assert_eq!(r.text(), format!("echo: q{i}"));
    }
    assert_eq!(server.request_count(), 21);
    let st = s.ledger.stats(MODEL, "test");
    assert_eq!((st.requests, st.cache_hits), (0, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_in_flight_are_sent_once() {
    let server = ScriptedServer::start(ServerConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .unwrap();
    let s = stack_for(
        &spec(vec![server.base_url()], 64),
        Some(Cache::in_memory().unwrap()),
    );
    let mut handles = Vec::new();
    for _ in 0..16 {
        let m = s.model.clone();
        handles.push(tokio::spawn(
            async move { m.chat(&ask("same"), &ctx()).await },
        ));
    }
    let mut cached = 0;
    for h in handles {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.text(), "echo: same");
        cached += usize::from(r.cached);
    }
    assert_eq!(
        server.request_count(),
        1,
        "single-flight: one request for 16 identical callers"
    );
    assert_eq!(cached, 15);
    let st = s.ledger.stats(MODEL, "test");
    assert_eq!((st.requests, st.cache_hits), (1, 15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_replies_and_errors_are_not_cached() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let s = stack_for(
        &spec(vec![server.base_url()], 4),
        Some(Cache::in_memory().unwrap()),
    );
    server.push(Reply::Cut("partial".into()));
    let r = s.model.chat(&ask("long"), &ctx()).await.unwrap();
    assert_eq!(r.choices[0].finish_reason, FinishReason::Length);
    let r = s.model.chat(&ask("long"), &ctx()).await.unwrap();
    assert_eq!(r.text(), "echo: long");
    assert!(!r.cached);
    server.push(Reply::status(404));
    assert!(s.model.chat(&ask("err"), &ctx()).await.is_err());
    assert!(s.model.chat(&ask("err"), &ctx()).await.is_ok());
    assert_eq!(server.request_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_storm_every_request_answered_exactly_once() {
    let faults = FaultRates {
        too_many_requests: 0.07,
        internal_error: 0.07,
        drop_connection: 0.06,
        ..Default::default()
    };
    let cfg = ServerConfig {
        faults,
        retry_after_s: Some(0),
        record_bodies: false,
        seed: 42,
        ..Default::default()
    };
    let server = ScriptedServer::start(cfg).await.unwrap();
    let s = stack_for(&spec(vec![server.base_url()], 64), None);
    let sem = Arc::new(tokio::sync::Semaphore::new(128));
    let mut handles = Vec::new();
    for i in 0..1000 {
        let m = s.model.clone();
        let sem = sem.clone();
        handles.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            m.chat(&ask(&format!("req {i}")), &ctx()).await
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let r = h
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(
            r.text(),
            format!("echo: req {i}"),
            "request {i} got another request's reply"
        );
    }
    let log = server.log();
    let answered = log.iter().filter(|e| e.outcome == "default").count();
    let faults = log.len() - answered;
    assert_eq!(
        answered, 1000,
        "every request answered exactly once by the server"
    );
    assert!(faults > 100, "the storm injected faults ({faults})");
    let st = s.ledger.stats(MODEL, "test");
    assert_eq!(st.requests, 1000);
    assert_eq!(
        st.total_retries() as usize,
        faults,
        "each fault was retried once: {:?}",
        st.retries
    );
    assert!(
        st.retries.contains_key("429")
            && st.retries.contains_key("5xx")
            && st.retries.contains_key("dropped")
    );
    assert_eq!(st.total_errors(), 0);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let s = stack_for(&spec(vec![server.base_url()], 4), None);
    server.push(Reply::status(429).retry_after("1"));
    let r = s.model.chat(&ask("wait"), &ctx()).await.unwrap();
    assert_eq!(r.text(), "echo: wait");
    let log = server.log();
    assert_eq!(log.len(), 2);
    let gap = log[1].at - log[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, Retry-After was 1 s"
    );
    assert_eq!(s.ledger.stats(MODEL, "test").retries.get("429"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aimd_shrinks_under_429_and_recovers() {
    let server = ScriptedServer::start(ServerConfig {
        latency: Duration::from_millis(5),
        ..Default::default()
    })
    .await
    .unwrap();
    server.set_responder(|req| {
        if req.index < 60 {
            Reply::status(429)
        } else {
            Reply::Default
        }
    });
    let s = stack_for(&spec(vec![server.base_url()], 16), None);
    let mut handles = Vec::new();
    for i in 0..400 {
        let m = s.model.clone();
        handles.push(tokio::spawn(async move {
            m.chat(&ask(&format!("r{i}")), &ctx()).await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let log = server.log();
    let after_storm = log
        .iter()
        .skip(60)
        .take(5)
        .map(|e| e.in_flight)
        .max()
        .unwrap();
    let at_end = log
        .iter()
        .skip(log.len() - 100)
        .map(|e| e.in_flight)
        .max()
        .unwrap();
    assert!(
        after_storm <= 3,
        "shrank under 429: {after_storm} in flight right after the 429s"
    );
    assert!(at_end >= 12, "recovered: {at_end} in flight at the end");
    let limit = s.client.endpoints()[0].limit;
    assert!(limit >= 15.0, "limit recovered to {limit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aimd_shrinks_when_a_queueing_server_slows_down() {
    let cfg = ServerConfig {
        // capacity 100 requests/s: a client with 32 in flight queues ~300 ms even on a loaded machine
        latency: Duration::from_millis(20),
        max_parallel: Some(2),
        record_bodies: false,
        ..Default::default()
    };
    let server = ScriptedServer::start(cfg).await.unwrap();
    let s = stack_for(&spec(vec![server.base_url()], 32), None);
    let mut handles = Vec::new();
    for i in 0..600 {
        let m = s.model.clone();
        handles.push(tokio::spawn(async move {
            m.chat(&ask(&format!("r{i}")), &ctx()).await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let log = server.log();
    let late: Vec<usize> = log
        .iter()
        .skip(log.len() - 150)
        .map(|e| e.in_flight)
        .collect();
    let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
    assert!(
        log[..40].iter().map(|e| e.in_flight).max().unwrap() >= 24,
        "started wide"
    );
    assert!(
        mean < 16.0,
        "no 429s, but rising latency shrank the window: mean {mean} in flight late"
    );
    assert!(s.client.endpoints()[0].limit < 16.0);
}

fn schema_request() -> ChatRequest {
    let mut r = ask("judge this");
    r.response_format = Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
        name: "verdict".into(),
        schema: json!({"type": "object", "required": ["label"], "properties": {"label": {"enum": ["safe", "unsafe"]}},
                       "additionalProperties": false}),
        strict: true,
    }));
    r
}

#[tokio::test]
async fn invalid_json_replies_are_retried_then_surfaced_with_raw_text() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let s = stack_for(&spec(vec![server.base_url()], 4), None);
    // repaired on the second try
    server.push(Reply::text("{\"label\": \"maybe\"}"));
    server.push(Reply::text("{\"label\": \"unsafe\"}"));
    let r = s.model.chat(&schema_request(), &ctx()).await.unwrap();
    assert_eq!(r.text(), "{\"label\": \"unsafe\"}");
    let log = server.log();
    assert_eq!(log.len(), 2);
    assert!(log[0].body.as_ref().unwrap()["response_format"]["json_schema"]["schema"].is_object());
    let fed_back = log[1].body.as_ref().unwrap()["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["content"]
        .clone();
    assert!(
        fed_back.as_str().unwrap().contains("/label"),
        "validation error fed back: {fed_back}"
    );
    // never valid: 1 + 2 repairs, then the raw text
    server.push_all([
        Reply::text("not json {"),
        Reply::text("still not"),
        Reply::text("nope {"),
    ]);
    let err = s.model.chat(&schema_request(), &ctx()).await.unwrap_err();
    match err {
        LlmError::InvalidReply { raw, message } => {
            assert_eq!(raw, "nope {");
            assert!(message.contains("not valid JSON"), "{message}");
        }
        other => panic!("expected InvalidReply, got {other}"),
    }
    assert_eq!(server.request_count(), 5);
    assert_eq!(s.ledger.stats(MODEL, "test").repairs, 3);
}

#[tokio::test]
async fn tool_call_arguments_are_validated_and_repaired() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let s = stack_for(&spec(vec![server.base_url()], 4), None);
    let mut req = ask("delete the temp file");
    req.tools = vec![ToolSpec {
        name: "rm".into(),
        description: "remove a file".into(),
        parameters: json!({"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}}),
    }];
    server.push(Reply::tool_call("rm", "{\"path\": 7"));
    server.push(Reply::tool_call("rm", "{\"path\": \"/tmp/x\"}"));
    let r = s.model.chat(&req, &ctx()).await.unwrap();
    assert_eq!(
        r.choices[0].tool_calls[0].arguments,
        "{\"path\": \"/tmp/x\"}"
    );
    let second = server.log()[1].body.clone().unwrap();
    let roles: Vec<&str> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
}

#[tokio::test]
async fn no_retry_on_400_with_a_clear_error() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let s = stack_for(&spec(vec![server.base_url()], 4), None);
    server.push(Reply::Status {
        status: 400,
        retry_after: None,
        body: "{\"error\": \"bad max_tokens\"}".into(),
    });
    let err = s.model.chat(&ask("x"), &ctx()).await.unwrap_err();
    assert_eq!(server.request_count(), 1, "400 is not retried");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 400") && text.contains("bad max_tokens") && text.contains("127.0.0.1"),
        "{text}"
    );
    assert_eq!(
        s.ledger.stats(MODEL, "test").errors.get("http_400"),
        Some(&1)
    );
}

#[tokio::test]
async fn api_key_never_appears_in_cache_or_written_files() {
    const KEY: &str = "sk-autosafe-test-5f1d9c0e7a";
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sp = spec(vec![server.base_url()], 4);
    sp.api_key_env = Some("AUTOSAFE_TEST_KEY".into());
    let ledger = UsageLedger::new();
    let client = OpenAiClient::with_env_lookup(&sp, fast(&sp), |v| {
        (v == "AUTOSAFE_TEST_KEY").then(|| KEY.to_string())
    })
    .unwrap()
    .with_ledger(ledger.clone());
    let cache = Cache::open(&dir.path().join("cache.sqlite")).unwrap();
    let opts = StackOptions {
        cache: Some(cache.clone()),
        ledger: ledger.clone(),
        max_repairs: 2,
    };
    let model = wrap_model(Arc::new(client), &opts, false);
    server.push(Reply::status(401));
    let err = model.chat(&ask("a"), &ctx()).await.unwrap_err();
    assert!(!err.to_string().contains(KEY));
    for i in 0..10 {
        model.chat(&ask(&format!("k{i}")), &ctx()).await.unwrap();
    }
    model.chat(&schema_request(), &ctx()).await.ok();
    assert_eq!(
        server.log()[1].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str()),
        "the key was used"
    );
    ledger.write_json(&dir.path().join("usage.json")).unwrap();
    std::fs::write(dir.path().join("summary.txt"), ledger.summary_table()).unwrap();
    assert!(cache.len().unwrap() >= 10);
    drop(model);
    drop(opts);
    drop(cache);
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "key found in {}",
            path.display()
        );
        let tail = &KEY[KEY.len() - 10..];
        assert!(
            !bytes.windows(tail.len()).any(|w| w == tail.as_bytes()),
            "key part found in {}",
            path.display()
        );
    }
    assert!(files >= 3, "checked {files} files");
}

/// A gateway that echoes the request's `Authorization` header in its error bodies (4xx and 5xx),
/// a base URL with user-info, and a dead URL with user-info: no error text carries the key or the
/// URL password, and the errors still say what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_carry_the_key_or_url_credentials() {
    const KEY: &str = "sk-echo-test-0b7e41d2c9";
    const PW: &str = "pw-userinfo-93aa17";
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    server.set_responder(|info| {
        let status = if info.index == 0 { 400 } else { 500 };
        Reply::Status {
            status,
            retry_after: None,
            body: json!({"error": {"message": "denied", "echo": {"authorization": info.authorization}}, "api-key": KEY})
                .to_string(),
        }
    });
    let with_info = server
        .base_url()
        .replace("http://", &format!("http://bob:{PW}@"));
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://bob:{PW}@{}/v1", l.local_addr().unwrap())
    };
    let mut texts = Vec::new();
    for url in [with_info, dead] {
        let mut sp = spec(vec![url], 4);
        sp.max_attempts = 2;
        sp.api_key_env = Some("AUTOSAFE_ECHO_KEY".into());
        let client = OpenAiClient::with_env_lookup(&sp, fast(&sp), |_| Some(KEY.into())).unwrap();
        let model = wrap_model(Arc::new(client), &StackOptions::default(), false);
        texts.push(model.chat(&ask("a"), &ctx()).await.unwrap_err().to_string());
        texts.push(model.chat(&ask("b"), &ctx()).await.unwrap_err().to_string());
    }
    let sent = server.log()[0].authorization.clone().unwrap_or_default();
    assert!(!sent.is_empty(), "credentials were sent and echoed");
    let scheme = sent.split(' ').next().unwrap_or("");
    assert!(
        texts[0].contains("HTTP 400") && texts[0].contains(&format!("{scheme} ***")),
        "{}",
        texts[0]
    );
    let token = sent.split(' ').nth(1).unwrap_or("");
    assert!(token.len() >= 8, "{sent}");
    assert!(texts[1].contains("HTTP 500"), "{}", texts[1]);
    assert!(texts[2].contains("transport error"), "{}", texts[2]);
    for t in &texts {
        assert!(
            !t.contains(KEY) && !t.contains(PW) && !t.contains(token),
            "secret in: {t}"
        );
        assert!(
            t.contains("http://***@127.0.0.1"),
            "endpoint still named: {t}"
        );
    }
}

#[tokio::test]
async fn missing_key_variable_is_a_config_error() {
    let mut sp = spec(vec!["http://127.0.0.1:9/v1".into()], 4);
    sp.api_key_env = Some("AUTOSAFE_SURELY_UNSET_VAR".into());
    let err = OpenAiClient::with_env_lookup(&sp, fast(&sp), |_| None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("AUTOSAFE_SURELY_UNSET_VAR"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_routes_around_a_dead_url() {
    let server = ScriptedServer::start(ServerConfig {
        latency: Duration::from_millis(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let s = stack_for(&spec(vec![dead, server.base_url()], 8), None);
    let mut handles = Vec::new();
    for i in 0..200 {
        let m = s.model.clone();
        handles.push(tokio::spawn(async move {
            m.chat(&ask(&format!("p{i}")), &ctx()).await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(server.request_count(), 200);
    let st = s.ledger.stats(MODEL, "test");
    let connect = st.retries.get("connect").copied().unwrap_or(0);
    assert!(connect >= 1, "the dead URL was tried");
    assert!(
        connect < 100,
        "the dead URL was cooled down, not hammered ({connect} connect failures)"
    );
}

#[tokio::test]
async fn n_is_sent_or_split_into_single_calls_with_derived_seeds() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let mut req = ask("sample");
    req.n = Some(3);
    req.seed = Some(11);
    let s = stack_for(&spec(vec![server.base_url()], 4), None);
    let r = s.model.chat(&req, &ctx()).await.unwrap();
    assert_eq!((r.choices.len(), server.request_count()), (3, 1));

    let server = ScriptedServer::start(ServerConfig {
        supports_n: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sp = spec(vec![server.base_url()], 4);
    sp.supports_n = false;
    let s = stack_for(&sp, None);
    let r = s.model.chat(&req, &ctx()).await.unwrap();
    assert_eq!((r.choices.len(), server.request_count()), (3, 3));
    let mut seeds: Vec<u64> = server
        .log()
        .iter()
        .map(|e| e.body.as_ref().unwrap()["seed"].as_u64().unwrap())
        .collect();
    assert!(
        server
            .log()
            .iter()
            .all(|e| e.body.as_ref().unwrap().get("n").is_none())
    );
    seeds.sort();
    seeds.dedup();
    assert_eq!(seeds.len(), 3);
}

#[tokio::test]
async fn slow_bodies_time_out_and_malformed_bodies_are_retried() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let mut sp = spec(vec![server.base_url()], 4);
    sp.request_timeout_s = 0.3;
    let s = stack_for(&sp, None);
    server.push(Reply::Slow {
        reply: Box::new(Reply::text("late")),
        chunks: 4,
        chunk_delay: Duration::from_millis(200),
    });
    server.push(Reply::Malformed("{\"choices\": [".into()));
    let r = s.model.chat(&ask("patience"), &ctx()).await.unwrap();
    assert_eq!(r.text(), "echo: patience");
    assert_eq!(server.request_count(), 3);
    let st = s.ledger.stats(MODEL, "test");
    assert_eq!(st.retries.get("timeout"), Some(&1), "{:?}", st.retries);
    assert_eq!(st.retries.get("malformed"), Some(&1), "{:?}", st.retries);
}

#[tokio::test]
async fn usage_is_accounted_per_stage_with_cost() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let mut sp = spec(vec![server.base_url()], 4);
    sp.price = Some(autosafe_llm::Price {
        prompt_per_mtok: 1.0,
        completion_per_mtok: 2.0,
    });
    let opts = StackOptions {
        cache: Some(Cache::in_memory().unwrap()),
        ..Default::default()
    };
    let model = autosafe_llm::build_remote(&sp, &opts).unwrap();
    for stage in ["synthesize", "judge", "judge"] {
        model
            .chat(&ask(stage), &CallContext::stage(stage))
            .await
            .unwrap();
    }
    let report = opts.ledger.report();
    let judge = report.rows.iter().find(|r| r.stage == "judge").unwrap();
    assert_eq!((judge.stats.requests, judge.stats.cache_hits), (1, 1));
    assert!(judge.stats.prompt_tokens > 0 && judge.stats.cost_usd.unwrap() > 0.0);
    assert_eq!(report.total.requests, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.json");
    opts.ledger.write_json(&path).unwrap();
    let back: autosafe_llm::UsageReport =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(back, report);
}
