//! The only way a session comes to be: around a freshly spawned child, its record, its
//! I/O tasks, and the lifecycle that will end it. Returned as [`Started`], whose
//! lifecycle future the pool runs once the session is in its registry (so that a child
//! that exits at once is retired only after it was registered). A session that crossed
//! from another daemon image (live upgrade) comes to be through [`adopt`], which gives it
//! the same I/O tasks and lifecycle.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ipc_proto::{SessionId, SpawnRequest};
use tracing::Instrument;

use super::handover::{self, Live};
use super::lifecycle;
use super::{AttachMode, Keep, Origin, Session, SessionMeta, Subscription};
use crate::pool::{PoolError, PtyPool};
use crate::pty::{PtyHandle, Spawned};
use crate::pty_io::{Input, PtyIo};
use crate::shell_integration::Integration;
use crate::upgrade::quiesce::Quiesce;
use crate::upgrade::state::{Loaded, SessionRecord};

/// Input frames may be up to 1 MiB each: a short queue keeps a stuck child's backlog small.
const INPUT_DEPTH: usize = 16;

/// A session that runs, and the lifecycle the pool must drive for it.
pub struct Started<F> {
    /// The record.
    pub session: Arc<Session>,
    /// The spawner's subscription from offset 0, when it asked to attach.
    pub subscription: Option<Subscription>,
    /// Drives the session to its end; run it once the session is registered.
    pub lifecycle: F,
}

/// Builds session `id` for `req` around `spawned`, whose slot, group and cgroup `handle`
/// owns (any failure here drops the handle, which kills them).
pub fn start(
    pool: &Arc<PtyPool>,
    id: SessionId,
    req: &SpawnRequest,
    integration: Integration,
    origin: Origin,
    spawned: Spawned,
    handle: PtyHandle,
) -> Result<Started<impl Future<Output = ()> + Send + 'static>, PoolError> {
    let meta = SessionMeta {
        command: req.command.clone(),
        args: req.args.clone(),
        cwd: req.cwd.clone(),
        labels: req.labels.clone(),
        idle_timeout: req
            .idle_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(pool.config.idle_timeout),
        integration,
        origin,
        cgroup: handle.cgroup_path().map(Into::into),
    };
    let keep = Keep {
        replay_bytes: req.replay_bytes.unwrap_or(pool.config.replay_bytes),
        scrollback_lines: pool.config.scrollback_lines,
    };
    let io = PtyIo::new(spawned.io).map_err(|e| {
        PoolError::SpawnFailed(format!("cannot register the pty with the runtime: {e}"))
    })?;
    // A root span: the session outlives the connection that spawned it.
    let span = tracing::info_span!(parent: None, "session", session_id = %id, pid = spawned.pid);
    let input = span.in_scope(|| Input::start(io.clone(), INPUT_DEPTH));
    let session = Arc::new(Session::new(
        id,
        spawned.pid,
        meta,
        keep,
        (req.cols, req.rows),
        spawned.master,
        input,
    ));
    // Subscribed before the output task starts, so not one byte can be missed.
    let subscription = match req.attach {
        Some(mode) => {
            let mode = AttachMode::from_lossless(mode.lossless);
            session.subscribe(Some(0), mode).map_err(|e| PoolError::BadRequest(e.to_string()))?.2
        }
        None => None,
    };
    let done_rx = read_output(pool, io, session.clone(), &span);
    let lifecycle = lifecycle::run(session.clone(), handle, spawned.exit, done_rx, pool.clone())
        .instrument(span);
    Ok(Started { session, subscription, lifecycle })
}

/// Rebuilds a running session that crossed a live upgrade around its PTY `master`, with
/// `handle` owning its slot, group and cgroup and `exit` the reaper's word of its end.
pub fn adopt(
    pool: &Arc<PtyPool>,
    record: &SessionRecord,
    loaded: &Loaded,
    master: std::os::fd::OwnedFd,
    exit: tokio::sync::oneshot::Receiver<ipc_proto::ExitStatus>,
    handle: PtyHandle,
) -> Result<Started<impl Future<Output = ()> + Send + 'static>, PoolError> {
    let adopt_failed = |e: &dyn std::fmt::Display| {
        PoolError::SpawnFailed(format!("cannot adopt session {}: {e}", record.id))
    };
    let dup = master.try_clone().map_err(|e| adopt_failed(&e))?;
    let io = PtyIo::new(std::fs::File::from(dup)).map_err(|e| adopt_failed(&e))?;
    let span =
        tracing::info_span!(parent: None, "session", session_id = %record.id, pid = record.pid);
    let input = span.in_scope(|| Input::start(io.clone(), INPUT_DEPTH));
    let live = Live { master, input };
    let session =
        Arc::new(handover::restore(record, loaded, Some(live)).map_err(|e| adopt_failed(&e))?);
    let done_rx = read_output(pool, io, session.clone(), &span);
    let lifecycle =
        lifecycle::run(session.clone(), handle, exit, done_rx, pool.clone()).instrument(span);
    Ok(Started { session, subscription: None, lifecycle })
}

/// Starts the task that reads the session's output into its record, holding still while
/// the daemon hands over to a new image; the receiver hears when the terminal closed.
fn read_output(
    pool: &Arc<PtyPool>,
    io: PtyIo,
    sink: Arc<Session>,
    span: &tracing::Span,
) -> tokio::sync::oneshot::Receiver<()> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let pool = pool.clone();
    let output = async move {
        let quiesce = &pool.quiesce;
        let _alive = quiesce.reader();
        let mut frozen = quiesce.watch();
        loop {
            quiesce.park_if_frozen(&mut frozen).await;
            let read = tokio::select! {
                biased;
                _ = Quiesce::frozen(&mut frozen) => continue,
                read = io.read_with(|data| sink.record_output(data)) => read,
            };
            let Some(backlog) = read else { break };
            tokio::select! {
                // Full lossless subscribers hold the next read back.
                _ = backlog.deliver() => {}
                // A handover closes every connection, and their subscriptions with them.
                _ = Quiesce::frozen(&mut frozen) => {}
            }
        }
        let _ = done_tx.send(());
    };
    tokio::spawn(output.instrument(span.clone()));
    done_rx
}
