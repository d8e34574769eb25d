//! Which fds bwrap inherits: stdio and the seccomp filter's, nothing else.
//!
//! bwrap hands every fd it inherits on to the command. Those this process opens are
//! close-on-exec, but one it inherited without (from a shell, a job server, a CI runner) would
//! reach the sandbox: a host pipe or file the command could write to.

#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;

/// Marks every fd from 3 up close-on-exec in `cmd`'s child (not here, where other children
/// may need them), and `keep` not.
pub(crate) fn only_stdio_and(cmd: &mut Command, keep: Option<RawFd>) {
    // Where `close_range` cannot mark (Linux before 5.11), the fds open without close-on-exec
    // now: listed here because the child, between fork and exec, may not allocate.
    let listed = inherited();
    // SAFETY: runs between fork and exec, calling only async-signal-safe system calls on fd
    // numbers; no memory is allocated or freed.
    unsafe {
        cmd.pre_exec(move || {
            let marked = libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) == 0;
            if !marked {
                for &fd in &listed {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            if let Some(fd) = keep
                && libc::fcntl(fd, libc::F_SETFD, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// This process's fds from 3 up that are open without close-on-exec.
fn inherited() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| {
            // SAFETY: F_GETFD only reads the flags; a number closed meanwhile (the directory's
            // own fd) gives EBADF.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            fd > 2 && flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .collect()
}
