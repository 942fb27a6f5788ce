//! The WebSocket upgrade of `/ws/terminal/{id}`: checks before the upgrade (400, 404, 410),
//! then one `ws` span per socket around attach → socket loop → the next status.

mod control;
pub mod protocol;
mod relink;
pub mod session;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{self as axum_ws, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::response::Response;
use futures::{Sink, SinkExt, Stream, StreamExt};
use ipc_proto::{ClientError, EndReason, ErrorCode, ScreenStart, SessionId};
use tokio::time::Instant;
use tracing::Instrument;

use self::protocol::close;
use self::session::{secs, CloseFrame, Limits, Outcome, RecvError, Session, WsMessage};
use crate::error::AppError;
use crate::routes::parse_id;
use crate::terminals::{spawn_grace_timer, Ending, Missing, Status, StopReason};
use crate::viewers::{Joining, Role};
use crate::AppState;

/// `GET /ws/terminal/{id}[?since=N]`: upgrades to the terminal's socket.
pub async fn upgrade(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    grant: Option<axum::Extension<crate::auth::tickets::Grant>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let id = parse_id(&raw)?;
    let span = tracing::info_span!("ws", terminal = %id, peer = %peer);
    let since = parse_since(query.as_deref())?;
    let screen = parse_screen(query.as_deref())?;
    let (mut role, joining) = parse_viewer(query.as_deref())?;
    // A ticket minted through a share link opens a read-only viewer, whatever was asked.
    let share = match grant {
        Some(axum::Extension(grant)) => {
            if grant.role == Role::ReadOnly {
                role = Role::ReadOnly;
            }
            grant.share
        }
        None => None,
    };
    let joining = if share.is_some() { Joining::Join } else { joining };
    match state.registry.check(id) {
        Ok(_) => {}
        Err(Missing::NotFound) => return Err(AppError::NotFound(format!("no terminal {id}"))),
        Err(Missing::Dead(end_reason)) => {
            span.in_scope(|| tracing::warn!("Reconnect attempt received, returning 410 Gone"));
            return Err(crate::routes::gone(id, end_reason));
        }
    }
    let ws = ws.map_err(|r| AppError::BadRequest(format!("expected a WebSocket upgrade: {r}")))?;
    let max = state.config.max_message_bytes;
    let (read, write) = (state.config.ws_read_buffer, state.config.ws_write_buffer);
    let tracker = state.tracker.clone();
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(read)
        .write_buffer_size(write)
        // Past this much unsent (write errors), the socket pushes back instead of growing.
        .max_write_buffer_size(write + 2 * max.max(64 * 1024) + 64 * 1024)
        .on_failed_upgrade(|e| tracing::warn!("WebSocket upgrade failed: {e}"))
        .on_upgrade(move |socket| {
            let viewer = ViewerOpts { role, joining, share };
            tracker.track_future(serve(state, id, since, screen, viewer, socket).instrument(span))
        }))
}

fn parse_since(query: Option<&str>) -> Result<Option<u64>, AppError> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("since=") {
            return value.parse().map(Some).map_err(|e| {
                AppError::BadRequest(format!("invalid since {value:?}: {e} (expected an offset)"))
            });
        }
    }
    Ok(None)
}

/// What kind of viewer a socket is.
#[derive(Debug, Clone)]
struct ViewerOpts {
    role: Role,
    joining: Joining,
    /// The share link it was opened through.
    share: Option<String>,
}

/// `?role=read-write|read-only` (default read-write) and `?takeover=1` (default: join the
/// viewers already there).
fn parse_viewer(query: Option<&str>) -> Result<(Role, Joining), AppError> {
    let mut role = Role::ReadWrite;
    let mut joining = Joining::Join;
    for pair in query.unwrap_or_default().split('&') {
        if let Some(value) = pair.strip_prefix("role=") {
            role = Role::parse(value).ok_or_else(|| {
                AppError::BadRequest(format!(
                    "invalid role {value:?} (expected read-write or read-only)"
                ))
            })?;
        } else if let Some(value) = pair.strip_prefix("takeover=") {
            joining = match value {
                "1" | "true" => Joining::TakeOver,
                "0" | "false" => Joining::Join,
                other => {
                    return Err(AppError::BadRequest(format!(
                        "invalid takeover {other:?} (expected 1 or 0)"
                    )))
                }
            };
        }
    }
    Ok((role, joining))
}

/// `?screen=auto|always|never` (absent: never, the version 1 behaviour): whether the
/// socket may start from the terminal's screen instead of bytes.
fn parse_screen(query: Option<&str>) -> Result<ScreenStart, AppError> {
    let Some(query) = query else { return Ok(ScreenStart::Never) };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("screen=") {
            return match value {
                "auto" => Ok(ScreenStart::Auto),
                "always" => Ok(ScreenStart::Always),
                "never" => Ok(ScreenStart::Never),
                other => Err(AppError::BadRequest(format!(
                    "invalid screen {other:?} (expected auto, always or never)"
                ))),
            };
        }
    }
    Ok(ScreenStart::Never)
}

/// One socket, from its first frame to the terminal's next status.
async fn serve(
    state: AppState,
    id: SessionId,
    since: Option<u64>,
    screen: ScreenStart,
    viewer: ViewerOpts,
    socket: WebSocket,
) {
    let _open = state.metrics.socket_opened();
    tracing::info!("WebSocket connection established for terminal {id}");
    let (mut sink, stream) = adapt(socket, state.config.max_message_bytes);
    let close_timeout = state.config.close_timeout;
    let slot = match state.daemon.attach_slot(id).await {
        Ok(slot) => slot,
        Err(e) => {
            tracing::warn!("cannot reach ptyd for terminal {id}: {e}");
            close_now(
                &mut sink,
                close::INTERNAL,
                format!("IpcError: {}", e.detail()),
                close_timeout,
            )
            .await;
            return;
        }
    };
    let share = viewer.share.clone();
    let act = match state.registry.activate(id, Instant::now(), viewer.role, viewer.joining, share)
    {
        Ok(a) => a,
        Err(_) => {
            tracing::warn!("Reconnect attempt received, terminal {id} is Dead");
            close_now(&mut sink, close::GONE, "terminal is dead".into(), close_timeout).await;
            return;
        }
    };
    if act.took_over > 0 {
        tracing::info!("Taking over terminal {id} from another connection");
    } else if act.previous == Status::Active {
        let role = viewer.role.as_str();
        tracing::info!("A {role} viewer joined terminal {id} ({} viewers)", act.viewers);
    } else {
        if let Some(after) = act.reconnected_after {
            let after = Duration::from_millis(after.as_millis() as u64);
            tracing::info!(
                "Client reconnected after {} seconds (within grace period)",
                secs(after)
            );
            state.metrics.reconnect();
        }
        tracing::debug!("Status transition: {} → Active", act.previous);
    }
    let links = state.daemon.attach_links();
    let output = match relink::RelinkedOutput::attach(links, slot, id, since, screen).await {
        Ok(output) => output,
        Err(e) => {
            let (code, reason) = match &e {
                ClientError::Ipc(why) => (close::INTERNAL, format!("IpcError: {why}")),
                ClientError::Daemon { code: ErrorCode::HandleNotFound, .. } => {
                    (close::GONE, "terminal is gone".to_string())
                }
                ClientError::Daemon { message, .. } => (close::POLICY, message.clone()),
            };
            tracing::warn!("cannot attach to terminal {id}: {e}");
            close_now(&mut sink, code, reason, close_timeout).await;
            if code == close::GONE {
                if let Some(previous) =
                    state.registry.mark_dead(id, Ending::Lost, None, Instant::now())
                {
                    tracing::debug!("Status transition: {previous} → Dead");
                }
            } else {
                finish(&state, id, act.gen, Outcome::Broken("attach failed".into()));
            }
            return;
        }
    };
    let start = output.reply().clone();
    let snapshot = output.snapshot().cloned();
    match &snapshot {
        Some(s) => {
            tracing::debug!("Painting the screen ({} bytes) as of offset {}", s.len(), start.offset)
        }
        None => tracing::debug!("Replaying {} bytes of buffered output", start.end - start.offset),
    }
    let limits = Limits {
        heartbeat_interval: state.config.heartbeat_interval,
        pong_timeout: state.config.pong_timeout,
        idle_timeout: state.config.idle_timeout,
        max_message_bytes: state.config.max_message_bytes,
        grace: state.config.grace,
        flow_high: state.config.flow_high,
        flow_low: state.config.flow_low,
        close_timeout,
    };
    let input = ViewerInput {
        inner: relink::RelinkedInput { id, links: output.links() },
        role: viewer.role,
        registry: state.registry.clone(),
        gen: act.gen,
    };
    let session = Session {
        start,
        snapshot,
        output,
        input,
        limits,
        stop: act.stop,
        shutdown: state.shutdown.clone(),
        activity: act.activity,
        metrics: state.metrics.clone(),
        role: viewer.role,
        sizes: act.sizes,
    };
    let outcome = session::run(sink, stream, session).await;
    finish(&state, id, act.gen, outcome);
}

/// The terminal's next status after its socket ended, with the spec's log lines.
fn finish(state: &AppState, id: SessionId, gen: u64, outcome: Outcome) {
    let now = Instant::now();
    match outcome {
        Outcome::Exited(status, reason) => {
            let ending = Ending::Session(reason.unwrap_or(EndReason::Exited));
            if let Some(previous) = state.registry.mark_dead(id, ending, None, now) {
                tracing::info!("Terminal {id} ended: process {status}");
                tracing::debug!("Status transition: {previous} → Dead");
            }
        }
        Outcome::Stopped(StopReason::TakenOver) => {
            tracing::info!("WebSocket for terminal {id} closed: taken over by another connection");
        }
        Outcome::Stopped(StopReason::Deleted) => {
            tracing::info!("WebSocket for terminal {id} closed: terminal deleted");
        }
        Outcome::Stopped(StopReason::Detached) => {
            tracing::info!("WebSocket for terminal {id} closed: terminal detached");
        }

        Outcome::Shutdown => {
            // The terminal keeps running in ptyd; a restarted bridge recovers it.
            state.registry.disconnect(id, gen, now);
            tracing::info!("WebSocket for terminal {id} closed: ptyd-bridge is shutting down");
        }
        other => {
            match &other {
                Outcome::ClientClosed => tracing::warn!("WebSocket disconnected for terminal {id}"),
                Outcome::Broken(why) => {
                    tracing::warn!("WebSocket disconnected for terminal {id}");
                    tracing::warn!("transport error: {why}");
                }
                Outcome::IpcLost(why) => {
                    tracing::warn!("Lost ptyd while serving terminal {id}: {why}");
                }
                Outcome::TooLarge { .. } => {
                    tracing::warn!("WebSocket closed for terminal {id}: message too large");
                }
                Outcome::Violation { why, .. } => {
                    tracing::warn!("WebSocket closed for terminal {id}: {why}");
                }
                Outcome::Stopped(StopReason::Revoked) => {
                    tracing::info!(
                        "WebSocket for terminal {id} closed: its share link was revoked"
                    );
                }
                _ => {}
            }
            let departure = state.registry.disconnect(id, gen, now);
            if let Some((cols, rows)) = departure.resize {
                // The viewers left size the terminal now.
                let link = state.daemon.clone();
                tokio::spawn(async move {
                    if let Ok(c) = link.control() {
                        let _ = c.resize(id, cols, rows).await;
                    }
                });
            }
            if let Some(timer) = departure.timer {
                tracing::debug!("Status transition: Active → Disconnected");
                tracing::debug!(
                    "Buffering output for {}-second grace period",
                    secs(state.config.grace)
                );
                spawn_grace_timer(
                    state.registry.clone(),
                    state.daemon.clone(),
                    state.metrics.clone(),
                    timer,
                );
            }
        }
    }
}

/// A viewer's input: refused for a read-only one; its window counted for the terminal's
/// size by the resize policy.
struct ViewerInput {
    inner: relink::RelinkedInput,
    role: Role,
    registry: std::sync::Arc<crate::terminals::Registry>,
    gen: u64,
}

impl session::InputTarget for ViewerInput {
    async fn input(&self, data: bytes::Bytes) -> Result<(), ClientError> {
        if self.role == Role::ReadOnly {
            return Err(ClientError::Daemon {
                code: ErrorCode::PermissionDenied,
                message: "this viewer is read-only: its input is not sent to the terminal".into(),
            });
        }
        self.inner.input(data).await
    }

    async fn resize(&self, cols: u16, rows: u16) -> Result<(), ClientError> {
        match self.registry.viewer_size(self.inner.id, self.gen, cols, rows) {
            Some((cols, rows)) => self.inner.resize(cols, rows).await,
            // A read-only viewer, or no change: the terminal keeps its size.
            None => Ok(()),
        }
    }
}

/// Sends a close frame on a socket that never reached its loop.
async fn close_now<Si>(sink: &mut Si, code: u16, reason: String, limit: Duration)
where
    Si: Sink<WsMessage> + Unpin,
{
    let frame = WsMessage::Close(Some(CloseFrame { code, reason }));
    let _ = tokio::time::timeout(limit, async {
        let _ = sink.send(frame).await;
        let _ = sink.close().await;
    })
    .await;
}

/// axum's socket as a `Sink`/`Stream` of [`WsMessage`].
fn adapt(
    socket: WebSocket,
    max: usize,
) -> (
    impl Sink<WsMessage, Error = axum::Error> + Unpin + Send,
    impl Stream<Item = Result<WsMessage, RecvError>> + Unpin + Send,
) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|m: WsMessage| futures::future::ready(Ok::<_, axum::Error>(to_axum(m))));
    let stream = stream.map(move |r| r.map(from_axum).map_err(|e| recv_error(&e, max)));
    (sink, stream)
}

fn to_axum(m: WsMessage) -> axum_ws::Message {
    match m {
        WsMessage::Text(t) => axum_ws::Message::Text(t.into()),
        WsMessage::Binary(b) => axum_ws::Message::Binary(b),
        WsMessage::Ping(b) => axum_ws::Message::Ping(b),
        WsMessage::Pong(b) => axum_ws::Message::Pong(b),
        WsMessage::Close(frame) => axum_ws::Message::Close(
            frame.map(|f| axum_ws::CloseFrame { code: f.code, reason: f.reason.into() }),
        ),
    }
}

fn from_axum(m: axum_ws::Message) -> WsMessage {
    match m {
        axum_ws::Message::Text(t) => WsMessage::Text(t.as_str().to_owned()),
        axum_ws::Message::Binary(b) => WsMessage::Binary(b),
        axum_ws::Message::Ping(b) => WsMessage::Ping(b),
        axum_ws::Message::Pong(b) => WsMessage::Pong(b),
        axum_ws::Message::Close(frame) => WsMessage::Close(
            frame.map(|f| CloseFrame { code: f.code, reason: f.reason.as_str().to_owned() }),
        ),
    }
}

/// Classifies a read error. The WebSocket library is a private dependency of axum, so its
/// errors are recognized by their text: the size limit ("Message too long: 70000 >
/// 65536"), invalid UTF-8 ("UTF-8 encoding error") and protocol violations ("WebSocket
/// protocol error: ...").
fn recv_error(e: &axum::Error, max: usize) -> RecvError {
    let text = e.to_string();
    if let Some(rest) = text.split("Message too long: ").nth(1) {
        let size = rest.split(" > ").next().and_then(|s| s.trim().parse().ok());
        return RecvError::TooLarge { size, max };
    }
    if text.contains("UTF-8 encoding error") {
        let why = "invalid UTF-8 in a text message".to_string();
        return RecvError::Violation { code: close::INVALID_DATA, why };
    }
    if let Some(rest) = text.split("WebSocket protocol error: ").nth(1) {
        // The library files a vanished peer under protocol errors; it is the transport's.
        if !rest.starts_with("Connection reset without closing handshake") {
            return RecvError::Violation { code: close::PROTOCOL_ERROR, why: rest.to_string() };
        }
    }
    RecvError::Transport(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_an_offset() {
        assert_eq!(parse_since(None).unwrap(), None);
        assert_eq!(parse_since(Some("token=x&since=42")).unwrap(), Some(42));
        assert_eq!(parse_since(Some("token=x")).unwrap(), None);
        assert!(parse_since(Some("since=-1")).is_err());
        assert!(parse_since(Some("since=abc")).is_err());
    }

    #[test]
    fn size_errors_are_recognized_by_their_text() {
        let e = axum::Error::new(std::io::Error::other(
            "Space limit exceeded: Message too long: 70000 > 65536",
        ));
        assert_eq!(recv_error(&e, 65536), RecvError::TooLarge { size: Some(70000), max: 65536 });
        let e = axum::Error::new(std::io::Error::other(
            "WebSocket protocol error: Connection reset without closing handshake",
        ));
        assert!(matches!(recv_error(&e, 1), RecvError::Transport(_)));
        let e = axum::Error::new(std::io::Error::other("UTF-8 encoding error: invalid"));
        assert!(matches!(recv_error(&e, 1), RecvError::Violation { code: 1007, .. }));
        let e = axum::Error::new(std::io::Error::other(
            "WebSocket protocol error: Reserved bits are non-zero",
        ));
        let RecvError::Violation { code, why } = recv_error(&e, 1) else { panic!() };
        assert_eq!((code, why.as_str()), (1002, "Reserved bits are non-zero"));
    }
}
