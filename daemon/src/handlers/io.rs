//! `input` and `resize`: the client's side of the terminal.

use std::time::Duration;

use bytes::Bytes;
use ipc_proto::{
    DaemonEventKind, DaemonMessage, ResizeRequest, SessionId, SubmitReply, SubmitRequest,
};

use super::{session, ReplyError};
use crate::connection::Connection;
use crate::session::InputMark;

pub async fn handle_input(
    conn: &mut Connection,
    id: u64,
    sid: SessionId,
    data: Bytes,
) -> Result<(), ReplyError> {
    let session = session(conn, sid)?;
    // Awaited in the read loop on purpose: inputs apply in the order they were sent.
    session.input(data, InputMark::Start).await?;
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}

pub async fn handle_resize(
    conn: &mut Connection,
    id: u64,
    req: ResizeRequest,
) -> Result<(), ReplyError> {
    if req.cols == 0 || req.rows == 0 {
        return Err(ReplyError::bad(format!(
            "invalid size {}x{}: both must be at least 1",
            req.cols, req.rows
        )));
    }
    let session = session(conn, req.session)?;
    session.resize(req.cols, req.rows)?;
    conn.pool.events.emit(DaemonEventKind::Resized, &session, |e| {
        e.cols = Some(req.cols);
        e.rows = Some(req.rows);
    });
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}

/// Pause between the submitted text and its Enter when the request names none.
const DEFAULT_SETTLE: Duration = Duration::from_millis(50);

/// Types `text` (as a bracketed paste when the program asked for that), waits for it to
/// settle, then sends Enter as a write of its own: REPLs and TUIs that treat a burst as a
/// paste would otherwise swallow the Enter.
pub async fn handle_submit(
    conn: &mut Connection,
    id: u64,
    req: SubmitRequest,
) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    let bracketed = session.bracketed_paste();
    let text = if bracketed { format!("\x1b[200~{}\x1b[201~", req.text) } else { req.text };
    let offset = session.input(Bytes::from(text), InputMark::Start).await?;
    tokio::time::sleep(req.settle_ms.map(Duration::from_millis).unwrap_or(DEFAULT_SETTLE)).await;
    session.input(Bytes::from_static(b"\r"), InputMark::Continue).await?;
    let reply = SubmitReply { bracketed_paste: bracketed, offset: Some(offset) };
    conn.reply(id, DaemonMessage::Submitted(reply)).await;
    Ok(())
}
