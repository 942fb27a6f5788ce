//! `list`, `info` and `wait`.

use std::time::Duration;

use ipc_proto::{DaemonMessage, ErrorCode, ErrorReply, Frame, ListReply, SessionId, WaitRequest};

use super::{session, ReplyError};
use crate::connection::Connection;

pub async fn handle_list(conn: &mut Connection, id: u64) -> Result<(), ReplyError> {
    let sessions = conn.pool.list().iter().map(|s| s.info()).collect();
    let reply = ListReply { sessions, active: conn.pool.active(), capacity: conn.pool.capacity() };
    conn.reply(id, DaemonMessage::Sessions(reply)).await;
    Ok(())
}

pub async fn handle_info(conn: &mut Connection, id: u64, sid: SessionId) -> Result<(), ReplyError> {
    let info = session(conn, sid)?.info();
    conn.reply(id, DaemonMessage::Session(info)).await;
    Ok(())
}

/// Waits in a task of its own, so the connection keeps serving other requests.
pub fn handle_wait(conn: &mut Connection, id: u64, req: WaitRequest) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    let out = conn.out.clone();
    while conn.waits.try_join_next().is_some() {}
    conn.waits.spawn(async move {
        let waited = match req.timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), session.wait()).await.ok(),
            None => Some(session.wait().await),
        };
        let msg = match waited {
            Some(status) => DaemonMessage::Exited(status),
            None => DaemonMessage::Error(ErrorReply {
                code: ErrorCode::Timeout,
                message: format!("session {} still running after {} ms", session.id, req.timeout_ms.unwrap_or(0)),
            }),
        };
        let _ = out.send(Frame::new(id, msg)).await;
    });
    Ok(())
}
