//! Live upgrade: ptyd replaces its own binary with `execve` and keeps every session.
//!
//! The process stays the same (same pid, so the programs stay its children and their
//! exit statuses still reach it); what it chooses to keep open crosses the exec: the
//! listening socket (clients that connect meanwhile wait in its backlog), every PTY
//! master, the connection that asked (answered by the new image) and the old binary
//! (to go back to). Everything else crosses in the handover state (`state.rs`).
//!
//! An upgrade goes: check the binary (`--handover-check`: is it a ptyd, does it load
//! our state version) → hold still (`quiesce.rs`: no accept, connections closed with a
//! reason, no output read, the reaper paused) → capture every session → let the new
//! binary load that very state in a child (`--handover-check` again, now with the
//! state) → exec. Any failure before the exec thaws the daemon and answers
//! `UpgradeFailed`; nothing was lost. After the exec, a new image that cannot adopt what
//! it was given goes back to the old binary with the same state (`adopt.rs`).

pub mod adopt;
pub mod quiesce;
pub mod state;

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipc_proto::{ErrorCode, UpgradeRequest};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tracing::{info, warn};

use crate::handlers::ReplyError;
use crate::pool::PtyPool;
use crate::session::now_ms;
use state::{Handover, PendingReply, HANDOVER_ENV, HANDOVER_VERSION, LOADS};

/// How long a `--handover-check` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sessions and connections get to hold still.
const FREEZE_LIMIT: Duration = Duration::from_secs(2);
/// How long queued input gets to reach its programs before the handover.
const INPUT_DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// The daemon's side of upgrades: what must cross besides the sessions.
#[derive(Debug)]
pub struct Upgrader {
    /// The listening socket.
    listener_fd: RawFd,
    /// The socket file ptyd bound (and removes at exit); `None` under systemd.
    socket_path: Option<PathBuf>,
    /// When this daemon process first started.
    pub started_at_ms: u64,
    /// Upgrades this process has been through.
    pub upgrades: AtomicU32,
    /// One upgrade at a time.
    running: tokio::sync::Mutex<()>,
}

/// The line `--handover-check` prints first: a ptyd, the state version it writes, the
/// versions it loads, and its release.
pub fn check_line() -> String {
    format!(
        "ptyd-handover {HANDOVER_VERSION} {}-{} {}",
        LOADS.start(),
        LOADS.end(),
        env!("CARGO_PKG_VERSION")
    )
}

/// What a binary said to `--handover-check`.
#[derive(Debug, PartialEq, Eq)]
struct Checked {
    /// Its release.
    version: String,
}

fn failed(message: impl Into<String>) -> ReplyError {
    ReplyError::new(ErrorCode::UpgradeFailed, message.into())
}

impl Upgrader {
    /// The upgrader of a daemon serving `listener_fd`, first started at `started_at_ms`
    /// and upgraded `upgrades` times so far.
    pub fn new(
        listener_fd: RawFd,
        socket_path: Option<PathBuf>,
        started_at_ms: u64,
        upgrades: u32,
    ) -> Upgrader {
        Upgrader {
            listener_fd,
            socket_path,
            started_at_ms,
            upgrades: AtomicU32::new(upgrades),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Replaces the daemon's image with `req`'s binary, answering request `id` on the
    /// connection `conn_fd` from the new image. Returns only when the upgrade did not
    /// happen, with why; the daemon then runs on as before.
    pub async fn upgrade(
        &self,
        pool: &Arc<PtyPool>,
        conn_fd: BorrowedFd<'_>,
        flush: impl std::future::Future<Output = ()>,
        id: u64,
        req: UpgradeRequest,
    ) -> ReplyError {
        let Ok(_one) = self.running.try_lock() else {
            return failed("another upgrade is already running");
        };
        let requested_at_ms = now_ms();
        let binary = match target(&req) {
            Ok(binary) => binary,
            Err(e) => return e,
        };
        info!(binary = %binary.display(), "upgrade requested");
        // Children that exit from here on stay zombies for the new image to reap, with
        // their real status (and the checks' children are waited for by pid, not reaped
        // by someone else first).
        let _paused = pool.reaper().pause();
        let checked = match check(&binary, None).await {
            Ok(checked) => checked,
            Err(why) => return failed(format!("{}: {why}", binary.display())),
        };
        let result = self.hand_over(pool, conn_fd, flush, id, &binary, &checked, requested_at_ms);
        let error = result.await;
        pool.quiesce.thaw();
        warn!(binary = %binary.display(), "upgrade failed: {}", error.message);
        error
    }

    /// Everything after the first check; returns only on failure (the caller thaws).
    #[allow(clippy::too_many_arguments)]
    async fn hand_over(
        &self,
        pool: &Arc<PtyPool>,
        conn_fd: BorrowedFd<'_>,
        flush: impl std::future::Future<Output = ()>,
        id: u64,
        binary: &Path,
        checked: &Checked,
        requested_at_ms: u64,
    ) -> ReplyError {
        if let Err(busy) = pool.quiesce.freeze(1, FREEZE_LIMIT).await {
            return failed(busy.to_string());
        }
        pool.drain_input(INPUT_DRAIN_LIMIT).await;
        flush.await;
        // Descriptors for the new image: duplicates without close-on-exec, closed again
        // here if the exec does not happen.
        let mut carried = Carried::default();
        let state = match self.capture(pool, conn_fd, id, binary, requested_at_ms, &mut carried) {
            Ok(state) => state,
            Err(e) => return failed(format!("cannot capture the daemon's state: {e}")),
        };
        let sessions = state.sessions;
        let memfd = match carried.dup(state.memfd.as_fd()) {
            Ok(fd) => fd,
            Err(e) => return failed(format!("cannot pass the handover state on: {e}")),
        };
        if let Err(why) = check(binary, Some(memfd)).await {
            return failed(format!(
                "{} cannot take over this daemon's state: {why}; nothing was changed",
                binary.display()
            ));
        }
        info!(
            from = env!("CARGO_PKG_VERSION"),
            to = %checked.version,
            sessions,
            "handing over to {}",
            binary.display()
        );
        let err = exec(binary, memfd);
        failed(format!("exec {}: {err}", binary.display()))
    }

    /// Captures every session and what else crosses into a sealed memory file.
    fn capture(
        &self,
        pool: &Arc<PtyPool>,
        conn_fd: BorrowedFd<'_>,
        id: u64,
        binary: &Path,
        requested_at_ms: u64,
        carried: &mut Carried,
    ) -> std::io::Result<Captured> {
        let mut payload = Vec::new();
        let mut records = Vec::new();
        for session in pool.list() {
            records.push(session.capture(&mut payload, &mut |fd| carried.dup(fd))?)
        }
        let listener_fd = carried.dup_raw(self.listener_fd)?;
        let reply = PendingReply { fd: carried.dup(conn_fd)?, id };
        let fallback_fd = match File::open("/proc/self/exe") {
            Ok(exe) => Some(carried.dup(exe.as_fd())?),
            Err(e) => {
                warn!("cannot open the running binary to come back to if the new one fails: {e}");
                None
            }
        };
        let header = Handover {
            version: HANDOVER_VERSION,
            from_version: env!("CARGO_PKG_VERSION").into(),
            from_binary: current_binary().display().to_string(),
            to_binary: binary.display().to_string(),
            started_at_ms: self.started_at_ms,
            upgrades: self.upgrades.load(Ordering::Relaxed) + 1,
            requested_at_ms,
            listener_fd,
            socket_path: self.socket_path.clone(),
            reply: Some(reply),
            fallback_fd,
            failed: None,
            sessions: records,
        };
        let sessions = header.sessions.len();
        let written = state::write(&header, &payload)?;
        Ok(Captured { memfd: written.file, sessions })
    }
}

struct Captured {
    memfd: File,
    sessions: usize,
}

/// Duplicates made to cross the exec; closed when dropped (the exec did not happen).
#[derive(Default)]
struct Carried(Vec<OwnedFd>);

impl Carried {
    /// A duplicate of `fd` without close-on-exec; returns its number.
    fn dup(&mut self, fd: BorrowedFd<'_>) -> std::io::Result<RawFd> {
        // F_DUPFD leaves FD_CLOEXEC off on the copy.
        let copy = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD(3))?;
        // SAFETY: fcntl just created this descriptor; nothing else owns it.
        #[allow(unsafe_code)]
        self.0.push(unsafe { OwnedFd::from_raw_fd(copy) });
        Ok(copy)
    }

    /// `dup` of the listener, which the server owns for the daemon's whole life.
    fn dup_raw(&mut self, fd: RawFd) -> std::io::Result<RawFd> {
        // SAFETY: the listener stays open while any request is served.
        #[allow(unsafe_code)]
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        self.dup(borrowed)
    }
}

/// The binary to upgrade to: the one asked for (an absolute path), else the one ptyd was
/// started from, as it is on disk now.
fn target(req: &UpgradeRequest) -> Result<PathBuf, ReplyError> {
    match &req.binary {
        Some(path) if Path::new(path).is_absolute() => Ok(PathBuf::from(path)),
        Some(path) => Err(ReplyError::new(
            ErrorCode::BadRequest,
            format!("binary {path:?} must be an absolute path"),
        )),
        None => Ok(current_binary()),
    }
}

/// The path this image was started from (without the kernel's " (deleted)" when the file
/// was replaced since: the path now names the new file).
pub fn current_binary() -> PathBuf {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let text = exe.as_os_str().as_bytes();
    match text.strip_suffix(b" (deleted)") {
        Some(stripped) => PathBuf::from(OsStr::from_bytes(stripped)),
        None => exe,
    }
}

/// Runs `binary --handover-check`, with the state on `state` when given: the binary must
/// say it is a ptyd that loads our state version and, given the state, load it.
async fn check(binary: &Path, state: Option<RawFd>) -> Result<Checked, String> {
    let mut cmd = Command::new(binary);
    cmd.arg("--handover-check")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove(HANDOVER_ENV);
    for k in crate::systemd::PRIVATE_ENV {
        cmd.env_remove(k);
    }
    if let Some(fd) = state {
        cmd.env(HANDOVER_ENV, fd.to_string());
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run it: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Waited for by pid (the reaper is paused or would not know this child).
    let waited = tokio::task::spawn_blocking(move || {
        let read = |pipe: Option<std::process::ChildStdout>| {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        };
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = stderr {
                let _ = p.read_to_string(&mut text);
            }
            text
        });
        let out = read(stdout);
        let status = child.wait();
        (status, out, err.join().unwrap_or_default())
    });
    let (status, out, err) = match tokio::time::timeout(CHECK_TIMEOUT, waited).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(format!("the check failed: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(format!("--handover-check did not finish within {CHECK_TIMEOUT:?}"));
        }
    };
    let status = status.map_err(|e| format!("waiting for --handover-check: {e}"))?;
    let said = |text: &str| {
        let text = text.trim();
        if text.is_empty() {
            "nothing".to_string()
        } else {
            format!("{:?}", text.chars().take(300).collect::<String>())
        }
    };
    if !status.success() {
        let what = if parse_check(&out).is_some() { "a ptyd, but" } else { "not a ptyd:" };
        return Err(format!(
            "{what} --handover-check ended with {status}, printing {} (stderr: {})",
            said(&out),
            said(&err)
        ));
    }
    parse_check(&out).ok_or_else(|| {
        format!("not a ptyd: --handover-check printed {} (stderr: {})", said(&out), said(&err))
    })
}

/// Reads `check_line`'s words: a binary whose loadable versions include ours.
fn parse_check(out: &str) -> Option<Checked> {
    let line = out.lines().next()?;
    let mut words = line.split_whitespace();
    (words.next()? == "ptyd-handover").then_some(())?;
    let _writes: u32 = words.next()?.parse().ok()?;
    let (low, high) = words.next()?.split_once('-')?;
    let (low, high): (u32, u32) = (low.parse().ok()?, high.parse().ok()?);
    let version = words.next()?.to_string();
    (low..=high).contains(&HANDOVER_VERSION).then_some(Checked { version })
}

/// Replaces this process with `binary`, the same arguments, and the environment with the
/// handover state's descriptor named. Returns only on failure.
fn exec(binary: &Path, memfd: RawFd) -> std::io::Error {
    // systemd's socket-activation variables described the first image's start.
    let dropped = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", HANDOVER_ENV];
    let added = [format!("{HANDOVER_ENV}={memfd}")];
    let parts =
        c_string(binary.as_os_str()).and_then(|path| Ok((path, exec_parts(&dropped, &added)?)));
    let (path, (args, env)) = match parts {
        Ok(parts) => parts,
        Err(e) => return e,
    };
    match nix::unistd::execve(&path, &args, &env) {
        Ok(never) => match never {},
        Err(e) => std::io::Error::from(e),
    }
}

fn c_string(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(std::io::Error::other)
}

/// This process's arguments, and its environment without the variables named in `dropped`
/// and with `added` (`NAME=value`), as an exec takes them.
pub(crate) fn exec_parts(
    dropped: &[&str],
    added: &[String],
) -> std::io::Result<(Vec<CString>, Vec<CString>)> {
    let args = std::env::args_os().map(|a| c_string(&a)).collect::<Result<Vec<_>, _>>()?;
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        if dropped.iter().any(|p| k == OsStr::new(p)) {
            continue;
        }
        let mut pair = OsString::from(&k);
        pair.push("=");
        pair.push(&v);
        env.push(c_string(&pair)?);
    }
    for pair in added {
        env.push(c_string(OsStr::new(pair))?);
    }
    Ok((args, env))
}

/// Says, in the log and to the client that asked, how the handover went, once this image
/// serves the `adopted` sessions it was handed.
pub fn announce(adoption: &adopt::Adoption, adopted: usize) {
    let header = &adoption.loaded.header;
    let from = &header.from_version;
    let to = env!("CARGO_PKG_VERSION");
    match &adoption.failed {
        None => {
            let duration_ms = now_ms().saturating_sub(header.requested_at_ms);
            info!(
                sessions = adopted,
                duration_ms,
                binary = %header.to_binary,
                "upgraded from {from} to {to}, {adopted} sessions carried"
            );
            adoption.answer(Ok(ipc_proto::UpgradeReply {
                from_version: from.clone(),
                to_version: to.into(),
                binary: header.to_binary.clone(),
                pid: std::process::id(),
                sessions: adopted,
                upgrades: header.upgrades,
                duration_ms,
            }));
        }
        Some(why) => {
            warn!(
                sessions = adopted,
                "upgrade to {} failed: {why}; back on {} ({to}), {adopted} sessions carried",
                header.to_binary,
                header.from_binary
            );
            adoption.answer(Err(format!(
                "{} could not take over: {why}; ptyd is back on {} with every session",
                header.to_binary, header.from_binary
            )));
        }
    }
}

/// Marks `fd` close-on-exec again, so that no program a session starts inherits it.
pub fn set_cloexec(fd: RawFd) -> std::io::Result<()> {
    let flags = nix::fcntl::FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    fcntl(fd, FcntlArg::F_SETFD(flags | nix::fcntl::FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Whether `fd` is open, and with which status flags.
pub fn fd_flags(fd: RawFd) -> Option<OFlag> {
    fcntl(fd, FcntlArg::F_GETFL).ok().map(OFlag::from_bits_truncate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_line_is_understood_and_other_output_is_not() {
        let ours = parse_check(&check_line()).unwrap();
        assert_eq!(ours.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(parse_check("ptyd-handover 7 7-9 9.0.0\n"), None, "loads no version of ours");
        assert_eq!(parse_check(""), None);
        assert_eq!(parse_check("Usage: false [ignored command line arguments]"), None);
    }
}
