//! ptyd: a capacity-bounded pool of pseudo-terminals served over a Unix socket.
//!
//! `run` is the whole daemon given a bound listener and a shutdown future, so tests and
//! `main.rs` drive it the same way. Layers: `server` (accept, credentials, drain) →
//! `connection` (frames, handshake) → `handlers` (one per request) → `pool` (slots,
//! registry) → `session` (state) and `lifecycle` (exit, kill, idle) → `pty` (spawn, I/O
//! threads, the RAII handle) and `reaper` (every child is waited for).

pub mod config;
pub mod connection;
pub mod handlers;
pub mod lifecycle;
pub mod pool;
pub mod pty;
pub mod reaper;
pub mod ring;
pub mod server;
pub mod session;
pub mod socket;

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
    let server = tokio::spawn(server::serve(listener, pool.clone(), stop.clone()));
    tracing::info!(capacity = pool.capacity(), "ptyd ready");
    shutdown.await;
    tracing::info!("shutting down");
    stop.cancel();
    if let Err(e) = server.await {
        tracing::error!(error = %e, "server task failed");
    }
    reaper.reap();
    reaper_stop.cancel();
    Ok(())
}
