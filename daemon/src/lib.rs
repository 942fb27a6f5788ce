//! ptyd: a capacity-bounded pool of pseudo-terminals served over a Unix socket.
//!
//! `run` is the whole daemon given a bound listener and a shutdown future, so tests and
//! `main.rs` drive it the same way. Layers: `server` (accept, credentials, drain) →
//! `connection` (frames, handshake) → `handlers` (one per request) → `pool` (slots,
//! registry) → `session` (state) and `lifecycle` (exit, kill, idle) → `pty` (spawn, the
//! RAII handle) with `child` and `spawner` (how children start) and `pty_io` (their
//! bytes), `cgroup` (a cgroup per session) and `reaper` (every child is waited for).

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

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Serves `listener` until `shutdown` resolves, then ends every session, reaps every
/// child and returns.
pub async fn run(
    config: Config,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let reaper_stop = CancellationToken::new();
    let reaper = reaper::Reaper::start(reaper_stop.clone())?;
    let pool = pool::PtyPool::new(Arc::new(config), reaper.clone());
    let stop = CancellationToken::new();
    let socket_path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Into::into));
    let server = tokio::spawn(server::serve(listener, pool.clone(), stop.clone()));
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
