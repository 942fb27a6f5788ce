//! Request dispatch: one `match` from request type to its handler.

mod attach;
mod events;
mod exec;
mod io;
mod kill;
mod lease;
mod query;
mod run;
mod screen;
mod spawn;
mod upgrade;
mod watch;
mod window;

use ipc_proto::{DaemonMessage, ErrorCode, ErrorReply, Frame, Request, SessionId};

pub use window::Acks;

use crate::connection::Connection;
use crate::pool::PoolError;
use crate::session::SessionError;

/// A failed request, as it goes on the wire.
#[derive(Debug)]
pub struct ReplyError {
    /// Wire code.
    pub code: ErrorCode,
    /// Text.
    pub message: String,
}

impl ReplyError {
    /// An error with this code and text.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ReplyError { code, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl From<PoolError> for ReplyError {
    fn from(e: PoolError) -> Self {
        ReplyError::new(e.code(), e.to_string())
    }
}

impl From<SessionError> for ReplyError {
    fn from(e: SessionError) -> Self {
        let code = match e {
            SessionError::Exited(_) => ErrorCode::SessionExited,
            SessionError::SinceBeyondEnd { .. } => ErrorCode::BadRequest,
            SessionError::Os(_) => ErrorCode::Internal,
        };
        ReplyError::new(code, e.to_string())
    }
}

/// Runs one request. Handlers send their own success replies (some must order a reply
/// before the events that follow it); an `Err` is sent by the caller.
pub async fn dispatch(conn: &mut Connection, frame: Frame<Request>) -> Result<(), ReplyError> {
    let id = frame.id;
    match frame.body {
        Request::Hello(_) => Err(ReplyError::bad("hello was already received")),
        Request::Spawn(req) => spawn::handle(conn, id, req).await,
        Request::Attach(req) => attach::handle_attach(conn, id, req).await,
        Request::Detach(r) => attach::handle_detach(conn, id, r.session).await,
        Request::Ack(req) => window::handle_ack(conn, id, req).await,
        Request::Input(r) => io::handle_input(conn, id, r.session, frame.data).await,
        Request::Resize(req) => io::handle_resize(conn, id, req).await,
        Request::Kill(req) => kill::handle(conn, id, req).await,
        Request::List => query::handle_list(conn, id).await,
        Request::Info(r) => query::handle_info(conn, id, r.session).await,
        Request::Wait(req) => query::handle_wait(conn, id, req),
        Request::Read(req) => query::handle_read(conn, id, req).await,
        Request::WaitFor(req) => watch::handle_wait_for(conn, id, req),
        Request::WaitQuiet(req) => watch::handle_wait_quiet(conn, id, req),
        Request::Submit(req) => io::handle_submit(conn, id, req).await,
        Request::Exec(req) => exec::handle(conn, id, req).await,
        Request::Run(req) => run::handle(conn, id, req).await,
        Request::Lease(r) => lease::handle_lease(conn, id, r.session).await,
        Request::Release(r) => lease::handle_release(conn, id, r.session).await,
        Request::Subscribe => events::handle_subscribe(conn, id).await,
        Request::Screen(req) => screen::handle(conn, id, req).await,
        Request::Upgrade(req) => upgrade::handle(conn, id, req).await,
        Request::Unknown => Err(ReplyError::new(
            ErrorCode::UnknownRequest,
            format!(
                "unknown request type (this daemon speaks protocol {})",
                ipc_proto::PROTOCOL_VERSION
            ),
        )),
    }
}

/// Runs `task` (which answers request `id` itself) alongside the read loop, so slow
/// requests do not hold up the others; it ends when the connection does.
fn answer_later(
    conn: &mut Connection,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    while conn.waits.try_join_next().is_some() {}
    conn.waits.spawn(task);
}

/// Sends `result` as the reply to request `id`.
async fn send_result(
    out: &crate::connection::Outgoing,
    id: u64,
    result: Result<Frame<DaemonMessage>, ReplyError>,
) {
    let frame = result.unwrap_or_else(|e| {
        Frame::new(id, DaemonMessage::Error(ErrorReply { code: e.code, message: e.message }))
    });
    let _ = out.send(Frame { id, ..frame }).await;
}

/// Looks up `session` or fails with `HandleNotFound`.
fn session(
    conn: &Connection,
    id: SessionId,
) -> Result<std::sync::Arc<crate::session::Session>, ReplyError> {
    Ok(conn.pool.get(id)?)
}
