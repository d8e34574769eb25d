//! Many small files must not grow the host process: the state read back is capped in entries
//! (`SandboxConfig::max_files`), not only in bytes. Its own test binary, so that this process's
//! peak resident memory (`VmHWM`) is this test's alone.

use autosafe_sandbox::selftest::{bare_setup, host_peak_rss_bytes};
use autosafe_sandbox::{SandboxConfig, TerminalEpisode};

/// Empty files created by the command: five times the default cap, half `max_inodes`.
const FILES: u64 = 50_000;

#[test]
fn fifty_thousand_empty_files_do_not_grow_the_host_process() {
    let cfg = SandboxConfig::default();
    let mut ep = TerminalEpisode::start(&bare_setup(vec![]), &cfg).expect("sandbox starts");
    ep.execute("echo warm > warm.txt").unwrap();
    let before = host_peak_rss_bytes();
    let made = ep
        .execute(&format!(
            "mkdir many && cd many && seq {FILES} | xargs touch && ls | wc -l"
        ))
        .unwrap();
    let next = ep.execute("cat warm.txt").unwrap();
    let after = host_peak_rss_bytes();
    let growth = after.saturating_sub(before);
    eprintln!(
        "created: {}; peak RSS before {before} after {after} (growth {growth} bytes); state entries {}",
        made.output.trim(),
        ep.state().entries.len()
    );
    assert!(made.output.contains(&FILES.to_string()), "{made:?}");
    assert_eq!(next.output, "warm\n");
    assert!(ep.state().entries.len() <= cfg.max_files as usize);
    // Before the cap, 50 000 files grew the host by 59 MB (tar headers alone are 26 MB).
    assert!(growth < 32 << 20, "host peak RSS grew by {growth} bytes");
}
