//! The capacity-bounded PTY pool: slots as owned semaphore permits, and the registry
//! of sessions by id.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use ipc_proto::{DaemonEvent, DaemonEventKind, ErrorCode, SessionId, SpawnRequest};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::admission::{Admission, Class, Peer, Refusal, Slot};
use crate::cgroup::SessionCgroup;
use crate::config::{defaults, Config};
use crate::lifecycle;
use crate::pty::{self, PtyHandle, SpawnSpec};
use crate::reaper::Reaper;
use crate::retention::{Bounds, Retained};
use crate::session::{now_ms, Session, SessionMeta, Subscription};

/// Pool failures, worded as the spec words them.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No free slot; requests are refused at once, never queued.
    #[error("pty pool is at capacity ({max})")]
    AtCapacity {
        /// The capacity.
        max: usize,
    },
    /// A per-principal limit (per uid, or the agents' share) refused the spawn.
    #[error("{0}")]
    QuotaExceeded(Refusal),
    /// No such session (never existed, or its retention ended).
    #[error("pty handle not found: {0}")]
    HandleNotFound(SessionId),
    /// The PTY or child could not be created.
    #[error("pty spawn failed: {0}")]
    SpawnFailed(String),
    /// The request itself is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The daemon is stopping.
    #[error("ptyd is shutting down")]
    ShuttingDown,
}

impl PoolError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PoolError::AtCapacity { .. } => ErrorCode::AtCapacity,
            PoolError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            PoolError::HandleNotFound(_) => ErrorCode::HandleNotFound,
            PoolError::SpawnFailed(_) => ErrorCode::SpawnFailed,
            PoolError::BadRequest(_) => ErrorCode::BadRequest,
            PoolError::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }
}

/// All sessions, running and retained.
pub struct PtyPool {
    /// Settings.
    pub config: Arc<Config>,
    admission: Arc<Admission>,
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
    retained: Mutex<Retained>,
    /// Wakes the retention sweeper when a session is retired.
    retired: tokio::sync::Notify,
    reaper: Arc<Reaper>,
    /// Cancelled when the daemon stops: every session ends.
    pub stop: CancellationToken,
    tasks: TaskTracker,
    events: broadcast::Sender<DaemonEvent>,
}

/// Daemon-wide events buffered per subscriber before it counts as lagging.
const EVENT_DEPTH: usize = 1024;

impl std::fmt::Debug for PtyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtyPool")
            .field("capacity", &self.config.capacity)
            .field("active", &self.active())
            .finish()
    }
}

impl PtyPool {
    /// An empty pool.
    pub fn new(config: Arc<Config>, reaper: Arc<Reaper>) -> Arc<PtyPool> {
        let bounds = Bounds {
            time: config.retention,
            count: config.max_retained,
            bytes: config.max_retained_bytes,
        };
        Arc::new(PtyPool {
            admission: Admission::new(
                config.capacity,
                config.max_sessions_per_uid,
                config.interactive_reserve,
            ),
            config,
            sessions: Mutex::default(),
            retained: Mutex::new(Retained::new(bounds)),
            retired: tokio::sync::Notify::new(),
            reaper,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            events: broadcast::channel(EVENT_DEPTH).0,
        })
    }

    /// Slots in use.
    pub fn active(&self) -> usize {
        self.admission.active()
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// Admits a session for `peer`: a slot, or why there is none (refused at once, never
    /// queued).
    pub fn admit(&self, peer: &Peer, class: Class) -> Result<Slot, PoolError> {
        self.admission.admit(peer, class).map_err(|refusal| match refusal {
            Refusal::AtCapacity { max } => {
                warn!(max, "pool is at capacity");
                PoolError::AtCapacity { max }
            }
            quota => {
                warn!(%peer, "{quota}");
                PoolError::QuotaExceeded(quota)
            }
        })
    }

    /// Starts a session for `peer`. With `attach`, the returned subscription exists before
    /// the child's first byte is read.
    pub async fn spawn(
        self: &Arc<Self>,
        peer: &Peer,
        req: SpawnRequest,
    ) -> Result<(Arc<Session>, Option<Subscription>), PoolError> {
        if self.stop.is_cancelled() {
            return Err(PoolError::ShuttingDown);
        }
        validate(&req)?;
        let class = if req.interactive { Class::Interactive } else { Class::Agent };
        let permit = self.admit(peer, class)?;
        let spec = SpawnSpec {
            command: req.command.clone(),
            args: req.args.clone(),
            env: req.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cwd: req.cwd.clone(),
            cols: req.cols,
            rows: req.rows,
        };
        let id = SessionId::new();
        let (cgroup, procs) = self.session_cgroup(id, &req.command)?;
        let reaper = self.reaper.clone();
        let spawned = tokio::task::spawn_blocking(move || pty::spawn(&spec, &reaper, procs))
            .await
            .map_err(|e| PoolError::SpawnFailed(format!("spawn task failed: {e}")))?
            .map_err(|e| {
                warn!(command = %req.command, error = %e, "pty spawn failed");
                PoolError::SpawnFailed(e)
            });
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                // A child that joined the cgroup and failed later must not stay in it.
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.kill();
                }
                return Err(e);
            }
        };
        // From here on the handle owns the slot, the group and the cgroup: any early
        // return kills them.
        let handle = PtyHandle::new(spawned.pid, permit, cgroup);
        let meta = SessionMeta {
            command: req.command.clone(),
            args: req.args.clone(),
            cwd: req.cwd.clone(),
            labels: req.labels.clone(),
            idle_timeout: req
                .idle_timeout_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(self.config.idle_timeout),
        };
        let replay = req.replay_bytes.unwrap_or(self.config.replay_bytes);
        // Input frames may be up to 1 MiB each: a short queue keeps a stuck child's backlog small.
        let (input_tx, input_rx) = flume::bounded(16);
        let session = Arc::new(Session::new(
            id,
            spawned.pid,
            meta,
            replay,
            (req.cols, req.rows),
            spawned.master,
            input_tx,
        ));
        let sub = match req.attach {
            Some(mode) => {
                session
                    .subscribe(Some(0), mode.lossless)
                    .map_err(|e| PoolError::BadRequest(e.to_string()))?
                    .2
            }
            None => None,
        };
        let name = id.to_string();
        let short = &name[..8];
        pty::start_writer(short, spawned.writer, input_rx)
            .map_err(|e| PoolError::SpawnFailed(format!("cannot start pty writer thread: {e}")))?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let sink = session.clone();
        pty::start_reader(
            short,
            spawned.reader,
            move |data| sink.push_output(data),
            move || {
                let _ = done_tx.send(());
            },
        )
        .map_err(|e| PoolError::SpawnFailed(format!("cannot start pty reader thread: {e}")))?;

        self.sessions.lock().unwrap().insert(id, session.clone());
        info!(session = %id, pid = spawned.pid, command = %req.command, active_count = self.active(), "spawned pty");
        // A root span: the session outlives the connection that spawned it.
        let span = tracing::info_span!(parent: None, "session", id = %id, pid = spawned.pid);
        // Announced before its lifecycle starts, so `spawned` always precedes `exited`.
        self.emit(DaemonEventKind::Spawned, &session, |e| {
            e.pid = Some(session.pid);
            e.command = Some(session.meta.command.clone());
        });
        let pool = self.clone();
        self.tasks.spawn(
            lifecycle::run(session.clone(), handle, spawned.exit, done_rx, pool).instrument(span),
        );
        Ok((session, sub))
    }

    /// The cgroup for session `id`, with its `cgroup.procs` open for the child to join
    /// through; none when ptyd contains sessions by process group only.
    fn session_cgroup(
        &self,
        id: SessionId,
        command: &str,
    ) -> Result<(Option<SessionCgroup>, Option<File>), PoolError> {
        let Some(tree) = &self.config.cgroups else { return Ok((None, None)) };
        let (cgroup, procs) = tree.create_session(&format!("session-{id}")).map_err(|e| {
            warn!(%command, error = %e, "pty spawn failed");
            PoolError::SpawnFailed(format!("cannot create the session's cgroup: {e}"))
        })?;
        Ok((Some(cgroup), Some(procs)))
    }

    /// Looks a session up.
    pub fn get(&self, id: SessionId) -> Result<Arc<Session>, PoolError> {
        self.sessions.lock().unwrap().get(&id).cloned().ok_or(PoolError::HandleNotFound(id))
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<_> = self.sessions.lock().unwrap().values().cloned().collect();
        all.sort_by_key(|s| s.info().created_at_ms);
        all
    }

    /// Keeps `session`'s record now that it has exited, forgetting the oldest exited ones
    /// past the retention bounds (time, count, bytes).
    pub(crate) fn retire(&self, session: &Session) {
        let gone = self.retained().retire(session.id, session.retained_bytes(), Instant::now());
        self.forget_all(gone);
        self.retired.notify_one();
    }

    fn retained(&self) -> std::sync::MutexGuard<'_, Retained> {
        self.retained.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_all(&self, ids: Vec<SessionId>) {
        if ids.is_empty() {
            return;
        }
        let mut sessions = self.sessions.lock().unwrap();
        for id in ids {
            sessions.remove(&id);
        }
    }

    /// Forgets exited sessions as their retention ends, until the daemon stops.
    pub async fn sweep_retained(self: Arc<Self>) {
        loop {
            let next = self.retained().next_expiry();
            tokio::select! {
                _ = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = self.retired.notified() => {}
                _ = self.stop.cancelled() => return,
            }
            let gone = self.retained().expired(Instant::now());
            self.forget_all(gone);
        }
    }

    /// Exited sessions retained, and the bytes they keep.
    pub fn retained_usage(&self) -> (usize, usize) {
        self.retained().usage()
    }

    /// Publishes a daemon-wide event about `session`; `fill` sets the kind's fields.
    pub fn emit(
        &self,
        event: DaemonEventKind,
        session: &Session,
        fill: impl FnOnce(&mut DaemonEvent),
    ) {
        let mut ev = DaemonEvent {
            event,
            session: session.id,
            at_ms: now_ms(),
            pid: None,
            command: None,
            exit: None,
            cols: None,
            rows: None,
        };
        fill(&mut ev);
        // No subscribers is fine: nobody is listening.
        let _ = self.events.send(ev);
    }

    /// A feed of daemon-wide events from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<DaemonEvent> {
        self.events.subscribe()
    }

    /// Ends every session and waits until all are reaped.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn validate(req: &SpawnRequest) -> Result<(), PoolError> {
    if req.command.is_empty() {
        return Err(PoolError::BadRequest("command must not be empty".into()));
    }
    if req.cols == 0 || req.rows == 0 {
        return Err(PoolError::BadRequest(format!(
            "invalid size {}x{}: both must be at least 1",
            req.cols, req.rows
        )));
    }
    if let Some(n) = req.replay_bytes {
        if n == 0 || n > defaults::MAX_REPLAY_BYTES {
            return Err(PoolError::BadRequest(format!(
                "replay_bytes {n} must be between 1 and {}",
                defaults::MAX_REPLAY_BYTES
            )));
        }
    }
    if req.env.keys().any(|k| k.is_empty() || k.contains('=') || k.contains('\0')) {
        return Err(PoolError::BadRequest(
            "env names must be non-empty and contain no '=' or NUL".into(),
        ));
    }
    // exec takes C strings: a NUL would cut the string short (or fail the spawn with a
    // misleading error), so it is the request that is wrong, and the field is named.
    let nul = |field: String, value: &str| {
        value.contains('\0').then(|| {
            PoolError::BadRequest(format!("{field} contains a NUL byte, which exec cannot pass"))
        })
    };
    let fields = std::iter::once(nul("command".into(), &req.command))
        .chain(req.args.iter().enumerate().map(|(i, a)| nul(format!("args[{i}]"), a)))
        .chain(req.env.iter().map(|(k, v)| nul(format!("env[{k:?}]"), v)))
        .chain(req.cwd.iter().map(|c| nul("cwd".into(), c)));
    if let Some(err) = fields.flatten().next() {
        return Err(err);
    }
    Ok(())
}
