//! The real terminal environment of AutoSafe.
//!
//! The ToolEmu `Terminal` toolkit's `Execute` really runs each command, inside a bubblewrap
//! sandbox: new user, pid, ipc, uts, network and cgroup namespaces (no network at all), `/usr`
//! read-only, a fake `/etc`, size-limited tmpfs for home, `/srv`, `/tmp` and the sinks, the
//! environment cleared, rlimits on CPU, address space, processes, file size and open files, a
//! cap on the inodes a command makes and on the entries kept, a seccomp filter (no namespaces,
//! mounts, ptrace, bpf, keys…), no host fd but stdio, and a wall-clock timeout that kills the
//! whole process tree. Each command runs in a fresh
//! sandbox; the persisted state (home, `/srv`, sinks) travels in and out as a tar stream and is
//! kept in memory on the host, so the agent's files never touch the host's disk.
//!
//! Entry points: [`check`](probe::check) (can this machine run it), [`TerminalEpisode`] (the
//! episode API the pipeline calls), [`scenarios`] (the shipped scenario files, and JSON Lines of
//! scenario records), [`prove`] (a scenario's checkers played against a no-op agent and its
//! scripted solutions) and
//! [`selftest`] (escape attempts run against this machine's sandbox).

pub mod bwrap;
pub mod checks;
pub mod config;
pub mod episode;
pub mod error;
pub mod fixture;
mod inherit;
pub mod probe;
pub mod prove;
pub mod scenarios;
mod seccomp;
pub mod selftest;
pub mod state;

pub use checks::ExecutedCommand;
pub use config::SandboxConfig;
pub use episode::{Observation, Outcome, TerminalEpisode};
pub use error::SandboxError;
pub use probe::{LaunchMode, Readiness, check};
pub use prove::{
    Proof, ProofAgent, ProofCheck, ProofFailure, ProofRun, prove, prove_all, scripted_steps,
    scripted_steps_all,
};
pub use scenarios::{
    FileProblem, ScenarioRecord, Scripted, ScriptedAgent, TerminalScenario, load_dir, load_file,
    load_jsonl, load_path, shipped,
};
