//! The HTML report opens in headless Chromium (Debian `chromium`, installed by
//! `scripts/setup.sh`; `AUTOSAFE_CHROMIUM` overrides the binary) and shows its plots.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autosafe_eval::jsonl::write_jsonl;
use autosafe_eval::metrics::Label;
use autosafe_eval::report::Report;
use autosafe_eval::report::plots::{RUN_COLOURS, SAFE_COLOUR, UNMEASURED_COLOUR, UNSAFE_COLOUR};
use autosafe_eval::result_files::{EVAL_DIR, JUDGE_FILE, RunResults, SNAPSHOTS_FILE, TOOLEMU_FILE};
use autosafe_eval::result_records::{
    Helpfulness, HelpfulnessVerdict, JudgePair, RubricOutcome, SnapshotEval, ToolEmuEpisode,
};
use autosafe_ots::{JudgeKind, JudgeRef, Judgement, RiskSource, UnmeasuredReason, Verdict};

fn judge() -> JudgeRef {
    JudgeRef {
        kind: JudgeKind::Llm,
        name: "scripted".into(),
    }
}

/// Snapshot results where snapshot `i` has `safe_samples(i)` safe samples of 5 (the rest
/// unsafe), and every 7th has an unmeasured sample 2.
fn snapshots(safe_samples: impl Fn(usize) -> usize) -> Vec<SnapshotEval> {
    let cats = ["privacy_leak", "data_loss", "financial_loss"];
    (0..30)
        .map(|i| {
            let safe = safe_samples(i);
            let samples = (0..5)
                .map(|s| {
                    let judgement = if i % 7 == 0 && s == 2 {
                        Judgement::Unmeasured {
                            reason: UnmeasuredReason::ParseError,
                            detail: "no label".into(),
                        }
                    } else if s < safe {
                        Judgement::Safe
                    } else {
                        Judgement::Unsafe
                    };
                    Verdict {
                        judgement,
                        rationale: String::new(),
                        score: None,
                        judge: judge(),
                        raw: None,
                    }
                })
                .collect();
            SnapshotEval {
                snapshot_id: format!("sn_{i:04}"),
                scenario_id: format!("sc_{:04}", i / 2),
                categories: vec![cats[i % 3].to_string()],
                source: Some(RiskSource::ALL[i % 3]),
                toolkits: vec![["Terminal", "Gmail"][i % 2].to_string()],
                samples,
                helpfulness: Some(HelpfulnessVerdict {
                    judgement: if i % 4 == 0 {
                        Helpfulness::Unhelpful
                    } else {
                        Helpfulness::Helpful
                    },
                    rationale: String::new(),
                    judge: judge(),
                }),
                agent: None,
            }
        })
        .collect()
}

fn write_run(dir: &Path, snaps: &[SnapshotEval], with_extras: bool) {
    let eval = dir.join(EVAL_DIR);
    std::fs::create_dir_all(&eval).unwrap();
    write_jsonl(&eval.join(SNAPSHOTS_FILE), snaps).unwrap();
    if with_extras {
        let eps: Vec<ToolEmuEpisode> = (0..12)
            .map(|i| ToolEmuEpisode {
                case_id: format!("official_{i}"),
                case_idx: Some(i),
                toolkits: vec![],
                safety: RubricOutcome::Score((i % 4) as u8),
                helpfulness: Some(RubricOutcome::Score(((i + 1) % 4) as u8)),
                agent: None,
            })
            .collect();
        write_jsonl(&eval.join(TOOLEMU_FILE), &eps).unwrap();
        let pairs: Vec<JudgePair> = (0..10)
            .map(|i| JudgePair {
                item_id: i.to_string(),
                dataset: "assebench".into(),
                gold: if i < 5 { Label::Unsafe } else { Label::Safe },
                predicted: if i % 3 == 0 {
                    Judgement::Unsafe
                } else {
                    Judgement::Safe
                },
                judge: None,
            })
            .collect();
        write_jsonl(&eval.join(JUDGE_FILE), &pairs).unwrap();
    }
}

fn chromium() -> String {
    std::env::var("AUTOSAFE_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

#[test]
fn html_report_opens_in_headless_chromium_and_shows_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let before = tmp.path().join("before");
    let after = tmp.path().join("after");
    write_run(&before, &snapshots(|i| [0, 2, 5, 5, 1][i % 5]), true);
    write_run(&after, &snapshots(|i| [5, 5, 5, 4, 5][i % 5]), false);
    let runs = vec![
        RunResults::load(&before).unwrap(),
        RunResults::load(&after).unwrap(),
    ];
    let report = Report::build(&runs);
    let cmp = report
        .comparison
        .as_ref()
        .expect("two runs with snapshots are compared");
    assert_eq!(cmp.overall.shared, 30);
    let files = report.write(&tmp.path().join("report.html")).unwrap();

    let html = std::fs::read_to_string(&files.html).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "four plots inline");
    for forbidden in ["<script", "<link", " src=", "@import", "url("] {
        assert!(
            !html.contains(forbidden),
            "report is not self-contained: contains {forbidden:?}"
        );
    }
    assert!(html.contains("McNemar"));
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(
        md.contains("| before | all | 30 |") || md.contains("| before | 30 |"),
        "{md}"
    );
    let back: Report =
        serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    // (serde_json's default float parsing is not bit-exact, so compare the exact parts.)
    assert_eq!(
        back.runs.iter().map(|r| r.run.as_str()).collect::<Vec<_>>(),
        ["before", "after"]
    );
    assert_eq!(
        back.comparison.as_ref().map(|c| c.overall.table),
        Some(cmp.overall.table)
    );
    // before → after on safe@1: 24 stay safe, 6 become safe, none regress: exact p = 2/2^6.
    assert_eq!(
        (
            cmp.overall.table.a_unsafe_b_safe,
            cmp.overall.table.a_safe_b_unsafe
        ),
        (6, 0)
    );
    assert!((cmp.overall.mcnemar.p_value - 0.03125).abs() < 1e-12);
    // Per category (i % 3): sample 0 is unsafe before only for i ≡ 0 (mod 5), i.e. i = 0, 5,
    // 10, 15, 20, 25 -> categories 0, 2, 1, 0, 2, 1: two improvements per category.
    for cat in ["privacy_leak", "data_loss", "financial_loss"] {
        let p = &cmp.by_category[cat];
        assert_eq!(
            (p.shared, p.table.a_unsafe_b_safe, p.table.a_safe_b_unsafe),
            (10, 2, 0),
            "{cat}"
        );
    }
    assert!(html.contains("Per risk category (categories of A"));

    // Render it.
    let png_path = tmp.path().join("shot.png");
    let profile = tmp.path().join("profile");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1200,1600")
        .arg(format!("file://{}", files.html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `{}` ({e}); scripts/setup.sh installs Debian chromium",
                chromium()
            )
        });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "chromium failed: {status}\n{stderr}");
    for bad in ["Uncaught", "net::ERR_", "Failed to load resource"] {
        assert!(
            !stderr.contains(bad),
            "chromium reported {bad:?}:\n{stderr}"
        );
    }

    // Decode the screenshot: not blank, and the plot colours are on it.
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 1600));
    let channels = info.line_size / info.width as usize;
    assert!(
        channels >= 3,
        "unexpected colour type {:?}",
        info.color_type
    );
    let pixels: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    assert!(
        pixels.iter().any(|p| *p != pixels[0]),
        "screenshot is a single colour"
    );
    let count =
        |c: plotters::style::RGBColor| pixels.iter().filter(|p| **p == [c.0, c.1, c.2]).count();
    for (name, colour) in [
        ("run 1 bars", RUN_COLOURS[0]),
        ("run 2 bars", RUN_COLOURS[1]),
        ("safe share", SAFE_COLOUR),
        ("unsafe share", UNSAFE_COLOUR),
        ("unmeasured share", UNMEASURED_COLOUR),
    ] {
        let n = count(colour);
        assert!(
            n > 200,
            "{name}: only {n} pixels of {colour:?} in the screenshot"
        );
    }
}
