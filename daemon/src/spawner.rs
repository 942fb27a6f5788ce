//! The spawn helper: a small single-threaded copy of ptyd, forked at start while the daemon
//! is still small, that starts every session's child for it.
//!
//! A fork copies the forking process's page tables, and the child's exec throws them away
//! again; forking the daemon itself therefore costs more the more sessions it holds (about
//! twice as long with 500 live sessions, and every page it touches afterwards faults once
//! for copy-on-write). The helper stays the size it had at start, so a spawn costs the
//! same with 0 or 500 sessions. It forks with `CLONE_PARENT`, so each child is ptyd's own:
//! ptyd's reaper collects its exit status exactly as if ptyd had forked it.
//!
//! Protocol (a socket pair, ptyd's end close-on-exec): ptyd sends a 4-byte length and an
//! [`ExecPlan`], with the PTY slave, the error pipe's write end and optionally the
//! session's cgroup directory attached (`SCM_RIGHTS`), which the child is created in
//! (`child::clone_into_cgroup`); the helper answers with the child's pid as 4 bytes, or
//! a negative `errno` when it could not fork. Whether the exec worked
//! comes to ptyd through the error pipe (`child.rs`), not through the helper, so the
//! helper never waits for a child.
//!
//! When ptyd's end closes (ptyd exited or exec'd another image), the helper exits. When the
//! helper is gone (killed), ptyd says so once and forks its children itself.
//!
//! `unsafe` is allowed here for `fork` and `clone` and the descriptor calls around them.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::libc;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::child::{ChildFds, ExecPlan};

/// The process name the helper shows in `ps` and `top`.
pub const NAME: &str = "ptyd-spawner";

/// The largest plan the helper accepts (program, arguments and environment together); the
/// kernel refuses an exec with more anyway.
const MAX_PLAN: usize = 8 << 20;

/// ptyd's end of the helper.
#[derive(Debug)]
pub struct SpawnHelper {
    socket: Mutex<UnixStream>,
    pid: u32,
    gone: AtomicBool,
}

/// Why a spawn through the helper did not happen.
#[derive(Debug)]
pub enum HelperError {
    /// The helper is not there any more and started nothing; fork in ptyd instead.
    Gone(io::Error),
    /// The helper ended after it had the whole request, before answering: it may have
    /// started the child. Forking again could run the program twice, so this spawn fails.
    Lost(io::Error),
    /// The helper could not fork this child.
    Fork(io::Error),
}

impl SpawnHelper {
    /// Forks the helper.
    ///
    /// # Safety
    /// The process must be single-threaded: the helper is a full copy of it and goes on
    /// running Rust code (allocating, reading its socket) after the fork.
    pub unsafe fn start() -> io::Result<SpawnHelper> {
        let (ours, theirs) = UnixStream::pair()?;
        let parent = nix::unistd::getpid();
        // SAFETY: single-threaded per this function's contract, so the child may do anything.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(ours);
                let code = match serve(theirs, parent) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("{NAME}: {e}");
                        1
                    }
                };
                // SAFETY: leaving without running ptyd's exit paths (atexit handlers, the
                // parent's buffered output), which belong to the daemon.
                unsafe { libc::_exit(code) }
            }
            pid => {
                drop(theirs);
                Ok(SpawnHelper {
                    socket: Mutex::new(ours),
                    pid: pid as u32,
                    gone: AtomicBool::new(false),
                })
            }
        }
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the helper has been found gone.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Has the helper start a child running `plan` on `fds`; returns its pid. Blocking
    /// (one round trip; the helper does not wait for the exec).
    pub fn spawn(&self, plan: &ExecPlan, fds: ChildFds) -> Result<u32, HelperError> {
        if self.is_gone() {
            return Err(HelperError::Gone(io::Error::from(io::ErrorKind::NotConnected)));
        }
        let mut socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let result = request(&mut socket, plan, fds);
        if let Err(HelperError::Gone(e) | HelperError::Lost(e)) = &result {
            if !self.gone.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    pid = self.pid,
                    error = %e,
                    "the spawn helper is gone; ptyd forks sessions itself from now on (slower with many sessions)"
                );
            }
        }
        result
    }
}

fn request(socket: &mut UnixStream, plan: &ExecPlan, fds: ChildFds) -> Result<u32, HelperError> {
    let body = plan.encode();
    let len = (body.len() as u32).to_le_bytes();
    let mut passed = vec![fds.slave, fds.errors];
    passed.extend(fds.cgroup);
    let rights = [ControlMessage::ScmRights(&passed)];
    let iov = [IoSlice::new(&len), IoSlice::new(&body)];
    let sent = sendmsg::<()>(socket.as_raw_fd(), &iov, &rights, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| HelperError::Gone(e.into()))?;
    // A stream socket may take less than all at once; the descriptors went with the first
    // byte.
    if sent < len.len() {
        socket.write_all(&len[sent..]).map_err(HelperError::Gone)?;
    }
    let body_sent = sent.saturating_sub(len.len());
    socket.write_all(&body[body_sent..]).map_err(HelperError::Gone)?;
    let mut reply = [0u8; 4];
    socket.read_exact(&mut reply).map_err(HelperError::Lost)?;
    match i32::from_le_bytes(reply) {
        pid if pid > 0 => Ok(pid as u32),
        errno => Err(HelperError::Fork(io::Error::from_raw_os_error(-errno))),
    }
}

/// The helper's loop: one request at a time until ptyd's end closes.
fn serve(socket: UnixStream, parent: nix::unistd::Pid) -> io::Result<()> {
    // SAFETY: prctl with integer arguments. The helper must not outlive ptyd (the socket's
    // end-of-file says so too, but only once the helper next reads).
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let name = std::ffi::CString::new(NAME).expect("no NUL");
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
    // The parent may have died between the fork and the prctl.
    if nix::unistd::getppid() != parent {
        return Ok(());
    }
    keep_only(socket.as_raw_fd());
    let mut socket = socket;
    loop {
        let Some((plan, fds)) = receive(&mut socket)? else { return Ok(()) };
        let [slave, errors, cgroup @ ..] = fds.as_slice() else {
            return Err(io::Error::other("a request came without its descriptors"));
        };
        let child = ChildFds {
            slave: slave.as_raw_fd(),
            errors: errors.as_raw_fd(),
            cgroup: cgroup.first().map(AsRawFd::as_raw_fd),
        };
        let (argv, envp) = plan.pointers();
        // SAFETY: fork-like clones of this single-threaded process; the child only runs
        // `exec_in_child`. CLONE_PARENT makes the child ptyd's, SIGCHLD is what ptyd
        // gets when it ends.
        let (pid, in_cgroup) = match child.cgroup {
            Some(dir) => match unsafe { crate::child::clone_into_cgroup(dir, CLONE_PARENT) } {
                Ok(pid) => (pid as libc::c_long, true),
                Err(_) => (unsafe { clone_plainly() }, false),
            },
            None => (unsafe { clone_plainly() }, false),
        };
        let reply = match pid {
            -1 => -io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO),
            0 => {
                let child = if in_cgroup { ChildFds { cgroup: None, ..child } } else { child };
                unsafe { plan.exec_in_child(&argv, &envp, child) }
            }
            pid => pid as i32,
        };
        // Our copies of the child's descriptors go now: the error pipe must have only the
        // child as writer.
        drop(fds);
        socket.write_all(&reply.to_le_bytes())?;
    }
}

const CLONE_PARENT: u64 = libc::CLONE_PARENT as u64;

/// `clone(CLONE_PARENT)`, otherwise as `fork`: the pid, 0 in the child, -1 on failure.
///
/// # Safety
/// As for `fork`.
unsafe fn clone_plainly() -> libc::c_long {
    // SAFETY: clone without CLONE_VM or a stack duplicates the caller like fork.
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    }
}

/// Closes every descriptor above 2 but `keep`: the helper holds nothing of the daemon's
/// (its listener, systemd's sockets) that a child could inherit by a missing flag.
fn keep_only(keep: RawFd) {
    // SAFETY: close_range with integers; nothing in the helper owns these descriptors
    // (it is a copy of ptyd from before it opened any but `keep`).
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

/// One request: `None` at end-of-file.
fn receive(socket: &mut UnixStream) -> io::Result<Option<(ExecPlan, Vec<OwnedFd>)>> {
    let mut len = [0u8; 4];
    let mut cmsg = nix::cmsg_space!([RawFd; 3]);
    let (got, fds) = {
        let mut iov = [IoSliceMut::new(&mut len)];
        let msg = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    if got == 0 {
        return Ok(None);
    }
    socket.read_exact(&mut len[got..])?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_PLAN {
        return Err(io::Error::other(format!("a plan of {len} bytes (at most {MAX_PLAN})")));
    }
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body)?;
    let plan = ExecPlan::decode(&body).map_err(io::Error::other)?;
    Ok(Some((plan, fds)))
}
