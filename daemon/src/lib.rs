//! ptyd: a capacity-bounded pool of pseudo-terminals served over a Unix socket.
//!
//! `run` is the whole daemon given a bound listener and a shutdown future, so tests and
//! `main.rs` drive it the same way. Layers: `server` (accept, credentials, drain) →
//! `connection` (frames, handshake) → `handlers` (one per request) → `pool` (slots,
//! registry) → `session` (state) and `lifecycle` (exit, kill, idle) → `pty` (spawn, the
//! RAII handle) with `child` and `spawner` (how children start) and `pty_io` (their
//! bytes), `cgroup` (a cgroup per session) and `reaper` (every child is waited for);
//! `upgrade` replaces the daemon's binary with its sessions kept.

pub mod admission;
pub mod cgroup;
pub mod child;
pub mod config;
pub mod connection;
pub mod events;
pub mod fds;
pub mod frame_budget;
pub mod handlers;
pub mod pool;
pub mod pty;
pub mod pty_io;
pub mod reaper;
pub mod retention;
pub mod ring;
pub mod server;
pub mod session;
pub mod shell_integration;
pub mod socket;
pub mod spawner;
pub mod systemd;
pub mod upgrade;

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// What the daemon starts from: its listening socket and, after a live upgrade, the
/// sessions it takes over.
pub struct Start {
    /// The listening socket.
    pub listener: UnixListener,
    /// The socket file ptyd bound itself (and removes at exit); `None` under systemd.
    pub socket_file: Option<std::path::PathBuf>,
    /// The handover state, when an upgrade started this image.
    pub adoption: Option<upgrade::adopt::Adoption>,
}

/// Serves `start.listener` until `shutdown` resolves, then ends every session, reaps
/// every child and returns.
pub async fn run(
    config: Config,
    start: Start,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Start { listener, socket_file, adoption } = start;
    let reaper_stop = CancellationToken::new();
    let reaper = Arc::new(reaper::Reaper::default());
    let pool = pool::PtyPool::new(Arc::new(config), reaper.clone());
    // Adopted children are registered before the reaper first reaps, so that one that
    // exited during the handover is matched with its real status.
    let adopted = adoption.as_ref().map_or(0, |a| pool.adopt(a));
    reaper.serve(reaper_stop.clone())?;
    let (started_at_ms, upgrades) = match &adoption {
        Some(a) => {
            let header = &a.loaded.header;
            // The old binary back after a failure has not been upgraded this time.
            (header.started_at_ms, header.upgrades - u32::from(a.failed.is_some()))
        }
        None => (session::now_ms(), 0),
    };
    let listener_fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let upgrader = upgrade::Upgrader::new(listener_fd, socket_file, started_at_ms, upgrades);
    let _ = pool.upgrader.set(upgrader);
    let stop = CancellationToken::new();
    let socket_path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Into::into));
    let server = tokio::spawn(server::serve(listener, pool.clone(), stop.clone()));
    if let Some(adoption) = adoption {
        upgrade::announce(&adoption, adopted);
        // Closes the state and the way back to the old binary.
        drop(adoption);
    }
    let status = tokio::spawn(report_status(pool.clone()));
    let sweeper = tokio::spawn(pool.clone().sweep_retained());
    tracing::info!(capacity = pool.capacity(), "ptyd ready");
    systemd::ready(&usage(&pool));
    let watchdog = match (systemd::watchdog_interval(), socket_path) {
        (Some(interval), Some(path)) => Some(tokio::spawn(watchdog(path, interval))),
        (Some(_), None) => {
            tracing::warn!("watchdog requested but the socket has no path to check; not pinging");
            None
        }
        (None, _) => None,
    };
    shutdown.await;
    tracing::info!("shutting down");
    systemd::stopping();
    for task in [Some(status), Some(sweeper), watchdog].into_iter().flatten() {
        task.abort();
    }
    stop.cancel();
    if let Err(e) = server.await {
        tracing::error!(error = %e, "server task failed");
    }
    reaper.reap();
    reaper_stop.cancel();
    pool.remove_shell_files();
    Ok(())
}

fn usage(pool: &pool::PtyPool) -> String {
    format!("{}/{} sessions", pool.active(), pool.capacity())
}

/// Keeps systemd's STATUS= line at the pool's usage.
async fn report_status(pool: Arc<pool::PtyPool>) {
    let mut events = pool.events.subscribe();
    loop {
        match events.recv().await {
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            // Spawns and exits change the usage; a lag just means "report it now".
            _ => systemd::status(&usage(&pool)),
        }
    }
}

/// Pings systemd's watchdog only after a real request went through the daemon: connect
/// to its own socket, handshake, list. If accepting, the runtime, or the pool hangs, the
/// pings stop and systemd restarts ptyd; a timer that ticks regardless would hide that.
async fn watchdog(path: std::path::PathBuf, interval: std::time::Duration) {
    tracing::info!(?interval, "systemd watchdog enabled");
    loop {
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(interval, self_check(&path)).await {
            Ok(Ok(())) => systemd::watchdog_ping(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "watchdog self-check failed; not pinging systemd")
            }
            Err(_) => {
                tracing::warn!(?interval, "watchdog self-check timed out; not pinging systemd")
            }
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

async fn self_check(path: &std::path::Path) -> Result<(), ipc_proto::ClientError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| ipc_proto::IpcError::connect(path, e))?;
    let client = ipc_proto::Client::handshake(stream, "ptyd/watchdog").await?;
    client.list().await.map(drop)
}
