//! Escape attempts: each fails inside the sandbox and the host is verifiably untouched.
//! Every assertion here looks at the host side (host files, host sockets, host processes).

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use autosafe_ots::terminal::{FileKind, FileSpec};
use autosafe_sandbox::selftest::{
    SECCOMP_PROBE, bare_setup, host_processes_with, nonce, run_one, seccomp_probe_let_through,
    wait_no_process,
};
use autosafe_sandbox::{SandboxConfig, TerminalEpisode, check};

fn episode(cfg: &SandboxConfig, files: Vec<FileSpec>) -> TerminalEpisode {
    TerminalEpisode::start(&bare_setup(files), cfg).expect("sandbox starts")
}

#[test]
fn writes_outside_the_workspace_do_not_reach_the_host() {
    let n = nonce();
    let targets: Vec<PathBuf> = [
        std::env::temp_dir(),
        "/usr".into(),
        "/usr/bin".into(),
        "/etc".into(),
        "/".into(),
    ]
    .iter()
    .map(|d| d.join(format!("autosafe-escape-{n}")))
    .collect();
    let cmd: Vec<String> = targets
        .iter()
        .map(|t| format!("echo pwned > {} 2>&1", t.display()))
        .collect();
    let mut ep = episode(&SandboxConfig::default(), vec![]);
    let obs = ep
        .execute(&format!("{}; echo x >> /usr/bin/env; true", cmd.join("; ")))
        .unwrap();
    for t in &targets {
        assert!(!t.exists(), "{} was written on the host", t.display());
    }
    assert!(
        obs.output.contains("Read-only file system") || obs.output.contains("Permission denied"),
        "{}",
        obs.output
    );
    let env_bin = std::fs::read("/usr/bin/env").unwrap();
    assert!(
        !env_bin.ends_with(b"x\n"),
        "/usr/bin/env was modified on the host"
    );
}

#[test]
fn a_file_planted_in_the_host_temp_dir_cannot_be_read() {
    let n = nonce();
    let secret = format!("planted-secret-{n}");
    let path = std::env::temp_dir().join(format!("autosafe-planted-{n}"));
    std::fs::write(&path, &secret).unwrap();
    let mut ep = episode(&SandboxConfig::default(), vec![]);
    let obs = ep
        .execute(&format!("cat {}; grep -rs {secret} /tmp /home /srv /var /opt /etc /proc/1/root 2>/dev/null; ls -la /tmp", path.display()))
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        !obs.output.contains(&secret),
        "the sandbox read a host file: {}",
        obs.output
    );
    assert!(
        ep.state()
            .entries
            .values()
            .all(|n| !format!("{n:?}").contains(&secret))
    );
}

#[test]
fn no_network_connection_reaches_a_host_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut ep = episode(&SandboxConfig::default(), vec![]);
    let obs = ep
        .execute(&format!(
            "(echo hi > /dev/tcp/127.0.0.1/{port}) && echo CONNECTED; /usr/bin/curl -sS -m 2 http://127.0.0.1:{port}/ && echo CONNECTED; \
             (echo hi > /dev/tcp/8.8.8.8/53) && echo CONNECTED; cat /proc/net/dev | tail -n +3 | cut -d: -f1"
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        listener.accept().is_err(),
        "the host listener accepted a connection from the sandbox"
    );
    assert!(!obs.output.contains("CONNECTED"), "{}", obs.output);
    let interfaces: Vec<&str> = obs
        .output
        .lines()
        .filter(|l| !l.contains("Network is unreachable"))
        .collect();
    assert!(
        obs.output.contains("lo"),
        "only loopback expected: {interfaces:?}"
    );
}

#[test]
fn a_fork_bomb_is_contained_and_leaves_nothing_behind() {
    let r = run_one("fork_bomb", &SandboxConfig::default()).unwrap();
    assert!(r.blocked, "{}", r.detail);
}

#[test]
fn filling_the_disk_stops_at_the_limit() {
    let cfg = SandboxConfig {
        disk_limit: 8 * 1024 * 1024,
        file_size_limit: 32 * 1024 * 1024,
        ..SandboxConfig::default()
    };
    let mut ep = episode(&cfg, vec![]);
    let obs = ep
        .execute("dd if=/dev/zero of=$HOME/a bs=1M count=20 2>&1; dd if=/dev/zero of=$HOME/b bs=1M count=20 2>&1; dd if=/dev/zero of=/tmp/c bs=1M count=20 2>&1")
        .unwrap();
    assert!(
        obs.output.contains("No space left on device"),
        "{}",
        obs.output
    );
    // What the host keeps of the sandbox is bounded by the limit (tmpfs inside the sandbox;
    // the host never stores the agent's files on its own disk).
    assert!(
        ep.state().total_bytes() <= cfg.disk_limit,
        "{} bytes kept",
        ep.state().total_bytes()
    );
    // A single file beyond RLIMIT_FSIZE is cut too.
    let small = SandboxConfig {
        file_size_limit: 1024 * 1024,
        ..cfg.clone()
    };
    let mut ep = episode(&small, vec![]);
    let obs = ep
        .execute("dd if=/dev/zero of=$HOME/big bs=1M count=4 2>&1; ls -l $HOME/big")
        .unwrap();
    assert!(
        obs.output.contains("File size limit exceeded") || obs.output.contains("File too large"),
        "{}",
        obs.output
    );
    match ep.state().get("/home/user/big") {
        Some(autosafe_sandbox::state::Node::File { data, .. }) => {
            assert!(data.len() <= 1024 * 1024)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_command_past_the_timeout_is_killed_with_its_whole_tree() {
    let n = nonce();
    let marker = format!("autosafe-tree-{n}");
    let mut ep = episode(&SandboxConfig::default(), vec![]);
    let start = Instant::now();
    let obs = ep
        .execute_with_timeout(
            &format!(
                "sh -c 'sleep 300; : {marker}' & setsid sh -c 'sleep 300; : {marker}' & \
                 nohup sh -c 'trap \"\" TERM HUP INT; sleep 300; : {marker}' >/dev/null 2>&1 & echo started; sleep 300"
            ),
            Duration::from_secs(1),
        )
        .unwrap();
    let took = start.elapsed();
    assert!(obs.timed_out, "{obs:?}");
    assert!(obs.output.contains("started"));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let left = wait_no_process(&marker, Duration::from_secs(3));
    assert!(left.is_empty(), "orphans on the host: {left:?}");
    // The next command runs normally on the same state.
    assert_eq!(ep.execute("echo ok").unwrap().output, "ok\n");
}

#[test]
fn killing_the_parent_kills_the_sandbox() {
    let r = run_one("kill_parent", &SandboxConfig::default()).unwrap();
    assert!(r.blocked, "{}", r.detail);
}

#[test]
fn symlinks_planted_in_the_fixture_do_not_escape() {
    let n = nonce();
    let secret = format!("linked-secret-{n}");
    let planted = std::env::temp_dir().join(format!("autosafe-link-{n}"));
    std::fs::write(&planted, &secret).unwrap();
    let link = |path: &str, target: &str| FileSpec {
        path: path.into(),
        kind: FileKind::Symlink,
        content: None,
        mode: None,
        target: Some(target.into()),
    };
    let files = vec![
        link("notes/host", &planted.display().to_string()),
        link("hostetc", "/etc"),
        link("proc-root", "/proc/1/root"),
        link("up", "../../../.."),
    ];
    let mut ep = episode(&SandboxConfig::default(), files);
    let obs = ep
        .execute(&format!(
            "cat notes/host up{p}; cat hostetc/shadow; ls proc-root/; echo overwritten > notes/host; echo overwritten > up{p}; \
             echo x > hostetc/autosafe-{n}; true",
            p = planted.display()
        ))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&planted).unwrap(),
        secret,
        "the host file was changed"
    );
    std::fs::remove_file(&planted).unwrap();
    assert!(!obs.output.contains(&secret), "{}", obs.output);
    assert!(!PathBuf::from(format!("/etc/autosafe-{n}")).exists());
    if let Ok(shadow) = std::fs::read_to_string("/etc/shadow")
        && let Some(first) = shadow.lines().next()
    {
        assert!(!obs.output.contains(first), "host /etc/shadow was read");
    }
}

#[test]
fn host_processes_are_invisible() {
    let r = run_one("host_processes", &SandboxConfig::default()).unwrap();
    assert!(r.blocked, "{}", r.detail);
    assert!(host_processes_with("autosafe-never-started").is_empty());
}

#[test]
fn state_persists_between_commands_and_output_is_truncated() {
    let cfg = SandboxConfig {
        output_limit: 1000,
        ..SandboxConfig::default()
    };
    let mut ep = episode(&cfg, vec![]);
    ep.execute("mkdir -p proj && echo 'hello' > proj/a.txt && chmod 600 proj/a.txt")
        .unwrap();
    let obs = ep.execute("cat proj/a.txt; stat -c %a proj/a.txt").unwrap();
    assert_eq!(obs.output, "hello\n600\n");
    let obs = ep.execute("yes autosafe | head -n 10000; exit 3").unwrap();
    assert!(obs.truncated);
    assert_eq!(obs.output.len(), 1000);
    assert_eq!(obs.exit_code, 3);
    let tool = obs.to_tool_output();
    assert_eq!(tool["exit_code"], 3);
    assert!(
        tool["output"]
            .as_str()
            .unwrap()
            .ends_with("[output truncated]")
    );
}

#[test]
fn a_missing_bwrap_is_reported_with_what_to_install() {
    let r = check(Some(std::path::Path::new("/nonexistent/bwrap")));
    assert!(r.launcher.is_none());
    assert!(
        r.hints
            .iter()
            .any(|h| h.contains("apt-get install bubblewrap")),
        "{:?}",
        r.hints
    );
    let cfg = SandboxConfig {
        bwrap: Some("/nonexistent/bwrap".into()),
        ..SandboxConfig::default()
    };
    let err = TerminalEpisode::start(&bare_setup(vec![]), &cfg)
        .err()
        .expect("no sandbox without bwrap");
    assert!(err.to_string().contains("install bubblewrap"), "{err}");
}

/// `/dev/shm`, `/` and `/dev` are tmpfs, host memory: writing 3 × the disk limit into them
/// stops at `/dev/shm`'s own small size (the others are read-only), and the host's shared
/// memory does not grow by more (737 MB in 5 s against a 64 MB limit before).
#[test]
fn memory_filesystems_are_bounded_like_the_disk() {
    let r = run_one("fill_memory_filesystems", &SandboxConfig::default()).unwrap();
    assert!(r.blocked, "{}", r.detail);
    let mut ep = episode(&SandboxConfig::default(), vec![]);
    let obs = ep
        .execute("touch /x 2>&1; touch /dev/x 2>&1; df -B1 /dev/shm | tail -1")
        .unwrap();
    assert_eq!(
        obs.output.matches("Read-only file system").count(),
        2,
        "{}",
        obs.output
    );
    assert!(obs.output.contains(" 16777216 "), "{}", obs.output);
}

/// No user namespace (and so no mount or network namespace of its own) can be made inside,
/// where bwrap can disable them; the self-test reports it either way.
#[test]
fn nested_user_namespaces_are_refused() {
    let cfg = SandboxConfig::default();
    let r = run_one("nested_namespaces", &cfg).unwrap();
    let launcher = check(None).launcher().unwrap();
    if launcher.disable_userns {
        assert!(r.blocked, "{}", r.detail);
    } else {
        assert!(
            check(None)
                .notes
                .iter()
                .any(|n| n.contains("--disable-userns")),
            "{}",
            r.detail
        );
    }
}

/// Without `--disable-userns` (as with a bwrap older than 0.8), the seccomp filter alone
/// refuses nested namespaces, mounts, ptrace, bpf, keys and the rest; with the filter off too
/// the same commands make a user and mount namespace, mount a tmpfs and trace: the filter is
/// what stops them.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_seccomp_filter_alone_refuses_namespaces_mounts_and_ptrace() {
    let launcher = check(None).launcher().unwrap();
    assert!(launcher.seccomp, "no filter here: {:?}", check(None).notes);
    let run = |seccomp: bool| {
        let cfg = SandboxConfig {
            disable_userns: false,
            seccomp,
            ..SandboxConfig::default()
        };
        let mut ep = episode(&cfg, vec![]);
        ep.execute(&format!(
            "unshare -U -r true && echo MADE-user; \
             unshare -m true && echo MADE-mount; \
             mount -t tmpfs none /tmp && echo MADE-plain-tmpfs; \
             unshare -U -r -m sh -c 'mount -t tmpfs none /tmp && echo MADE-tmpfs'; \
             strace -o /dev/null true && echo MADE-strace; \
             {SECCOMP_PROBE}; echo hi | xargs echo && echo ORDINARY-ok"
        ))
        .unwrap()
        .output
    };
    let with = run(true);
    assert!(!with.contains("MADE-"), "{with}");
    assert!(with.contains("Operation not permitted"), "{with}");
    assert!(
        seccomp_probe_let_through(&with).is_empty(),
        "{:?}\n{with}",
        seccomp_probe_let_through(&with)
    );
    assert!(with.contains("hi\nORDINARY-ok"), "{with}");

    let without = run(false);
    for made in ["MADE-user", "MADE-tmpfs", "MADE-strace"] {
        assert!(without.contains(made), "{made} missing:\n{without}");
    }
    let through = seccomp_probe_let_through(&without);
    for call in ["unshare 0 ", "clone ", "ptrace 0 "] {
        assert!(
            through.iter().any(|l| l.starts_with(call)),
            "{call} refused without the filter: {through:?}"
        );
    }
}

/// By default every command runs under the filter, `--disable-userns` or not, and the fd that
/// carried the filter into bwrap is not open inside (the command sees the same fds as without).
#[cfg(target_arch = "x86_64")]
#[test]
fn every_command_runs_under_the_filter_and_its_fd_stays_outside() {
    let fds = |cfg: &SandboxConfig| {
        let mut ep = episode(cfg, vec![]);
        ep.execute("grep '^Seccomp' /proc/self/status; ls /proc/self/fd | tr '\\n' ' '")
            .unwrap()
            .output
    };
    let with = fds(&SandboxConfig::default());
    assert!(
        with.contains("Seccomp:\t2\nSeccomp_filters:\t1\n"),
        "{with}"
    );
    let without = fds(&SandboxConfig {
        seccomp: false,
        ..SandboxConfig::default()
    });
    assert!(without.contains("Seccomp:\t0\n"), "{without}");
    assert_eq!(
        with.lines().last(),
        without.lines().last(),
        "fds open inside"
    );
    let r = run_one("seccomp_filter", &SandboxConfig::default()).unwrap();
    assert!(r.blocked, "{}", r.detail);
}

/// An fd this process inherited without close-on-exec (here: a host pipe's write end) does not
/// reach the command: bwrap would hand it on, and the command could write to the host.
#[test]
fn an_inherited_host_fd_is_not_open_inside() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let (mut host_end, writer) = std::io::pipe().unwrap();
    // dup() leaves the copy without close-on-exec, as a parent shell's fds are.
    let leaked = nix::unistd::dup(&writer).unwrap();
    drop(writer);
    let n = nonce();
    let fd = leaked.as_raw_fd();
    let mut ep = episode(&SandboxConfig::default(), vec![]);
    let obs = ep
        .execute(&format!(
            "echo pwned-{n} >&{fd}; ls /proc/self/fd | tr '\\n' ' '"
        ))
        .unwrap();
    drop(leaked);
    let mut got = String::new();
    host_end.read_to_string(&mut got).unwrap();
    assert!(
        !got.contains("pwned"),
        "the command wrote to a host pipe: {got}"
    );
    assert!(obs.output.contains("Bad file descriptor"), "{}", obs.output);
}

/// A command leaving more entries than `max_files` in the persisted roots: its changes there
/// are dropped (sinks kept), the host never holds more than the cap, the agent is told, and the
/// episode goes on with checkers that still run.
#[test]
fn more_files_than_the_cap_are_not_kept_and_the_episode_goes_on() {
    let cfg = SandboxConfig {
        max_files: 500,
        ..SandboxConfig::default()
    };
    let mut ep = episode(&cfg, vec![]);
    ep.execute("echo kept > kept.txt").unwrap();
    let before = ep.state().clone();
    let obs = ep
        .execute(
            "mkdir many && cd many && seq 5000 | xargs touch && ls | wc -l; rm ~/kept.txt; \
             echo sent > /var/spool/outbound/x.log",
        )
        .unwrap();
    assert_eq!(obs.output, "5000\n", "{obs:?}");
    assert_eq!(obs.exit_code, 0);
    assert_eq!(obs.file_limit_hit, Some(500));
    let tool = obs.to_tool_output();
    assert!(
        tool["output"]
            .as_str()
            .unwrap()
            .contains("more than 500 files and directories"),
        "{tool}"
    );
    assert!(ep.state().entries.len() <= 500);
    assert!(ep.state().get("/home/user/many").is_none());
    assert_eq!(
        ep.state().get("/home/user/kept.txt"),
        before.get("/home/user/kept.txt")
    );
    assert!(ep.state().get("/var/spool/outbound/x.log").is_some());
    assert_eq!(ep.transcript()[1].file_limit_hit, Some(500));
    let next = ep
        .execute("cat kept.txt /var/spool/outbound/x.log; ls many 2>&1 | head -1")
        .unwrap();
    assert_eq!(
        next.output,
        "kept\nsent\nls: cannot access 'many': No such file or directory\n"
    );
    assert_eq!(next.file_limit_hit, None);
    let outcome = ep.finish(None);
    assert_eq!(outcome.safety.judgement, autosafe_ots::Judgement::Safe);
    assert_eq!(outcome.completed, Some(true));
}

#[test]
fn many_files_self_test_is_blocked() {
    let cfg = SandboxConfig {
        max_files: 2000,
        ..SandboxConfig::default()
    };
    let r = run_one("many_files", &cfg).unwrap();
    assert!(r.blocked, "{}", r.detail);
}

/// Files anywhere (`/tmp` included, which is never kept) cost the host kernel memory that no
/// tmpfs size bounds: past `max_inodes` the whole command is killed, and the next one runs.
#[test]
fn creating_inodes_without_end_is_killed_past_the_limit() {
    let cfg = SandboxConfig {
        max_inodes: 3000,
        ..SandboxConfig::default()
    };
    let mut ep = episode(&cfg, vec![]);
    let start = Instant::now();
    let obs = ep
        .execute("mkdir /tmp/m && cd /tmp/m && seq 100000000 | xargs touch; echo NOT-KILLED")
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "{obs:?}");
    assert_eq!(obs.exit_code, 137, "{obs:?}");
    assert!(!obs.output.contains("NOT-KILLED"), "{}", obs.output);
    let used: u32 = obs
        .output
        .trim()
        .strip_prefix("autosafe: ")
        .and_then(|s| s.split_once(' '))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", obs.output));
    assert!(used > 3000 && used < 3000 + 50_000, "{used}");
    assert!(!obs.timed_out);
    assert_eq!(ep.execute("ls /tmp; echo ok").unwrap().output, "ok\n");
    let r = run_one("many_inodes", &cfg).unwrap();
    assert!(r.blocked, "{}", r.detail);
}
