//! Latency of the terminal sandbox: episode start (fixture build) and one `execute`, over the
//! shipped scenarios, and what the seccomp filter adds to one `echo hi`. Run:
//! `cargo bench -p autosafe-sandbox --bench episode`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use autosafe_sandbox::selftest::bare_setup;
use autosafe_sandbox::{SandboxConfig, TerminalEpisode, load_dir};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/terminal");
    let scenarios = load_dir(&dir).expect("scenarios load");
    let cfg = SandboxConfig::default();
    let rounds = 5;
    let (mut starts, mut execs, mut finishes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for s in &scenarios {
            let t = Instant::now();
            let mut ep = TerminalEpisode::start(s.setup(), &cfg).expect("start");
            starts.push(t.elapsed());
            let t = Instant::now();
            ep.execute("ls -la ~ >/dev/null; echo ok").expect("execute");
            execs.push(t.elapsed());
            let t = Instant::now();
            let _ = ep.finish(None);
            finishes.push(t.elapsed());
        }
    }
    let n = starts.len();
    println!(
        "scenarios: {}, rounds: {rounds}, samples: {n}",
        scenarios.len()
    );
    println!(
        "start  median {:>8.1?}  max {:>8.1?}",
        median(starts.clone()),
        starts.iter().max().unwrap()
    );
    println!(
        "execute median {:>8.1?}  max {:>8.1?}",
        median(execs.clone()),
        execs.iter().max().unwrap()
    );
    println!(
        "finish median {:>8.1?}  max {:>8.1?}",
        median(finishes.clone()),
        finishes.iter().max().unwrap()
    );

    // `echo hi` with and without the seccomp filter, interleaved so that load hits both alike.
    let no_filter = SandboxConfig {
        seccomp: false,
        ..SandboxConfig::default()
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut ep = TerminalEpisode::start(&bare_setup(vec![]), &cfg).expect("start");
    let mut bare = TerminalEpisode::start(&bare_setup(vec![]), &no_filter).expect("start");
    for _ in 0..20 {
        for (ep, times) in [(&mut ep, &mut with), (&mut bare, &mut without)] {
            let t = Instant::now();
            let obs = ep.execute("echo hi").expect("execute");
            times.push(t.elapsed());
            assert_eq!(obs.output, "hi\n");
        }
    }
    println!(
        "echo hi, seccomp filter: median {:>8.1?}  max {:>8.1?}; without: median {:>8.1?}  max {:>8.1?} (20 each)",
        median(with.clone()),
        with.iter().max().unwrap(),
        median(without.clone()),
        without.iter().max().unwrap()
    );
}
