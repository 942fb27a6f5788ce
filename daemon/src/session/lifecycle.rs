//! A session's life from spawn to retirement: wait for the child to exit or for a reason
//! to end it ([`EndReason`]: kill request, idle timeout, its owner gone, daemon
//! shutdown), end its process group and cgroup in steps, wait until its cgroup is empty,
//! drain its output, free its slot, and hand its record to the pool's retention.

use std::sync::Arc;
use std::time::Duration;

use ipc_proto::{DaemonEventKind, ExitStatus};
use nix::sys::signal::Signal;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::Session;
use crate::pool::PtyPool;
use crate::pty::PtyHandle;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EndReason {
    /// The program exited by itself.
    Exited,
    /// A client asked (`kill`, the bridge's `DELETE` or grace expiry).
    Killed,
    /// No input, no output and no client for its idle timeout.
    IdleTimeout(Duration),
    /// The connection that spawned it with `close_with_connection` closed.
    OwnerGone,
    /// An `exec` ran past its timeout.
    ExecTimeout,
    /// The daemon is stopping.
    Shutdown,
    /// The kernel's OOM killer ended it at its cgroup's memory limit.
    MemoryLimit,
}

impl EndReason {
    /// The wire name.
    pub fn wire(self) -> ipc_proto::EndReason {
        match self {
            EndReason::Exited => ipc_proto::EndReason::Exited,
            EndReason::Killed => ipc_proto::EndReason::Killed,
            EndReason::IdleTimeout(_) => ipc_proto::EndReason::IdleTimeout,
            EndReason::OwnerGone => ipc_proto::EndReason::OwnerGone,
            EndReason::ExecTimeout => ipc_proto::EndReason::ExecTimeout,
            EndReason::Shutdown => ipc_proto::EndReason::Shutdown,
            EndReason::MemoryLimit => ipc_proto::EndReason::MemoryLimit,
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Exited => f.write_str("exited"),
            EndReason::Killed => f.write_str("kill requested"),
            EndReason::IdleTimeout(d) => {
                write!(f, "idle timeout ({})", humantime::format_duration(*d))
            }
            EndReason::OwnerGone => f.write_str("the connection that owned it closed"),
            EndReason::ExecTimeout => f.write_str("exec timed out"),
            EndReason::Shutdown => f.write_str("daemon shutting down"),
            EndReason::MemoryLimit => f.write_str("memory limit reached (OOM kill)"),
        }
    }
}

/// How long to wait for a SIGKILLed child to be reaped before giving up on it
/// (a process stuck in uninterruptible sleep cannot be helped by waiting longer).
const REAP_LIMIT: Duration = Duration::from_secs(10);

/// Drives `session` until it is forgotten. Owns `handle`, so however this task ends,
/// panics included, the slot is freed and the group is killed.
pub async fn run(
    session: Arc<Session>,
    mut handle: PtyHandle,
    mut exit: oneshot::Receiver<ExitStatus>,
    output_done: oneshot::Receiver<()>,
    pool: Arc<PtyPool>,
) {
    // If anything below panics, waiters still learn that the session is gone.
    let on_panic = scopeguard::guard_on_unwind(session.clone(), |s| {
        s.finish(ExitStatus { code: None, signal: Some(Signal::SIGKILL as i32) })
    });
    if let Some(cgroup) = handle.cgroup_path() {
        debug!(cgroup = %cgroup.display(), "session runs in its own cgroup");
    }
    let grace = pool.config.kill_grace;
    let status = tokio::select! {
        status = &mut exit => status.ok(),
        reason = end_requested(&session, &pool) => {
            // Kept on the record (the first reason wins), for whoever asks why it ended.
            session.request_end(reason);
            info!(%reason, "ending session");
            if let EndReason::IdleTimeout(_) = reason {
                pool.events.emit(DaemonEventKind::IdleKilled, &session, |_| {});
            }
            // Boxed, as the clean-up below: an idle session's task keeps only its wait.
            Box::pin(terminate(&handle, &mut exit, grace)).await
        }
    };
    let status = status.unwrap_or_else(|| {
        error!("child was not reaped in time; recording it as killed");
        ExitStatus { code: None, signal: Some(Signal::SIGKILL as i32) }
    });
    session.reaped(status);
    // Nobody asked it to end, but the kernel may have: the cgroup says so until removed.
    if handle.oom_killed() {
        session.request_end(EndReason::MemoryLimit);
        info!("the session's memory limit was reached: the kernel killed its program");
    }
    // With a cgroup, this returns once the cgroup is empty (or the wait for that gave up),
    // so the exit is announced only after everything the session started has ended.
    Box::pin(handle.clean_up_group(grace)).await;
    // Output still in the kernel's buffer is read before the exit is announced; a
    // descendant that escaped the group may hold the terminal open, so don't wait for ever.
    if tokio::time::timeout(grace, output_done).await.is_err() {
        warn!("terminal still open after the process group ended; not waiting for its output");
    }
    // The slot is free before anyone hears of the exit, so a client that spawns again as
    // soon as its wait returns never meets a pool still counting the old session.
    drop(handle);
    session.finish(status);
    pool.events.emit(DaemonEventKind::Exited, &session, |e| {
        e.exit = Some(status);
        e.end_reason = session.end_reason().map(EndReason::wire);
    });
    info!(%status, active_count = pool.active(), "session ended; released pty slot");
    // Its record is the pool's now; the sweeper forgets it when its retention ends.
    pool.retire(&session);
    scopeguard::ScopeGuard::into_inner(on_panic);
}

/// Resolves with the reason once the session should be ended.
async fn end_requested(session: &Session, pool: &PtyPool) -> EndReason {
    tokio::select! {
        reason = session.end_requested() => reason,
        _ = pool.stop.cancelled() => EndReason::Shutdown,
        _ = idle_expired(session) => EndReason::IdleTimeout(session.meta.idle_timeout),
    }
}

/// Resolves when the session has had no input, no output and no client for its idle
/// timeout; never when the timeout is zero.
async fn idle_expired(session: &Session) {
    let timeout = session.meta.idle_timeout;
    if timeout.is_zero() {
        return std::future::pending().await;
    }
    loop {
        let idle = session.idle_for();
        let held = session.held();
        if !held && idle >= timeout {
            warn!(idle_timeout = ?timeout, "session idle with no client attached or lease held; killing it");
            return;
        }
        // While a client is attached or a lease is held the clock stands still; letting
        // go restarts it.
        let wait = if held { timeout } else { timeout - idle };
        tokio::time::sleep(wait).await;
    }
}

/// SIGHUP the group (and the rest of the cgroup), then SIGKILL everything if the leader
/// has not exited within `grace`.
async fn terminate(
    handle: &PtyHandle,
    exit: &mut oneshot::Receiver<ExitStatus>,
    grace: Duration,
) -> Option<ExitStatus> {
    handle.signal_group(Signal::SIGHUP);
    handle.signal_group(Signal::SIGCONT);
    if let Ok(status) = tokio::time::timeout(grace, &mut *exit).await {
        return status.ok();
    }
    handle.kill_all();
    let target = if handle.cgroup_path().is_some() { "cgroup" } else { "process group" };
    info!(grace = ?grace, "session ignored SIGHUP; sent SIGKILL to its {target}");
    tokio::time::timeout(REAP_LIMIT, exit).await.ok().and_then(Result::ok)
}
