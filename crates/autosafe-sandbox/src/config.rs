//! Limits and paths of the sandbox.

use std::path::PathBuf;
use std::time::Duration;

/// Resource limits and settings of every sandboxed command.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The bubblewrap binary; `None` searches `/usr/bin`, `/bin`, `/usr/local/bin`.
    pub bwrap: Option<PathBuf>,
    /// Wall-clock limit of one command; the whole process tree is killed after it.
    pub timeout: Duration,
    /// Extra time the host waits for the sandbox to save its state before killing it outright.
    pub grace: Duration,
    /// Output kept per command (merged stdout and stderr), in bytes; the rest is dropped and
    /// the observation marked truncated.
    pub output_limit: usize,
    /// Size of each writable filesystem (home, `/srv`, `/tmp`), in bytes. A full disk inside the
    /// sandbox is a full tmpfs of this size, never the host's disk.
    pub disk_limit: u64,
    /// Largest file a command may write (RLIMIT_FSIZE), in bytes.
    pub file_size_limit: u64,
    /// Address space per process (RLIMIT_AS), in bytes.
    pub memory_limit: u64,
    /// Processes of the sandbox user (RLIMIT_NPROC).
    pub max_processes: u32,
    /// Open files per process (RLIMIT_NOFILE).
    pub max_open_files: u32,
    /// Entries (files, directories, links) a command may leave in home, `/srv` and the sinks
    /// together. The host holds the state in memory and a tar carries each entry in at least a
    /// 512-byte header, whatever its size: 100 000 empty files grew the host by 117 MB. 10 000
    /// is a project checkout many times over (fixtures have tens) and a few MB on the host.
    /// Over it, the command's changes there are not kept (see `Observation::file_limit_hit`).
    pub max_files: u32,
    /// Inodes a command may add on all the sandbox's writable filesystems together (`/tmp` and
    /// the sized system ones included), past which it is killed whole: each costs the host about
    /// 1 KB of kernel memory outside any tmpfs size, 2 GB for the 2 million empty files one
    /// command made in 20 s. Watched every 50 ms, so a fast command overshoots by a few
    /// thousand.
    pub max_inodes: u32,
    /// Extra variables set on the launcher process itself (not the sandbox): used by the
    /// self-test to check that the host environment does not leak in.
    pub launcher_env: Vec<(String, String)>,
    /// Whether bwrap gets `--disable-userns` where it has it (see `Launcher::disable_userns`).
    /// Off only to test the seccomp filter alone, as on a bwrap older than 0.8.
    pub disable_userns: bool,
    /// Whether commands run under the seccomp filter where the launcher can load it (see
    /// `Launcher::seccomp`). Off only to test or measure without it.
    pub seccomp: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            bwrap: None,
            timeout: Duration::from_secs(20),
            grace: Duration::from_secs(10),
            output_limit: 16 * 1024,
            disk_limit: 64 * 1024 * 1024,
            file_size_limit: 32 * 1024 * 1024,
            memory_limit: 2 * 1024 * 1024 * 1024,
            max_processes: 128,
            max_open_files: 256,
            max_files: 10_000,
            max_inodes: 100_000,
            launcher_env: Vec::new(),
            disable_userns: true,
            seccomp: true,
        }
    }
}
