//! `input` and `resize`: the client's side of the terminal.

use bytes::Bytes;
use ipc_proto::{DaemonMessage, ResizeRequest, SessionId};

use super::{session, ReplyError};
use crate::connection::Connection;

pub async fn handle_input(conn: &mut Connection, id: u64, sid: SessionId, data: Bytes) -> Result<(), ReplyError> {
    let session = session(conn, sid)?;
    // Awaited in the read loop on purpose: inputs apply in the order they were sent.
    session.input(data).await?;
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}

pub async fn handle_resize(conn: &mut Connection, id: u64, req: ResizeRequest) -> Result<(), ReplyError> {
    if req.cols == 0 || req.rows == 0 {
        return Err(ReplyError::bad(format!("invalid size {}x{}: both must be at least 1", req.cols, req.rows)));
    }
    session(conn, req.session)?.resize(req.cols, req.rows)?;
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}
