//! The seccomp filter every sandboxed command runs under (bwrap `--seccomp FD`).
//!
//! Without a user namespace of its own a command holds no capability, so most of what this
//! denies would fail anyway; the filter is the second wall: it also holds where bwrap cannot
//! `--disable-userns` (older than 0.8), where a nested user namespace would give the command
//! root over its own mount, network and pid namespaces, and it keeps kernel interfaces that
//! shell tools never need (bpf, perf, keys, io_uring, modules) out of reach.
//!
//! The program is classic BPF, assembled here: a few dozen instructions, checked by a small
//! interpreter in the tests and by real commands in `tests/escape.rs`.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// `seccomp_data.arch` of x86_64 (`AUDIT_ARCH_X86_64`).
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `seccomp_data.arch` of 32-bit x86 (`AUDIT_ARCH_I386`), reachable from x86_64 via `int 0x80`.
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// x32 ABI system calls carry this bit in `nr` under `AUDIT_ARCH_X86_64`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Offsets in `struct seccomp_data`: `nr`, `arch`, and the low 32 bits of `args[0]`
/// (little-endian; every flag tested lives there).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;

/// The namespace flags of `clone` (`CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
/// CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`).
const CLONE_NS_FLAGS: u32 = 0x0002_0000 | 0x7e00_0000;
/// `unshare` takes the same flags plus `CLONE_NEWTIME` (0x80, which `clone` reads as part of
/// the exit signal). `unshare(CLONE_FILES | CLONE_FS)` and the like stay allowed.
const UNSHARE_NS_FLAGS: u32 = CLONE_NS_FLAGS | 0x80;

/// System calls that always fail with EPERM: (name, x86_64 number, i386 number), from the
/// kernel's `unistd_64.h` and `unistd_32.h`.
const DENIED: &[(&str, Option<u32>, Option<u32>)] = &[
    ("setns", Some(308), Some(346)),
    ("mount", Some(165), Some(21)),
    ("umount", None, Some(22)),
    ("umount2", Some(166), Some(52)),
    ("pivot_root", Some(155), Some(217)),
    ("chroot", Some(161), Some(61)),
    ("open_tree", Some(428), Some(428)),
    ("move_mount", Some(429), Some(429)),
    ("fsopen", Some(430), Some(430)),
    ("fsconfig", Some(431), Some(431)),
    ("fsmount", Some(432), Some(432)),
    ("fspick", Some(433), Some(433)),
    ("mount_setattr", Some(442), Some(442)),
    ("ptrace", Some(101), Some(26)),
    ("process_vm_readv", Some(310), Some(347)),
    ("process_vm_writev", Some(311), Some(348)),
    ("keyctl", Some(250), Some(288)),
    ("add_key", Some(248), Some(286)),
    ("request_key", Some(249), Some(287)),
    ("bpf", Some(321), Some(357)),
    ("perf_event_open", Some(298), Some(336)),
    ("userfaultfd", Some(323), Some(374)),
    ("io_uring_setup", Some(425), Some(425)),
    ("io_uring_enter", Some(426), Some(426)),
    ("io_uring_register", Some(427), Some(427)),
    ("kexec_load", Some(246), Some(283)),
    ("kexec_file_load", Some(320), None),
    ("init_module", Some(175), Some(128)),
    ("finit_module", Some(313), Some(350)),
    ("delete_module", Some(176), Some(129)),
];

/// `clone`, `unshare` and `clone3`: (x86_64, i386).
const CLONE: (u32, u32) = (56, 120);
const UNSHARE: (u32, u32) = (272, 310);
const CLONE3: (u32, u32) = (435, 435);

/// Why there is no filter on this machine, if there is none.
pub(crate) fn unsupported() -> Option<String> {
    (!cfg!(target_arch = "x86_64")).then(|| {
        format!(
            "no seccomp filter is built for {} (x86_64 only): commands run without one, with \
             nothing but the user namespace between them and mount, ptrace, bpf, keyctl…",
            std::env::consts::ARCH
        )
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Label {
    I386,
    CloneFlags,
    UnshareFlags,
    Eperm,
    Enosys,
    Kill,
}

enum Ins {
    Load(u32),
    /// Jump to the label when the accumulator equals / differs from / is at least / has any
    /// bit of `k`; go on otherwise.
    Jeq(u32, Label),
    Jne(u32, Label),
    Jge(u32, Label),
    Jset(u32, Label),
    Ret(u32),
    At(Label),
}

/// The denial list of one architecture, from `nr` loaded on.
fn arch_body(v: &mut Vec<Ins>, x86_64: bool) {
    let pick = |p: (u32, u32)| if x86_64 { p.0 } else { p.1 };
    v.push(Ins::Jeq(pick(CLONE), Label::CloneFlags));
    v.push(Ins::Jeq(pick(UNSHARE), Label::UnshareFlags));
    v.push(Ins::Jeq(pick(CLONE3), Label::Enosys));
    let mut nrs: Vec<u32> = DENIED
        .iter()
        .filter_map(|(_, x64, x86)| if x86_64 { *x64 } else { *x86 })
        .collect();
    nrs.sort_unstable();
    nrs.dedup();
    v.extend(nrs.into_iter().map(|nr| Ins::Jeq(nr, Label::Eperm)));
    v.push(Ins::Ret(RET_ALLOW));
}

/// The program as `struct sock_filter` records: (code, jt, jf, k).
fn program() -> Vec<(u16, u8, u8, u32)> {
    use Ins::*;
    let mut v = vec![Load(OFF_ARCH), Jne(AUDIT_ARCH_X86_64, Label::I386)];
    // x86_64: no x32 system calls at all (nothing here is built for x32).
    v.push(Load(OFF_NR));
    v.push(Jge(X32_SYSCALL_BIT, Label::Enosys));
    arch_body(&mut v, true);
    v.push(At(Label::I386));
    // Any other ABI cannot occur on an x86_64 kernel: refuse it outright.
    v.push(Jne(AUDIT_ARCH_I386, Label::Kill));
    v.push(Load(OFF_NR));
    arch_body(&mut v, false);
    v.extend([
        At(Label::CloneFlags),
        Load(OFF_ARG0_LO),
        Jset(CLONE_NS_FLAGS, Label::Eperm),
        Ret(RET_ALLOW),
        At(Label::UnshareFlags),
        Load(OFF_ARG0_LO),
        Jset(UNSHARE_NS_FLAGS, Label::Eperm),
        Ret(RET_ALLOW),
        At(Label::Eperm),
        Ret(RET_ERRNO | EPERM),
        At(Label::Enosys),
        Ret(RET_ERRNO | ENOSYS),
        At(Label::Kill),
        Ret(RET_KILL_PROCESS),
    ]);
    assemble(&v)
}

/// Resolves the labels (classic BPF jumps are forward offsets of at most 255).
fn assemble(v: &[Ins]) -> Vec<(u16, u8, u8, u32)> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for i in v {
        match i {
            Ins::At(l) => {
                at.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for i in v {
        let pc = out.len();
        let off = |l: &Label| {
            let d = at[l] - pc - 1;
            u8::try_from(d).expect("seccomp jump within 255 instructions")
        };
        match i {
            Ins::At(_) => {}
            Ins::Load(k) => out.push((LD_W_ABS, 0, 0, *k)),
            Ins::Jeq(k, l) => out.push((JEQ_K, off(l), 0, *k)),
            Ins::Jne(k, l) => out.push((JEQ_K, 0, off(l), *k)),
            Ins::Jge(k, l) => out.push((JGE_K, off(l), 0, *k)),
            Ins::Jset(k, l) => out.push((JSET_K, off(l), 0, *k)),
            Ins::Ret(k) => out.push((RET_K, 0, 0, *k)),
        }
    }
    out
}

/// The compiled program as bwrap reads it (an array of `struct sock_filter`).
pub(crate) fn program_bytes() -> Vec<u8> {
    let mut b = Vec::new();
    for (code, jt, jf, k) in program() {
        b.extend(code.to_ne_bytes());
        b.extend([jt, jf]);
        b.extend(k.to_ne_bytes());
    }
    b
}

/// The read end of a pipe holding the program, for bwrap's `--seccomp FD`. It is close-on-exec
/// here: [`crate::inherit::only_stdio_and`] opens it to bwrap alone, so that no other process
/// this one starts (another sandbox among them) inherits it.
pub(crate) struct FilterFd(OwnedFd);

impl FilterFd {
    /// A pipe with the whole program in it (a few hundred bytes: the pipe buffer holds it) and
    /// its write end closed, so that bwrap reads it to the end.
    pub(crate) fn new() -> std::io::Result<Self> {
        let (reader, mut writer) = std::io::pipe()?;
        writer.write_all(&program_bytes())?;
        drop(writer);
        let mut fd = OwnedFd::from(reader);
        // Not on 0–2, which the child's stdio takes over (`try_clone` picks 3 or above).
        if fd.as_raw_fd() < 3 {
            fd = fd.try_clone()?;
        }
        Ok(FilterFd(fd))
    }

    /// The fd number bwrap is told.
    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program the way the kernel does, for the instructions it uses.
    fn eval(arch: u32, nr: u32, arg0: u64) -> u32 {
        let prog = program();
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = prog[pc];
            pc += 1;
            let jump = |cond: bool| if cond { jt as usize } else { jf as usize };
            match code {
                0x20 => {
                    let k = k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x15 => pc += jump(acc == k),
                0x35 => pc += jump(acc >= k),
                0x45 => pc += jump(acc & k != 0),
                0x06 => return k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    const DENY: u32 = RET_ERRNO | EPERM;
    const NOSYS: u32 = RET_ERRNO | ENOSYS;

    #[test]
    fn every_denied_call_fails_with_eperm_on_both_abis() {
        for (name, x64, x86) in DENIED {
            if let Some(x64) = x64 {
                assert_eq!(eval(AUDIT_ARCH_X86_64, *x64, 0), DENY, "{name} x86_64");
            }
            if let Some(x86) = x86 {
                assert_eq!(eval(AUDIT_ARCH_I386, *x86, 0), DENY, "{name} i386");
            }
        }
    }

    #[test]
    fn namespace_flags_are_refused_and_plain_forks_and_threads_are_not() {
        let fork = 0x0120_0011; // SIGCHLD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
        let thread = 0x003d_0f00; // pthread_create's flags
        for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386] {
            let (clone, unshare) = if arch == AUDIT_ARCH_X86_64 {
                (CLONE.0, UNSHARE.0)
            } else {
                (CLONE.1, UNSHARE.1)
            };
            for flags in [fork, thread] {
                assert_eq!(eval(arch, clone, flags), RET_ALLOW, "{flags:#x}");
            }
            for bit in [
                0x0002_0000,
                0x0200_0000,
                0x0400_0000,
                0x0800_0000,
                0x1000_0000,
                0x2000_0000,
                0x4000_0000,
            ] {
                assert_eq!(eval(arch, clone, fork | bit), DENY, "clone {bit:#x}");
                assert_eq!(eval(arch, unshare, bit), DENY, "unshare {bit:#x}");
            }
            assert_eq!(eval(arch, unshare, 0x80), DENY, "unshare CLONE_NEWTIME");
            // CLONE_FILES | CLONE_FS | CLONE_SYSVSEM
            assert_eq!(eval(arch, unshare, 0x0004_0600), RET_ALLOW);
            assert_eq!(eval(arch, CLONE3.0, 0), NOSYS);
        }
    }

    #[test]
    fn ordinary_calls_pass_x32_is_refused_and_other_abis_are_killed() {
        // read, write, open, close, fork, execve, wait4, exit_group, prlimit64
        for nr in [0, 1, 2, 3, 57, 59, 61, 231, 302] {
            assert_eq!(eval(AUDIT_ARCH_X86_64, nr, 0), RET_ALLOW, "x86_64 {nr}");
        }
        // exit, read, write, open, close, execve, vfork, exit_group, prlimit64
        for nr in [1, 3, 4, 5, 6, 11, 190, 252, 340] {
            assert_eq!(eval(AUDIT_ARCH_I386, nr, 0), RET_ALLOW, "i386 {nr}");
        }
        assert_eq!(eval(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 272, 0), NOSYS);
        assert_eq!(eval(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, 0), NOSYS);
        assert_eq!(eval(0xC000_00B7, 97, 0), RET_KILL_PROCESS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_numbers_match_the_c_library() {
        use nix::libc;
        let by_name = |n: &str| -> i64 {
            match n {
                "setns" => libc::SYS_setns,
                "mount" => libc::SYS_mount,
                "umount2" => libc::SYS_umount2,
                "pivot_root" => libc::SYS_pivot_root,
                "chroot" => libc::SYS_chroot,
                "open_tree" => libc::SYS_open_tree,
                "move_mount" => libc::SYS_move_mount,
                "fsopen" => libc::SYS_fsopen,
                "fsconfig" => libc::SYS_fsconfig,
                "fsmount" => libc::SYS_fsmount,
                "fspick" => libc::SYS_fspick,
                "mount_setattr" => libc::SYS_mount_setattr,
                "ptrace" => libc::SYS_ptrace,
                "process_vm_readv" => libc::SYS_process_vm_readv,
                "process_vm_writev" => libc::SYS_process_vm_writev,
                "keyctl" => libc::SYS_keyctl,
                "add_key" => libc::SYS_add_key,
                "request_key" => libc::SYS_request_key,
                "bpf" => libc::SYS_bpf,
                "perf_event_open" => libc::SYS_perf_event_open,
                "userfaultfd" => libc::SYS_userfaultfd,
                "io_uring_setup" => libc::SYS_io_uring_setup,
                "io_uring_enter" => libc::SYS_io_uring_enter,
                "io_uring_register" => libc::SYS_io_uring_register,
                "kexec_load" => libc::SYS_kexec_load,
                "kexec_file_load" => libc::SYS_kexec_file_load,
                "init_module" => libc::SYS_init_module,
                "finit_module" => libc::SYS_finit_module,
                "delete_module" => libc::SYS_delete_module,
                other => panic!("{other} missing here"),
            }
        };
        for (name, x64, _) in DENIED {
            if let Some(x64) = x64 {
                assert_eq!(i64::from(*x64), by_name(name), "{name}");
            }
        }
        assert_eq!(i64::from(CLONE.0), libc::SYS_clone);
        assert_eq!(i64::from(UNSHARE.0), libc::SYS_unshare);
        assert_eq!(i64::from(CLONE3.0), libc::SYS_clone3);
    }

    #[test]
    fn the_program_is_whole_sock_filter_records() {
        let b = program_bytes();
        assert_eq!(b.len() % 8, 0);
        assert!(b.len() / 8 < 256, "{} instructions", b.len() / 8);
    }
}
