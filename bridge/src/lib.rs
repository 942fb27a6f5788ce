//! ptyd-bridge: browser terminals over WebSocket, backed by ptyd sessions.
//!
//! A terminal is a ptyd session the bridge spawned (labelled `ptyd-bridge=terminal`). Its
//! status is Active while a socket is open, Disconnected for a grace period after the
//! socket goes (the program runs on; ptyd keeps its output for replay), then Dead once the
//! grace expires and ptyd has killed its process group. The wire protocol for browsers is
//! in `PROTOCOL.md` beside this crate.
//!
//! - [`app`] builds the router for a running [`AppState`]; [`serve`] runs the whole bridge
//!   on a listener until a shutdown future resolves.
//! - [`config`]: every timing and limit; [`routes`]: the HTTP API; [`ws`]: the sockets;
//!   [`terminals`]: the registry and grace timers; [`daemon_link`]: the link to ptyd.

pub mod assets;
pub mod attach_links;
pub mod auth;
pub mod autostart;
pub mod config;
pub mod daemon_link;
pub mod error;
pub mod fds;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod terminals;
pub mod viewers;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::{Config, ConfigError};
use crate::daemon_link::{Backoff, DaemonLink};
use crate::metrics::Metrics;
use crate::terminals::Registry;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The settings.
    pub config: Arc<Config>,
    /// The terminals.
    pub registry: Arc<Registry>,
    /// The link to ptyd.
    pub daemon: Arc<DaemonLink>,
    /// Counters.
    pub metrics: Metrics,
    /// Origin and token policy.
    pub auth: Arc<Auth>,
    /// Cancelled when the bridge shuts down; sockets close with 1001.
    pub shutdown: CancellationToken,
    /// The socket tasks, waited for at shutdown.
    pub tracker: TaskTracker,
    /// The address the HTTP server is bound to.
    pub local_addr: SocketAddr,
}

/// The router of a bridge.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// A started bridge: the link to ptyd runs; HTTP is not served yet.
pub struct Bridge {
    state: AppState,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Bridge {
    /// Validates `config` for the bound address, starts the link to ptyd and waits for its
    /// first attempt (so `/readyz` is right from the first request). Terminals ptyd still
    /// runs for a previous bridge are recovered as Disconnected with a fresh grace.
    pub async fn start(mut config: Config, local_addr: SocketAddr) -> Result<Bridge, ConfigError> {
        config.listen = local_addr;
        config.validate()?;
        let metrics = Metrics::new();
        let registry = Arc::new(
            Registry::new(config.grace, config.claim_timeout, config.max_dead)
                .with_resize_policy(config.resize_policy),
        );
        let backoff = Backoff::new(config.reconnect_initial, config.reconnect_max);
        let daemon = DaemonLink::new(config.socket.clone(), backoff, metrics.clone());
        let auth = Arc::new(Auth::new(&config, local_addr));
        let shutdown = CancellationToken::new();
        let (first_tx, first_rx) = oneshot::channel();
        let supervisor =
            tokio::spawn(daemon.clone().run(registry.clone(), shutdown.clone(), first_tx));
        // The first attempt is bounded by the link's own connect timeout.
        let _ = first_rx.await;
        let state = AppState {
            config: Arc::new(config),
            registry,
            daemon,
            metrics,
            auth,
            shutdown,
            tracker: TaskTracker::new(),
            local_addr,
        };
        Ok(Bridge { state, supervisor })
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then closes every socket (1001)
    /// and waits, bounded, for them. Terminals keep running in ptyd.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Bridge { state, supervisor } = self;
        let token = state.shutdown.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: closing sockets; terminals keep running in ptyd");
            token.cancel();
        });
        let config = &state.config;
        let limits = server::Limits {
            header_timeout: config.header_timeout,
            max_connections: config.max_connections,
            max_anonymous: config.max_anonymous_connections,
            shutdown_timeout: config.shutdown_timeout,
        };
        let result =
            server::serve(listener, app(state.clone()), limits, state.shutdown.clone()).await;
        state.shutdown.cancel();
        state.tracker.close();
        let limit = state.config.shutdown_timeout;
        if tokio::time::timeout(limit, state.tracker.wait()).await.is_err() {
            tracing::warn!("sockets still open {limit:?} after shutdown began; leaving them");
        }
        let _ = supervisor.await;
        result
    }
}

/// Runs a bridge on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bridge = Bridge::start(config, listener.local_addr()?).await?;
    bridge.serve(listener, shutdown).await?;
    Ok(())
}
