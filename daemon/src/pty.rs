//! Creating a PTY with a child on it, the RAII handle that owns its slot, its process
//! group and its cgroup (its bytes move in `pty_io`).
//!
//! The child's own steps between fork and exec (cgroup, session leader, controlling tty)
//! are in `child.rs`; who forks it, in `spawner.rs`.
//!
//! `unsafe` is allowed in this module for the `TIOCSWINSZ` ioctl.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::libc;
use nix::pty::{openpty, OpenptyResult, Winsize};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{access, AccessFlags, Pid};

use crate::admission::Slot;
use crate::cgroup::{SessionCgroup, EMPTY_LIMIT};
use crate::child::{self, ChildFds, ExecPlan};
use crate::reaper::Reaper;
use crate::spawner::{HelperError, SpawnHelper};
nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// What to run, and where.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Program (PATH lookup) or path.
    pub command: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Variables set on top of the daemon's environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Initial size.
    pub cols: u16,
    /// Initial size.
    pub rows: u16,
}

/// A freshly spawned child on a new PTY.
pub struct Spawned {
    /// The child's pid, also its process group and session id (it calls setsid).
    pub pid: u32,
    /// The master side (close-on-exec), kept for resizing.
    pub master: OwnedFd,
    /// A duplicate of the master, for the session's I/O tasks (`pty_io`).
    pub io: File,
    /// Resolves with the child's status once the reaper collects it.
    pub exit: tokio::sync::oneshot::Receiver<ipc_proto::ExitStatus>,
}

/// Opens a PTY and starts `spec` on it, through the spawn helper when there is one (else
/// by forking ptyd). With `cgroup` (the session cgroup's directory), the child runs in
/// that cgroup from before its exec. Blocking (until the child has
/// exec'd): call off the runtime.
pub fn spawn(
    spec: &SpawnSpec,
    reaper: &Reaper,
    cgroup: Option<File>,
    helper: Option<&SpawnHelper>,
) -> Result<Spawned, String> {
    let cwd = match &spec.cwd {
        Some(cwd) => {
            // A bad cwd must be an error, not a silent fallback to somewhere else.
            match std::fs::metadata(cwd) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("cwd {cwd}: Not a directory")),
                Err(e) => return Err(format!("cwd {cwd}: {e}")),
            }
            PathBuf::from(cwd)
        }
        None => std::env::current_dir().map_err(|e| format!("daemon cwd: {e}"))?,
    };
    // The child changes directory before it execs: a program path relative to a
    // relative cwd would be looked up from the wrong place.
    let cwd = std::path::absolute(&cwd).map_err(|e| format!("cwd {}: {e}", cwd.display()))?;
    let program = resolve_program(spec, &cwd)?;
    let plan = ExecPlan::new(&program, &spec.command, &spec.args, &cwd, environment(spec))
        .map_err(|e| format!("starting {}: {e}", spec.command))?;

    let size = Winsize { ws_row: spec.rows, ws_col: spec.cols, ws_xpixel: 0, ws_ypixel: 0 };
    let ((master, errors), pid, exit) = reaper.spawn_child(|| {
        // Every fork in ptyd happens under the reaper's lock, so no other child can be
        // forked between openpty and marking both ends close-on-exec.
        let pty = open_pty(&size)?;
        let (errors, errors_w) = child::error_pipe().map_err(|e| format!("pipe: {e}"))?;
        let fds = ChildFds {
            slave: pty.slave.as_raw_fd(),
            errors: errors_w.as_raw_fd(),
            cgroup: cgroup.as_ref().map(AsRawFd::as_raw_fd),
        };
        let started = match helper.map(|h| h.spawn(&plan, fds)) {
            Some(Ok(pid)) => Ok(pid),
            Some(Err(HelperError::Fork(e))) => Err(e),
            Some(Err(HelperError::Lost(e))) => Err(io::Error::other(format!(
                "the spawn helper ended during the request ({e}); spawning again forks in ptyd"
            ))),
            // Gone (said once, by the helper's end) or never started: fork ptyd itself.
            Some(Err(HelperError::Gone(_))) | None => child::fork_exec(&plan, fds),
        };
        let pid = started.map_err(|e| format!("starting {}: fork: {e}", spec.command))?;
        // Only the child may hold the slave, so that its exit ends our reads with EIO, and
        // the error pipe's write end, so that its exec ends the pipe.
        drop((pty.slave, errors_w));
        Ok(((pty.master, errors), pid))
    })?;
    // Until the session is fully built, a failure must not leave the child running.
    let group = scopeguard::guard(pid, |pid| {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    });
    // A child that failed before its exec exits by itself (127); the reaper collects it.
    child::exec_result(errors).map_err(|e| format!("starting {}: {e}", spec.command))?;
    let io = master.try_clone().map(File::from).map_err(|e| format!("dup pty master: {e}"))?;
    let pid = scopeguard::ScopeGuard::into_inner(group);
    Ok(Spawned { pid, master, io, exit })
}

/// A new PTY of `size`, both ends close-on-exec.
fn open_pty(size: &Winsize) -> Result<OpenptyResult, String> {
    let pty = openpty(Some(size), None).map_err(|e| format!("openpty: {}", io::Error::from(e)))?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| format!("openpty: close-on-exec: {}", io::Error::from(e)))?;
    }
    Ok(pty)
}

/// The child's environment: the daemon's with `TERM`, the request's variables and a
/// `SHELL`, minus systemd's private variables.
fn environment(spec: &SpawnSpec) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        // systemd's hand-over variables are for ptyd, not for the programs it runs.
        .filter(|(k, _)| !crate::systemd::PRIVATE_ENV.iter().any(|p| k == p))
        .collect();
    let mut set = |k: &str, v: OsString| match env.iter_mut().find(|(name, _)| name == k) {
        Some(entry) => entry.1 = v,
        None => env.push((k.into(), v)),
    };
    set("TERM", "xterm-256color".into());
    let has_shell =
        std::env::var_os("SHELL").is_some() || spec.env.iter().any(|(k, _)| k == "SHELL");
    if !has_shell {
        set("SHELL", login_shell().into());
    }
    for (k, v) in &spec.env {
        set(k, v.into());
    }
    env
}

/// The user's shell from the password database when it is executable, else `/bin/sh`:
/// programs such as `script` or editors' `:shell` expect `SHELL` to be set.
fn login_shell() -> PathBuf {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.shell)
        .filter(|shell| access(shell, AccessFlags::X_OK).is_ok())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

/// The program to exec: a path (relative to `cwd`) when the command has a slash, else
/// the first executable match in the child's PATH.
fn resolve_program(spec: &SpawnSpec, cwd: &Path) -> Result<PathBuf, String> {
    if !spec.command.contains('/') {
        return find_in_path(&spec.command, &spec.env, cwd)
            .ok_or_else(|| format!("{}: command not found in PATH", spec.command));
    }
    let path = cwd.join(&spec.command);
    if path.is_dir() {
        return Err(format!("Unable to spawn {} because it is a directory", path.display()));
    }
    if let Err(err) = access(&path, AccessFlags::X_OK) {
        return Err(match access(&path, AccessFlags::F_OK) {
            Ok(()) => {
                format!("Unable to spawn {} because it is not executable ({err})", path.display())
            }
            Err(_) => format!(
                "Unable to spawn {} because it doesn't exist on the filesystem ({err})",
                path.display()
            ),
        });
    }
    Ok(path)
}

/// Looks `command` up in the child's PATH (the spawn's own, else the daemon's); relative
/// PATH entries are relative to the child's `cwd`.
fn find_in_path(command: &str, env: &[(String, String)], cwd: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.into())
        .or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&path).map(|dir| cwd.join(dir).join(command)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Sets the terminal's size; the kernel sends the foreground process group SIGWINCH.
pub fn set_size(master: &OwnedFd, cols: u16, rows: u16) -> io::Result<()> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: `master` is an open descriptor for the call's duration and `size` is a
    // valid winsize that outlives it; the kernel only reads it.
    unsafe { tiocswinsz(master.as_raw_fd(), &size) }.map(drop).map_err(io::Error::from)
}

/// Owns a session's pool slot, its process group and (when there is one) its cgroup.
/// Dropping it frees the slot exactly once and, unless the session was already cleaned
/// up, SIGKILLs whatever is left of it, so an early return or a panic cannot orphan
/// processes. It never blocks: reaping is the reaper's job.
#[derive(Debug)]
pub struct PtyHandle {
    pgid: Pid,
    cgroup: Option<SessionCgroup>,
    cleaned: bool,
    _slot: Slot,
}

impl PtyHandle {
    /// Takes ownership of `pid`'s process group, its cgroup and the pool slot `slot`.
    pub fn new(pid: u32, slot: Slot, cgroup: Option<SessionCgroup>) -> Self {
        PtyHandle { pgid: Pid::from_raw(pid as i32), cgroup, cleaned: false, _slot: slot }
    }

    /// The session's cgroup directory, when it has one.
    pub fn cgroup_path(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(SessionCgroup::path)
    }

    /// Whether the kernel OOM-killed a process of the session's cgroup (its memory limit).
    pub fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(SessionCgroup::oom_killed)
    }

    /// Sends `signal` to the process group and to every process of the cgroup (those
    /// that left the group too); false when the group no longer exists.
    pub fn signal_group(&self, signal: Signal) -> bool {
        if let Some(cgroup) = &self.cgroup {
            cgroup.signal(signal);
        }
        !matches!(killpg(self.pgid, signal), Err(nix::errno::Errno::ESRCH))
    }

    /// SIGKILLs everything the session started: its whole cgroup, else its process group.
    pub fn kill_all(&self) {
        if let Some(cgroup) = &self.cgroup {
            if let Err(e) = cgroup.kill() {
                tracing::warn!(error = %e, "cgroup.kill failed; killing the process group only");
            }
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }

    /// True while any process of the group is alive (or a zombie not yet reaped).
    pub fn group_exists(&self) -> bool {
        !matches!(killpg(self.pgid, None), Err(nix::errno::Errno::ESRCH))
    }

    /// Ends what is left of the session after its leader exited: SIGHUP (and SIGCONT, so
    /// stopped jobs see it), then SIGKILL after `grace` if anything is still there. With
    /// a cgroup, returns only once the cgroup is empty (or [`EMPTY_LIMIT`] after the
    /// SIGKILL), and removes it.
    pub async fn clean_up_group(&mut self, grace: Duration) {
        match &self.cgroup {
            Some(cgroup) => self.clean_up_cgroup(cgroup, grace).await,
            None => self.clean_up_process_group(grace).await,
        }
        self.cleaned = true;
    }

    async fn clean_up_process_group(&self, grace: Duration) {
        if !self.group_exists() {
            return;
        }
        tracing::debug!(
            pgid = self.pgid.as_raw(),
            "process group outlived its leader; sending SIGHUP"
        );
        self.signal_group(Signal::SIGHUP);
        self.signal_group(Signal::SIGCONT);
        // Nothing announces that a process group is gone, so wait the grace out.
        tokio::time::sleep(grace).await;
        if self.signal_group(Signal::SIGKILL) {
            tracing::info!(pgid = self.pgid.as_raw(), "process group ignored SIGHUP; sent SIGKILL");
        }
    }

    async fn clean_up_cgroup(&self, cgroup: &SessionCgroup, grace: Duration) {
        if cgroup.populated() {
            tracing::debug!(cgroup = %cgroup.path().display(), "processes outlived the session's leader; sending SIGHUP");
            self.signal_group(Signal::SIGHUP);
            self.signal_group(Signal::SIGCONT);
            if !wait_empty(cgroup, grace).await {
                self.kill_all();
                tracing::info!(cgroup = %cgroup.path().display(), "processes of the session ignored SIGHUP; killed its cgroup");
                if !wait_empty(cgroup, EMPTY_LIMIT).await {
                    tracing::error!(
                        cgroup = %cgroup.path().display(),
                        limit = ?EMPTY_LIMIT,
                        "session cgroup still populated after cgroup.kill (uninterruptible sleep?); \
                         ending the session anyway and leaving the cgroup for shutdown"
                    );
                    return;
                }
            }
        }
        match cgroup.remove() {
            Ok(()) => {
                tracing::debug!(cgroup = %cgroup.path().display(), "session cgroup empty; removed it")
            }
            Err(e) => tracing::warn!(error = %e, "cannot remove the session's cgroup"),
        }
    }
}

/// Whether `cgroup` emptied within `limit`; an error counts as "not empty".
async fn wait_empty(cgroup: &SessionCgroup, limit: Duration) -> bool {
    cgroup.wait_empty(limit).await.unwrap_or_else(|e| {
        tracing::warn!(cgroup = %cgroup.path().display(), error = %e, "cannot watch the session's cgroup");
        false
    })
}

impl Drop for PtyHandle {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        self.kill_all();
        // The cgroup can only go once the kill has taken effect; wait for that off this
        // thread when there is a runtime, else the daemon's shutdown removes it.
        if let (Some(cgroup), Ok(runtime)) =
            (self.cgroup.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                if wait_empty(&cgroup, EMPTY_LIMIT).await {
                    let _ = cgroup.remove();
                }
            });
        }
    }
}
