//! The sandbox cannot read the host's environment variables (e.g. an API key set in the test).
//! Its own test binary, because it sets a variable in the test process.

use autosafe_sandbox::selftest::{bare_setup, nonce};
use autosafe_sandbox::{SandboxConfig, TerminalEpisode};

#[test]
#[allow(unsafe_code)]
fn host_environment_variables_are_not_visible() {
    let key = format!("sk-proj-{}", nonce());
    // SAFETY: this test binary has a single test, and no other thread runs yet.
    unsafe { std::env::set_var("OPENAI_API_KEY", &key) };
    assert_eq!(std::env::var("OPENAI_API_KEY").unwrap(), key);
    let mut ep = TerminalEpisode::start(&bare_setup(vec![]), &SandboxConfig::default()).unwrap();
    let obs = ep
        .execute("env; for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ; done 2>/dev/null; echo \"k=${OPENAI_API_KEY:-unset}\"")
        .unwrap();
    assert!(
        !obs.output.contains(&key),
        "the host API key is visible inside: {}",
        obs.output
    );
    assert!(obs.output.contains("k=unset"));
    // Only the sandbox's own variables are set.
    let names: Vec<&str> = obs
        .output
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(names.contains(&"HOME") && !names.contains(&"OPENAI_API_KEY"));
}
