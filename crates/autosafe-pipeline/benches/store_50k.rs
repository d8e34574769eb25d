//! Record store throughput and memory: 1,000 then 50,000 D_safe records (built from ToolEmu's
//! `official_0`, ~4 KB each) written by 8 concurrent producers through one writer, then
//! recovered (resume scan) and streamed back. Prints rates and the process's peak RSS after
//! each size: the store holds ids, not records, so peak RSS should barely grow. Run:
//! `cargo bench -p autosafe-pipeline --bench store_50k`.

#[path = "../src/fixtures.rs"]
mod fixtures;

use std::time::Instant;

use autosafe_pipeline::stage_records::SafeExample;
use autosafe_pipeline::store::{RecordReader, RecordWriter, recover};

fn peak_rss_mb() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} MB", kb / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

fn record(base: &SafeExample, i: usize) -> SafeExample {
    let mut ex = base.clone();
    ex.parent_id = format!("sn_{i:016x}");
    ex.id = SafeExample::compute_id(&ex.parent_id, ex.origin, &ex.safe_turn);
    ex
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = fixtures::reflected_example();
    let line_len = serde_json::to_string(&base).unwrap().len();
    println!(
        "store_50k record size ~{line_len} bytes; peak RSS at start {}",
        peak_rss_mb()
    );
    for n in [1_000usize, 50_000] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safe.jsonl");
        let start = Instant::now();
        rt.block_on(async {
            let (w, _) = RecordWriter::<SafeExample>::open(&path, 64).unwrap();
            let producers = 8;
            let mut tasks = Vec::new();
            for p in 0..producers {
                let tx = w.sender();
                let base = base.clone();
                tasks.push(tokio::spawn(async move {
                    for i in (p..n).step_by(producers) {
                        tx.send(record(&base, i)).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let report = w.finish().await.unwrap();
            assert_eq!(report.written as usize, n);
        });
        let write_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let resume = recover(&path).unwrap();
        let recover_s = start.elapsed().as_secs_f64();
        assert_eq!(resume.records as usize, n);
        let start = Instant::now();
        let mut count = 0;
        for r in RecordReader::<SafeExample>::open(&path).unwrap() {
            r.unwrap();
            count += 1;
        }
        let read_s = start.elapsed().as_secs_f64();
        assert_eq!(count, n);
        let size = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
        println!(
            "store_50k n={n} file={size:.1} MB write={:.0} rec/s recover={:.0} rec/s read={:.0} rec/s peak RSS {}",
            n as f64 / write_s,
            n as f64 / recover_s,
            n as f64 / read_s,
            peak_rss_mb()
        );
    }
}
