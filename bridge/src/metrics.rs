//! The bridge's Prometheus metrics: handles registered once, rendered as text on `/metrics`.
//!
//! The recorder belongs to the bridge instance rather than being installed globally, so
//! several bridges (in tests) never share counters and nothing else in the process can
//! claim the global slot first. Handles are registered inside `with_local_recorder` and
//! stay bound to this recorder afterwards.

use std::sync::Arc;

use metrics::{describe_counter, describe_gauge, Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::AppError;
use crate::terminals::StatusCounts;

/// Counters and gauges of one bridge. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    handle: PrometheusHandle,
    open_sockets: Gauge,
    active: Gauge,
    disconnected: Gauge,
    detached: Gauge,
    dead: Gauge,
    daemon_up: Gauge,
    reconnects: Counter,
    grace_expiries: Counter,
    heartbeat_timeouts: Counter,
    idle_closes: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    daemon_reconnects: Counter,
    /// Refused creations, indexed by `CreateFailure as usize`.
    create_failures: [Counter; CreateFailure::ALL.len()],
}

/// Why `POST /api/terminals` failed: the `error` label of
/// `ptyd_bridge_create_failures_total`. Each is its own series from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateFailure {
    /// The pool is full.
    AtCapacity,
    /// A per-principal limit of ptyd.
    QuotaExceeded,
    /// ptyd could not start the program.
    SpawnFailed,
    /// ptyd is stopping.
    ShuttingDown,
    /// ptyd is unreachable or the connection broke.
    IpcError,
    /// Anything else (an unexpected answer of ptyd).
    Other,
}

impl CreateFailure {
    /// Every kind, in declaration order (so `ALL[k as usize] == k`).
    pub const ALL: [CreateFailure; 6] = [
        CreateFailure::AtCapacity,
        CreateFailure::QuotaExceeded,
        CreateFailure::SpawnFailed,
        CreateFailure::ShuttingDown,
        CreateFailure::IpcError,
        CreateFailure::Other,
    ];

    /// The label value: the name of the `AppError` it counts, or `Other`.
    pub fn label(self) -> &'static str {
        match self {
            CreateFailure::AtCapacity => "AtCapacity",
            CreateFailure::QuotaExceeded => "QuotaExceeded",
            CreateFailure::SpawnFailed => "SpawnFailed",
            CreateFailure::ShuttingDown => "ShuttingDown",
            CreateFailure::IpcError => "IpcError",
            CreateFailure::Other => "Other",
        }
    }
}

impl From<&AppError> for CreateFailure {
    /// No wildcard: a new `AppError` variant does not compile until it is given a label here.
    fn from(e: &AppError) -> CreateFailure {
        match e {
            AppError::AtCapacity { .. } => CreateFailure::AtCapacity,
            AppError::QuotaExceeded { .. } => CreateFailure::QuotaExceeded,
            AppError::SpawnFailed(_) => CreateFailure::SpawnFailed,
            AppError::ShuttingDown(_) => CreateFailure::ShuttingDown,
            AppError::IpcError(_) => CreateFailure::IpcError,
            // What else `AppError::from_client` makes of a ptyd answer.
            AppError::Internal(_) | AppError::NotFound(_) => CreateFailure::Other,
            // Refusals before the handler asks ptyd (authentication, the request itself);
            // they are not counted as failed creations today, and would be `Other` if they were.
            AppError::BadRequest(_)
            | AppError::Unauthorized(_)
            | AppError::Forbidden(_)
            | AppError::MisdirectedHost(_)
            | AppError::TooManyAttempts { .. }
            | AppError::Busy(_)
            | AppError::Gone { .. } => CreateFailure::Other,
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own recorder.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let inner = metrics::with_local_recorder(&recorder, || {
            describe_gauge!("ptyd_bridge_open_sockets", "WebSocket connections open now");
            describe_gauge!("ptyd_bridge_terminals", "Terminals by status");
            describe_gauge!("ptyd_bridge_daemon_up", "1 while ptyd answers, else 0");
            describe_counter!(
                "ptyd_bridge_reconnects_total",
                "Sockets that resumed a Disconnected terminal within its grace"
            );
            describe_counter!(
                "ptyd_bridge_grace_expiries_total",
                "Terminals killed because no socket returned within the grace"
            );
            describe_counter!(
                "ptyd_bridge_heartbeat_timeouts_total",
                "Sockets closed because a Ping got no Pong in time"
            );
            describe_counter!(
                "ptyd_bridge_idle_closes_total",
                "Sockets closed after the idle timeout"
            );
            describe_counter!("ptyd_bridge_bytes_in_total", "Terminal input bytes from browsers");
            describe_counter!("ptyd_bridge_bytes_out_total", "Terminal output bytes to browsers");
            describe_counter!(
                "ptyd_bridge_daemon_reconnects_total",
                "Connections to ptyd made again after losing it"
            );
            describe_counter!(
                "ptyd_bridge_create_failures_total",
                "Terminal creations refused, by error (AtCapacity, QuotaExceeded, SpawnFailed, \
                 ShuttingDown, IpcError, Other)"
            );
            let create_failures = CreateFailure::ALL.map(|kind| {
                metrics::counter!("ptyd_bridge_create_failures_total", "error" => kind.label())
            });
            Inner {
                handle,
                create_failures,
                open_sockets: metrics::gauge!("ptyd_bridge_open_sockets"),
                active: metrics::gauge!("ptyd_bridge_terminals", "status" => "active"),
                disconnected: metrics::gauge!("ptyd_bridge_terminals", "status" => "disconnected"),
                detached: metrics::gauge!("ptyd_bridge_terminals", "status" => "detached"),
                dead: metrics::gauge!("ptyd_bridge_terminals", "status" => "dead"),
                daemon_up: metrics::gauge!("ptyd_bridge_daemon_up"),
                reconnects: metrics::counter!("ptyd_bridge_reconnects_total"),
                grace_expiries: metrics::counter!("ptyd_bridge_grace_expiries_total"),
                heartbeat_timeouts: metrics::counter!("ptyd_bridge_heartbeat_timeouts_total"),
                idle_closes: metrics::counter!("ptyd_bridge_idle_closes_total"),
                bytes_in: metrics::counter!("ptyd_bridge_bytes_in_total"),
                bytes_out: metrics::counter!("ptyd_bridge_bytes_out_total"),
                daemon_reconnects: metrics::counter!("ptyd_bridge_daemon_reconnects_total"),
            }
        });
        // Register every series at zero, so dashboards see them before the first event.
        for c in [
            &inner.reconnects,
            &inner.grace_expiries,
            &inner.heartbeat_timeouts,
            &inner.idle_closes,
            &inner.bytes_in,
            &inner.bytes_out,
            &inner.daemon_reconnects,
        ]
        .into_iter()
        .chain(&inner.create_failures)
        {
            c.increment(0);
        }
        inner.open_sockets.set(0.0);
        inner.daemon_up.set(0.0);
        Metrics { inner: Arc::new(inner) }
    }

    /// Counts an open socket until the returned guard drops.
    pub fn socket_opened(&self) -> OpenSocket {
        self.inner.open_sockets.increment(1.0);
        OpenSocket { gauge: self.inner.open_sockets.clone() }
    }

    /// A socket resumed a Disconnected terminal.
    pub fn reconnect(&self) {
        self.inner.reconnects.increment(1);
    }

    /// A grace period ran out.
    pub fn grace_expired(&self) {
        self.inner.grace_expiries.increment(1);
    }

    /// A Pong did not come back in time.
    pub fn heartbeat_timeout(&self) {
        self.inner.heartbeat_timeouts.increment(1);
    }

    /// A socket was closed for being idle.
    pub fn idle_close(&self) {
        self.inner.idle_closes.increment(1);
    }

    /// Terminal input from a browser.
    pub fn bytes_in(&self, n: usize) {
        self.inner.bytes_in.increment(n as u64);
    }

    /// Terminal output to a browser.
    pub fn bytes_out(&self, n: usize) {
        self.inner.bytes_out.increment(n as u64);
    }

    /// A terminal creation was refused with `error`.
    pub fn create_failed(&self, error: &AppError) {
        self.inner.create_failures[CreateFailure::from(error) as usize].increment(1);
    }

    /// Whether ptyd answers; counts the connections made again after a loss.
    pub fn daemon_up(&self, up: bool, again: bool) {
        self.inner.daemon_up.set(if up { 1.0 } else { 0.0 });
        if up && again {
            self.inner.daemon_reconnects.increment(1);
        }
    }

    /// The Prometheus text, with the terminal gauges set from `counts` first.
    pub fn render(&self, counts: StatusCounts) -> String {
        self.inner.active.set(counts.active as f64);
        self.inner.disconnected.set(counts.disconnected as f64);
        self.inner.detached.set(counts.detached as f64);
        self.inner.dead.set(counts.dead as f64);
        self.inner.handle.render()
    }
}

/// Decrements the open-socket gauge on drop.
pub struct OpenSocket {
    gauge: Gauge,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::new();
        let guard = m.socket_opened();
        m.bytes_out(5);
        m.reconnect();
        let retry_after = std::time::Duration::ZERO;
        m.create_failed(&AppError::AtCapacity { message: "full".into(), retry_after });
        m.create_failed(&AppError::QuotaExceeded { message: "quota".into(), retry_after });
        m.create_failed(&AppError::QuotaExceeded { message: "quota".into(), retry_after });
        m.create_failed(&AppError::Internal("ptyd answered BadRequest: …".into()));
        let text = m.render(StatusCounts { active: 1, disconnected: 2, detached: 4, dead: 3 });
        for needle in [
            "ptyd_bridge_open_sockets 1",
            "ptyd_bridge_terminals{status=\"active\"} 1",
            "ptyd_bridge_terminals{status=\"disconnected\"} 2",
            "ptyd_bridge_terminals{status=\"detached\"} 4",
            "ptyd_bridge_terminals{status=\"dead\"} 3",
            "ptyd_bridge_reconnects_total 1",
            "ptyd_bridge_grace_expiries_total 0",
            "ptyd_bridge_heartbeat_timeouts_total 0",
            "ptyd_bridge_idle_closes_total 0",
            "ptyd_bridge_bytes_in_total 0",
            "ptyd_bridge_bytes_out_total 5",
            "ptyd_bridge_create_failures_total{error=\"AtCapacity\"} 1",
            "ptyd_bridge_create_failures_total{error=\"QuotaExceeded\"} 2",
            "ptyd_bridge_create_failures_total{error=\"SpawnFailed\"} 0",
            "ptyd_bridge_create_failures_total{error=\"ShuttingDown\"} 0",
            "ptyd_bridge_create_failures_total{error=\"IpcError\"} 0",
            "ptyd_bridge_create_failures_total{error=\"Other\"} 1",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        drop(guard);
        assert!(m.render(StatusCounts::default()).contains("ptyd_bridge_open_sockets 0"));
        // A second instance does not share the first one's counters.
        assert!(Metrics::new()
            .render(StatusCounts::default())
            .contains("ptyd_bridge_bytes_out_total 0"));
    }

    #[test]
    fn create_failure_labels_are_the_error_names() {
        for (i, kind) in CreateFailure::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i, "ALL is in declaration order");
        }
        // Every kind but Other counts exactly the AppError of its name.
        let retry_after = std::time::Duration::ZERO;
        for e in [
            AppError::AtCapacity { message: String::new(), retry_after },
            AppError::QuotaExceeded { message: String::new(), retry_after },
            AppError::SpawnFailed(String::new()),
            AppError::ShuttingDown(String::new()),
            AppError::IpcError(String::new()),
        ] {
            assert_eq!(CreateFailure::from(&e).label(), e.name());
        }
        let other = AppError::TooManyAttempts { message: String::new(), retry_after };
        assert_eq!(CreateFailure::from(&other), CreateFailure::Other);
    }
}
