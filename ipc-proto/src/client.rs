//! The async Rust client: one connection, many concurrent requests and attachments.
//!
//! A writer task owns the socket's write half and a reader task its read half. Replies
//! are matched to waiters by request id; output events are routed to the `Attachment`
//! of their session. When the connection ends, every waiter fails with the `IpcError` that
//! ended it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::codec::{framed_read, framed_write, Frame, FrameCodec, MAX_PAYLOAD_LEN};
use crate::error::{ClientError, ConnectionStage, IpcError};
use crate::message::*;
use crate::PROTOCOL_VERSION;

type Reader = FramedRead<tokio::net::unix::OwnedReadHalf, FrameCodec<DaemonMessage, Request>>;
type Writer = FramedWrite<tokio::net::unix::OwnedWriteHalf, FrameCodec<DaemonMessage, Request>>;

/// Events of one attached session, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// Output bytes starting at absolute `offset`.
    Output {
        /// Offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Bytes `[offset, offset + bytes)` will never arrive.
    Dropped {
        /// First lost byte.
        offset: u64,
        /// Count.
        bytes: u64,
    },
    /// The session ended; nothing follows.
    Exit(ExitStatus),
}

/// A daemon-wide notification after [`Client::subscribe`].
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// Something happened to a session.
    Event(DaemonEvent),
    /// This client missed this many events by reading too slowly.
    Dropped(u64),
}

struct Waiter {
    reply: oneshot::Sender<Frame<DaemonMessage>>,
    /// Installed as the route of the session named in the reply, before any later frame
    /// is read, so no event can slip past (used by `attach` and attached `spawn`).
    route: Option<Route>,
}

/// Bytes of events an attachment may have queued before its reader is slow; the
/// connection's reader then waits for it, which is the backpressure that reaches ptyd.
/// Bytes, not events, so that what a slow reader lets through is the same whatever size
/// ptyd's reads happen to be.
const ROUTE_BYTES: usize = 128 * 1024;

/// What an event counts besides its bytes, so that a stream of tiny events is bounded too
/// (the same as ptyd counts against an attachment's window).
const EVENT_OVERHEAD: usize = 64;

/// The largest output event ptyd sends.
const MAX_EVENT: usize = 64 * 1024;

/// Where one attached session's events go: a queue bounded in bytes, each event holding
/// its share until the attachment takes it.
#[derive(Clone)]
struct Route {
    tx: flume::Sender<(SessionEvent, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    /// The room when empty.
    size: usize,
}

/// The attachment's end of a [`Route`].
struct RouteRx {
    rx: flume::Receiver<(SessionEvent, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
}

impl Route {
    fn new() -> (Route, RouteRx) {
        Route::with_room(ROUTE_BYTES)
    }

    /// A route for an attachment with a `window`: room for all ptyd may have in flight,
    /// so that delivering to it never holds up the connection's other attachments.
    fn windowed(window: u64) -> (Route, RouteRx) {
        // One event past the window, and an exit and a dropped event besides.
        let room = window as usize + MAX_EVENT + 3 * EVENT_OVERHEAD;
        Route::with_room(room.min(Semaphore::MAX_PERMITS))
    }

    fn with_room(bytes: usize) -> (Route, RouteRx) {
        // Unbounded: `room` bounds it in bytes.
        let (tx, rx) = flume::unbounded();
        let room = Arc::new(Semaphore::new(bytes));
        (Route { tx, room: room.clone(), size: bytes }, RouteRx { rx, room })
    }

    /// Waits for room, then queues `event`; `Err` once the attachment is gone.
    async fn deliver(&self, event: SessionEvent) -> Result<(), ()> {
        let len = match &event {
            SessionEvent::Output { data, .. } => data.len(),
            _ => 0,
        };
        let cost = (len + EVENT_OVERHEAD).min(self.size) as u32;
        let permit = self.room.clone().acquire_many_owned(cost).await.map_err(drop)?;
        self.tx.send((event, permit)).map_err(drop)
    }
}

impl RouteRx {
    async fn recv(&mut self) -> Option<SessionEvent> {
        // The permit is dropped here: the event has left the queue.
        self.rx.recv_async().await.ok().map(|(event, _)| event)
    }
}

impl Drop for RouteRx {
    fn drop(&mut self) {
        // The queued events go with the receiver and give their room back; closing also
        // tells a reader waiting for room that none will come.
        self.room.close();
    }
}

#[derive(Default)]
struct Shared {
    /// `None` once the connection has ended.
    pending: Mutex<Option<HashMap<u64, Waiter>>>,
    routes: Mutex<HashMap<SessionId, Route>>,
    notices: Mutex<Option<mpsc::Sender<Notice>>>,
    close_reason: Mutex<Option<IpcError>>,
}

struct Inner {
    out: flume::Sender<Frame<Request>>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    hello: HelloReply,
    reader: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A connection to ptyd. Cheap to clone; the connection closes when the last clone drops.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("daemon", &self.inner.hello).finish()
    }
}

/// Daemon-wide notices queued before the connection's reader waits for them.
const NOTICE_DEPTH: usize = 64;
/// Requests queued for the writer before callers wait.
const REQUEST_DEPTH: usize = 256;

impl Client {
    /// Connects to the daemon at `path` and performs the version handshake.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).await.map_err(|e| IpcError::connect(path, e))?;
        Self::handshake(stream, concat!("ipc-proto/", env!("CARGO_PKG_VERSION"))).await
    }

    /// Performs the handshake on an already connected stream, naming the client `name`.
    pub async fn handshake(stream: UnixStream, name: &str) -> Result<Client, ClientError> {
        let (rd, wr) = stream.into_split();
        let mut reader: Reader = framed_read(rd, FrameCodec::default());
        let mut writer: Writer = framed_write(wr, FrameCodec::default());
        let hello = HelloRequest { protocol_version: PROTOCOL_VERSION, client: name.to_string() };
        // A daemon that refuses us sends its reason first and may close before reading our
        // hello, so a failed write still leaves that reason to be read.
        let sent = writer.send(Frame::new(1, Request::Hello(hello))).await;
        let reply = reader.next().await;
        let reply = match (sent, reply) {
            (Err(e), None | Some(Err(_))) => {
                return Err(IpcError::from_proto(ConnectionStage::SendingHello, e).into())
            }
            (_, reply) => reply,
        };
        let hello = match reply {
            Some(Ok(Ok(Frame { body: DaemonMessage::Hello(h), .. }))) => h,
            Some(Ok(Ok(Frame { body: DaemonMessage::Error(e), .. }))) => {
                return Err(ClientError::Daemon { code: e.code, message: e.message })
            }
            Some(Ok(Ok(other))) => {
                let detail = format!("unexpected handshake reply: {:?}", other.body);
                return Err(IpcError::Protocol(detail).into());
            }
            Some(Ok(Err(invalid))) => {
                let detail = format!("invalid handshake reply: {}", invalid.reason);
                return Err(IpcError::Protocol(detail).into());
            }
            Some(Err(e)) => {
                return Err(IpcError::from_proto(ConnectionStage::AwaitingHello, e).into())
            }
            None => return Err(IpcError::Closed { stage: ConnectionStage::AwaitingHello }.into()),
        };
        let shared =
            Arc::new(Shared { pending: Mutex::new(Some(HashMap::new())), ..Default::default() });
        let (out, out_rx) = flume::bounded(REQUEST_DEPTH);
        tokio::spawn(write_loop(writer, out_rx));
        let reader = tokio::spawn(read_loop(reader, shared.clone())).abort_handle();
        Ok(Client {
            inner: Arc::new(Inner { out, next_id: AtomicU64::new(2), shared, hello, reader }),
        })
    }

    /// Why the connection ended; `None` while it is open.
    pub fn close_reason(&self) -> Option<ClientError> {
        self.inner.shared.close_reason.lock().unwrap().clone().map(ClientError::Ipc)
    }

    /// The daemon's half of the handshake (its version and pid).
    pub fn daemon(&self) -> &HelloReply {
        &self.inner.hello
    }

    async fn call_routed(
        &self,
        body: Request,
        data: Bytes,
        route: Option<Route>,
    ) -> Result<Frame<DaemonMessage>, ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.inner.shared.pending.lock().unwrap();
            match pending.as_mut() {
                Some(map) => map.insert(id, Waiter { reply: tx, route }),
                None => return Err(self.closed_error()),
            };
        }
        if self.inner.out.send_async(Frame::with_data(id, body, data)).await.is_err() {
            return Err(self.closed_error());
        }
        let frame = rx.await.map_err(|_| self.closed_error())?;
        match frame.body {
            DaemonMessage::Error(e) => {
                Err(ClientError::Daemon { code: e.code, message: e.message })
            }
            _ => Ok(frame),
        }
    }

    async fn call(&self, body: Request) -> Result<DaemonMessage, ClientError> {
        Ok(self.call_routed(body, Bytes::new(), None).await?.body)
    }

    fn closed_error(&self) -> ClientError {
        let reason = self.inner.shared.close_reason.lock().unwrap().clone();
        // No reason yet: the writer stopped on a failed write before the reader saw the end.
        ClientError::Ipc(reason.unwrap_or(IpcError::Closed { stage: ConnectionStage::Connected }))
    }

    /// Starts a session.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<SpawnReply, ClientError> {
        match self.call(Request::Spawn(SpawnRequest { attach: None, ..req })).await? {
            DaemonMessage::Spawned(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a session with this connection attached from its first byte.
    pub async fn spawn_attached(
        &self,
        req: SpawnRequest,
        mode: AttachMode,
    ) -> Result<(SpawnReply, Attachment), ClientError> {
        let (tx, rx) = Route::new();
        let req = SpawnRequest { attach: Some(mode), ..req };
        let frame = self.call_routed(Request::Spawn(req), Bytes::new(), Some(tx)).await?;
        match frame.body {
            DaemonMessage::Spawned(r) => {
                let reply = AttachReply::bytes(r.session, 0, 0, 0);
                let snapshot = Bytes::new();
                let attachment = Attachment {
                    client: self.clone(),
                    reply,
                    snapshot,
                    rx,
                    done: false,
                    window: None,
                };
                Ok((r, attachment))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Attaches to a session's output from `since` (or the whole replay window).
    pub async fn attach(
        &self,
        session: SessionId,
        since: Option<u64>,
        lossless: bool,
    ) -> Result<Attachment, ClientError> {
        self.attach_from(session, since, lossless, ScreenStart::Never).await
    }

    /// Like [`Client::attach`], starting from the session's screen as `screen` says; the
    /// snapshot, when there is one, is [`Attachment::snapshot`].
    pub async fn attach_from(
        &self,
        session: SessionId,
        since: Option<u64>,
        lossless: bool,
        screen: ScreenStart,
    ) -> Result<Attachment, ClientError> {
        self.attach_with(AttachRequest { session, since, lossless, screen, window: None }).await
    }

    /// Like [`Client::attach_from`], with flow control of this attachment alone: ptyd sends
    /// at most `window` bytes (and 64 per event) past what this attachment's reader has
    /// taken, which [`Attachment::next`] acknowledges as it goes. A reader that stops
    /// taking events then holds up only its own session, never the connection's other
    /// attachments (so many sessions can share one connection).
    pub async fn attach_windowed(
        &self,
        session: SessionId,
        since: Option<u64>,
        lossless: bool,
        screen: ScreenStart,
        window: u64,
    ) -> Result<Attachment, ClientError> {
        let window = Some(window.max(1));
        self.attach_with(AttachRequest { session, since, lossless, screen, window }).await
    }

    async fn attach_with(&self, req: AttachRequest) -> Result<Attachment, ClientError> {
        let (tx, rx) = match req.window {
            Some(window) => Route::windowed(window),
            None => Route::new(),
        };
        let window = req.window;
        let frame = self.call_routed(Request::Attach(req), Bytes::new(), Some(tx)).await?;
        match frame.body {
            DaemonMessage::Attached(reply) => Ok(Attachment {
                client: self.clone(),
                window: window.map(|size| Window::new(size, reply.offset)),
                reply,
                snapshot: frame.data,
                rx,
                done: false,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// What the session's terminal shows, with up to `scrollback` lines of history, and
    /// with `ansi` the bytes that reproduce it.
    pub async fn screen(
        &self,
        session: SessionId,
        scrollback: u32,
        ansi: bool,
    ) -> Result<(ScreenReply, Bytes), ClientError> {
        let req = Request::Screen(ScreenRequest { session, scrollback, ansi });
        let frame = self.call_routed(req, Bytes::new(), None).await?;
        match frame.body {
            DaemonMessage::Screen(r) => Ok((r, frame.data)),
            other => Err(unexpected(other)),
        }
    }

    /// Writes bytes to a session's terminal, in frames no larger than the limit.
    pub async fn input(
        &self,
        session: SessionId,
        data: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let mut data: Bytes = data.into();
        loop {
            let chunk = data.split_to(data.len().min(MAX_PAYLOAD_LEN));
            self.call_routed(Request::Input(SessionRef { session }), chunk, None).await?;
            if data.is_empty() {
                return Ok(());
            }
        }
    }

    /// Resizes a session's terminal.
    pub async fn resize(
        &self,
        session: SessionId,
        cols: u16,
        rows: u16,
    ) -> Result<(), ClientError> {
        self.call(Request::Resize(ResizeRequest { session, cols, rows })).await.map(drop)
    }

    /// Ends a session (no signal), or delivers one signal to its process group.
    pub async fn kill(&self, session: SessionId, signal: Option<&str>) -> Result<(), ClientError> {
        let signal = signal.map(str::to_string);
        self.call(Request::Kill(KillRequest { session, signal })).await.map(drop)
    }

    /// Stops streaming a session to this connection.
    pub async fn detach(&self, session: SessionId) -> Result<(), ClientError> {
        self.call(Request::Detach(SessionRef { session })).await.map(drop)
    }

    /// Lists sessions.
    pub async fn list(&self) -> Result<ListReply, ClientError> {
        match self.call(Request::List).await? {
            DaemonMessage::Sessions(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// One session's details.
    pub async fn info(&self, session: SessionId) -> Result<SessionInfo, ClientError> {
        match self.call(Request::Info(SessionRef { session })).await? {
            DaemonMessage::Session(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Waits for a session to exit.
    pub async fn wait(
        &self,
        session: SessionId,
        timeout: Option<Duration>,
    ) -> Result<ExitStatus, ClientError> {
        let timeout_ms = timeout.map(|t| t.as_millis() as u64);
        match self.call(Request::Wait(WaitRequest { session, timeout_ms })).await? {
            DaemonMessage::Exited(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Resolves when `pattern` matches output after `since` (after now when `None`).
    pub async fn wait_for(
        &self,
        session: SessionId,
        pattern: &str,
        since: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<MatchReply, ClientError> {
        self.wait_for_on(session, pattern, since, timeout, MatchOn::Output).await
    }

    /// Like [`Client::wait_for`], matching against `on`: the output bytes, or the text the
    /// screen shows (checked now and after every output; `since` is not used then).
    pub async fn wait_for_on(
        &self,
        session: SessionId,
        pattern: &str,
        since: Option<u64>,
        timeout: Option<Duration>,
        on: MatchOn,
    ) -> Result<MatchReply, ClientError> {
        let req = WaitForRequest {
            session,
            pattern: pattern.to_string(),
            since,
            timeout_ms: millis(timeout),
            on,
        };
        match self.call(Request::WaitFor(req)).await? {
            DaemonMessage::Matched(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Resolves when the session has printed nothing for `quiet`.
    pub async fn wait_quiet(
        &self,
        session: SessionId,
        quiet: Duration,
        timeout: Option<Duration>,
    ) -> Result<QuietReply, ClientError> {
        let req = WaitQuietRequest {
            session,
            quiet_ms: quiet.as_millis() as u64,
            timeout_ms: millis(timeout),
        };
        match self.call(Request::WaitQuiet(req)).await? {
            DaemonMessage::Quiet(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Types `text` as one submitted input (bracketed paste when enabled), then Enter.
    pub async fn submit(&self, session: SessionId, text: &str) -> Result<SubmitReply, ClientError> {
        let req = SubmitRequest { session, text: text.to_string(), settle_ms: None };
        match self.call(Request::Submit(req)).await? {
            DaemonMessage::Submitted(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Runs a command to completion; returns its result and the kept output.
    pub async fn exec(&self, req: ExecRequest) -> Result<(ExecResult, Bytes), ClientError> {
        let frame = self.call_routed(Request::Exec(req), Bytes::new(), None).await?;
        match frame.body {
            DaemonMessage::ExecResult(r) => Ok((r, frame.data)),
            other => Err(unexpected(other)),
        }
    }

    /// Types `req.command` into the session's shell and waits until it has finished: its
    /// exit status and (the last of) its output.
    pub async fn run(&self, req: RunRequest) -> Result<(ExecResult, Bytes), ClientError> {
        let frame = self.call_routed(Request::Run(req), Bytes::new(), None).await?;
        match frame.body {
            DaemonMessage::RunResult(r) => Ok((r, frame.data)),
            other => Err(unexpected(other)),
        }
    }

    /// Output after `since` (the oldest held byte when `None`), at most `max` bytes.
    pub async fn read(
        &self,
        session: SessionId,
        since: Option<u64>,
        max: Option<usize>,
    ) -> Result<(ReadReply, Bytes), ClientError> {
        let frame = self
            .call_routed(Request::Read(ReadRequest { session, since, max }), Bytes::new(), None)
            .await?;
        match frame.body {
            DaemonMessage::OutputRange(r) => Ok((r, frame.data)),
            other => Err(unexpected(other)),
        }
    }

    /// Holds the session against its idle timeout while this connection lives.
    pub async fn lease(&self, session: SessionId) -> Result<(), ClientError> {
        self.call(Request::Lease(SessionRef { session })).await.map(drop)
    }

    /// Gives a lease back.
    pub async fn release(&self, session: SessionId) -> Result<(), ClientError> {
        self.call(Request::Release(SessionRef { session })).await.map(drop)
    }

    /// Streams daemon-wide events from now on. A second call replaces the first stream.
    pub async fn subscribe(&self) -> Result<mpsc::Receiver<Notice>, ClientError> {
        let (tx, rx) = mpsc::channel(NOTICE_DEPTH);
        // Installed before the request, so an event right after the reply has a home.
        *self.inner.shared.notices.lock().unwrap() = Some(tx);
        self.call(Request::Subscribe).await?;
        Ok(rx)
    }

    /// Replaces the daemon with `binary` (the one it was started from when `None`) without
    /// ending any session. The daemon's new image answers, then closes this connection
    /// (as it closes every other): connect again to go on.
    pub async fn upgrade(&self, binary: Option<String>) -> Result<UpgradeReply, ClientError> {
        match self.call(Request::Upgrade(UpgradeRequest { binary })).await? {
            DaemonMessage::Upgraded(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Sends any request and returns the raw reply (for requests without a helper).
    pub async fn request(
        &self,
        body: Request,
        data: Bytes,
    ) -> Result<Frame<DaemonMessage>, ClientError> {
        self.call_routed(body, data, None).await
    }
}

/// A session's event stream on this connection. Dropping it detaches.
pub struct Attachment {
    client: Client,
    /// Where the stream starts.
    pub reply: AttachReply,
    snapshot: Bytes,
    rx: RouteRx,
    done: bool,
    /// The attachment's window, when it has one.
    window: Option<Window>,
}

/// What a windowed attachment's reader has taken and acknowledged.
#[derive(Debug, Clone, Copy)]
struct Window {
    size: u64,
    /// The offset after the last byte taken.
    taken: u64,
    /// What was taken since the last ack, counted as ptyd counts it.
    unacked: u64,
}

impl Window {
    fn new(size: u64, start: u64) -> Window {
        Window { size, taken: start, unacked: 0 }
    }

    /// Counts `event` as taken; the offset to acknowledge once half the window is.
    fn take(&mut self, event: &SessionEvent) -> Option<u64> {
        match event {
            SessionEvent::Output { offset, data } => {
                self.taken = offset + data.len() as u64;
                self.unacked += data.len() as u64 + EVENT_OVERHEAD as u64;
            }
            SessionEvent::Dropped { offset, bytes } => self.taken = offset + bytes,
            SessionEvent::Exit(_) => return None,
        }
        (self.unacked >= self.size / 2).then(|| {
            self.unacked = 0;
            self.taken
        })
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment").field("reply", &self.reply).finish()
    }
}

impl Attachment {
    /// The session.
    pub fn session(&self) -> SessionId {
        self.reply.session
    }

    /// The screen the stream starts from, when it starts from one: bytes that reproduce
    /// it in a fresh terminal of the reply's `cols` × `rows`.
    pub fn snapshot(&self) -> Option<&Bytes> {
        self.reply.snapshot.then_some(&self.snapshot)
    }

    /// The next event; `None` after `Exit`, or when the connection ended. With a window,
    /// taking events acknowledges them.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        if self.done {
            return None;
        }
        let ev = self.rx.recv().await;
        if matches!(ev, None | Some(SessionEvent::Exit(_))) {
            self.done = true;
        }
        if let (Some(window), Some(ev)) = (&mut self.window, &ev) {
            if let Some(offset) = window.take(ev) {
                self.ack(offset);
            }
        }
        ev
    }

    /// The window this attachment was made with, if any.
    pub fn window(&self) -> Option<u64> {
        self.window.map(|w| w.size)
    }

    /// Tells ptyd everything before `offset` was taken; its reply is not waited for. Never
    /// waits itself: `next` must not pend once it has taken an event (a caller polling it
    /// once, as with `now_or_never`, would drop the event).
    fn ack(&self, offset: u64) {
        let session = self.reply.session;
        let id = self.client.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::new(id, Request::Ack(AckRequest { session, offset }));
        if let Err(flume::TrySendError::Full(frame)) = self.client.inner.out.try_send(frame) {
            // A full request queue (rare): the ack goes once there is room. A later ack
            // overtaking it is harmless, as acks only move forward.
            let out = self.client.inner.out.clone();
            tokio::spawn(async move {
                let _ = out.send_async(frame).await;
            });
        }
    }

    /// The client this attachment belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let session = self.reply.session;
        self.client.inner.shared.routes.lock().unwrap().remove(&session);
        // Fire and forget: the reply finds no waiter and is ignored.
        let id = self.client.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let _ =
            self.client.inner.out.try_send(Frame::new(id, Request::Detach(SessionRef { session })));
    }
}

fn millis(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

fn unexpected(msg: DaemonMessage) -> ClientError {
    IpcError::Protocol(format!("unexpected reply from ptyd: {msg:?}")).into()
}

async fn write_loop(mut writer: Writer, rx: flume::Receiver<Frame<Request>>) {
    while let Ok(frame) = rx.recv_async().await {
        if writer.feed(frame).await.is_err() {
            return;
        }
        // Batch whatever is already queued into one flush.
        while let Ok(frame) = rx.try_recv() {
            if writer.feed(frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

async fn read_loop(mut reader: Reader, shared: Arc<Shared>) {
    let reason = loop {
        match reader.next().await {
            None => break IpcError::Closed { stage: ConnectionStage::Connected },
            Some(Err(e)) => break IpcError::from_proto(ConnectionStage::Connected, e),
            Some(Ok(Err(invalid))) => {
                break IpcError::Protocol(format!(
                    "ptyd sent an invalid message: {}",
                    invalid.reason
                ))
            }
            Some(Ok(Ok(frame))) => {
                if frame.id != 0 {
                    complete(&shared, frame);
                } else if let Some(reason) = route(&shared, frame).await {
                    break reason;
                }
            }
        }
    };
    tracing::debug!(%reason, "ipc client connection ended");
    *shared.close_reason.lock().unwrap() = Some(reason);
    // Dropping the waiters and routes fails every pending call and ends every attachment.
    shared.pending.lock().unwrap().take();
    shared.routes.lock().unwrap().clear();
    shared.notices.lock().unwrap().take();
}

async fn notify(shared: &Shared, notice: Notice) -> Option<IpcError> {
    let tx = shared.notices.lock().unwrap().clone();
    if let Some(tx) = tx {
        if tx.send(notice).await.is_err() {
            shared.notices.lock().unwrap().take();
        }
    }
    None
}

fn complete(shared: &Shared, frame: Frame<DaemonMessage>) {
    let waiter = shared.pending.lock().unwrap().as_mut().and_then(|m| m.remove(&frame.id));
    let Some(waiter) = waiter else { return };
    if let Some(route) = waiter.route {
        let session = match &frame.body {
            DaemonMessage::Spawned(r) => Some(r.session),
            DaemonMessage::Attached(r) => Some(r.session),
            _ => None,
        };
        if let Some(session) = session {
            shared.routes.lock().unwrap().insert(session, route);
        }
    }
    let _ = waiter.reply.send(frame);
}

/// Delivers one event; returns a reason when the connection must be considered broken.
async fn route(shared: &Shared, frame: Frame<DaemonMessage>) -> Option<IpcError> {
    let (session, event) = match frame.body {
        DaemonMessage::Output(o) => {
            (o.session, SessionEvent::Output { offset: o.offset, data: frame.data })
        }
        DaemonMessage::Dropped(d) => {
            (d.session, SessionEvent::Dropped { offset: d.offset, bytes: d.bytes })
        }
        DaemonMessage::Exit(e) => (e.session, SessionEvent::Exit(e.status)),
        DaemonMessage::Error(e) => {
            return Some(IpcError::ClosedByDaemon { code: e.code, message: e.message })
        }
        DaemonMessage::Event(ev) => return notify(shared, Notice::Event(ev)).await,
        DaemonMessage::EventsDropped(d) => return notify(shared, Notice::Dropped(d.count)).await,
        _ => return None,
    };
    let is_exit = matches!(event, SessionEvent::Exit(_));
    let tx = shared.routes.lock().unwrap().get(&session).cloned();
    if let Some(tx) = tx {
        // Waiting here is the backpressure: a slow reader slows this connection down.
        if tx.deliver(event).await.is_err() || is_exit {
            shared.routes.lock().unwrap().remove(&session);
        }
    }
    None
}
