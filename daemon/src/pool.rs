//! The PTY pool: admission (a [`Slot`] per session, from `admission.rs`) and the
//! registry of sessions by id, running and retained. `spawn` is validate → admit → fork
//! → start (`session/start.rs`) → insert.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ipc_proto::{DaemonEventKind, ErrorCode, SessionId, SpawnRequest};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Class, Peer, Refusal, Slot};
use crate::cgroup::{CgroupTree, SessionCgroup};
use crate::config::{defaults, Config};
use crate::events::EventBus;
use crate::pty::{self, PtyHandle, SpawnSpec};
use crate::reaper::Reaper;
use crate::retention::{Bounds, Retained};
use crate::session::{self, Origin, Session, Subscription, Tie};
use crate::shell_integration::{self, Integration, ShellFiles};
use crate::upgrade::adopt::Adoption;
use crate::upgrade::quiesce::Quiesce;
use crate::upgrade::Upgrader;

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
    /// The daemon-wide event feed.
    pub events: EventBus,
    /// The shell integration's files, when it is on.
    shell: Option<ShellFiles>,
    /// Holds the daemon still for a live upgrade.
    pub quiesce: Arc<Quiesce>,
    /// Live upgrades, once the daemon serves.
    pub upgrader: OnceLock<Upgrader>,
}

/// Installs the shell integration beside the socket (`<socket>.shell/`, a name no other
/// program uses even in a shared directory); without it, shells just get no marks.
fn shell_files(socket: &std::path::Path) -> Option<ShellFiles> {
    let mut name = socket.file_name()?.to_os_string();
    name.push(".shell");
    let dir = socket.with_file_name(name);
    match shell_integration::install(&dir) {
        Ok(files) => Some(files),
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot write the shell integration; shells get no prompt marks");
            None
        }
    }
}

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
        let shell = config.shell_integration.then(|| shell_files(&config.socket)).flatten();
        Arc::new(PtyPool {
            shell,
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
            events: EventBus::default(),
            quiesce: Arc::default(),
            upgrader: OnceLock::new(),
        })
    }

    /// The reaper of every child.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
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
        let slot = self.admit(peer, class)?;
        let mut spec = SpawnSpec {
            command: req.command.clone(),
            args: req.args.clone(),
            env: req.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cwd: req.cwd.clone(),
            cols: req.cols,
            rows: req.rows,
        };
        let integration = match &self.shell {
            Some(files) => shell_integration::apply(&mut spec, files, |k| std::env::var(k).ok()),
            None => Integration::None,
        };
        debug!(?integration, command = %req.command, "shell integration");
        let id = SessionId::new();
        let tree = self.config.cgroups.clone();
        let reaper = self.reaper.clone();
        let helper = self.config.spawner.clone();
        let command = req.command.clone();
        // The cgroup's directory and files, the fork and the wait for the exec all block:
        // off the runtime, so other sessions' I/O goes on meanwhile.
        let spawned = tokio::task::spawn_blocking(move || {
            let (cgroup, procs) = session_cgroup(tree.as_ref(), id, &command)?;
            match pty::spawn(&spec, &reaper, procs, helper.as_deref()) {
                Ok(spawned) => Ok((spawned, cgroup)),
                Err(e) => {
                    warn!(%command, error = %e, "pty spawn failed");
                    // A child that joined the cgroup and failed later must not stay in it.
                    if let Some(cgroup) = &cgroup {
                        let _ = cgroup.kill();
                    }
                    Err(PoolError::SpawnFailed(e))
                }
            }
        })
        .await
        .map_err(|e| PoolError::SpawnFailed(format!("spawn task failed: {e}")))?;
        let (spawned, cgroup) = spawned?;
        // From here on the handle owns the slot, the group and the cgroup: any early
        // return kills them.
        let handle = PtyHandle::new(spawned.pid, slot, cgroup);
        let tie = if req.close_with_connection { Tie::Connection } else { Tie::Free };
        let origin = Origin { uid: peer.uid, gid: peer.gid, class, tie };
        let started = session::start::start(self, id, &req, integration, origin, spawned, handle)?;
        let session = started.session;
        self.sessions.lock().unwrap().insert(id, session.clone());
        info!(session_id = %id, pid = session.pid, command = %req.command, active_count = self.active(), "spawned pty");
        // Announced before its lifecycle starts, so `spawned` always precedes `exited`.
        self.events.emit(DaemonEventKind::Spawned, &session, |e| {
            e.pid = Some(session.pid);
            e.command = Some(session.meta.command.clone());
        });
        self.tasks.spawn(started.lifecycle);
        Ok((session, started.subscription))
    }

    /// [`PtyPool::spawn`] (without attaching) as a task of its own: it completes even if
    /// whoever asked goes away meanwhile, and a live upgrade (the quiesce count) and a
    /// shutdown (the pool's task tracker) wait for it from this call on.
    pub fn spawn_apart(
        self: &Arc<Self>,
        peer: Peer,
        req: SpawnRequest,
    ) -> tokio::task::JoinHandle<Result<Arc<Session>, PoolError>> {
        let under_way = self.quiesce.spawn_under_way();
        let pool = self.clone();
        self.tasks.spawn(async move {
            let _under_way = under_way;
            pool.spawn(&peer, req).await.map(|(session, _)| session)
        })
    }

    /// Removes the shell integration's files, at the end of a shutdown (not a live
    /// upgrade: the new image goes on using them).
    pub fn remove_shell_files(&self) {
        if let Some(files) = &self.shell {
            files.remove();
        }
    }

    /// Looks a session up.
    pub fn get(&self, id: SessionId) -> Result<Arc<Session>, PoolError> {
        self.sessions.lock().unwrap().get(&id).cloned().ok_or(PoolError::HandleNotFound(id))
    }

    /// Takes over the sessions of the image before a live upgrade: running ones with
    /// their slot, group, cgroup, terminal and lifecycle, exited ones as retained records.
    /// Call before the reaper serves, so that a child that exited meanwhile is matched.
    pub fn adopt(self: &Arc<Self>, adoption: &Adoption) -> usize {
        let loaded = &adoption.loaded;
        let mut adopted = 0;
        for record in &loaded.header.sessions {
            let cgroup = match (&self.config.cgroups, &record.cgroup) {
                (Some(tree), Some(dir)) => tree.adopt_session(dir),
                _ => None,
            };
            let Some(fd) = record.master_fd else {
                match session::handover::restore(record, loaded, None) {
                    Ok(session) => {
                        let session = Arc::new(session);
                        self.sessions.lock().unwrap().insert(session.id, session.clone());
                        self.retire(&session);
                        adopted += 1;
                    }
                    Err(e) => warn!(session_id = %record.id, "cannot adopt an exited session: {e}"),
                }
                // Whatever its lifecycle had not cleaned up yet goes as it would have.
                if let Some(cgroup) = cgroup {
                    tokio::spawn(async move {
                        let _ = cgroup.kill();
                        if cgroup.wait_empty(crate::cgroup::EMPTY_LIMIT).await.unwrap_or(false) {
                            let _ = cgroup.remove();
                        }
                    });
                }
                continue;
            };
            let master = adoption.master(fd);
            let slot = self.admission.carry(record.uid, record.class);
            let handle = PtyHandle::new(record.pid, slot, cgroup);
            let exit = self.reaper.adopt(record.pid);
            match session::start::adopt(self, record, loaded, master, exit, handle) {
                Ok(started) => {
                    let session = started.session;
                    self.sessions.lock().unwrap().insert(session.id, session.clone());
                    if session.meta.origin.tie == Tie::Connection {
                        // Its connection closed with the old image.
                        info!(session_id = %session.id, "ending session: the connection that owned it closed at the upgrade");
                        session.request_end(session::EndReason::OwnerGone);
                    }
                    self.tasks.spawn(started.lifecycle);
                    adopted += 1;
                }
                Err(e) => warn!(session_id = %record.id, "{e}; its processes are ended"),
            }
        }
        adopted
    }

    /// Waits (at most `limit`) until the input queued for every session has been written
    /// to its terminal.
    pub async fn drain_input(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let pending: Vec<_> =
                self.list().into_iter().filter(|s| !s.input_drained()).map(|s| s.id).collect();
            if pending.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                warn!(sessions = ?pending, "input queued for these sessions is not read by their programs; it does not cross the upgrade");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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

/// The cgroup for session `id` in `tree`, with its directory open for the child to be
/// created in; none when ptyd contains sessions by process group only. Blocking.
fn session_cgroup(
    tree: Option<&Arc<CgroupTree>>,
    id: SessionId,
    command: &str,
) -> Result<(Option<SessionCgroup>, Option<File>), PoolError> {
    let Some(tree) = tree else { return Ok((None, None)) };
    let (cgroup, procs) = tree.create_session(&format!("session-{id}")).map_err(|e| {
        warn!(%command, error = %e, "pty spawn failed");
        PoolError::SpawnFailed(format!("cannot create the session's cgroup: {e}"))
    })?;
    Ok((Some(cgroup), Some(procs)))
}
