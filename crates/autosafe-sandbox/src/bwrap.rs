//! One sandboxed command: build the bubblewrap command line, feed the state in, read output,
//! report and state back, enforce the timeout.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use autosafe_ots::terminal::{HOME, SINK_DIR};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::config::SandboxConfig;
use crate::error::SandboxError;
use crate::inherit;
use crate::probe::Launcher;
use crate::seccomp::FilterFd;

const WRAPPER: &str = include_str!("wrapper.sh");

/// Size of the small tmpfs holding `/etc` and `/opt` (system files of the sandbox).
const SYSTEM_FS_BYTES: u64 = 4 * 1024 * 1024;
/// Size of the sink tmpfs.
const SINK_FS_BYTES: u64 = 8 * 1024 * 1024;
/// Size of `/dev/shm` (POSIX shared memory, semaphores): unsized, it took 737 MB of host
/// memory in 5 s against a 64 MB disk limit.
pub(crate) const SHM_FS_BYTES: u64 = 16 * 1024 * 1024;

/// What one sandboxed command did, as seen from the host.
#[derive(Debug, Clone)]
pub struct RawRun {
    /// Merged stdout and stderr, cut at the output limit.
    pub output: Vec<u8>,
    /// Whether output was cut.
    pub truncated: bool,
    /// Exit code of the command (`-1` when the sandbox was killed from outside).
    pub exit_code: i32,
    /// Whether the command ran past the timeout.
    pub timed_out: bool,
    /// Command lines of processes still running when the command returned.
    pub leftovers: Vec<String>,
    /// The persisted state after the command, if the sandbox got to save it; only the sinks
    /// when `file_limit_hit` is set.
    pub state_tar: Option<Vec<u8>>,
    /// `Some(max_files)` when the command left more entries than that in the persisted roots.
    pub file_limit_hit: Option<u32>,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// The full argv (launcher included) for running `command` in a fresh sandbox; `seccomp_fd`:
/// an fd open in bwrap holding the seccomp filter, if it is to be loaded.
pub fn argv(
    launcher: &Launcher,
    cfg: &SandboxConfig,
    env: &BTreeMap<String, String>,
    command: &str,
    timeout: Duration,
    seccomp_fd: Option<i32>,
) -> Vec<String> {
    let s = |x: &str| x.to_string();
    let launcher = Launcher {
        disable_userns: launcher.disable_userns && cfg.disable_userns,
        ..launcher.clone()
    };
    let mut v = launcher.prefix();
    if let Some(fd) = seccomp_fd {
        v.extend([s("--seccomp"), fd.to_string()]);
    }
    v.extend(namespaces_and_mounts(cfg));
    v.extend([s("--chdir"), s("/"), s("--clearenv")]);
    let shell = if std::path::Path::new("/usr/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    for (k, val) in environment(cfg, env, timeout, shell) {
        v.extend([s("--setenv"), k, val]);
    }
    v.extend([
        s("--"),
        s("/bin/sh"),
        s("-c"),
        s(WRAPPER),
        s("autosafe"),
        s(command),
    ]);
    v
}

/// The namespaces, identity and filesystem layout of the sandbox (bwrap options).
fn namespaces_and_mounts(cfg: &SandboxConfig) -> Vec<String> {
    let s = |x: &str| x.to_string();
    let mut v = Vec::new();
    let disk = cfg.disk_limit.to_string();
    v.extend(
        [
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            // Our wrapper is pid 1: no bwrap reaper inside whose /proc/1/environ would show the
            // launcher's environment. When it exits, the kernel kills the whole namespace.
            "--as-pid-1",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--hostname",
            "devbox",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/lib32",
            "/lib32",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]
        .map(s),
    );
    let sys = SYSTEM_FS_BYTES.to_string();
    for (size, dir) in [
        (sys.as_str(), "/etc"),
        (sys.as_str(), "/opt"),
        (disk.as_str(), "/tmp"),
        (disk.as_str(), HOME),
        (disk.as_str(), "/srv"),
    ] {
        v.extend([s("--size"), s(size), s("--tmpfs"), s(dir)]);
    }
    v.extend([
        s("--size"),
        SINK_FS_BYTES.to_string(),
        s("--tmpfs"),
        s(SINK_DIR),
    ]);
    v.extend([
        s("--size"),
        SHM_FS_BYTES.to_string(),
        s("--tmpfs"),
        s("/dev/shm"),
    ]);
    // Harmless read-only pieces of the host's /etc that tools need (symlink farm, loader cache).
    for p in ["/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"] {
        v.extend([s("--ro-bind-try"), s(p), s(p)]);
    }
    // `/` and `/dev` are bwrap's own tmpfs, which take no size: read-only once every mount
    // point exists, so nothing outside the sized filesystems above can be written (a user
    // cannot write to `/` on a real machine either; the devices are their own mounts).
    v.extend([s("--remount-ro"), s("/dev"), s("--remount-ro"), s("/")]);
    v
}

/// The whole environment inside: a plain user's, then `env`, then the limits the wrapper
/// applies (`AUTOSAFE_*`).
fn environment(
    cfg: &SandboxConfig,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    shell: &str,
) -> BTreeMap<String, String> {
    let s = |x: &str| x.to_string();
    let mut all_env: BTreeMap<String, String> = BTreeMap::from([
        (s("HOME"), s(HOME)),
        (s("USER"), s("user")),
        (s("LOGNAME"), s("user")),
        (s("SHELL"), s(shell)),
        (s("LANG"), s("C.UTF-8")),
        (s("TERM"), s("dumb")),
        (
            s("PATH"),
            format!("/opt/sinks/bin:{HOME}/.local/bin:/usr/local/bin:/usr/bin:/bin"),
        ),
    ]);
    all_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let secs = timeout.as_secs().max(1);
    all_env.extend([
        (
            s("AUTOSAFE_TIMEOUT"),
            format!("{}", timeout.as_secs_f64().max(0.1)),
        ),
        (s("AUTOSAFE_CPU"), secs.to_string()),
        (s("AUTOSAFE_AS"), cfg.memory_limit.to_string()),
        (s("AUTOSAFE_NPROC"), cfg.max_processes.to_string()),
        (s("AUTOSAFE_FSIZE"), cfg.file_size_limit.to_string()),
        (s("AUTOSAFE_NOFILE"), cfg.max_open_files.to_string()),
        (s("AUTOSAFE_MAX_FILES"), cfg.max_files.to_string()),
        (s("AUTOSAFE_MAX_INODES"), cfg.max_inodes.to_string()),
        (s("AUTOSAFE_SHELL"), s(shell)),
    ]);
    all_env
}

fn read_capped(mut r: impl Read, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut truncated = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

/// Runs `command` in a fresh sandbox whose persisted roots are restored from `stdin_tar`.
pub fn run(
    launcher: &Launcher,
    cfg: &SandboxConfig,
    env: &BTreeMap<String, String>,
    command: &str,
    timeout: Duration,
    stdin_tar: Vec<u8>,
) -> Result<RawRun, SandboxError> {
    let filter = if launcher.seccomp && cfg.seccomp {
        Some(FilterFd::new()?)
    } else {
        None
    };
    let argv = argv(
        launcher,
        cfg,
        env,
        command,
        timeout,
        filter.as_ref().map(FilterFd::raw),
    );
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(cfg.launcher_env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    inherit::only_stdio_and(&mut cmd, filter.as_ref().map(FilterFd::raw));
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    // bwrap has its own copy of the filter's fd now.
    drop(filter);
    let pgid = Pid::from_raw(child.id() as i32);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&stdin_tar);
    });
    let out_limit = cfg.output_limit;
    let out_reader = thread::spawn(move || read_capped(stdout, out_limit));
    let report_limit = (3 * cfg.disk_limit + SINK_FS_BYTES + (1 << 20)) as usize;
    let report_reader = thread::spawn(move || read_capped(stderr, report_limit));

    let deadline = timeout + cfg.grace;
    let mut killed = false;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > deadline {
            // The wrapper did not finish in time: kill bwrap's whole process group. bwrap's
            // --die-with-parent and the pid namespace take everything inside down with it.
            let _ = killpg(pgid, Signal::SIGKILL);
            killed = true;
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let (output, truncated) = out_reader.join().unwrap_or_default();
    let (report, report_cut) = report_reader.join().unwrap_or_default();
    let elapsed = start.elapsed();
    if killed {
        return Ok(RawRun {
            output,
            truncated,
            exit_code: -1,
            timed_out: true,
            leftovers: vec![],
            state_tar: None,
            file_limit_hit: None,
            elapsed,
        });
    }
    parse_report(
        &report,
        report_cut,
        status.code(),
        output,
        truncated,
        timeout,
        elapsed,
    )
}

fn parse_report(
    report: &[u8],
    report_cut: bool,
    status: Option<i32>,
    output: Vec<u8>,
    truncated: bool,
    timeout: Duration,
    elapsed: Duration,
) -> Result<RawRun, SandboxError> {
    let mut rc = None;
    let mut leftovers = Vec::new();
    let mut pos = 0;
    let mut tar_start = None;
    let mut file_limit_hit = None;
    while pos < report.len() {
        let end = report[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| pos + i)
            .unwrap_or(report.len());
        let line = String::from_utf8_lossy(&report[pos..end]).into_owned();
        pos = end + 1;
        if line == "tar" {
            tar_start = Some(pos.min(report.len()));
            break;
        } else if let Some(x) = line.strip_prefix("rc ") {
            rc = x.trim().parse::<i32>().ok();
        } else if let Some(x) = line.strip_prefix("left ") {
            let cmdline = x
                .split_once(' ')
                .map(|(_, c)| c.trim())
                .unwrap_or("")
                .to_string();
            leftovers.push(cmdline);
        } else if let Some(x) = line.strip_prefix("too-many-files ") {
            file_limit_hit = Some(x.trim().parse::<u32>().unwrap_or(0));
        } else if let Some(x) = line.strip_prefix("restore-failed") {
            return Err(SandboxError::Protocol(format!(
                "restoring the state failed:{x}"
            )));
        }
    }
    let Some(exit_code) = rc else {
        let msg = String::from_utf8_lossy(&report[..report.len().min(2000)]).into_owned();
        return Err(SandboxError::Protocol(format!(
            "the sandbox did not report an exit code (bwrap status {status:?}): {}",
            msg.trim()
        )));
    };
    if report_cut {
        return Err(SandboxError::Protocol(
            "the saved state exceeds the disk limits".into(),
        ));
    }
    let timed_out = exit_code == 124 || (exit_code == 137 && elapsed >= timeout);
    Ok(RawRun {
        output,
        truncated,
        exit_code,
        timed_out,
        leftovers,
        state_tar: tar_start.map(|s| report[s..].to_vec()),
        file_limit_hit,
        elapsed,
    })
}
