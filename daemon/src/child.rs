//! What a session's child does between its fork and its exec, prepared in advance so that
//! the child itself only makes system calls: no allocation, no lock, nothing that is not
//! async-signal-safe. The same steps run whether the child was forked by ptyd itself or by
//! the spawn helper (`spawner.rs`).
//!
//! A failing step is reported through a close-on-exec pipe: the parent reads end-of-file
//! when the exec succeeded, or the step and its `errno` when it did not.
//!
//! `unsafe` is allowed here: the child side is raw `libc` calls on prepared C strings.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::ptr;

use nix::libc;

/// A program, its arguments, environment and working directory, as the C strings the
/// child hands to `execve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlan {
    program: CString,
    cwd: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// The descriptors a child sets up from: its terminal, the error pipe's write end, and
/// (for a session with a cgroup) the cgroup's directory.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    /// The PTY slave, made 0, 1, 2 and the controlling terminal.
    pub slave: RawFd,
    /// Where a failed step is reported (close-on-exec).
    pub errors: RawFd,
    /// The session's cgroup directory, for a child that is not already in it (see
    /// [`clone_into_cgroup`]): it moves itself in before anything else.
    pub cgroup: Option<RawFd>,
}

impl ExecPlan {
    /// `program` run as `arg0 args…` in `cwd` with exactly `env`. Fails if any of them
    /// holds a NUL byte, which no C string can carry.
    pub fn new(
        program: &Path,
        arg0: &str,
        args: &[String],
        cwd: &Path,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<ExecPlan, String> {
        let c = |what: &str, s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| format!("{what} contains a NUL byte"))
        };
        let mut argv = vec![c("the command", arg0.as_ref())?];
        for arg in args {
            argv.push(c("an argument", arg.as_ref())?);
        }
        let mut envp = Vec::new();
        for (k, v) in env {
            let mut pair = k.into_vec();
            pair.push(b'=');
            pair.extend(v.into_vec());
            envp.push(
                CString::new(pair).map_err(|_| "an environment variable contains a NUL byte")?,
            );
        }
        Ok(ExecPlan {
            program: c("the program path", program.as_os_str())?,
            cwd: c("the working directory", cwd.as_os_str())?,
            argv,
            envp,
        })
    }

    /// The plan as bytes, for the spawn helper: counts, then NUL-terminated strings.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((self.argv.len() as u32).to_le_bytes());
        out.extend((self.envp.len() as u32).to_le_bytes());
        for s in [&self.program, &self.cwd].into_iter().chain(&self.argv).chain(&self.envp) {
            out.extend(s.as_bytes_with_nul());
        }
        out
    }

    /// The inverse of [`ExecPlan::encode`].
    pub fn decode(bytes: &[u8]) -> Result<ExecPlan, String> {
        let count = |at: usize| -> Result<usize, String> {
            let b = bytes.get(at..at + 4).ok_or("truncated plan")?;
            Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        };
        let (argc, envc) = (count(0)?, count(4)?);
        let mut strings = bytes[8..].split_inclusive(|b| *b == 0).map(|s| {
            CString::from_vec_with_nul(s.to_vec()).map_err(|_| "unterminated string in plan")
        });
        let mut next = || strings.next().ok_or("truncated plan".to_string())?.map_err(String::from);
        let program = next()?;
        let cwd = next()?;
        let argv = (0..argc).map(|_| next()).collect::<Result<Vec<_>, _>>()?;
        let envp = (0..envc).map(|_| next()).collect::<Result<Vec<_>, _>>()?;
        if next().is_ok() {
            return Err("trailing bytes after the plan".into());
        }
        Ok(ExecPlan { program, cwd, argv, envp })
    }

    /// Becomes the program, in a child process that was just forked: joins the cgroup,
    /// resets signals, becomes a session leader with the terminal as its controlling tty on
    /// 0, 1 and 2, changes directory and execs. Never returns: a failed step is written to
    /// `fds.errors` and the child exits with 127.
    ///
    /// # Safety
    /// Call only in the child of a fork (or `clone` without `CLONE_VM`), with `fds` open.
    /// Everything it does is async-signal-safe, so the parent may have had other threads.
    pub unsafe fn exec_in_child(
        &self,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
        fds: ChildFds,
    ) -> ! {
        // SAFETY (whole body): raw system calls on descriptors the caller vouches for and on
        // C strings and pointer arrays that `self` keeps alive; nothing allocates.
        unsafe {
            let errors = above_stdio(fds.errors);
            let fail = |step: Step| -> ! {
                let report = Failure { step, errno: errno() }.to_bytes();
                libc::write(errors, report.as_ptr().cast(), report.len());
                libc::_exit(127)
            };
            if let Some(dir) = fds.cgroup {
                let flags = libc::O_WRONLY | libc::O_CLOEXEC;
                let procs = libc::openat(dir, c"cgroup.procs".as_ptr(), flags);
                // "0" is the writing process itself.
                if procs < 0 || libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                    fail(Step::Cgroup);
                }
                libc::close(procs);
            }
            let slave = above_stdio(fds.slave);
            // Dispositions a parent set (the Rust runtime ignores SIGPIPE; tokio handles
            // SIGCHLD, SIGTERM, SIGINT) are not the program's.
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            for signal in 1..=libc::SIGRTMAX() {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::sigaction(signal, &default, ptr::null_mut());
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
            if libc::setsid() < 0 {
                fail(Step::Setsid);
            }
            for target in 0..3 {
                if libc::dup2(slave, target) < 0 {
                    fail(Step::Terminal);
                }
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                fail(Step::ControllingTerminal);
            }
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                fail(Step::Chdir);
            }
            // Every descriptor of ptyd is opened close-on-exec; this makes sure of it for
            // any that a library opened without the flag. An error (a kernel before 5.11)
            // leaves the flag as all there is.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            libc::execve(self.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(Step::Exec)
        }
    }

    /// The NULL-terminated pointer arrays `execve` takes, borrowing from `self`; built
    /// before the fork, since the child may not allocate.
    pub fn pointers(&self) -> (Vec<*const libc::c_char>, Vec<*const libc::c_char>) {
        let array = |strings: &[CString]| {
            strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(ptr::null())).collect()
        };
        (array(&self.argv), array(&self.envp))
    }
}

/// `fd`, or a copy of it numbered 3 or above when it is 0, 1 or 2 (a daemon started with a
/// standard descriptor closed), so that setting up stdio cannot overwrite it.
///
/// # Safety
/// Async-signal-safe; for the child only.
unsafe fn above_stdio(fd: RawFd) -> RawFd {
    if fd > 2 {
        return fd;
    }
    // SAFETY: fcntl on a descriptor the caller owns; no memory involved.
    unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Forks ptyd itself and runs `plan` in the child; returns the child's pid. The fallback
/// when there is no spawn helper: the fork copies the daemon's page tables, which costs
/// more the bigger the daemon has grown.
pub fn fork_exec(plan: &ExecPlan, fds: ChildFds) -> io::Result<u32> {
    let (argv, envp) = plan.pointers();
    // SAFETY: the child runs only `exec_in_child`, which is async-signal-safe, on data
    // allocated before the fork; the parent continues normally.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe { plan.exec_in_child(&argv, &envp, fds) },
        pid => Ok(pid as u32),
    }
}

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP`, not in every libc crate yet.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks (as `fork`, plus `flags` such as `CLONE_PARENT`) with the child created right in
/// the cgroup whose directory is `cgroup`: returns the child's pid in the parent and 0 in
/// the child. Moving a process into a cgroup afterwards (`cgroup.procs`) takes a lock
/// whose writers wait for an RCU grace period when none moved just before: 10 to 30 ms
/// on every spawn that comes alone. Fails on kernels before 5.7 (and where the cgroup
/// cannot take the child this way); the caller then forks plainly and lets the child
/// join through `cgroup.procs`, which reports a real refusal with its reason.
///
/// # Safety
/// As for `fork`: in the child, only async-signal-safe calls on data made before.
pub unsafe fn clone_into_cgroup(cgroup: RawFd, flags: u64) -> io::Result<libc::pid_t> {
    // A sibling's exit signal is the caller's own (clone3 refuses one given with it).
    let sibling = flags & libc::CLONE_PARENT as u64 != 0;
    let mut args = CloneArgs {
        flags: flags | CLONE_INTO_CGROUP,
        exit_signal: if sibling { 0 } else { libc::SIGCHLD as u64 },
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack duplicates the caller like fork;
    // `args` lives across the call; the caller keeps the child to async-signal-safe code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        pid => Ok(pid as libc::pid_t),
    }
}

/// A close-on-exec pipe for a child's setup errors: (read end, write end).
pub fn error_pipe() -> io::Result<(File, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(read), write))
}

/// Waits until the child has exec'd (end-of-file) or reported the step that failed.
/// The parent must have closed its copy of the write end.
pub fn exec_result(mut errors: File) -> Result<(), Failure> {
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match errors.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Failure { step: Step::Report, errno: e.raw_os_error().unwrap_or(0) })
            }
        }
    }
    match got {
        0 => Ok(()),
        8 => Err(Failure::from_bytes(report)),
        _ => Err(Failure { step: Step::Report, errno: libc::EPROTO }),
    }
}

/// The step of a child's setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Joining the session's cgroup.
    Cgroup = 1,
    /// Becoming a session leader.
    Setsid,
    /// Putting the terminal on 0, 1 and 2.
    Terminal,
    /// Making the terminal the controlling one.
    ControllingTerminal,
    /// Changing to the working directory.
    Chdir,
    /// The exec itself.
    Exec,
    /// Reading the child's report (the parent's side).
    Report,
}

/// A failed step and its `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// What failed.
    pub step: Step,
    /// Why.
    pub errno: i32,
}

impl Failure {
    fn to_bytes(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&(self.step as u32).to_le_bytes());
        out[4..].copy_from_slice(&self.errno.to_le_bytes());
        out
    }

    fn from_bytes(b: [u8; 8]) -> Failure {
        let step = match u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) {
            1 => Step::Cgroup,
            2 => Step::Setsid,
            3 => Step::Terminal,
            4 => Step::ControllingTerminal,
            5 => Step::Chdir,
            6 => Step::Exec,
            _ => Step::Report,
        };
        Failure { step, errno: i32::from_le_bytes(b[4..].try_into().expect("4 bytes")) }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.step {
            Step::Cgroup => "joining the session's cgroup",
            Step::Setsid => "setsid",
            Step::Terminal => "putting the terminal on stdin/stdout/stderr",
            Step::ControllingTerminal => "taking the terminal as controlling tty",
            Step::Chdir => "changing directory",
            Step::Exec => "exec",
            Step::Report => "reading the child's setup report",
        };
        write!(f, "{step}: {}", io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ExecPlan {
        ExecPlan::new(
            Path::new("/bin/echo"),
            "echo",
            &["a b".into(), String::new(), "ü".into()],
            Path::new("/tmp"),
            [("A".into(), "1".into()), ("EMPTY".into(), OsString::new())],
        )
        .unwrap()
    }

    #[test]
    fn a_plan_survives_encoding() {
        let p = plan();
        assert_eq!(ExecPlan::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn broken_plans_are_refused() {
        let bytes = plan().encode();
        assert!(ExecPlan::decode(&bytes[..bytes.len() - 1]).is_err(), "unterminated");
        assert!(ExecPlan::decode(&bytes[..20]).is_err(), "truncated");
        assert!(ExecPlan::decode(&[1, 2]).is_err(), "no counts");
        let mut extra = bytes.clone();
        extra.extend(b"x\0");
        assert!(ExecPlan::decode(&extra).is_err(), "trailing");
    }

    #[test]
    fn nul_bytes_are_refused() {
        let err =
            ExecPlan::new(Path::new("/bin/echo"), "echo", &["a\0b".into()], Path::new("/"), [])
                .unwrap_err();
        assert!(err.contains("NUL"), "{err}");
    }

    #[test]
    fn failures_cross_the_pipe() {
        let f = Failure { step: Step::Chdir, errno: libc::ENOENT };
        assert_eq!(Failure::from_bytes(f.to_bytes()), f);
        assert!(f.to_string().starts_with("changing directory: No such file"), "{f}");
    }
}
