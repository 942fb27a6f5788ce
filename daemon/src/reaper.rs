//! Reaps every child of the daemon, sessions and adopted orphans alike.
//!
//! ptyd is a child subreaper, so processes orphaned inside a session are re-parented to
//! it. One SIGCHLD-driven loop calls `waitpid(-1)` and hands each session's status to
//! its lifecycle task; anything else is an adopted orphan and is simply reaped.
//! Spawning happens under the same lock as reaping, so a child cannot be reaped before
//! its waiter is registered (children the spawn helper forks are ptyd's too, through
//! `CLONE_PARENT`). Every session's child is started through [`Reaper::spawn_child`], which
//! `pty::spawn` also relies on: a PTY opened under the lock is marked close-on-exec before
//! any other child can be forked and inherit it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ipc_proto::ExitStatus;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The registry of children whose exit someone is waiting for.
#[derive(Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
    /// While a live upgrade hands over, children that exit stay zombies: the next image
    /// reaps them and hands their real status to the sessions it adopted.
    paused: AtomicBool,
}

/// Reaping paused until dropped (see [`Reaper::pause`]).
#[must_use]
pub struct Paused<'a>(&'a Reaper);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.paused.store(false, Ordering::Release);
        self.0.reap();
    }
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").finish_non_exhaustive()
    }
}

impl Reaper {
    /// Becomes a child subreaper and starts reaping on SIGCHLD until `stop`.
    pub fn start(stop: CancellationToken) -> std::io::Result<Arc<Reaper>> {
        let reaper = Arc::new(Reaper::default());
        reaper.serve(stop)?;
        Ok(reaper)
    }

    /// Registers `pid`, a child this process already has (a session that crossed a live
    /// upgrade): its status comes through the returned receiver. Call before [`serve`]
    /// so that a child that exited meanwhile is matched too.
    ///
    /// [`serve`]: Reaper::serve
    pub fn adopt(&self, pid: u32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(pid as i32, tx);
        rx
    }

    /// Stops reaping until the guard is dropped.
    pub fn pause(&self) -> Paused<'_> {
        self.paused.store(true, Ordering::Release);
        Paused(self)
    }

    /// Becomes a child subreaper and reaps on SIGCHLD until `stop`.
    pub fn serve(self: &Arc<Self>, stop: CancellationToken) -> std::io::Result<()> {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans will go to init");
        }
        let mut sigchld = signal(SignalKind::child())?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.reap();
                tokio::select! {
                    got = sigchld.recv() => if got.is_none() { break },
                    _ = stop.cancelled() => break,
                }
            }
            // A last pass so that nothing that died during shutdown stays a zombie.
            this.reap();
        });
        Ok(())
    }

    /// Runs `spawn` (which forks) and registers the child it returns, atomically with
    /// respect to reaping and to every other spawn.
    pub fn spawn_child<T>(
        &self,
        spawn: impl FnOnce() -> Result<(T, u32), String>,
    ) -> Result<(T, u32, oneshot::Receiver<ExitStatus>), String> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let (value, pid) = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid as i32, tx);
        Ok((value, pid, rx))
    }

    /// Collects every child that has exited, without blocking.
    pub fn reap(&self) {
        if self.paused.load(Ordering::Acquire) {
            return;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    (pid, ExitStatus { code: Some(code), signal: None })
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid, ExitStatus { code: None, signal: Some(sig as i32) })
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid failed");
                    return;
                }
            };
            match waiters.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => tracing::debug!(pid = pid.as_raw(), %status, "reaped an adopted orphan"),
            }
        }
    }
}
