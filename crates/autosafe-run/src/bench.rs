//! `autosafe bench client`: the full remote model stack (pool, AIMD, retries, structured-output
//! and usage layers; cache off) against the scripted server started in-process on its own thread,
//! optionally followed by the Python reference (AsyncOpenAI + asyncio.Semaphore) against the same
//! server in the same run. The figures come back as one JSON object; the binary prints them.

use anyhow::{Context, bail};
use autosafe_llm::{
    CallContext, ChatModel, ChatRequest, ClientOptions, Message, ModelSpec, StackOptions,
};
use autosafe_scripted_server::{ScriptedServer, ServerConfig};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::observe::Observer;

/// What `autosafe bench client` measures.
#[derive(Debug, Clone)]
pub struct ClientBench {
    /// Requests to send (after a warm-up of `concurrency` requests).
    pub requests: usize,
    /// Most requests in flight.
    pub concurrency: usize,
    /// Server latency per request in milliseconds.
    pub latency_ms: u64,
    /// Uniform server jitter (±) in milliseconds.
    pub jitter_ms: u64,
    /// Also run the Python reference against the same server and compare.
    pub vs_python: bool,
    /// Python interpreter of the reference (default: `$AUTOSAFE_HOME/venv/bench/bin/python`).
    pub python: Option<PathBuf>,
    /// Client runtime worker threads (default: available cores).
    pub threads: Option<usize>,
}

/// CPU time (user + system) this process has used so far, from /proc/self/stat (Linux).
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports these in USER_HZ clock ticks, 100 per second on every mainstream ABI.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Peak resident set size of this process in MB (VmHWM from /proc/self/status, Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

const PYTHON_SCRIPT: &str = include_str!("../../../python/bench_client.py");

fn autosafe_home() -> PathBuf {
    if let Some(h) = std::env::var_os("AUTOSAFE_HOME") {
        return PathBuf::from(h);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("autosafe")
}

struct RustRun {
    seconds: f64,
    errors: usize,
    /// Why each failed request failed.
    failures: Vec<String>,
    cpu: Option<Duration>,
    server_cpu: Option<Duration>,
    p50_ms: f64,
    p99_ms: f64,
    retries: u64,
}

fn request(i: usize) -> ChatRequest {
    let mut r = ChatRequest::new(vec![
        Message::system("You are a benchmark."),
        Message::user(format!("request {i}")),
    ]);
    r.max_tokens = Some(16);
    r
}

async fn send_all(
    model: &Arc<dyn ChatModel>,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> (Vec<String>, Vec<f64>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let ctx = CallContext::stage("bench");
    let mut set = tokio::task::JoinSet::new();
    for i in range {
        let model = model.clone();
        let sem = sem.clone();
        let ctx = ctx.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.ok();
            let t = Instant::now();
            let failure = match model.chat(&request(i), &ctx).await {
                Ok(reply) if reply.text() == format!("echo: request {i}") => None,
                Ok(reply) => Some(format!("request {i}: wrong reply {:?}", reply.text())),
                Err(e) => Some(format!("request {i} failed: {e}")),
            };
            (failure, t.elapsed().as_secs_f64() * 1000.0)
        });
    }
    let mut failures = Vec::new();
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        let (failure, ms) = r.unwrap_or_else(|e| (Some(format!("task failed: {e}")), 0.0));
        failures.extend(failure);
        lat.push(ms);
    }
    (failures, lat)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run_rust(args: &ClientBench, server: &ScriptedServer) -> anyhow::Result<RustRun> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(t) = args.threads {
        builder.worker_threads(t.max(1));
    }
    let rt = builder.build().context("starting the client runtime")?;
    let mut spec = ModelSpec::openai("bench", vec![server.base_url()]);
    spec.max_concurrency = args.concurrency;
    let opts = StackOptions::default();
    let (model, _client) =
        autosafe_llm::build_remote_with(&spec, ClientOptions::for_spec(&spec), &opts)
            .context("building the client")?;
    rt.block_on(async {
        let (warm_failures, _) = send_all(
            &model,
            1_000_000..1_000_000 + args.concurrency.min(args.requests),
            args.concurrency,
        )
        .await;
        if let Some(first) = warm_failures.first() {
            bail!(
                "{} warm-up requests failed; first: {first}",
                warm_failures.len()
            );
        }
        server.reset();
        let cpu0 = process_cpu_time();
        let server_cpu0 = server.server_cpu_time();
        let t0 = Instant::now();
        let (failures, mut lat) = send_all(&model, 0..args.requests, args.concurrency).await;
        let seconds = t0.elapsed().as_secs_f64();
        let cpu = process_cpu_time()
            .zip(cpu0)
            .map(|(a, b)| a.saturating_sub(b));
        let server_cpu = server
            .server_cpu_time()
            .zip(server_cpu0)
            .map(|(a, b)| a.saturating_sub(b));
        lat.sort_by(f64::total_cmp);
        let retries = opts.ledger.report().total.total_retries();
        Ok(RustRun {
            seconds,
            errors: failures.len(),
            failures,
            cpu,
            server_cpu,
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            retries,
        })
    })
}

fn run_python(args: &ClientBench, server: &ScriptedServer) -> anyhow::Result<serde_json::Value> {
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| autosafe_home().join("venv/bench/bin/python"));
    if !python.exists() {
        bail!(
            "the Python reference needs the interpreter {} (a venv with the `openai` package from \
             python/requirements-bench.txt), which is missing; install it with `scripts/setup-python.sh bench` \
             (or `scripts/setup.sh`), or pass --python PATH",
            python.display()
        );
    }
    let script =
        std::env::temp_dir().join(format!("autosafe-bench-client-{}.py", std::process::id()));
    std::fs::write(&script, PYTHON_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    server.reset();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(["--base-url", &server.base_url(), "--model", "bench"])
        .args([
            "--requests",
            &args.requests.to_string(),
            "--concurrency",
            &args.concurrency.to_string(),
        ])
        .output()
        .with_context(|| format!("running {}", python.display()));
    let _ = std::fs::remove_file(&script);
    let out = out?;
    if !out.status.success() {
        bail!(
            "the Python reference failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .with_context(|| format!("the Python reference printed no JSON line: {stdout}"))
}

/// Runs the benchmark: its figures as one JSON object (`errors` counts failed requests, each of
/// which `obs` is told about).
pub fn client(args: &ClientBench, obs: &dyn Observer) -> anyhow::Result<serde_json::Value> {
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let cfg = ServerConfig {
        latency: Duration::from_millis(args.latency_ms),
        jitter: Duration::from_millis(args.jitter_ms.min(args.latency_ms)),
        record_bodies: false,
        model: "bench".into(),
        ..Default::default()
    };
    let server = ScriptedServer::start_on_thread(cfg).context("starting the scripted server")?;
    let r = run_rust(args, &server)?;
    for f in &r.failures {
        obs.stderr(&format!("{f}\n"));
    }
    let n = args.requests as f64;
    let rps = n / r.seconds;
    let ideal = args.concurrency as f64 / (args.latency_ms.max(1) as f64 / 1000.0);
    let ideal = ideal.min(n / (args.latency_ms.max(1) as f64 / 1000.0));
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let process_cpu_ms = ms(r.cpu);
    let server_cpu_ms = ms(r.server_cpu);
    let client_cpu_ms = process_cpu_ms.map(|p| (p - server_cpu_ms.unwrap_or(0.0)).max(0.0));
    let mut out = json!({
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "errors": r.errors,
        "retries": r.retries,
        "seconds": r.seconds,
        "requests_per_s": rps,
        "ideal_requests_per_s": ideal,
        "ratio_to_ideal": rps / ideal,
        "latency_p50_ms": r.p50_ms,
        "latency_p99_ms": r.p99_ms,
        "cpu_ms_per_request": client_cpu_ms.map(|c| c / n),
        "process_cpu_ms_per_request": process_cpu_ms.map(|c| c / n),
        "server_cpu_ms_per_request": server_cpu_ms.map(|c| c / n),
        "peak_rss_mb": peak_rss_mb(),
    });
    if args.vs_python {
        let py = run_python(args, &server)?;
        let py_rps = py["requests_per_s"].as_f64().unwrap_or(0.0);
        out["python_requests_per_s"] = json!(py_rps);
        out["python_errors"] = py["errors"].clone();
        out["python_cpu_ms_per_request"] = json!(py["cpu_s"].as_f64().map(|c| c * 1000.0 / n));
        out["ratio_vs_python"] = json!(if py_rps > 0.0 { rps / py_rps } else { f64::NAN });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{StagePlan, StageWatch};
    use std::sync::Mutex;

    /// Keeps what the benchmark says on stderr.
    #[derive(Default)]
    struct Said(Mutex<String>);

    struct NoWatch;
    impl StageWatch for NoWatch {
        fn finish(self: Box<Self>) {}
    }

    impl Observer for Said {
        fn stdout(&self, _: &str) {}
        fn stderr(&self, text: &str) {
            self.0.lock().unwrap().push_str(text);
        }
        fn stage(&self, _: StagePlan) -> Box<dyn StageWatch> {
            Box::new(NoWatch)
        }
    }

    #[test]
    fn the_client_benchmark_sends_every_request_through_the_stack_and_reports_its_figures() {
        let bench = ClientBench {
            requests: 120,
            concurrency: 16,
            latency_ms: 2,
            jitter_ms: 0,
            vs_python: false,
            python: None,
            threads: Some(1),
        };
        let said = Said::default();
        let out = client(&bench, &said).unwrap();
        assert_eq!(out["requests"], 120);
        assert_eq!(out["errors"], 0, "{}", said.0.lock().unwrap());
        assert!(out["requests_per_s"].as_f64().unwrap() > 0.0);
        let (p50, p99) = (
            out["latency_p50_ms"].as_f64().unwrap(),
            out["latency_p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 >= 2.0 && p99 >= p50, "{out}");
        assert!(said.0.lock().unwrap().is_empty());
    }
}
