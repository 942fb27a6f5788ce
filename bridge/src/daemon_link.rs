//! The bridge's link to ptyd: the shared control `Client`, readiness, reconnection with a
//! capped exponential backoff, and recovery of the terminals ptyd still runs for us.
//!
//! A supervisor task owns the connection. It subscribes to ptyd's session events (so
//! the end of the event stream is how a lost daemon is noticed, at once), reconciles the
//! registry with ptyd's session list on every (re)connection, and only then publishes the
//! client for the HTTP handlers. Sockets attach over shared connections of their own
//! ([`DaemonLink::attach_slot`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ipc_proto::{
    Client, ClientError, DaemonEventKind, ErrorCode, IpcError, ListReply, Notice, SessionId,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::attach_links::{AttachLinks, Slot};
use crate::metrics::Metrics;
use crate::terminals::{spawn_grace_timer, Ending, Reconciled, Registry, Status};

/// How long connecting and the first exchanges with ptyd may take before the attempt
/// counts as failed (a daemon that accepts but never answers must not hang the bridge).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Delays between reconnection attempts: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and never exceeding `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff { initial, max, next: initial }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `initial`, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The shared connection to ptyd and what is known about its health.
pub struct DaemonLink {
    socket: PathBuf,
    current: RwLock<Option<Client>>,
    /// Why the last attempt failed; `None` before the first one ended.
    last_error: Mutex<Option<ClientError>>,
    metrics: Metrics,
    backoff: Backoff,
    /// The shared connections the sockets attach over.
    attach: Arc<AttachLinks>,
}

impl DaemonLink {
    /// A link to the daemon at `socket`, not yet connected (see [`DaemonLink::run`]).
    pub fn new(socket: PathBuf, backoff: Backoff, metrics: Metrics) -> Arc<DaemonLink> {
        Arc::new(DaemonLink {
            attach: AttachLinks::new(socket.clone()),
            socket,
            current: RwLock::new(None),
            last_error: Mutex::new(None),
            metrics,
            backoff,
        })
    }

    /// ptyd's socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The shared client for control calls, or an `IpcError` saying why there is none.
    pub fn control(&self) -> Result<Client, ClientError> {
        if let Some(c) = self.current.read().unwrap().as_ref() {
            return Ok(c.clone());
        }
        let last = self.last_error.lock().unwrap().clone().map(Box::new);
        Err(IpcError::Unreachable { path: self.socket.clone(), last }.into())
    }

    /// Whether the control connection is up.
    pub fn is_connected(&self) -> bool {
        self.current.read().unwrap().is_some()
    }

    /// Asks ptyd for its session list, as proof that it answers.
    pub async fn probe(&self, timeout: Duration) -> Result<(), ClientError> {
        let client = self.control()?;
        match tokio::time::timeout(timeout, client.list()).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(IpcError::Timeout(timeout).into()),
        }
    }

    /// A place for one WebSocket's attachment to `session` on a shared connection (see
    /// [`crate::attach_links`]): its windowed attachment slows down only its own terminal,
    /// never the control calls or other sockets.
    pub async fn attach_slot(&self, session: SessionId) -> Result<Slot, ClientError> {
        if !self.is_connected() {
            // Fail fast while the supervisor knows ptyd is away.
            return Err(self.control().unwrap_err());
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, self.attach.slot(session)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out()),
        }
    }

    /// The shared connections the sockets attach over.
    pub fn attach_links(&self) -> Arc<AttachLinks> {
        self.attach.clone()
    }

    /// Ends a terminal's session (SIGHUP to its group, SIGKILL after ptyd's kill grace).
    /// A failure is logged: the next reconciliation kills it again.
    pub async fn kill(&self, id: SessionId) {
        let result = match self.control() {
            Ok(c) => c.kill(id, None).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(ClientError::Daemon { code: ErrorCode::HandleNotFound, .. }) => {}
            Err(e) => tracing::warn!(
                "cannot kill terminal {id} now ({e}); it will be killed once ptyd answers again"
            ),
        }
    }

    fn set_error(&self, e: &ClientError) {
        *self.last_error.lock().unwrap() = Some(e.clone());
    }

    fn publish(&self, client: Option<Client>) {
        *self.current.write().unwrap() = client;
    }

    /// The supervisor: connects, reconciles, watches, and reconnects with backoff until
    /// `shutdown`. `first` is told when the first attempt is over, successful or not.
    pub async fn run(
        self: Arc<Self>,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
        first: oneshot::Sender<()>,
    ) {
        let mut first = Some(first);
        let mut backoff = self.backoff.clone();
        let mut was_up = false;
        let mut failures = 0u32;
        // The daemon last connected to: its pid, release and upgrade count.
        let mut last: Option<(u32, String, u32)> = None;
        loop {
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.establish(&registry));
            match attempt.await.unwrap_or_else(|_| Err(timed_out())) {
                Ok((client, mut notices, list)) => {
                    backoff.reset();
                    failures = 0;
                    let hello = client.daemon();
                    tracing::info!(
                        socket = %self.socket.display(),
                        pid = hello.pid,
                        version = %hello.daemon_version,
                        "connected to ptyd"
                    );
                    if let Some((pid, from, upgrades)) = &last {
                        if *pid == hello.pid && list.upgrades > *upgrades {
                            let carried = list
                                .sessions
                                .iter()
                                .filter(|s| s.exit.is_none() && crate::terminals::is_ours(s))
                                .count();
                            tracing::info!(
                                "ptyd upgraded from {from} to {}, {carried} terminals carried",
                                hello.daemon_version
                            );
                        }
                    }
                    last = Some((hello.pid, hello.daemon_version.clone(), list.upgrades));
                    self.publish(Some(client.clone()));
                    self.metrics.daemon_up(true, was_up);
                    was_up = true;
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                    let lost = self.watch(&client, &mut notices, &registry, &shutdown).await;
                    self.publish(None);
                    self.metrics.daemon_up(false, false);
                    match lost {
                        None => return,
                        // An upgrade: the new image serves new connections as soon as
                        // it can (they wait for it meanwhile), so no backoff.
                        Some(e) if e.is_upgrading() => {
                            tracing::info!("ptyd is upgrading; reconnecting");
                            continue;
                        }
                        Some(e) => {
                            tracing::warn!("lost the connection to ptyd: {e}; reconnecting");
                            self.set_error(&e);
                        }
                    }
                }
                Err(e) => {
                    self.set_error(&e);
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!("ptyd is not reachable: {e}");
                    } else {
                        tracing::debug!(attempt = failures, "ptyd is still not reachable: {e}");
                    }
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn establish(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
    ) -> Result<(Client, mpsc::Receiver<Notice>, ListReply), ClientError> {
        let client = Client::connect(&self.socket).await?;
        // Subscribe before listing, so an exit between the two cannot be missed.
        let notices = client.subscribe().await?;
        let list = client.list().await?;
        let found = registry.reconcile(&list.sessions, Instant::now());
        self.apply(found, registry);
        Ok((client, notices, list))
    }

    fn apply(self: &Arc<Self>, found: Reconciled, registry: &Arc<Registry>) {
        for timer in found.recovered {
            let span = tracing::info_span!("terminal", terminal = %timer.id);
            span.in_scope(|| {
                tracing::info!(
                    "Recovered terminal {} as Disconnected; grace period of {} starts now",
                    timer.id,
                    humantime::format_duration(timer.after)
                )
            });
            spawn_grace_timer(registry.clone(), self.clone(), self.metrics.clone(), timer);
        }
        for (id, previous) in found.dead {
            let span = tracing::info_span!("terminal", terminal = %id);
            span.in_scope(|| {
                tracing::warn!("Terminal {id} is no longer known to ptyd");
                tracing::debug!("Status transition: {previous} → Dead");
            });
        }
        for id in found.kill_again {
            let link = self.clone();
            tokio::spawn(async move { link.kill(id).await });
        }
    }

    /// Follows ptyd's events until the connection ends (returns why) or shutdown (`None`).
    async fn watch(
        self: &Arc<Self>,
        client: &Client,
        notices: &mut mpsc::Receiver<Notice>,
        registry: &Arc<Registry>,
        shutdown: &CancellationToken,
    ) -> Option<ClientError> {
        loop {
            let notice = tokio::select! {
                n = notices.recv() => n,
                _ = shutdown.cancelled() => return None,
            };
            match notice {
                Some(Notice::Event(ev)) if ev.event == DaemonEventKind::Exited => {
                    // An Active terminal's socket sees the exit itself and reports it.
                    let unattended = |s| matches!(s, Ok(Status::Disconnected | Status::Detached));
                    if unattended(registry.check(ev.session))
                        && registry
                            .mark_dead(ev.session, ended(ev.end_reason), None, Instant::now())
                            .is_some()
                    {
                        let span = tracing::info_span!("terminal", terminal = %ev.session);
                        span.in_scope(|| {
                            tracing::info!("Terminal {} exited while disconnected", ev.session);
                            tracing::debug!("Status transition: Disconnected → Dead");
                        });
                    }
                }
                Some(Notice::Dropped(_)) => {
                    // Some events were missed: the session list tells the truth.
                    if let Ok(list) = client.list().await {
                        let found = registry.reconcile(&list.sessions, Instant::now());
                        self.apply(found, registry);
                    }
                }
                Some(_) => {}
                None => {
                    // The connection is over; a call on it fails at once with the reason.
                    return Some(match client.list().await {
                        Err(e) => e,
                        // The stream ended on a connection that still answers.
                        Ok(_) => IpcError::Protocol("ptyd's event stream ended".into()).into(),
                    });
                }
            }
        }
    }
}

fn timed_out() -> ClientError {
    IpcError::Timeout(CONNECT_TIMEOUT).into()
}

/// A terminal's ending from ptyd's `exited` event (an older ptyd names no reason).
fn ended(reason: Option<ipc_proto::EndReason>) -> Ending {
    Ending::Session(reason.unwrap_or(ipc_proto::EndReason::Exited))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let seen: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(seen, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn backoff_initial_above_the_cap_is_capped() {
        let mut b = Backoff::new(Duration::from_secs(9), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn unreachable_daemon_is_an_ipc_error_naming_the_socket() {
        let link = DaemonLink::new(
            "/nonexistent/ptyd.sock".into(),
            Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            Metrics::new(),
        );
        let registry = Arc::new(Registry::new(Duration::from_secs(1), Duration::from_secs(1), 8));
        let shutdown = CancellationToken::new();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(link.clone().run(registry, shutdown.clone(), tx));
        rx.await.unwrap();
        let e = link.control().unwrap_err();
        let ClientError::Ipc(ipc) = &e else { panic!("{e:?}") };
        assert!(matches!(ipc, IpcError::Unreachable { .. }), "{ipc:?}");
        // The cause of the last attempt survives: the socket's directory does not exist.
        assert_eq!(ipc.io_kind(), Some(std::io::ErrorKind::NotFound));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "IPC error: ptyd is not reachable at /nonexistent/ptyd.sock: \
                 cannot connect to ptyd at /nonexistent/ptyd.sock: "
            ),
            "{text}"
        );
        assert!(link.attach_slot(SessionId::new()).await.is_err());
        shutdown.cancel();
        task.await.unwrap();
    }
}
