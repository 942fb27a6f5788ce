//! One socket's loop while its terminal is Active, generic over the transport (any
//! `Sink`/`Stream` of [`WsMessage`]) and over the terminal (an [`OutputSource`] and an
//! [`InputTarget`]), so unit tests drive it with channels under `tokio::time::pause()`.
//!
//! Four futures run in the one task: the writer (the only owner of the sink; control
//! frames before output), the output pump (ptyd → socket; waiting on a slow socket is the
//! backpressure that slows this terminal's program down), the input pump (socket → ptyd),
//! and the control loop (`control.rs`: inbound frames, heartbeat, pong and idle deadlines, stop
//! signals). Input and output never wait for each other: a terminal whose output waits for
//! us still gets our input replies read, so neither side can deadlock the other.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use ipc_proto::{AttachReply, ClientError, EndReason, ErrorCode, ExitStatus, SessionEvent};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::control::Control;
use super::protocol::{close, ServerMessage};
use crate::metrics::Metrics;
use crate::terminals::{now_ms, ActivityClock, StopReason, StopSignal};

const CTRL_DEPTH: usize = 16;
const DATA_DEPTH: usize = 8;
const INPUT_DEPTH: usize = 16;
/// Output already queued from ptyd is merged into binary frames of up to this much: fewer
/// frames for a flood (less work here and in the browser), none held back for a lone
/// keystroke's echo. One ptyd read, so flow control overshoots by no more than before.
const MERGED_FRAME_BYTES: usize = 32 * 1024;
/// Close reasons are limited to 123 bytes by RFC 6455.
const MAX_REASON: usize = 123;

/// A WebSocket message, independent of the server library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text frame (JSON control message).
    Text(String),
    /// A binary frame (terminal bytes).
    Binary(Bytes),
    /// A Ping frame.
    Ping(Bytes),
    /// A Pong frame.
    Pong(Bytes),
    /// A Close frame.
    Close(Option<CloseFrame>),
}

/// A close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The code, see [`close`].
    pub code: u16,
    /// Why, at most 123 bytes.
    pub reason: String,
}

impl CloseFrame {
    fn new(code: u16, reason: impl Into<String>) -> CloseFrame {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        CloseFrame { code, reason }
    }
}

/// Why reading from the socket failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// A message over the limit (`size` when the transport said it).
    TooLarge {
        /// The message size.
        size: Option<usize>,
        /// The limit.
        max: usize,
    },
    /// The client broke the WebSocket protocol (RFC 6455 § 7.4.1): invalid UTF-8 in a
    /// text message (1007), or a malformed frame such as reserved bits or opcodes (1002).
    Violation {
        /// The close code to answer with.
        code: u16,
        /// What was wrong.
        why: String,
    },
    /// The connection failed.
    Transport(String),
}

/// The terminal's output: ptyd's events for one attachment.
pub trait OutputSource: Send {
    /// The next event; `None` when the attachment ended without an exit.
    fn next_event(&mut self) -> impl Future<Output = Option<SessionEvent>> + Send;
    /// Why the events stopped, after `next_event` returned `None`.
    fn end_reason(&mut self) -> impl Future<Output = String> + Send;
    /// Why the session ended, after its exit event, if ptyd can say.
    fn exit_reason(&mut self) -> impl Future<Output = Option<EndReason>> + Send;
}

/// The terminal's input side.
pub trait InputTarget: Send + Sync {
    /// Writes bytes to the terminal.
    fn input(&self, data: Bytes) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// Resizes the terminal.
    fn resize(&self, cols: u16, rows: u16) -> impl Future<Output = Result<(), ClientError>> + Send;
}

/// The timings and limits of a socket.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Ping frame period.
    pub heartbeat_interval: Duration,
    /// Ping → Pong deadline.
    pub pong_timeout: Duration,
    /// No data in either direction for this long closes the socket.
    pub idle_timeout: Duration,
    /// The largest message accepted.
    pub max_message_bytes: usize,
    /// Time to flush the last frames and exchange close frames.
    pub close_timeout: Duration,
    /// How long a Disconnected terminal waits for a socket (told to clients in `hello`).
    pub grace: Duration,
    /// Flow control: unacknowledged output at which output pauses.
    pub flow_high: u64,
    /// Flow control: unacknowledged output at which it resumes.
    pub flow_low: u64,
}

/// Everything one socket loop needs besides the socket.
pub struct Session<O, I> {
    /// Where the output starts (from ptyd's attach reply).
    pub start: AttachReply,
    /// The screen the socket starts from, when ptyd started the attach from it.
    pub snapshot: Option<Bytes>,
    /// The terminal's output.
    pub output: O,
    /// The terminal's input.
    pub input: I,
    /// Timings and limits.
    pub limits: Limits,
    /// Set by the registry on takeover or delete.
    pub stop: StopSignal,
    /// Set when the bridge shuts down.
    pub shutdown: CancellationToken,
    /// The terminal's last-data clock shown by the API.
    pub activity: ActivityClock,
    /// Counters.
    pub metrics: Metrics,
    /// What this viewer may do.
    pub role: crate::viewers::Role,
    /// The terminal's size as set from its viewers' windows, announced as it changes.
    pub sizes: watch::Receiver<Option<(u16, u16)>>,
}

/// How a socket loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The program exited (for this reason, when ptyd said); `exit` was sent.
    Exited(ExitStatus, Option<EndReason>),
    /// The client sent a close frame.
    ClientClosed,
    /// The connection failed or ended without a close frame.
    Broken(String),
    /// No data in either direction for the idle timeout.
    IdleTimeout,
    /// A Ping got no Pong within the pong timeout.
    PongTimeout,
    /// The client sent a message over the limit.
    TooLarge {
        /// Its size, when known.
        size: Option<usize>,
        /// The limit.
        max: usize,
    },
    /// The client broke the WebSocket protocol.
    Violation {
        /// 1002 or 1007.
        code: u16,
        /// What was wrong.
        why: String,
    },
    /// The connection to ptyd broke.
    IpcLost(String),
    /// The registry stopped this socket.
    Stopped(StopReason),
    /// The bridge is shutting down.
    Shutdown,
}

impl Outcome {
    /// The close frame to send, if the connection can still take one.
    pub fn close_frame(&self, limits: &Limits) -> Option<CloseFrame> {
        Some(match self {
            Outcome::Exited(status, _) => {
                CloseFrame::new(close::NORMAL, format!("process {status}"))
            }
            Outcome::ClientClosed | Outcome::Broken(_) => return None,
            Outcome::IdleTimeout => CloseFrame::new(
                close::NORMAL,
                format!("idle timeout ({})", humantime::format_duration(limits.idle_timeout)),
            ),
            Outcome::PongTimeout => CloseFrame::new(
                close::PONG_TIMEOUT,
                format!("no pong within {}", humantime::format_duration(limits.pong_timeout)),
            ),
            Outcome::TooLarge { size: Some(size), max } => CloseFrame::new(
                close::TOO_BIG,
                format!("message of {size} bytes exceeds the {max}-byte limit"),
            ),
            Outcome::TooLarge { size: None, max } => {
                CloseFrame::new(close::TOO_BIG, format!("message exceeds the {max}-byte limit"))
            }
            Outcome::Violation { code, why } => CloseFrame::new(*code, why.clone()),
            Outcome::IpcLost(why) => CloseFrame::new(close::INTERNAL, format!("IpcError: {why}")),
            Outcome::Stopped(StopReason::TakenOver) => {
                CloseFrame::new(close::TAKEN_OVER, "taken over by another connection")
            }
            Outcome::Stopped(StopReason::Deleted) => {
                CloseFrame::new(close::DELETED, "terminal deleted")
            }
            Outcome::Stopped(StopReason::Detached) => {
                CloseFrame::new(close::DETACHED, "terminal detached: it runs on")
            }
            Outcome::Stopped(StopReason::Revoked) => {
                CloseFrame::new(close::REVOKED, "share link revoked")
            }
            Outcome::Shutdown => CloseFrame::new(close::GOING_AWAY, "ptyd-bridge is shutting down"),
        })
    }
}

/// Data time of this socket, on the tokio clock (for the idle deadline) and on the wall
/// clock (for the API).
pub(super) struct LastData {
    start: Instant,
    since_start_ms: AtomicU64,
    wall: ActivityClock,
}

impl LastData {
    fn new(wall: ActivityClock) -> LastData {
        LastData { start: Instant::now(), since_start_ms: AtomicU64::new(0), wall }
    }

    pub(super) fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.since_start_ms.store(ms, Ordering::Relaxed);
        self.wall.store(now_ms(), Ordering::Relaxed);
    }

    pub(super) fn at(&self) -> Instant {
        self.start + Duration::from_millis(self.since_start_ms.load(Ordering::Relaxed))
    }
}

/// A request for the input pump.
pub(super) enum InputCmd {
    /// Bytes for the terminal.
    Data(Bytes),
    /// A new size.
    Resize(u16, u16),
}

/// Formats a duration as seconds the way the logs say it: `10`, `0.2`.
pub fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        s.trim_end_matches('0').to_string()
    }
}

pub(super) fn text(msg: &ServerMessage) -> WsMessage {
    WsMessage::Text(msg.to_json())
}

/// Runs one socket until it ends; returns how. Sends `hello` (and `dropped` when the
/// requested offset had left the window) first, and a close frame last when one applies.
pub async fn run<Si, St, O, I>(sink: Si, mut stream: St, session: Session<O, I>) -> Outcome
where
    Si: Sink<WsMessage> + Unpin + Send,
    Si::Error: std::fmt::Display,
    St: Stream<Item = Result<WsMessage, RecvError>> + Unpin + Send,
    O: OutputSource,
    I: InputTarget,
{
    let Session {
        start,
        snapshot,
        mut output,
        input,
        limits,
        stop,
        shutdown,
        activity,
        metrics,
        role,
        sizes,
    } = session;
    // flume's queues: tokio's take a block of 32 slots each up front, per socket.
    let (ctrl_tx, ctrl_rx) = flume::bounded(CTRL_DEPTH);
    let (data_tx, data_rx) = flume::bounded(DATA_DEPTH);
    let (in_tx, in_rx) = flume::bounded(INPUT_DEPTH);
    let (close_tx, close_rx) = oneshot::channel();
    // The offset the client has acknowledged; `None` until it opts in to flow control.
    let (acked_tx, acked_rx) = watch::channel(None);
    let hello = ServerMessage::Hello {
        id: start.session.0,
        offset: start.offset,
        end: start.end,
        dropped: start.dropped,
        version: super::protocol::PROTOCOL_VERSION,
        grace_ms: limits.grace.as_millis() as u64,
        snapshot: snapshot.as_ref().map_or(0, |s| s.len() as u64),
        cols: snapshot.as_ref().and(start.cols),
        rows: snapshot.as_ref().and(start.rows),
        role,
    };
    // The queue is new and larger than three, so these cannot fail.
    let _ = ctrl_tx.try_send(text(&hello));
    if let Some(snapshot) = snapshot {
        // The screen, in one binary frame before any output: not terminal output, so it has
        // no offset and is not counted for flow control. What it stands for is not lost.
        let _ = ctrl_tx.try_send(WsMessage::Binary(snapshot));
    } else if start.dropped > 0 {
        let lost =
            ServerMessage::Dropped { offset: start.offset - start.dropped, bytes: start.dropped };
        let _ = ctrl_tx.try_send(text(&lost));
    }
    let last = LastData::new(activity);
    let mut writer = std::pin::pin!(write_loop(sink, ctrl_rx, data_rx, close_rx));
    let mut writer_done = false;
    tracing::debug!("Spawned reader/writer/heartbeat tasks");
    let outcome = {
        let mut control = Control::new(&ctrl_tx, in_tx, &limits, &last, &metrics, acked_tx);
        let flow = Flow { acked: acked_rx, high: limits.flow_high, low: limits.flow_low };
        tokio::select! {
            o = control.run(&mut stream, &stop, &shutdown) => o,
            o = pump_output(&mut output, data_tx, &last, &metrics, &start, flow) => o,
            o = pump_input(&input, in_rx, ctrl_tx.clone()) => o,
            o = announce_sizes(sizes, ctrl_tx.clone()) => o,
            r = &mut writer => {
                writer_done = true;
                Outcome::Broken(r.err().unwrap_or_else(|| "the socket writer ended".into()))
            }
        }
    };
    drop(ctrl_tx);
    if !writer_done {
        let _ = close_tx.send(outcome.close_frame(&limits));
        // Let the writer flush and the peer answer our close frame, within bounds.
        let drain = async {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, WsMessage::Close(_)) {
                    break;
                }
            }
        };
        let finish = async { tokio::join!(&mut writer, drain) };
        if tokio::time::timeout(limits.close_timeout, finish).await.is_err() {
            tracing::debug!("the socket did not finish closing within {:?}", limits.close_timeout);
        }
    }
    outcome
}

/// Owns the sink: control frames first, then output; the close frame after both queues end.
async fn write_loop<Si>(
    mut sink: Si,
    ctrl_rx: flume::Receiver<WsMessage>,
    data_rx: flume::Receiver<WsMessage>,
    close_rx: oneshot::Receiver<Option<CloseFrame>>,
) -> Result<(), String>
where
    Si: Sink<WsMessage> + Unpin,
    Si::Error: std::fmt::Display,
{
    loop {
        let msg = tokio::select! {
            biased;
            // Receiving is cancel-safe: a message stays queued until taken.
            Ok(m) = ctrl_rx.recv_async() => m,
            Ok(m) = data_rx.recv_async() => m,
            else => break,
        };
        sink.feed(msg).await.map_err(|e| e.to_string())?;
        // Flush once the queues are empty, so a burst goes out in few writes.
        if ctrl_rx.is_empty() && data_rx.is_empty() {
            sink.flush().await.map_err(|e| e.to_string())?;
        }
    }
    if let Ok(Some(frame)) = close_rx.await {
        sink.send(WsMessage::Close(Some(frame))).await.map_err(|e| e.to_string())?;
    }
    let _ = sink.close().await;
    Ok(())
}

/// Flow control of one socket, as xterm.js's guide describes it: with watermarks on the
/// output the client has not yet acknowledged as rendered.
struct Flow {
    acked: watch::Receiver<Option<u64>>,
    high: u64,
    low: u64,
}

impl Flow {
    /// Bytes that may go out from `offset` before the unacknowledged output passes the
    /// high watermark (unbounded until the client opts in to flow control). Merging output
    /// stops there, so that it never lets more through than one event at a time would.
    fn room(&self, offset: u64) -> usize {
        match *self.acked.borrow() {
            None => usize::MAX,
            Some(acked) => {
                let unacked = offset.saturating_sub(acked);
                usize::try_from(self.high.saturating_sub(unacked)).unwrap_or(usize::MAX)
            }
        }
    }

    /// Returns at once below the high watermark; above it, once the client's acks bring
    /// the unacknowledged output down to the low one. Not reading meanwhile is what stops
    /// ptyd, and then the program, from producing more.
    async fn window(&mut self, sent_end: u64) {
        let unacked =
            |a: &Option<u64>, mark: u64| a.is_some_and(|a| sent_end.saturating_sub(a) > mark);
        if !unacked(&self.acked.borrow(), self.high) {
            return;
        }
        tracing::debug!(
            "Pausing output at offset {sent_end}: over {} bytes unacknowledged",
            self.high
        );
        let low = self.low;
        // An error means the control loop ended, which ends this socket anyway.
        let _ = self.acked.wait_for(|a| !unacked(a, low)).await;
        tracing::debug!("Resuming output at offset {sent_end}");
    }
}

/// ptyd → socket.
async fn pump_output<O: OutputSource>(
    output: &mut O,
    data_tx: flume::Sender<WsMessage>,
    last: &LastData,
    metrics: &Metrics,
    start: &AttachReply,
    mut flow: Flow,
) -> Outcome {
    let mut replaying = start.end > start.offset;
    let mut sent_end = start.offset;
    // What the last merge took from the queue and could not merge.
    let mut carried: Option<Option<SessionEvent>> = None;
    loop {
        flow.window(sent_end).await;
        let next = match carried.take() {
            Some(next) => next,
            None => output.next_event().await,
        };
        let Some(event) = next else {
            // Rare paths boxed, out of the state every idle socket keeps.
            return Outcome::IpcLost(Box::pin(output.end_reason()).await);
        };
        let (msg, exit): (_, Option<(ExitStatus, Option<EndReason>)>) = match event {
            SessionEvent::Output { offset, data } => {
                let limit = flow.room(offset).clamp(data.len(), MERGED_FRAME_BYTES);
                let (data, after) = merge_queued(output, offset, data, limit);
                carried = after;
                sent_end = offset + data.len() as u64;
                last.touch();
                metrics.bytes_out(data.len());
                if replaying && offset + data.len() as u64 >= start.end {
                    replaying = false;
                    tracing::info!(
                        "Replayed {} bytes of buffered output",
                        start.end - start.offset
                    );
                }
                (WsMessage::Binary(data), None)
            }
            SessionEvent::Dropped { offset, bytes } => {
                sent_end = offset + bytes;
                tracing::warn!("{bytes} bytes of output at offset {offset} were lost");
                (text(&ServerMessage::Dropped { offset, bytes }), None)
            }
            SessionEvent::Exit(status) => {
                let reason = Box::pin(output.exit_reason()).await;
                tracing::info!(end_reason = reason.map(EndReason::as_str), "Process {status}");
                (text(&ServerMessage::exit(status, reason)), Some((status, reason)))
            }
        };
        if data_tx.send_async(msg).await.is_err() {
            return Outcome::Broken("the socket writer stopped".into());
        }
        if let Some((status, reason)) = exit {
            return Outcome::Exited(status, reason);
        }
    }
}

/// `data` (at `offset`) with the output that follows it and is already queued, up to
/// `limit` bytes; never waits. Also returns the first event taken that did not fit
/// (`Some(None)`: the events ended), for the pump to handle next.
fn merge_queued<O: OutputSource>(
    output: &mut O,
    offset: u64,
    data: Bytes,
    limit: usize,
) -> (Bytes, Option<Option<SessionEvent>>) {
    let mut merged: Option<BytesMut> = None;
    let mut len = data.len();
    let after = loop {
        if len >= limit {
            break None;
        }
        // A receive that is not ready loses nothing: the event stays queued.
        match output.next_event().now_or_never() {
            None => break None,
            Some(Some(SessionEvent::Output { offset: at, data: more }))
                if at == offset + len as u64 && len + more.len() <= limit =>
            {
                merged.get_or_insert_with(|| BytesMut::from(&data[..])).extend_from_slice(&more);
                len += more.len();
            }
            Some(other) => break Some(other),
        }
    };
    (merged.map_or(data, BytesMut::freeze), after)
}

/// Tells the client each size the terminal takes from its viewers' windows.
async fn announce_sizes(
    mut sizes: watch::Receiver<Option<(u16, u16)>>,
    ctrl_tx: flume::Sender<WsMessage>,
) -> Outcome {
    // The size when this socket joined counts too: it may already differ from its window.
    sizes.mark_changed();
    while sizes.changed().await.is_ok() {
        let size = *sizes.borrow_and_update();
        if let Some((cols, rows)) = size {
            if ctrl_tx.send_async(text(&ServerMessage::Size { cols, rows })).await.is_err() {
                return Outcome::Broken("the socket writer stopped".into());
            }
        }
    }
    // The terminal's viewers were cleared (it ended or was detached): the stop signal or
    // the output's exit ends this socket.
    std::future::pending().await
}

/// Socket → ptyd, one request at a time, in order.
async fn pump_input<I: InputTarget>(
    input: &I,
    rx: flume::Receiver<InputCmd>,
    ctrl_tx: flume::Sender<WsMessage>,
) -> Outcome {
    while let Ok(cmd) = rx.recv_async().await {
        // Boxed: a request's state is not part of what an idle socket keeps.
        let result = match cmd {
            InputCmd::Data(data) => Box::pin(input.input(data)).await,
            InputCmd::Resize(cols, rows) => {
                tracing::debug!("Resizing terminal to {cols}x{rows}");
                Box::pin(input.resize(cols, rows)).await
            }
        };
        match result {
            Ok(()) => {}
            Err(ClientError::Ipc(why)) => return Outcome::IpcLost(why.to_string()),
            // The program ended; its exit event is on the way to the output pump.
            Err(ClientError::Daemon { code: ErrorCode::SessionExited, .. }) => {}
            Err(ClientError::Daemon { code, message }) => {
                let reply = text(&ServerMessage::error(code.to_string(), message));
                if ctrl_tx.send_async(reply).await.is_err() {
                    return Outcome::Broken("the socket writer stopped".into());
                }
            }
        }
    }
    // The queue only closes when the control loop has ended, which ends the select.
    std::future::pending().await
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
