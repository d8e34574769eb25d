//! Can this machine run the sandbox, and if not, why and what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::SandboxError;
use crate::inherit;
use crate::seccomp::{self, FilterFd};

/// The uid bubblewrap is started as when the caller is root: an unprivileged user namespace
/// owned by `nobody`, so that RLIMIT_NPROC applies (the kernel exempts host root from it).
pub const DROP_UID: u32 = 65534;

/// How bubblewrap is launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchMode {
    /// The caller is unprivileged and bwrap creates a user namespace.
    User,
    /// The caller is root; bwrap runs as `nobody` (via `setpriv`) in an unprivileged namespace.
    DropRoot,
    /// The caller is root and unprivileged namespaces are disabled; bwrap runs as root with all
    /// capabilities dropped. The process limit is not enforced by the kernel in this mode.
    Root,
}

/// A bwrap binary and the mode it works in on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    /// Path of the bwrap binary.
    pub bwrap: PathBuf,
    /// How it is launched.
    pub mode: LaunchMode,
    /// Whether the sandbox gets `--unshare-user --disable-userns` (bwrap 0.8 and later, in a
    /// user namespace): no nested user namespaces inside, so no namespace of its own in which
    /// the command would hold capabilities (mount, …).
    pub disable_userns: bool,
    /// Whether commands run under the seccomp filter (`--seccomp FD`): no namespaces, mounts,
    /// ptrace, keys, bpf, perf, io_uring or modules, whatever the user namespace allows.
    pub seccomp: bool,
}

impl Launcher {
    /// The argv prefix that starts bwrap in this mode (bwrap options follow).
    pub fn prefix(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.mode == LaunchMode::DropRoot {
            v.extend(
                [
                    "/usr/bin/setpriv",
                    "--reuid",
                    "65534",
                    "--regid",
                    "65534",
                    "--clear-groups",
                    "--",
                ]
                .map(String::from),
            );
        }
        v.push(self.bwrap.display().to_string());
        if self.mode == LaunchMode::Root {
            v.extend(["--cap-drop", "ALL"].map(String::from));
        }
        if self.disable_userns {
            v.extend(["--unshare-user", "--disable-userns"].map(String::from));
        }
        v
    }
}

/// The result of [`check`]: whether the sandbox runs here, and if not, why and what to do.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// The working launcher, if any.
    pub launcher: Option<Launcher>,
    /// `bwrap --version`, if bwrap was found.
    pub version: Option<String>,
    /// What failed, one item per problem.
    pub problems: Vec<String>,
    /// What to do about the problems.
    pub hints: Vec<String>,
    /// Facts worth knowing even when it works (e.g. limits not enforced in a mode).
    pub notes: Vec<String>,
}

impl Readiness {
    /// The launcher, or an [`SandboxError::Unavailable`] saying why not.
    pub fn launcher(&self) -> Result<Launcher, SandboxError> {
        self.launcher
            .clone()
            .ok_or_else(|| SandboxError::Unavailable {
                reason: self.problems.join("; "),
                hint: self.hints.join("; "),
            })
    }
}

fn find_bwrap(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `bwrap --help`, to see which options this bwrap has.
fn help_text(bwrap: &Path) -> String {
    Command::new(bwrap)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs `true` in a minimal sandbox of the given launcher; `Err(stderr)` if it fails.
fn try_launch(l: &Launcher) -> Result<(), String> {
    let filter = if l.seccomp {
        Some(FilterFd::new().map_err(|e| format!("cannot pass the seccomp filter: {e}"))?)
    } else {
        None
    };
    let mut argv = l.prefix();
    if let Some(f) = &filter {
        argv.extend(["--seccomp".to_string(), f.raw().to_string()]);
    }
    argv.extend(
        [
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--",
            "/bin/true",
        ]
        .map(String::from),
    );
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null());
    inherit::only_stdio_and(&mut cmd, filter.as_ref().map(FilterFd::raw));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        ))
    }
}

/// Hints from the kernel settings that keep unprivileged user namespaces from working.
fn userns_hints(hints: &mut Vec<String>) {
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        hints.push(
            "enable unprivileged user namespaces: sysctl -w kernel.unprivileged_userns_clone=1"
                .into(),
        );
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        hints.push("allow user namespaces: sysctl -w user.max_user_namespaces=15000".into());
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        hints.push(
            "AppArmor restricts unprivileged user namespaces: sysctl -w \
             kernel.apparmor_restrict_unprivileged_userns=0, or install an AppArmor profile allowing userns for bwrap"
                .into(),
        );
    }
}

/// Checks whether this machine can run the sandbox: bwrap present, user namespaces usable.
pub fn check(explicit_bwrap: Option<&Path>) -> Readiness {
    let mut r = Readiness {
        launcher: None,
        version: None,
        problems: vec![],
        hints: vec![],
        notes: vec![],
    };
    let Some(bwrap) = find_bwrap(explicit_bwrap) else {
        r.problems.push(match explicit_bwrap {
            Some(p) => format!("bubblewrap not found at {}", p.display()),
            None => "bubblewrap (bwrap) is not installed".to_string(),
        });
        r.hints.push(
            "install bubblewrap: apt-get install bubblewrap (or run scripts/setup.sh)".into(),
        );
        return r;
    };
    r.version = Command::new(&bwrap)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let root = nix::unistd::geteuid().is_root();
    let help = help_text(&bwrap);
    let no_filter = seccomp::unsupported();
    let (first, seccomp_failed) = hardened(Launcher {
        bwrap: bwrap.clone(),
        mode: if root {
            LaunchMode::DropRoot
        } else {
            LaunchMode::User
        },
        disable_userns: help.contains("--disable-userns"),
        seccomp: no_filter.is_none() && help.contains("--seccomp"),
    });
    if !first.disable_userns {
        r.notes.push(if first.seccomp {
            "this bwrap cannot disable user namespaces (--disable-userns, bwrap 0.8): the seccomp \
             filter alone keeps commands from creating nested ones"
                .into()
        } else {
            "this bwrap cannot disable user namespaces (--disable-userns, bwrap 0.8): commands \
             may create nested user namespaces inside the sandbox"
                .into()
        });
    }
    if let Some(why) = no_filter {
        r.notes.push(why);
    } else if let Some(e) = seccomp_failed {
        r.notes.push(format!(
            "the seccomp filter could not be loaded, commands run without it: {e}"
        ));
    } else if !help.contains("--seccomp") {
        r.notes
            .push("this bwrap has no --seccomp: commands run without the seccomp filter".into());
    }
    if root && !Path::new("/usr/bin/setpriv").is_file() {
        r.problems
            .push("running as root but /usr/bin/setpriv (util-linux) is missing".into());
        r.hints
            .push("install util-linux: apt-get install util-linux".into());
    } else {
        match try_launch(&first) {
            Ok(()) => {
                r.launcher = Some(first);
                return r;
            }
            Err(e) => r
                .problems
                .push(format!("unprivileged user namespace sandbox failed: {e}")),
        }
    }
    userns_hints(&mut r.hints);
    if root {
        let (fallback, seccomp_failed) = hardened(Launcher {
            bwrap,
            mode: LaunchMode::Root,
            disable_userns: false,
            seccomp: first.seccomp,
        });
        match try_launch(&fallback) {
            Ok(()) => {
                if let Some(e) = seccomp_failed {
                    r.notes.push(format!(
                        "the seccomp filter could not be loaded, commands run without it: {e}"
                    ));
                }
                r.notes.push(
                    "running bwrap as root with all capabilities dropped: the kernel does not apply the \
                     process limit (RLIMIT_NPROC) to host root, so a fork bomb is stopped only by the timeout"
                        .into(),
                );
                r.launcher = Some(fallback);
                r.problems.clear();
                r.hints.clear();
                return r;
            }
            Err(e) => r.problems.push(format!("bwrap as root failed too: {e}")),
        }
    }
    if r.hints.is_empty() {
        r.hints.push(
            "user namespaces seem unavailable (e.g. inside a container without them): run on a host or VM \
             with user namespaces enabled, or give the container CAP_SYS_ADMIN/seccomp unconfined"
                .into(),
        );
    }
    r
}

/// `l` with what fails to launch here turned off, the seccomp filter first (and why it failed),
/// then `--disable-userns`; `l` unchanged when it launches or nothing does.
fn hardened(l: Launcher) -> (Launcher, Option<String>) {
    let Err(e) = try_launch(&l) else {
        return (l, None);
    };
    let without_filter = Launcher {
        seccomp: false,
        ..l.clone()
    };
    let without_userns = Launcher {
        disable_userns: false,
        ..l.clone()
    };
    let neither = Launcher {
        seccomp: false,
        disable_userns: false,
        ..l.clone()
    };
    if l.seccomp && try_launch(&without_filter).is_ok() {
        (without_filter, Some(e))
    } else if l.disable_userns && try_launch(&without_userns).is_ok() {
        (without_userns, None)
    } else if l.seccomp && l.disable_userns && try_launch(&neither).is_ok() {
        (neither, Some(e))
    } else {
        (l, None)
    }
}

/// [`check`] for the default bwrap location, computed once per process.
pub fn default_readiness() -> &'static Readiness {
    static CELL: OnceLock<Readiness> = OnceLock::new();
    CELL.get_or_init(|| check(None))
}

/// The launcher for `explicit` (or the default location), or why there is none.
pub fn launcher_for(explicit: Option<&Path>) -> Result<Launcher, SandboxError> {
    match explicit {
        None => default_readiness().launcher(),
        Some(p) => check(Some(p)).launcher(),
    }
}
