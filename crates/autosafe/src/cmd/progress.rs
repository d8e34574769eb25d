//! Progress of a pipeline stage: records done / total, rate, ETA, tokens and cost (when the
//! models have prices). On a terminal it is an `indicatif` bar on stderr; otherwise (a log file,
//! a CI job, a scheduler) it is a plain line on stderr every `AUTOSAFE_PROGRESS_SECS` seconds
//! (default 10) and one when the stage ends:
//!
//! ```text
//! progress elicit: 120/400 (30%) 4.1/s ETA 1m08s elapsed 29s tokens 51234 cost n/a
//! ```
//!
//! "Done" is what the stage has made durable: the lines of its outcome log
//! (`synthesize_log.jsonl`, `elicit_log.jsonl`, `reflect_log.jsonl`, or their shard files), one
//! per finished attempt, episode or snapshot, counted as the file grows. Lines already there when
//! the stage starts (a resumed run) count as done but not towards the rate.

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use autosafe_llm::UsageLedger;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counts the newlines of a growing file incrementally (re-counting if it was truncated).
struct LineCounter {
    path: PathBuf,
    offset: u64,
    lines: u64,
}

impl LineCounter {
    fn new(path: &Path) -> LineCounter {
        LineCounter {
            path: path.to_path_buf(),
            offset: 0,
            lines: 0,
        }
    }

    fn poll(&mut self) -> u64 {
        let Ok(mut f) = File::open(&self.path) else {
            return self.lines;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated (a torn tail dropped on resume): count again.
            self.offset = 0;
            self.lines = 0;
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.lines;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_ok() {
            // Count only complete lines; a partial last line is counted when it completes.
            if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
                self.lines += buf[..=last].iter().filter(|&&b| b == b'\n').count() as u64;
                self.offset += last as u64 + 1;
            }
        }
        self.lines
    }
}

/// Tokens and cost of the whole ledger.
fn usage(ledger: &UsageLedger) -> (u64, Option<f64>) {
    let t = ledger.report().total;
    (t.prompt_tokens + t.completion_tokens, t.cost_usd)
}

fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// What one progress report says.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Records done (including those resumed).
    pub done: u64,
    /// Records to do in all, when known.
    pub total: Option<u64>,
    /// Records per second since the stage started (resumed ones excluded).
    pub rate: f64,
    /// Tokens used since the stage started.
    pub tokens: u64,
    /// Cost since the stage started, when every model has a price.
    pub cost: Option<f64>,
    /// Time since the stage started.
    pub elapsed: Duration,
}

impl Snapshot {
    /// `120/400 (30%) 4.1/s ETA 1m08s tokens 51234 cost n/a`.
    pub fn message(&self) -> String {
        let cost = self
            .cost
            .map(|c| format!("${c:.4}"))
            .unwrap_or_else(|| "n/a".into());
        let head = match self.total {
            Some(t) => format!(
                "{}/{t} ({:.0}%)",
                self.done,
                if t == 0 {
                    100.0
                } else {
                    100.0 * self.done as f64 / t as f64
                }
            ),
            None => format!("{}", self.done),
        };
        format!(
            "{head} {:.1}/s ETA {} elapsed {} tokens {} cost {cost}",
            self.rate,
            self.eta(),
            duration(self.elapsed.as_secs_f64()),
            self.tokens
        )
    }

    /// The estimated time left.
    pub fn eta(&self) -> String {
        match self.total {
            Some(t) if self.done >= t => "0s".into(),
            Some(t) if self.rate > 0.0 => duration((t - self.done) as f64 / self.rate),
            _ => "?".into(),
        }
    }
}

/// A running progress display of one stage; [`StageProgress::finish`] ends it.
pub struct StageProgress {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StageProgress {
    /// Starts watching `log` for stage `stage` with `total` records to do (when known).
    pub fn start(
        stage: &str,
        log: &Path,
        total: Option<u64>,
        ledger: Arc<UsageLedger>,
    ) -> StageProgress {
        let interval = std::env::var("AUTOSAFE_PROGRESS_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(10));
        let terminal = std::io::stderr().is_terminal();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let ok = Arc::new(AtomicBool::new(false));
        let ok2 = ok.clone();
        let stage = stage.to_string();
        let mut counter = LineCounter::new(log);
        let thread = std::thread::Builder::new()
            .name(format!("progress-{stage}"))
            .spawn(move || {
                let start = Instant::now();
                let resumed = counter.poll();
                let (tokens0, cost0) = usage(&ledger);
                let snap = |counter: &mut LineCounter| {
                    let done = counter.poll();
                    let elapsed = start.elapsed();
                    let (tokens, cost) = usage(&ledger);
                    Snapshot {
                        done,
                        total,
                        rate: done.saturating_sub(resumed) as f64 / elapsed.as_secs_f64().max(1e-3),
                        tokens: tokens.saturating_sub(tokens0),
                        cost: cost.map(|c| c - cost0.unwrap_or(0.0)),
                        elapsed,
                    }
                };
                let bar = terminal.then(|| {
                    let bar = match total {
                        Some(t) => {
                            ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr())
                        }
                        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                    };
                    let template = if total.is_some() {
                        "{prefix:>10} [{bar:30.cyan/blue}] {msg}"
                    } else {
                        "{prefix:>10} {spinner} {msg}"
                    };
                    if let Ok(style) = ProgressStyle::with_template(template) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar.set_prefix(stage.clone());
                    bar
                });
                let mut last_line = Instant::now();
                loop {
                    let stopping = stop2.load(Ordering::SeqCst);
                    let end = if ok2.load(Ordering::SeqCst) {
                        "done"
                    } else {
                        "stopped"
                    };
                    let s = snap(&mut counter);
                    match &bar {
                        Some(bar) => {
                            bar.set_position(s.done);
                            bar.set_message(s.message());
                            if stopping {
                                bar.finish_with_message(format!(
                                    "{} {end} in {}",
                                    s.message(),
                                    duration(s.elapsed.as_secs_f64())
                                ));
                            }
                        }
                        None if stopping => eprintln!(
                            "progress {stage}: {} {end} in {}",
                            s.message(),
                            duration(s.elapsed.as_secs_f64())
                        ),
                        None if last_line.elapsed() >= interval => {
                            eprintln!("progress {stage}: {}", s.message());
                            last_line = Instant::now();
                        }
                        None => {}
                    }
                    if stopping {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        StageProgress { stop, ok, thread }
    }

    /// Draws the final state and stops.
    pub fn finish(mut self) {
        self.ok.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StageProgress {
    /// A stage that failed: the last state is reported as `stopped`.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counter_counts_complete_lines_as_the_file_grows_and_after_truncation() {
        let dir = std::env::temp_dir().join(format!("autosafe-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log.jsonl");
        let mut c = LineCounter::new(&p);
        assert_eq!(c.poll(), 0, "missing file");
        std::fs::write(&p, "{\"id\":1}\n{\"id\":2}\n{\"id\"").unwrap();
        assert_eq!(c.poll(), 2, "the partial line is not done yet");
        std::fs::write(&p, "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n").unwrap();
        assert_eq!(c.poll(), 3);
        std::fs::write(&p, "{\"id\":1}\n").unwrap();
        assert_eq!(c.poll(), 1, "truncated: counted again");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn message_has_counts_rate_eta_tokens_and_cost() {
        let s = Snapshot {
            done: 120,
            total: Some(400),
            rate: 4.0,
            tokens: 51234,
            cost: None,
            elapsed: Duration::from_secs(30),
        };
        assert_eq!(
            s.message(),
            "120/400 (30%) 4.0/s ETA 1m10s elapsed 30s tokens 51234 cost n/a"
        );
        let s = Snapshot {
            cost: Some(0.0123),
            done: 400,
            ..s
        };
        assert_eq!(
            s.message(),
            "400/400 (100%) 4.0/s ETA 0s elapsed 30s tokens 51234 cost $0.0123"
        );
    }
}
