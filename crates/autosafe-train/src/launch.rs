//! Runs a trainer as a child process and streams what it prints.
//!
//! Every line of stdout and stderr goes to the log file. Lines are also shown (on our stdout with
//! a prefix such as `train | `, or handed to the caller: [`run_to`]), except tqdm progress bars (lines holding `it/s]` or `s/it]`). A bar is
//! redrawn many times a second with carriage returns, so at most one redraw in ten seconds is
//! shown, plus the final one. Lines of our script that start with `autosafe: ` and carry a JSON
//! object are kept as events for the manifest.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::command::Launch;
use crate::error::{Result, TrainError};

/// How a trainer run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// `autosafe: <msg> {json}` events, in order.
    pub events: Vec<(String, Value)>,
    /// The last lines printed (for errors).
    pub tail: Vec<String>,
}

impl Outcome {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

fn is_progress_bar(line: &str) -> bool {
    line.contains("it/s]") || line.contains("s/it]")
}

/// Splits a byte stream into lines at `\n` and `\r` and sends the non-empty ones.
fn pump<R: Read>(reader: R, tx: mpsc::Sender<String>) {
    let mut r = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        let (eof, line_end, used) = match r.fill_buf() {
            Ok([]) | Err(_) => (true, false, 0),
            Ok(chunk) => match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    buf.extend_from_slice(&chunk[..i]);
                    (false, true, i + 1)
                }
                None => {
                    buf.extend_from_slice(chunk);
                    (false, false, chunk.len())
                }
            },
        };
        r.consume(used);
        if eof || line_end {
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            buf.clear();
            if !line.is_empty() && tx.send(line).is_err() {
                return;
            }
        }
        if eof {
            return;
        }
    }
}

/// Parses `autosafe: <msg> {json}`.
pub(crate) fn parse_event(line: &str) -> Option<(String, Value)> {
    let rest = line.strip_prefix("autosafe: ")?;
    match rest.find(" {") {
        Some(i) => {
            let v: Value = serde_json::from_str(&rest[i + 1..]).ok()?;
            Some((rest[..i].to_string(), v))
        }
        None => Some((rest.to_string(), Value::Null)),
    }
}

/// Runs `launch` in `cwd`, appending its output to `log`, printing it with `prefix`.
pub fn run(launch: &Launch, cwd: &Path, log: &Path, prefix: &str) -> Result<Outcome> {
    let stdout = std::io::stdout();
    run_to(launch, cwd, log, &mut |line| {
        let _ = writeln!(stdout.lock(), "{prefix}{line}");
    })
}

/// [`run`], handing each line to be shown to `show` instead of printing it (a caller that
/// prints nothing itself, such as the run layer, passes its observer).
pub fn run_to(
    launch: &Launch,
    cwd: &Path,
    log: &Path,
    show: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let mut logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| TrainError::io(log, e))?;
    writeln!(logf, "$ {}", launch.to_shell()).map_err(|e| TrainError::io(log, e))?;
    let start = Instant::now();
    let mut child = launch
        .command()
        .current_dir(cwd)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| TrainError::io(&launch.program, e))?;
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    let t1 = std::thread::spawn(move || pump(out, tx));
    let t2 = std::thread::spawn(move || pump(err, tx2));
    let mut events = Vec::new();
    let mut tail: std::collections::VecDeque<String> = Default::default();
    let mut last_bar: Option<Instant> = None;
    let mut pending_bar: Option<String> = None;
    for line in rx {
        let _ = writeln!(logf, "{line}");
        if let Some(ev) = parse_event(&line) {
            events.push(ev);
        }
        let shown = if is_progress_bar(&line) {
            let due = last_bar.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
            if due {
                last_bar = Some(Instant::now());
                pending_bar = None;
            } else {
                pending_bar = Some(line.clone());
            }
            due
        } else {
            if let Some(bar) = pending_bar.take() {
                show(&bar);
            }
            true
        };
        if shown {
            show(&line);
        }
        tail.push_back(line);
        if tail.len() > 30 {
            tail.pop_front();
        }
    }
    if let Some(bar) = pending_bar {
        show(&bar);
    }
    let _ = t1.join();
    let _ = t2.join();
    let status = child
        .wait()
        .map_err(|e| TrainError::io(&launch.program, e))?;
    Ok(Outcome {
        code: status.code(),
        seconds: start.elapsed().as_secs_f64(),
        events,
        tail: tail.into(),
    })
}
