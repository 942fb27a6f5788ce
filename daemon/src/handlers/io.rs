//! `input` and `resize`: the client's side of the terminal.

use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use ipc_proto::{
    DaemonEventKind, DaemonMessage, Frame, ResizeRequest, SessionId, SubmitReply, SubmitRequest,
};

use super::{send_result, session, ReplyError};
use crate::connection::Connection;
use crate::session::InputMark;

pub async fn handle_input(
    conn: &mut Connection,
    id: u64,
    sid: SessionId,
    data: Bytes,
) -> Result<(), ReplyError> {
    let session = session(conn, sid)?;
    let mut write = Box::pin(async move { session.input(data, InputMark::Start).await });
    // Polled here, in the read loop: the write takes its place in the session's input
    // order (a fair lock) before the next request is read. A keystroke is written at once.
    if let Poll::Ready(written) = futures::poll!(write.as_mut()) {
        written?;
        conn.reply(id, DaemonMessage::Ok).await;
        return Ok(());
    }
    // The program is not reading and its input queue is full: later input to this
    // session waits behind this write, but the connection goes on with other requests,
    // up to its share of waiting writes. Not tied to the connection: what was sent is
    // written even if the client leaves.
    let turn = conn.inputs.clone().acquire_owned().await.ok();
    let out = conn.out.clone();
    tokio::spawn(async move {
        let written = write.await;
        drop(turn);
        let result = written.map(|_| Frame::new(id, DaemonMessage::Ok)).map_err(ReplyError::from);
        send_result(&out, id, result).await;
    });
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
