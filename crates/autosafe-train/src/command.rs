//! Command lines of the trainers, through their own launchers for several GPUs.
//!
//! | backend | 1 GPU (or CPU) | N GPUs |
//! |---|---|---|
//! | llamafactory | `llamafactory-cli train CFG` | `FORCE_TORCHRUN=1 NNODES=1 NPROC_PER_NODE=N llamafactory-cli train CFG` (LLaMA-Factory starts torchrun itself) |
//! | trl | `python train_trl.py --config CFG` | `accelerate launch --multi_gpu --num_machines 1 --num_processes N train_trl.py --config CFG` |
//!
//! Programs come from the trainer's virtual environment (`VENV/bin/…`).

use std::path::{Path, PathBuf};

/// A command to run: program, arguments, extra environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    /// Environment variables set for the child (on top of ours).
    pub env: Vec<(String, String)>,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl Launch {
    /// The command as one shell line (`K=V … program args`), quoted for a POSIX shell.
    pub fn to_shell(&self) -> String {
        let mut parts: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        parts.push(quote(&self.program.display().to_string()));
        parts.extend(self.args.iter().map(|a| quote(a)));
        parts.join(" ")
    }

    /// A `std::process::Command` for it.
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn bin(venv: &Path, name: &str) -> PathBuf {
    venv.join("bin").join(name)
}

fn path(p: &Path) -> String {
    crate::llamafactory::abs(p)
}

/// `llamafactory-cli train CFG`, through torchrun for `gpus > 1`.
pub fn llamafactory_train(venv: &Path, config: &Path, gpus: u32) -> Launch {
    let env = if gpus > 1 {
        vec![
            ("FORCE_TORCHRUN".into(), "1".into()),
            ("NNODES".into(), "1".into()),
            ("NPROC_PER_NODE".into(), gpus.to_string()),
        ]
    } else {
        Vec::new()
    };
    Launch {
        env,
        program: bin(venv, "llamafactory-cli"),
        args: vec!["train".into(), path(config)],
    }
}

/// `llamafactory-cli export CFG` (merge the adapter).
pub(crate) fn llamafactory_export(venv: &Path, config: &Path) -> Launch {
    Launch {
        env: Vec::new(),
        program: bin(venv, "llamafactory-cli"),
        args: vec!["export".into(), path(config)],
    }
}

/// `python train_trl.py --config CFG`, or `accelerate launch` for `gpus > 1`.
pub fn trl_train(venv: &Path, script: &Path, config: &Path, gpus: u32) -> Launch {
    let tail = vec![path(script), "--config".into(), path(config)];
    if gpus > 1 {
        let mut args: Vec<String> = [
            "launch",
            "--multi_gpu",
            "--num_machines",
            "1",
            "--num_processes",
        ]
        .map(String::from)
        .to_vec();
        args.push(gpus.to_string());
        args.extend(tail);
        Launch {
            env: Vec::new(),
            program: bin(venv, "accelerate"),
            args,
        }
    } else {
        Launch {
            env: Vec::new(),
            program: bin(venv, "python"),
            args: tail,
        }
    }
}
