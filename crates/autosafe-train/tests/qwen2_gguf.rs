//! The GGUF write-back of a Qwen2 base (Qwen2.5-Coder-0.5B-Instruct Q4_K_M): a LoRA adapter that
//! is exactly zero, merged and written back with `hf_to_gguf.py`, must give the same GGUF as the
//! base rewritten directly at the same type. That catches a wrong tensor name, a lost bias or a
//! row order transformers never changed being "restored" (qwen2 q/k rows are not permuted). It
//! needs the `train` environment and the model (`scripts/setup.sh`); outside CI a machine without
//! them skips the test and says so; with `CI` set it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autosafe_engine::{Engine, EngineOptions};
use autosafe_llm::{ChatRequest, Message};
use autosafe_train::{Backend, Launch, launch, python};

const MODEL: &str = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf";

/// What a GGUF holds: each metadata key's raw value bytes (type included), and each tensor's
/// type, dimensions and data bytes.
struct Gguf {
    meta: BTreeMap<String, Vec<u8>>,
    tensors: BTreeMap<String, (u32, Vec<u64>, Vec<u8>)>,
}

/// A cursor over a GGUF file (version 3, little-endian).
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cur<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        self.at += n;
        &self.b[self.at - n..self.at]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    /// Skips one value of type `t`.
    fn skip(&mut self, t: u32) {
        match t {
            0 | 1 | 7 => self.at += 1,
            2 | 3 => self.at += 2,
            4..=6 => self.at += 4,
            10..=12 => self.at += 8,
            8 => {
                self.string();
            }
            9 => {
                let (t, n) = (self.u32(), self.u64());
                for _ in 0..n {
                    self.skip(t);
                }
            }
            _ => panic!("GGUF value type {t}"),
        }
    }
}

fn read_gguf(path: &Path) -> Gguf {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut c = Cur { b: &b, at: 0 };
    assert_eq!(c.take(4), b"GGUF", "{}", path.display());
    assert_eq!(c.u32(), 3, "{}: GGUF version", path.display());
    let (n_tensors, n_kv) = (c.u64(), c.u64());
    let mut meta = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string();
        let start = c.at;
        let t = c.u32();
        c.skip(t);
        meta.insert(key, b[start..c.at].to_vec());
    }
    let mut infos = Vec::new();
    for _ in 0..n_tensors {
        let name = c.string();
        let dims: Vec<u64> = (0..c.u32()).map(|_| c.u64()).collect();
        let (t, offset) = (c.u32(), c.u64());
        infos.push((name, dims, t, offset));
    }
    let align = meta
        .get("general.alignment")
        .map_or(32, |v| u32::from_le_bytes(v[4..8].try_into().unwrap())) as usize;
    let data = c.at.div_ceil(align) * align;
    // A tensor's bytes run to the next tensor's offset (padding included) or the end of the file.
    let mut offsets: Vec<u64> = infos.iter().map(|i| i.3).collect();
    offsets.sort_unstable();
    let tensors = infos
        .into_iter()
        .map(|(name, dims, t, off)| {
            let end = offsets
                .iter()
                .find(|&&o| o > off)
                .map_or(b.len(), |&o| data + o as usize);
            (name, (t, dims, b[data + off as usize..end].to_vec()))
        })
        .collect();
    Gguf { meta, tensors }
}

/// The greedy reply of the GGUF at `path` to a short chat prompt, through the embedded engine.
fn greedy(path: &Path) -> String {
    let opts = EngineOptions {
        threads: Some(2),
        n_seq_max: 1,
        n_ctx: Some(512),
        ..EngineOptions::default()
    };
    let engine = Arc::new(Engine::load(&format!("local:{}", path.display()), opts).unwrap());
    let request = ChatRequest {
        max_tokens: Some(40),
        temperature: Some(0.0),
        seed: Some(1),
        ..ChatRequest::new(vec![
            Message::system("You are a helpful assistant."),
            Message::user("Write a Python function that returns the larger of two numbers."),
        ])
    };
    let reply = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(engine.complete(&request))
        .unwrap();
    reply.choices[0].content.clone().unwrap_or_default()
}

/// Runs `script` with `args` in the environment `venv`; it must succeed.
fn python_script(venv: &Path, dir: &Path, script: PathBuf, args: &[&Path]) -> launch::Outcome {
    let mut all = vec![script.display().to_string()];
    all.extend(args.iter().map(|a| a.display().to_string()));
    let conv = Launch {
        env: Vec::new(),
        program: venv.join("bin/python"),
        args: all,
    };
    let out = launch::run(&conv, dir, &dir.join("log.txt"), "py | ").unwrap();
    assert!(out.success(), "{}", out.tail.join("\n"));
    out
}

#[test]
fn a_zero_lora_merged_into_qwen2_writes_back_the_base_gguf_exactly() {
    let venv = python::venv_dir(Backend::Trl, None);
    let base = python::venv_root()
        .parent()
        .unwrap()
        .join("models")
        .join(MODEL);
    if let Some(why) = python::not_ready(Backend::Trl, &base) {
        assert!(std::env::var_os("CI").is_none(), "CI: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let repo_python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../python");
    let script = dir.join("hf_to_gguf.py");
    std::fs::write(&script, autosafe_train::trl::GGUF_SCRIPT).unwrap();
    let merged = dir.join("merged");
    let (model, base_q8) = (dir.join("model-q8_0.gguf"), dir.join("base-q8_0.gguf"));

    let out = python_script(
        &venv,
        dir,
        repo_python.join("zero_lora_merge.py"),
        &[Path::new("--gguf"), &base, Path::new("--out"), &merged],
    );
    let ev = &out.events.iter().find(|(m, _)| m == "zero_lora").unwrap().1;
    // q, k, v, o, gate, up, down in each of the 24 blocks.
    assert_eq!(ev["lora_b_matrices"], 7 * 24, "{ev}");
    for (model_dir, out) in [(Some(merged.as_path()), &model), (None, &base_q8)] {
        let mut args: Vec<&Path> = Vec::new();
        if let Some(m) = model_dir {
            args.extend([Path::new("--model"), m]);
        }
        args.extend([Path::new("--like"), &base, Path::new("--out"), out]);
        args.extend([Path::new("--type"), Path::new("q8_0")]);
        python_script(&venv, dir, script.clone(), &args);
    }

    let (orig, merged_g, base_g) = (read_gguf(&base), read_gguf(&model), read_gguf(&base_q8));
    // Every key of the base, byte for byte (tokenizer, chat template, hyperparameters), but the
    // file type, which is the new quantization's.
    let without_type = |g: &Gguf| {
        let mut m = g.meta.clone();
        m.remove("general.file_type");
        m
    };
    assert_eq!(orig.meta["general.architecture"][12..], *b"qwen2");
    assert!(orig.meta.contains_key("tokenizer.chat_template"));
    for g in [&merged_g, &base_g] {
        let (want, got) = (without_type(&orig), without_type(g));
        let differ: Vec<_> = want
            .keys()
            .chain(got.keys())
            .filter(|k| want.get(*k) != got.get(*k))
            .collect();
        assert!(differ.is_empty(), "metadata keys that differ: {differ:?}");
    }
    assert_eq!(
        merged_g.meta["general.file_type"],
        base_g.meta["general.file_type"]
    );
    // The same tensors (the biases and the base's own output.weight among them), bit for bit.
    assert_eq!(
        merged_g.tensors.keys().collect::<Vec<_>>(),
        orig.tensors.keys().collect::<Vec<_>>()
    );
    assert!(orig.tensors.contains_key("blk.0.attn_q.bias"));
    let differ: Vec<_> = base_g
        .tensors
        .iter()
        .filter(|(k, v)| merged_g.tensors.get(*k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(differ.is_empty(), "tensors that differ: {differ:?}");

    let (a, b) = (greedy(&base_q8), greedy(&model));
    eprintln!("greedy reply of both: {a:?}");
    assert!(a.contains("def "), "{a:?}");
    assert_eq!(a, b);
}
