//! Memory and throughput of the whole chain — synthesize → elicit → reflect → export — over
//! 1,000 and then 50,000 scenarios, against the scripted OpenAI-compatible server (real HTTP on
//! loopback, deterministic replies: `tests/support/bulk.rs`). Every stage handles every record:
//! N generator attempts → N scenarios → N episodes (search, then an unsafe delete: N snapshots
//! and N utility steps) → N reflections (2 rounds each: N safe examples) → N records in each of
//! the five export formats.
//!
//! The server runs in this process; each size runs in a fresh child process (this binary with
//! `--child`), so the peak RSS it reports (`VmHWM`, reset between stages through
//! `/proc/self/clear_refs`) is the pipeline's alone. A third child feeds the 50k run's
//! instructions to a bare MinHash `Deduper`, to show how much of the growth is the dedup index
//! (which must keep one signature per kept scenario). With `CHAIN_SPLIT=1` every size is run
//! again with each stage in its own process (as the stage subcommands run), so a stage's peak
//! excludes heap kept from the stages before it. Run:
//! `CHAIN_SPLIT=1 cargo bench -p autosafe-pipeline --bench chain_50k` (sizes:
//! `CHAIN_SIZES=1000,50000`, the default).

use autosafe_test_support::bulk;
use autosafe_test_support::stages as support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use autosafe_env::{EmulatorFactory, EmulatorMode, EmulatorOptions};
use autosafe_ots::{RiskSource, Scenario, Taxonomy, ToolLibrary};
use autosafe_pipeline::dedup::{DedupConfig, Deduper};
use autosafe_pipeline::export::{ExportConfig, ExportInputs, ToolkitLibrary, export};
use autosafe_pipeline::prompts::Prompts;
use autosafe_pipeline::stages::agent::AgentOptions;
use autosafe_pipeline::stages::elicit::ElicitParts;
use autosafe_pipeline::stages::reflect::ReflectParts;
use autosafe_pipeline::stages::synthesize::SynthInputs;
use autosafe_pipeline::stages::{
    Agent, ElicitConfig, ReflectConfig, StepJudge, SynthConfig, elicit, reflect, synthesize,
};
use autosafe_pipeline::store::RecordReader;
use autosafe_pipeline::{RunDir, Stage};
use autosafe_scripted_server::{ScriptedServer, ServerConfig};
use serde_json::{Value, json};

/// A `/proc/self/status` field in MB.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn peak_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0); false when not possible.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/toolemu")
}

fn inputs() -> SynthInputs {
    let risks = std::fs::read_to_string(data_dir().join("toolkit_risks.json")).unwrap();
    let examples = std::fs::read_to_string(data_dir().join("format_example_cases.json")).unwrap();
    SynthInputs {
        library: ToolLibrary::shipped(),
        taxonomy: Taxonomy::default_taxonomy(),
        toolkit_risks: serde_json::from_str(&risks).unwrap(),
        examples: serde_json::from_str(&examples).unwrap(),
        sandbox: Default::default(),
        reviewer: None,
    }
}

/// Runs the stages named in `only` (all four when empty) of the chain for `n` scenarios in
/// `dir` and returns per-stage figures. Later stages read what earlier ones left in `dir`.
fn child(n: u32, url: &str, dir: &Path, only: &[String]) -> Value {
    let runs = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start_mb = status_mb("VmRSS:");
    let run = RunDir::create(dir, "chain").unwrap();
    let prompts = Arc::new(Prompts::embedded());
    let library = ToolLibrary::shipped();
    let agent = Agent::new(
        support::model_at(url, "agent-m"),
        prompts.clone(),
        AgentOptions::default(),
    );
    let judge = StepJudge::new(support::model_at(url, "judge-m"), prompts.clone());
    let verify =
        StepJudge::new(support::model_at(url, "judge-m"), prompts.clone()).labelled("verify");
    let reflector = StepJudge::new(support::model_at(url, "reflector-m"), prompts.clone())
        .labelled("reflector");
    let env = EmulatorFactory::new(
        support::model_at(url, "emulator-m"),
        EmulatorMode::Adversarial,
        Arc::new(library.clone()),
        EmulatorOptions::default(),
    );
    let mut stages = serde_json::Map::new();
    let mut stage = |name: &str, t: Instant, records: u64, extra: Value| {
        let secs = t.elapsed().as_secs_f64();
        let peak = peak_mb();
        eprintln!(
            "  n={n} {name:<10} {records:>6} records {secs:>7.1} s {:>8.0} rec/s  peak RSS {peak:.1} MB",
            records as f64 / secs
        );
        stages.insert(
            name.into(),
            json!({"records": records, "seconds": secs, "peak_rss_mb": peak, "extra": extra}),
        );
        reset_peak();
    };
    let per_stage_peaks = reset_peak();

    if runs("synthesize") {
        let t = Instant::now();
        let synth_cfg = SynthConfig {
            toolkits: vec!["Todoist".into()],
            categories: vec!["data_loss".into()],
            sources: vec![RiskSource::Instruction],
            per_cell: n,
            concurrency: 32,
            ..Default::default()
        };
        let inputs = inputs();
        let synth = rt
            .block_on(synthesize(
                &run,
                None,
                support::model_at(url, "generator-m"),
                prompts.clone(),
                &inputs,
                &synth_cfg,
            ))
            .unwrap();
        assert_eq!(synth.stats.output, u64::from(n), "{:?}", synth.stats);
        stage("synthesize", t, synth.stats.output, json!(synth.stats));
    }

    if runs("elicit") {
        let t = Instant::now();
        let parts = ElicitParts {
            agent: &agent,
            judge: &judge,
            env: &env,
            library: &library,
        };
        let cfg = ElicitConfig {
            samples: 1,
            max_steps: 4,
            concurrency: 32,
            probe_flagged: false,
            ..Default::default()
        };
        let el = rt
            .block_on(elicit(
                &run,
                None,
                &run.stage_file(Stage::Synthesize, None),
                &parts,
                &cfg,
            ))
            .unwrap();
        assert_eq!(el.elicit.output, u64::from(n), "{:?}", el.elicit);
        assert_eq!(el.utility.output, u64::from(n), "{:?}", el.utility);
        stage("elicit", t, el.elicit.output, json!(el.elicit));
    }

    if runs("reflect") {
        let t = Instant::now();
        let rparts = ReflectParts {
            agent: &agent,
            reflector: &reflector,
            judge: &verify,
            library: &library,
            env: None,
        };
        let snaps = run.stage_file(Stage::Elicit, None);
        let rcfg = ReflectConfig {
            max_rounds: 5,
            concurrency: 32,
        };
        let re = rt
            .block_on(reflect(&run, None, &snaps, &rparts, &rcfg))
            .unwrap();
        assert_eq!(re.stats.output, u64::from(n), "{:?}", re.stats);
        stage("reflect", t, re.stats.output, json!(re.stats));
    }

    let mut export_bytes = 0u64;
    if runs("export") {
        let t = Instant::now();
        let lib = ToolkitLibrary::new(library.toolkits().cloned());
        let ecfg = ExportConfig {
            utility_share: n as usize / 10,
            ..Default::default()
        };
        let (rep, _card) = export(
            ExportInputs {
                safe: &run.stage_file(Stage::Reflect, None),
                utility: Some(&run.stage_file(Stage::Utility, None)),
                snapshots: None,
            },
            &run.path().join("export"),
            &lib,
            &prompts,
            &ecfg,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(rep.records, u64::from(n) + u64::from(n) / 10, "{rep:?}");
        export_bytes = rep
            .files
            .values()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        stage("export", t, rep.records, json!({"bytes": export_bytes}));
    }

    let run_bytes: u64 = [
        "scenarios.jsonl",
        "snapshots.jsonl",
        "utility.jsonl",
        "safe.jsonl",
    ]
    .iter()
    .filter_map(|f| std::fs::metadata(run.path().join(f)).ok())
    .map(|m| m.len())
    .sum();
    json!({
        "n": n,
        "start_rss_mb": start_mb,
        "per_stage_peaks": per_stage_peaks,
        "stages": stages,
        "record_bytes": run_bytes,
        "export_bytes": export_bytes,
    })
}

/// Feeds the instructions of a run's scenarios to a bare `Deduper`: RSS before and after.
fn dedup_child(scenarios: &Path) -> Value {
    let before = status_mb("VmRSS:");
    let mut d = Deduper::new(DedupConfig::default());
    let mut n = 0u64;
    for sc in RecordReader::<Scenario>::open(scenarios).unwrap() {
        let sc = sc.unwrap();
        d.check(&sc.id, &sc.case.user_instruction);
        n += 1;
    }
    let after = status_mb("VmRSS:");
    json!({"texts": n, "kept": d.kept(), "rss_before_mb": before, "rss_after_mb": after})
}

fn result_line(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "child failed: {}\n{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let n: u32 = args[i + 1].parse().unwrap();
        let only: Vec<String> = args[i + 4..]
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect();
        let v = child(n, &args[i + 2], Path::new(&args[i + 3]), &only);
        println!("RESULT {v}");
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--dedup") {
        let v = dedup_child(Path::new(&args[i + 1]));
        println!("RESULT {v}");
        return;
    }
    let sizes: Vec<u32> = std::env::var("CHAIN_SIZES")
        .unwrap_or_else(|_| "1000,50000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("CHAIN_SIZES: numbers"))
        .collect();
    let server = ScriptedServer::start_on_thread(ServerConfig {
        record_bodies: false,
        ..Default::default()
    })
    .unwrap();
    server.set_responder(bulk::respond);
    let exe = std::env::current_exe().unwrap();
    let run_child = |n: u32, dir: &Path, only: &[&str]| {
        let out = Command::new(&exe)
            .args(["--child", &n.to_string(), &server.base_url()])
            .arg(dir)
            .args(only)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        result_line(&out)
    };
    let mut results = Vec::new();
    let mut last_dir = None;
    for &n in &sizes {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("chain_50k: n={n}, the whole chain in one process …");
        let t = Instant::now();
        let v = run_child(n, dir.path(), &[]);
        let peak = v["stages"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| s["peak_rss_mb"].as_f64().unwrap())
            .fold(0.0, f64::max);
        println!(
            "chain_50k n={n}: {:.1} s wall, {} requests, records {:.1} MB, exports {:.1} MB, peak RSS {peak:.1} MB (per stage: {})",
            t.elapsed().as_secs_f64(),
            server.request_count(),
            v["record_bytes"].as_f64().unwrap() / 1e6,
            v["export_bytes"].as_f64().unwrap() / 1e6,
            ["synthesize", "elicit", "reflect", "export"]
                .iter()
                .map(|s| format!("{s} {:.1}", v["stages"][s]["peak_rss_mb"].as_f64().unwrap()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        server.reset();
        results.push((n, peak));
        last_dir = Some(dir);
    }
    if let (Some((n0, p0)), Some((n1, p1))) = (results.first(), results.last())
        && n0 != n1
    {
        println!(
            "chain_50k peak RSS: {p0:.1} MB at {n0}, {p1:.1} MB at {n1}: ratio {:.2} for {:.0}x the records",
            p1 / p0,
            f64::from(*n1) / f64::from(*n0)
        );
    }
    // Each stage in a fresh process (as `autosafe synthesize`, `elicit`, … run one by one), so a
    // stage's peak does not include heap kept by the stages before it.
    if std::env::var("CHAIN_SPLIT").is_ok_and(|v| v == "1") {
        for &n in &sizes {
            let dir = tempfile::tempdir().unwrap();
            eprintln!("chain_50k: n={n}, one process per stage …");
            let peaks: Vec<String> = ["synthesize", "elicit", "reflect", "export"]
                .iter()
                .map(|s| {
                    let v = run_child(n, dir.path(), &[s]);
                    format!("{s} {:.1}", v["stages"][s]["peak_rss_mb"].as_f64().unwrap())
                })
                .collect();
            println!(
                "chain_50k n={n}, one process per stage: peak RSS {} MB",
                peaks.join(", ")
            );
        }
    }
    if let Some(dir) = last_dir {
        let scenarios = dir.path().join("chain").join("scenarios.jsonl");
        let out = Command::new(&exe)
            .arg("--dedup")
            .arg(&scenarios)
            .output()
            .unwrap();
        let v = result_line(&out);
        println!(
            "chain_50k dedup index alone: {} instructions ({} kept): RSS {:.1} → {:.1} MB",
            v["texts"],
            v["kept"],
            v["rss_before_mb"].as_f64().unwrap(),
            v["rss_after_mb"].as_f64().unwrap()
        );
    }
}
