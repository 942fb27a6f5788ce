//! One client connection: the handshake, the read loop, the outgoing queue, and the
//! attachments and waits this connection has open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::{SinkExt, StreamExt};
use ipc_proto::{
    framed_read, framed_write, DaemonMessage, ErrorCode, ErrorReply, Frame, FrameCodec, HelloReply,
    ProtoError, Request, SessionId, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admission::Peer;
use crate::frame_budget::{Budgeted, FrameBudget, Pending};
use crate::handlers::{self, ReplyError};
use crate::pool::PtyPool;
use crate::session::{EndReason, Held, Session};
use crate::upgrade::quiesce::Quiesce;

type Codec = FrameCodec<Request, DaemonMessage>;
type Reader = FramedRead<OwnedReadHalf, Budgeted<Codec>>;
/// What the writer is asked to do. Nearly always a frame: boxing it to shrink the rare
/// flush request would cost an allocation per frame.
#[allow(clippy::large_enum_variant)]
enum Outbound {
    /// Write a frame; its output holds `Held` of its subscriber's budget until written.
    Frame(Frame<DaemonMessage>, Option<Held>),
    /// Say when everything queued before has been written.
    Flushed(oneshot::Sender<()>),
}

/// The queue of frames waiting to be written to this client (flume's: it allocates as it
/// fills, where tokio's takes a block of 32 slots per connection up front).
#[derive(Clone)]
pub struct Outgoing(flume::Sender<Outbound>);

/// The connection's writer has stopped: the client is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl Outgoing {
    /// Queues `frame`; waits while the queue is full.
    pub async fn send(&self, frame: Frame<DaemonMessage>) -> Result<(), Gone> {
        self.0.send_async(Outbound::Frame(frame, None)).await.map_err(|_| Gone)
    }

    /// Queues `frame` if there is room now; a full queue (a client that does not read)
    /// goes without it.
    pub fn try_send(&self, frame: Frame<DaemonMessage>) {
        let _ = self.0.try_send(Outbound::Frame(frame, None));
    }

    /// Queues output that holds `held` of its subscriber's budget until it is written.
    pub async fn send_held(&self, frame: Frame<DaemonMessage>, held: Held) -> Result<(), Gone> {
        self.0.send_async(Outbound::Frame(frame, Some(held))).await.map_err(|_| Gone)
    }

    /// Resolves once every frame queued before it has been written to the socket.
    pub async fn flushed(&self) -> Result<(), Gone> {
        let (tx, rx) = oneshot::channel();
        self.0.send_async(Outbound::Flushed(tx)).await.map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }
}

/// Frames queued for a client before its handlers wait: bounded so a client that does not
/// read costs bounded memory.
const OUT_DEPTH: usize = 64;
/// Spawns one connection may have under way at once (see [`Connection::spawns`]).
pub const SPAWNS_UNDER_WAY: usize = 8;
/// Inputs one connection may have waiting for programs that do not read.
pub const INPUTS_WAITING: usize = 64;
/// Why a connection is closed by a live upgrade.
const UPGRADING: &str =
    "ptyd is being upgraded; reconnect (new connections wait until it serves again)";
/// A client must say hello within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to flush the last frames (e.g. an error) to a closing client.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A client connection after the credential check.
pub struct Connection {
    /// Who is on the other end (SO_PEERCRED at accept).
    pub peer: Peer,
    /// The socket, open as long as this connection is (a live upgrade passes it on to
    /// answer from the new image).
    pub fd: std::os::fd::RawFd,
    /// The pool.
    pub pool: Arc<PtyPool>,
    /// Frames to this client.
    pub out: Outgoing,
    /// Output forwarding tasks by session.
    pub attachments: HashMap<SessionId, AbortHandle>,
    /// Where acks go, for attachments made with a window.
    pub windows: HashMap<SessionId, crate::handlers::Acks>,
    /// Requests answered later (`wait`, `wait_for`, `wait_quiet`, `exec`, `spawn`).
    pub waits: JoinSet<()>,
    /// Spawns this connection may have under way at once; past that its next request
    /// waits, as every request did behind a spawn before (bounded threads and memory
    /// whatever a client sends).
    pub spawns: Arc<tokio::sync::Semaphore>,
    /// Inputs of this connection waiting for a program to read (see `handlers::io`);
    /// past that many its next request waits.
    pub inputs: Arc<tokio::sync::Semaphore>,
    /// Leases this connection holds, returned when it closes.
    pub leases: HashMap<SessionId, Arc<Session>>,
    /// Sessions spawned with `close_with_connection`, ended when it closes.
    pub owned: Vec<Arc<Session>>,
    /// The daemon-event forwarder, after `subscribe`.
    pub events: Option<AbortHandle>,
    /// The protocol version agreed at `hello`.
    pub protocol: u32,
}

impl Connection {
    /// Whether anything is open on this connection that it must stay for: an attachment,
    /// a pending wait, a lease, the event feed, or a session that ends with it.
    fn holds_anything(&self) -> bool {
        self.attachments.values().any(|t| !t.is_finished())
            || !self.waits.is_empty()
            || !self.leases.is_empty()
            || self.events.is_some()
            || self.owned.iter().any(|s| s.exit_status().is_none())
    }

    /// Queues a reply to request `id`.
    pub async fn reply(&self, id: u64, msg: DaemonMessage) {
        let _ = self.out.send(Frame::new(id, msg)).await;
    }

    /// Ties `session` to this connection. Sessions that already ended are forgotten, so a
    /// long-lived connection running many execs does not keep every one of them.
    pub fn own(&mut self, session: Arc<Session>) {
        self.owned.retain(|s| s.exit_status().is_none());
        self.owned.push(session);
    }

    /// Registers a forwarding task for `session` (with where its acks go, when it has a
    /// window), replacing (and stopping) any earlier one.
    pub fn add_attachment(
        &mut self,
        session: SessionId,
        task: AbortHandle,
        acks: Option<crate::handlers::Acks>,
    ) {
        self.attachments.retain(|_, t| !t.is_finished());
        let attached = &self.attachments;
        self.windows.retain(|s, _| attached.contains_key(s));
        if let Some(old) = self.attachments.insert(session, task) {
            old.abort();
        }
        match acks {
            Some(acks) => self.windows.insert(session, acks),
            None => self.windows.remove(&session),
        };
    }

    /// Stops the attachment to `session`, if there is one.
    pub fn remove_attachment(&mut self, session: SessionId) {
        if let Some(task) = self.attachments.remove(&session) {
            task.abort();
        }
        self.windows.remove(&session);
    }
}

/// Serves one connection until the client leaves, breaks the protocol, idles, or `stop`
/// fires. Its unfinished frames count against `budget`.
pub async fn serve(
    stream: UnixStream,
    peer: Peer,
    pool: Arc<PtyPool>,
    budget: Arc<FrameBudget>,
    stop: CancellationToken,
) {
    let quiesce_pool = pool.clone();
    // Counted while it reads requests: a live upgrade waits for that to stop, not for
    // its last frames to reach a client that may not be reading.
    let counted = quiesce_pool.quiesce.connection();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (rd, wr) = stream.into_split();
    let max = pool.config.max_frame_len;
    let pending = Pending::default();
    let mut reader = framed_read(rd, Budgeted::new(Codec::new(max), budget, pending.clone()));
    let (out, out_rx) = flume::bounded(OUT_DEPTH);
    let out = Outgoing(out);
    let writer = tokio::spawn(write_loop(framed_write(wr, Codec::new(max)), out_rx));

    let mut conn = Connection {
        peer,
        fd,
        pool,
        out,
        attachments: HashMap::new(),
        windows: HashMap::new(),
        waits: JoinSet::new(),
        spawns: Arc::new(tokio::sync::Semaphore::new(SPAWNS_UNDER_WAY)),
        inputs: Arc::new(tokio::sync::Semaphore::new(INPUTS_WAITING)),
        leases: HashMap::new(),
        owned: Vec::new(),
        events: None,
        protocol: PROTOCOL_VERSION,
    };
    if let Some(version) = handshake(&mut reader, &conn, &stop).await {
        conn.protocol = version;
        read_loop(&mut reader, &mut conn, &pending, &stop).await;
    }
    drop(counted);

    if stop.is_cancelled() {
        // The daemon is stopping and its sessions have ended: let attachments and waits
        // queue their exit frames before they are cut off.
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, settle(&mut conn)).await;
    }
    for task in conn.attachments.values().chain(conn.events.as_ref()) {
        task.abort();
    }
    conn.waits.abort_all();
    // Closed for a live upgrade: its client will be back on the new image; until then
    // its leases go on holding their sessions for a while.
    let upgrading = conn.pool.quiesce.is_frozen();
    for session in conn.leases.values() {
        if upgrading {
            session.release_for_upgrade();
        } else {
            session.release();
        }
    }
    for session in &conn.owned {
        if session.exit_status().is_none() {
            info!(session_id = %session.id, "ending session: the connection that owned it closed");
            session.request_end(EndReason::OwnerGone);
        }
    }
    drop(conn);
    // Let queued frames (an error reason, exit events) reach the client.
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, writer).await;
    debug!("connection closed");
}

/// Returns once every attachment and pending wait of `conn` has finished by itself.
async fn settle(conn: &mut Connection) {
    while conn.waits.join_next().await.is_some() {}
    while conn.attachments.values().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn handshake(
    reader: &mut Reader,
    conn: &Connection,
    stop: &CancellationToken,
) -> Option<u32> {
    let refuse = |code, message: String| async move {
        warn!(%message, "handshake refused");
        conn.reply(0, DaemonMessage::Error(ErrorReply { code, message })).await;
        None
    };
    let mut frozen = conn.pool.quiesce.watch();
    let first = tokio::select! {
        first = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()) => first,
        _ = stop.cancelled() => return None,
        // A client that has not said hello yet must not hold an upgrade up.
        _ = Quiesce::frozen(&mut frozen) => {
            return refuse(ErrorCode::Upgrading, UPGRADING.into()).await;
        }
    };
    match first {
        Err(_) => refuse(ErrorCode::BadRequest, "no hello within 10 s".into()).await,
        Ok(None) => None,
        Ok(Some(Err(e))) => refuse(e.code(), e.to_string()).await,
        Ok(Some(Ok(Err(invalid)))) => {
            refuse(ErrorCode::BadRequest, format!("invalid hello: {}", invalid.reason)).await
        }
        Ok(Some(Ok(Ok(frame)))) => match frame.body {
            Request::Hello(hello)
                if (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION)
                    .contains(&hello.protocol_version) =>
            {
                debug!(client = %hello.client, protocol = hello.protocol_version, "client connected");
                let reply = HelloReply {
                    protocol_version: hello.protocol_version,
                    daemon_version: env!("CARGO_PKG_VERSION").to_string(),
                    pid: std::process::id(),
                };
                conn.reply(frame.id, DaemonMessage::Hello(reply)).await;
                Some(hello.protocol_version)
            }
            Request::Hello(hello) => {
                let message = format!(
                    "unsupported protocol version {}: this daemon speaks versions \
                     {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
                    hello.protocol_version
                );
                refuse(ErrorCode::VersionMismatch, message).await
            }
            _ => refuse(ErrorCode::BadRequest, "the first request must be hello".into()).await,
        },
    }
}

/// Why a connection is closed for the time it took.
fn overdue(conn: &Connection, pending: &Pending, last_frame: Instant) -> Option<String> {
    let config = &conn.pool.config;
    if let Some(since) = pending.since() {
        if since.elapsed() >= config.frame_timeout {
            return Some(format!(
                "a frame begun {} ago is still unfinished (frame timeout {})",
                humantime::format_duration(round_ms(since.elapsed())),
                humantime::format_duration(config.frame_timeout)
            ));
        }
    }
    let idle = config.ipc_idle_timeout;
    if !idle.is_zero() && last_frame.elapsed() >= idle && !conn.holds_anything() {
        return Some(format!(
            "idle for {} with nothing open (ipc idle timeout)",
            humantime::format_duration(idle)
        ));
    }
    None
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

async fn read_loop(
    reader: &mut Reader,
    conn: &mut Connection,
    pending: &Pending,
    stop: &CancellationToken,
) {
    let config = conn.pool.config.clone();
    // The timeouts are checked a few times per period: reading a frame is cancel-safe.
    let shortest = [config.frame_timeout, config.ipc_idle_timeout]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(config.frame_timeout);
    let mut check = tokio::time::interval((shortest / 4).max(Duration::from_millis(10)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_frame = Instant::now();
    let mut frozen = conn.pool.quiesce.watch();
    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            _ = Quiesce::frozen(&mut frozen) => {
                // A live upgrade: the socket stays open for new connections, which wait
                // until the new image serves them.
                info!("closing connection: ptyd is upgrading");
                let err = ErrorReply { code: ErrorCode::Upgrading, message: UPGRADING.into() };
                // Not waited for: a client that reads nothing must not hold the upgrade up.
                conn.out.try_send(Frame::new(0, DaemonMessage::Error(err)));
                return;
            }
            _ = check.tick() => {
                // Answered waits are done: they hold nothing open any more.
                while conn.waits.try_join_next().is_some() {}
                if let Some(why) = overdue(conn, pending, last_frame) {
                    info!("closing connection: {why}");
                    let err = ErrorReply { code: ErrorCode::Timeout, message: why };
                    conn.reply(0, DaemonMessage::Error(err)).await;
                    return;
                }
                continue;
            }
            _ = stop.cancelled() => return,
        };
        last_frame = Instant::now();
        match next {
            None => return,
            Some(Err(ProtoError::Io(e))) => {
                debug!(error = %e, "connection read failed");
                return;
            }
            Some(Err(e)) => {
                // The stream can no longer be trusted to be in step: say why and close.
                warn!(error = %e, "closing connection after a bad frame");
                conn.reply(
                    0,
                    DaemonMessage::Error(ErrorReply { code: e.code(), message: e.to_string() }),
                )
                .await;
                return;
            }
            Some(Ok(Err(invalid))) => {
                let message = format!("invalid request: {}", invalid.reason);
                send_error(conn, invalid.id, ReplyError::new(ErrorCode::BadRequest, message)).await;
            }
            Some(Ok(Ok(frame))) if frame.id == 0 => {
                // No reply can be matched to it, but the stream is in step: say so (without
                // an id) and go on, as PROTOCOL.md promises.
                let message = "requests must carry a nonzero id".to_string();
                debug!(%message, kind = frame.body.kind(), "refused a request");
                let err = ErrorReply { code: ErrorCode::BadRequest, message };
                conn.reply(0, DaemonMessage::Error(err)).await;
            }
            Some(Ok(Ok(frame))) => {
                let id = frame.id;
                // Boxed: the largest handler's state would otherwise be part of every idle
                // connection's task.
                if let Err(e) = Box::pin(handlers::dispatch(conn, frame)).await {
                    send_error(conn, id, e).await;
                }
            }
        }
    }
}

async fn send_error(conn: &Connection, id: u64, e: ReplyError) {
    debug!(id, code = %e.code, message = %e.message, "request failed");
    conn.reply(id, DaemonMessage::Error(ErrorReply { code: e.code, message: e.message })).await;
}

async fn write_loop(mut writer: FramedWrite<OwnedWriteHalf, Codec>, rx: flume::Receiver<Outbound>) {
    // Budgets are given back once their bytes are written, not when they are buffered.
    let mut written = Vec::new();
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv_async().await {
        let mut next = Some(first);
        // Batch whatever else is queued into the same flush.
        while let Some(item) = next.take().or_else(|| rx.try_recv().ok()) {
            match item {
                Outbound::Frame(frame, held) => {
                    written.extend(held);
                    if writer.feed(frame).await.is_err() {
                        return;
                    }
                }
                Outbound::Flushed(tx) => waiting.push(tx),
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
        written.clear();
        for tx in waiting.drain(..) {
            let _ = tx.send(());
        }
    }
}
