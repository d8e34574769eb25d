//! Escape attempts against this machine's sandbox, each verified on the host side.
//!
//! Used by `autosafe sandbox selftest` and by the integration tests. An attempt is *blocked*
//! when the host shows no trace of it (no file written, no secret read back, no connection
//! accepted, no process left over, the disk limit held).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use autosafe_ots::terminal::{
    Check, Checks, FactCheck, FileKind, FileSpec, Fixture, TerminalSetup,
};

use crate::bwrap;
use crate::config::SandboxConfig;
use crate::episode::TerminalEpisode;
use crate::error::SandboxError;
use crate::probe::launcher_for;

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// Attempt name.
    pub name: &'static str,
    /// True when the host is verifiably untouched.
    pub blocked: bool,
    /// What was observed.
    pub detail: String,
}

/// Names of all attempts, in the order [`run_all`] runs them.
pub const ATTEMPTS: [&str; 15] = [
    "write_outside_workspace",
    "read_host_temp_file",
    "network_connection",
    "fork_bomb",
    "fill_disk",
    "timeout_kills_tree",
    "kill_parent",
    "host_environment",
    "symlink_escape",
    "host_processes",
    "fill_memory_filesystems",
    "nested_namespaces",
    "many_files",
    "many_inodes",
    "seccomp_filter",
];

/// The host's shared memory in use (`Shmem` of /proc/meminfo, where tmpfs pages count), bytes.
pub fn host_shmem_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Shmem:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A figure of this process's `/proc/self/status` (`VmRSS`, `VmHWM`, in kB there), in bytes.
fn own_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// This process's peak resident memory so far (`VmHWM`), bytes.
pub fn host_peak_rss_bytes() -> u64 {
    own_status_bytes("VmHWM")
}

/// The host's kernel slab memory (`Slab` of /proc/meminfo, where tmpfs inodes count), bytes.
pub fn host_slab_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Slab:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A unique marker for host-side checks.
pub fn nonce() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), t)
}

/// A minimal setup with the given fixture files (one trivial fact so that it validates).
pub fn bare_setup(files: Vec<FileSpec>) -> TerminalSetup {
    TerminalSetup {
        fixture: Fixture {
            files,
            ..Fixture::default()
        },
        checks: Checks {
            facts: vec![FactCheck {
                id: "ran".into(),
                check: Check::CommandExecuted {
                    pattern: ".".into(),
                },
            }],
            unsafe_if: vec!["!ran".into()],
            done_if: vec!["ran".into()],
        },
    }
}

/// Host processes whose command line contains `marker` (excluding this process).
pub fn host_processes_with(marker: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(marker)
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), cmd.trim()))
        })
        .collect()
}

/// Number of processes visible on the host.
pub fn host_process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .chars()
                        .all(|c| c.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits up to `max` for no host process to carry `marker`; returns what is left.
pub fn wait_no_process(marker: &str, max: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left = host_processes_with(marker);
        if left.is_empty() || start.elapsed() > max {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn result(name: &'static str, blocked: bool, detail: impl Into<String>) -> AttemptResult {
    AttemptResult {
        name,
        blocked,
        detail: detail.into(),
    }
}

fn episode(files: Vec<FileSpec>, cfg: &SandboxConfig) -> Result<TerminalEpisode, SandboxError> {
    TerminalEpisode::start(&bare_setup(files), cfg)
}

/// The peak of a host measure, sampled every 20 ms on a thread while an attempt runs.
struct Peak<T> {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<T>,
}

impl<T: Ord + Default + Send + 'static> Peak<T> {
    fn sample(measure: fn() -> T) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = T::default();
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(measure());
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            })
        };
        Peak { stop, sampler }
    }

    /// The peak seen; `None` when the sampler panicked.
    fn stop(self) -> Option<T> {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().ok()
    }
}

/// Runs one attempt by name.
pub fn run_one(name: &str, cfg: &SandboxConfig) -> Result<AttemptResult, SandboxError> {
    let attempt = match name {
        "write_outside_workspace" => write_outside_workspace,
        "read_host_temp_file" => read_host_temp_file,
        "network_connection" => network_connection,
        "fork_bomb" => fork_bomb,
        "fill_disk" => fill_disk,
        "timeout_kills_tree" => timeout_kills_tree,
        "kill_parent" => kill_parent,
        "host_environment" => host_environment,
        "symlink_escape" => symlink_escape,
        "host_processes" => host_processes,
        "fill_memory_filesystems" => fill_memory_filesystems,
        "nested_namespaces" => nested_namespaces,
        "many_files" => many_files,
        "many_inodes" => many_inodes,
        "seccomp_filter" => seccomp_filter,
        other => {
            return Err(SandboxError::Protocol(format!(
                "unknown self-test attempt `{other}`"
            )));
        }
    };
    attempt(cfg, &nonce(), &std::env::temp_dir())
}

/// Writes to the host's temp directory, `/usr`, `/etc` and `/`.
fn write_outside_workspace(
    cfg: &SandboxConfig,
    n: &str,
    tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    let targets: Vec<PathBuf> = [
        tmp.to_path_buf(),
        PathBuf::from("/usr"),
        PathBuf::from("/etc"),
        PathBuf::from("/"),
    ]
    .iter()
    .map(|d| d.join(format!("autosafe-pwn-{n}")))
    .collect();
    let cmd = targets
        .iter()
        .map(|t| format!("echo pwned > {} 2>/dev/null", t.display()))
        .collect::<Vec<_>>()
        .join("; ")
        + &format!("; echo pwned > /usr/bin/autosafe-pwn-{n}; touch /usr/bin/ls; true");
    let mut ep = episode(vec![], cfg)?;
    ep.execute(&cmd)?;
    let written: Vec<String> = targets
        .iter()
        .chain([&PathBuf::from(format!("/usr/bin/autosafe-pwn-{n}"))])
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    for w in &written {
        let _ = std::fs::remove_file(w);
    }
    Ok(result(
        ATTEMPTS[0],
        written.is_empty(),
        if written.is_empty() {
            "no host file written".into()
        } else {
            format!("host files written: {}", written.join(", "))
        },
    ))
}

/// Reads a secret planted in the host's temp directory.
fn read_host_temp_file(
    cfg: &SandboxConfig,
    n: &str,
    tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    let secret = format!("host-secret-{n}");
    let path = tmp.join(format!("autosafe-planted-{n}"));
    std::fs::write(&path, &secret)?;
    let mut ep = episode(vec![], cfg)?;
    let obs = ep.execute(&format!(
        "cat {p}; cat /tmp/autosafe-planted-*; grep -rs {secret} /tmp /var /home /srv /opt /etc 2>/dev/null; ls /tmp",
        p = path.display()
    ))?;
    let _ = std::fs::remove_file(&path);
    let leaked = obs.output.contains(&secret);
    Ok(result(
        ATTEMPTS[1],
        !leaked,
        if leaked {
            "the planted secret was read"
        } else {
            "planted host file not visible"
        },
    ))
}

/// Connects to a host listener on loopback and to the internet.
fn network_connection(
    cfg: &SandboxConfig,
    _n: &str,
    _tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let mut ep = episode(vec![], cfg)?;
    let obs = ep.execute(&format!(
        "(echo hi > /dev/tcp/127.0.0.1/{port}) 2>&1 && echo CONNECTED-LOOPBACK; \
         (echo hi > /dev/tcp/1.1.1.1/53) 2>&1 && echo CONNECTED-INTERNET; \
         /usr/bin/curl -sS -m 3 http://127.0.0.1:{port}/ 2>&1 && echo CONNECTED-CURL; \
         ip -o link 2>/dev/null | wc -l"
    ))?;
    let accepted = match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => return Err(e.into()),
    };
    let connected = obs.output.contains("CONNECTED-");
    Ok(result(
        ATTEMPTS[2],
        !accepted && !connected,
        format!("host listener accepted: {accepted}; sandbox reported a connection: {connected}"),
    ))
}

/// A fork bomb, with the host's process count sampled while it runs.
fn fork_bomb(cfg: &SandboxConfig, n: &str, _tmp: &Path) -> Result<AttemptResult, SandboxError> {
    let marker = format!("autosafe-bomb-{n}");
    let mut c = cfg.clone();
    c.timeout = Duration::from_secs(5);
    let mut ep = episode(vec![], &c)?;
    // Sample the host's process count while the bomb runs.
    let baseline = host_process_count();
    let sampler = Peak::sample(host_process_count);
    let start = Instant::now();
    let obs = ep.execute(&format!("b(){{ b | b & }}; b; sleep 30 # {marker}"));
    let took = start.elapsed();
    let peak = sampler.stop().unwrap_or(usize::MAX);
    let obs = obs?;
    let left = wait_no_process(&marker, Duration::from_secs(3));
    let bounded = took < c.timeout + c.grace;
    let growth = peak.saturating_sub(baseline);
    let capped = growth <= c.max_processes as usize + 32;
    Ok(result(
        ATTEMPTS[3],
        left.is_empty() && bounded && capped,
        format!(
            "ended after {:.1}s (timed out: {}); host processes grew by at most {growth} (limit {}); \
             processes left on host: {}",
            took.as_secs_f64(),
            obs.timed_out,
            c.max_processes,
            left.len()
        ),
    ))
}

/// Writes three times the disk limit.
fn fill_disk(cfg: &SandboxConfig, _n: &str, _tmp: &Path) -> Result<AttemptResult, SandboxError> {
    let mut ep = episode(vec![], cfg)?;
    let mb = 3 * cfg.disk_limit / (1024 * 1024) + 1;
    let obs = ep.execute(&format!(
        "for i in 1 2 3 4; do dd if=/dev/zero of=$HOME/fill$i bs=1M count={mb} 2>&1 | grep -i -m1 'space\\|large'; done; \
         dd if=/dev/zero of=/tmp/fill bs=1M count={mb} 2>&1 | grep -i -m1 'space\\|large'"
    ))?;
    let kept = ep.state().total_bytes();
    let held = kept <= cfg.disk_limit;
    Ok(result(
        ATTEMPTS[4],
        held,
        format!(
            "persisted {kept} bytes (limit {}); sandbox said: {}",
            cfg.disk_limit,
            obs.output.lines().next().unwrap_or("").trim()
        ),
    ))
}

/// Leaves background, `setsid` and `nohup` processes behind a timeout.
fn timeout_kills_tree(
    cfg: &SandboxConfig,
    n: &str,
    _tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    let marker = format!("autosafe-orphan-{n}");
    let mut ep = episode(vec![], cfg)?;
    let obs = ep.execute_with_timeout(
        &format!(
            "sh -c 'sleep 600; : {marker}' & setsid sh -c 'sleep 600; : {marker}' & \
             nohup sh -c 'trap \"\" TERM HUP; sleep 600; : {marker}' >/dev/null 2>&1 & sleep 600; : {marker}"
        ),
        Duration::from_secs(2),
    )?;
    let left = wait_no_process(&marker, Duration::from_secs(3));
    Ok(result(
        ATTEMPTS[5],
        obs.timed_out && left.is_empty(),
        format!(
            "timed out: {}; processes left on host: {}",
            obs.timed_out,
            left.len()
        ),
    ))
}

/// SIGKILLs the process that started the sandbox; nothing may outlive it.
fn kill_parent(cfg: &SandboxConfig, n: &str, tmp: &Path) -> Result<AttemptResult, SandboxError> {
    let marker = format!("autosafe-parent-{n}");
    let launcher = launcher_for(cfg.bwrap.as_deref())?;
    let argv = bwrap::argv(
        &launcher,
        cfg,
        &BTreeMap::new(),
        &format!("sleep 600; : {marker}"),
        Duration::from_secs(600),
        None,
    );
    // The sandbox reads its state as a tar on stdin: give it an empty archive.
    let input = tmp.join(format!("autosafe-empty-{n}.tar"));
    std::fs::write(&input, [0u8; 1024])?;
    // A middle process that starts the sandbox, then gets SIGKILLed.
    let mut parent = Command::new("/bin/sh")
        .arg("-c")
        .arg("f=$1; shift; \"$@\" <\"$f\" >/dev/null 2>&1 & wait")
        .arg("parent")
        .arg(&input)
        .args(&argv)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    while host_processes_with(&marker).len() < 4 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = host_processes_with(&marker).len();
    parent.kill()?;
    parent.wait()?;
    let left = wait_no_process(&marker, Duration::from_secs(3));
    let _ = std::fs::remove_file(&input);
    Ok(result(
        ATTEMPTS[6],
        before > 0 && left.is_empty(),
        format!(
            "sandbox processes before the kill: {before}, after: {}",
            left.len()
        ),
    ))
}

/// Reads the environment for a canary and the host's variables.
fn host_environment(
    cfg: &SandboxConfig,
    n: &str,
    _tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    let canary = format!("sk-canary-{n}");
    let mut c = cfg.clone();
    c.launcher_env
        .push(("AUTOSAFE_CANARY_API_KEY".into(), canary.clone()));
    let host_names: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| {
            ![
                "HOME", "USER", "LOGNAME", "PATH", "LANG", "TERM", "SHELL", "PWD", "SHLVL", "_",
                "OLDPWD", "HOSTNAME",
            ]
            .contains(&k.as_str())
        })
        .collect();
    let mut ep = episode(vec![], &c)?;
    let obs =
        ep.execute("env; cat /proc/1/environ /proc/self/environ 2>/dev/null | tr '\\0' '\\n'")?;
    let leaked_canary = obs.output.contains(&canary);
    let leaked: Vec<&String> = host_names
        .iter()
        .filter(|k| obs.output.contains(&format!("{k}=")))
        .collect();
    Ok(result(
        ATTEMPTS[7],
        !leaked_canary && leaked.is_empty(),
        format!("canary visible: {leaked_canary}; host variables visible: {leaked:?}"),
    ))
}

/// Reads and writes host files through fixture symlinks.
fn symlink_escape(cfg: &SandboxConfig, n: &str, tmp: &Path) -> Result<AttemptResult, SandboxError> {
    let secret = format!("host-linked-secret-{n}");
    let planted = tmp.join(format!("autosafe-link-target-{n}"));
    std::fs::write(&planted, &secret)?;
    let link = |path: &str, target: String| FileSpec {
        path: path.into(),
        kind: FileKind::Symlink,
        content: None,
        mode: None,
        target: Some(target),
    };
    let files = vec![
        link("notes/host-file", planted.display().to_string()),
        link("shadow", "/etc/shadow".into()),
        link("hostroot", "/proc/1/root".into()),
        link("up", "../../../../../".into()),
    ];
    let mut ep = episode(files, cfg)?;
    let obs = ep.execute(&format!(
        "cat notes/host-file shadow 2>&1; cat up{p} 2>&1; ls hostroot/ 2>&1; \
         echo overwritten > notes/host-file; echo overwritten > up{p}; echo x > hostroot/autosafe-{n}",
        p = planted.display()
    ))?;
    let content = std::fs::read_to_string(&planted).unwrap_or_default();
    let _ = std::fs::remove_file(&planted);
    let host_shadow_line = std::fs::read_to_string("/etc/shadow")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .filter(|l| !l.is_empty());
    let read =
        obs.output.contains(&secret) || host_shadow_line.is_some_and(|l| obs.output.contains(&l));
    let written = content != secret || PathBuf::from(format!("/autosafe-{n}")).exists();
    Ok(result(
        ATTEMPTS[8],
        !read && !written,
        format!("host file read through a link: {read}; host file changed: {written}"),
    ))
}

/// Lists processes, looking for this host process.
fn host_processes(
    cfg: &SandboxConfig,
    _n: &str,
    _tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    let mut ep = episode(vec![], cfg)?;
    let obs = ep.execute("ps -eo pid,args 2>/dev/null || ls /proc")?;
    let me = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let me = String::from_utf8_lossy(&me)
        .replace('\0', " ")
        .trim()
        .to_string();
    let visible = !me.is_empty() && obs.output.contains(&me);
    let count = obs.output.lines().count();
    Ok(result(
        ATTEMPTS[9],
        !visible && count < 20,
        format!("this host process visible: {visible}; {count} lines of process list"),
    ))
}

/// Fills the memory-backed filesystems, with the host's shared memory sampled.
fn fill_memory_filesystems(
    cfg: &SandboxConfig,
    _n: &str,
    _tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    // `/dev/shm`, `/` and `/dev` are tmpfs (host memory) outside the disk limit unless
    // sized or read-only: write 3 × the disk limit to each and watch the host.
    let mib = 1 << 20;
    let per_file = (cfg.file_size_limit / mib).max(1);
    let files = (3 * cfg.disk_limit).div_ceil(per_file * mib);
    let tried = 3 * files * per_file * mib;
    let mut ep = episode(vec![], cfg)?;
    let baseline = host_shmem_bytes();
    let sampler = Peak::sample(host_shmem_bytes);
    let obs = ep.execute(&format!(
        "for d in /dev/shm '' /dev; do for i in $(seq {files}); do \
         dd if=/dev/zero of=$d/autosafe-fill-$i bs=1M count={per_file} 2>/dev/null; done; done; \
         sleep 0.5; cat /dev/shm/autosafe-fill-* /autosafe-fill-* /dev/autosafe-fill-* 2>/dev/null | wc -c"
    ));
    let peak = sampler.stop().unwrap_or(u64::MAX);
    let obs = obs?;
    let written: u64 = obs.output.trim().parse().unwrap_or(u64::MAX);
    let growth = peak.saturating_sub(baseline);
    let cap = bwrap::SHM_FS_BYTES;
    // Other processes on the host move Shmem too: a margin of a quarter of the writes.
    let held = written <= cap && growth <= cap + tried / 4;
    Ok(result(
        ATTEMPTS[10],
        held,
        format!(
            "wrote {written} bytes (limit {cap}) of {tried} tried; host shared memory grew by at most {growth} bytes"
        ),
    ))
}

/// Creates user namespaces inside the sandbox.
fn nested_namespaces(
    cfg: &SandboxConfig,
    _n: &str,
    _tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    let mut ep = episode(vec![], cfg)?;
    let obs = ep.execute(
        "unshare -U -r true 2>/dev/null && echo NESTED-user; \
         unshare -U -r -m true 2>/dev/null && echo NESTED-mount; \
         unshare -U -r -n true 2>/dev/null && echo NESTED-net; true",
    )?;
    let made: Vec<&str> = obs
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("NESTED-"))
        .collect();
    Ok(result(
        ATTEMPTS[11],
        made.is_empty(),
        if made.is_empty() {
            "no user namespace could be created inside".to_string()
        } else {
            format!("namespaces created inside: {}", made.join(", "))
        },
    ))
}

/// System calls the seccomp filter refuses, made straight from perl (x86_64 numbers; the filter
/// is built for x86_64 alone): name, number, first argument. Each prints `name result errno`.
/// `clone` with `CLONE_NEWUSER | SIGCHLD` forks when let through: the child exits at once. It goes
/// first: after an `unshare` of a user namespace (no uid map) a nested one is refused anyway.
pub const SECCOMP_PROBE: &str = r#"perl -MPOSIX -e 'for (["clone", 56, 0x10000011], ["unshare", 272, 0x10000000], ["clone3", 435, 0], ["setns", 308, 0], ["mount", 165, 0], ["umount2", 166, 0], ["pivot_root", 155, 0], ["ptrace", 101, 0], ["keyctl", 250, 0], ["add_key", 248, 0], ["bpf", 321, 0], ["perf_event_open", 298, 0], ["init_module", 175, 0], ["kexec_load", 246, 0], ["io_uring_setup", 425, 0]) { my ($n, $nr, $a) = @$_; $! = 0; my $r = syscall($nr, $a, 0, 0, 0, 0); POSIX::_exit(0) if $r == 0 && $n eq "clone"; printf "SYSCALL %s %d %d
", $n, $r, $! + 0 }'"#;

/// The lines of [`SECCOMP_PROBE`]'s output whose call was not refused by the filter (EPERM,
/// ENOSYS for `clone3`), or every call when perl printed nothing.
pub fn seccomp_probe_let_through(output: &str) -> Vec<String> {
    let lines: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("SYSCALL "))
        .collect();
    if lines.len() < 15 {
        return vec![format!("only {} of 15 calls reported", lines.len())];
    }
    lines
        .into_iter()
        .filter(|l| {
            let want = if l.starts_with("clone3 ") {
                "-1 38"
            } else {
                "-1 1"
            };
            !l.ends_with(want)
        })
        .map(str::to_string)
        .collect()
}

/// With `--disable-userns` off (as on bwrap older than 0.8), the seccomp filter alone keeps
/// commands from making namespaces, mounting, tracing, and reaching bpf, perf, keys, modules and
/// io_uring, while ordinary tools still run.
fn seccomp_filter(
    cfg: &SandboxConfig,
    _n: &str,
    _tmp: &Path,
) -> Result<AttemptResult, SandboxError> {
    let mut c = cfg.clone();
    c.disable_userns = false;
    let mut ep = episode(vec![], &c)?;
    let obs = ep.execute(&format!(
        "grep '^Seccomp:' /proc/self/status; \
         unshare -U -r true 2>/dev/null && echo MADE-user-namespace; \
         unshare -m true 2>/dev/null && echo MADE-mount-namespace; \
         unshare -U -r mount -t tmpfs none /tmp 2>/dev/null && echo MADE-tmpfs-mount; \
         strace -o /dev/null true 2>/dev/null && echo MADE-strace; \
         {SECCOMP_PROBE}; \
         echo hi | tr a-z A-Z | xargs -I{{}} timeout 5 prlimit --nofile=64 echo {{}} \
         && tar -cf - /etc/passwd 2>/dev/null | tar -tf - && echo ORDINARY-ok"
    ))?;
    let filtered = obs.output.contains("Seccomp:\t2");
    let made: Vec<&str> = obs
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("MADE-"))
        .collect();
    let through = seccomp_probe_let_through(&obs.output);
    let ordinary = obs.output.contains("HI\netc/passwd\nORDINARY-ok");
    Ok(result(
        ATTEMPTS[14],
        filtered && made.is_empty() && through.is_empty() && ordinary,
        if let Some(why) = crate::seccomp::unsupported() {
            why
        } else {
            format!(
                "under a filter: {filtered}; made without --disable-userns: {made:?}; system \
                 calls not refused: {through:?}; ordinary commands ran: {ordinary}"
            )
        },
    ))
}

/// Leaves three times `max_files` empty files (and deletes a fixture file, and writes a sink)
/// with this process's resident memory sampled: the command's changes are dropped, the sinks
/// kept, the host holds at most `max_files` entries and the episode goes on.
fn many_files(cfg: &SandboxConfig, n: &str, _tmp: &Path) -> Result<AttemptResult, SandboxError> {
    let keep = FileSpec {
        path: "keep.txt".into(),
        kind: FileKind::File,
        content: Some(format!("{n}\n")),
        mode: None,
        target: None,
    };
    let mut ep = episode(vec![keep], cfg)?;
    let files = 3 * u64::from(cfg.max_files);
    let baseline = own_status_bytes("VmRSS");
    let sampler = Peak::sample(|| own_status_bytes("VmRSS"));
    let obs = ep.execute(&format!(
        "mkdir many && cd many && seq {files} | xargs touch; ls | wc -l; rm ~/keep.txt; \
         echo sent-{n} > /var/spool/outbound/many.log"
    ));
    let peak = sampler.stop().unwrap_or(u64::MAX);
    let obs = obs?;
    let next = ep.execute("cat keep.txt /var/spool/outbound/many.log")?;
    let entries = ep.state().entries.len();
    let made = obs.output.lines().next().unwrap_or("").trim().to_string();
    let held = obs.file_limit_hit == Some(cfg.max_files)
        && entries <= cfg.max_files as usize
        && next.output == format!("{n}\nsent-{n}\n");
    Ok(result(
        ATTEMPTS[12],
        held,
        format!(
            "created {made} files (limit {}); reported over the limit: {}; host keeps {entries} \
             entries; next command saw the old state and the sink: {}; host resident memory grew \
             by at most {} bytes",
            cfg.max_files,
            obs.file_limit_hit.is_some(),
            next.output.lines().count() == 2,
            peak.saturating_sub(baseline)
        ),
    ))
}

/// Creates files without end on three filesystems at once (`/tmp` too, which is never kept),
/// with the host's kernel slab memory sampled: the command is killed a little past
/// `max_inodes` and the episode goes on.
fn many_inodes(cfg: &SandboxConfig, _n: &str, _tmp: &Path) -> Result<AttemptResult, SandboxError> {
    let mut ep = episode(vec![], cfg)?;
    let baseline = host_slab_bytes();
    let sampler = Peak::sample(host_slab_bytes);
    let start = Instant::now();
    let obs = ep.execute(
        "for d in ~ /srv /tmp; do (cd $d && mkdir m && cd m && seq 100000000 | xargs touch) & done; \
         wait; echo NOT-KILLED",
    );
    let took = start.elapsed();
    let peak = sampler.stop().unwrap_or(u64::MAX);
    let obs = obs?;
    let next = ep.execute("echo ok")?;
    let killed = obs.exit_code == 137 && !obs.output.contains("NOT-KILLED");
    let said = obs.output.contains("over the limit of");
    Ok(result(
        ATTEMPTS[13],
        killed && said && next.output == "ok\n",
        format!(
            "killed after {:.1}s: {killed}; said: {}; host kernel slab memory grew by at most {} \
             bytes; next command ran: {}",
            took.as_secs_f64(),
            obs.output.trim(),
            peak.saturating_sub(baseline),
            next.output == "ok\n"
        ),
    ))
}

/// Runs every attempt; an attempt that errors counts as not blocked.
pub fn run_all(cfg: &SandboxConfig) -> Vec<AttemptResult> {
    ATTEMPTS
        .iter()
        .map(|name| {
            run_one(name, cfg).unwrap_or_else(|e| AttemptResult {
                name,
                blocked: false,
                detail: format!("could not run the attempt: {e}"),
            })
        })
        .collect()
}
