//! `list`, `info` and `wait`.

use std::time::Duration;

use ipc_proto::{
    DaemonMessage, ErrorCode, Frame, ListReply, ReadReply, ReadRequest, SessionId, WaitRequest,
};

use super::{answer_later, send_result, session, ReplyError};
use crate::connection::Connection;

pub async fn handle_list(conn: &mut Connection, id: u64) -> Result<(), ReplyError> {
    let sessions = conn.pool.list().iter().map(|s| s.info()).collect();
    let upgrader = conn.pool.upgrader.get();
    let reply = ListReply {
        sessions,
        active: conn.pool.active(),
        capacity: conn.pool.capacity(),
        daemon_started_at_ms: upgrader.map(|u| u.started_at_ms),
        upgrades: upgrader.map_or(0, |u| u.upgrades.load(std::sync::atomic::Ordering::Relaxed)),
    };
    conn.reply(id, DaemonMessage::Sessions(reply)).await;
    Ok(())
}

pub async fn handle_info(conn: &mut Connection, id: u64, sid: SessionId) -> Result<(), ReplyError> {
    let info = session(conn, sid)?.info();
    conn.reply(id, DaemonMessage::Session(info)).await;
    Ok(())
}

pub fn handle_wait(conn: &mut Connection, id: u64, req: WaitRequest) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    let out = conn.out.clone();
    answer_later(conn, async move {
        let waited = within(req.timeout_ms, session.wait()).await;
        let result =
            waited.map(|status| Frame::new(id, DaemonMessage::Exited(status))).map_err(|ms| {
                ReplyError::new(
                    ErrorCode::Timeout,
                    format!("session {} still running after {ms} ms", session.id),
                )
            });
        send_result(&out, id, result).await;
    });
    Ok(())
}

/// Runs `fut` with an optional limit in milliseconds; `Err(limit)` when it ran out.
pub async fn within<T>(
    timeout_ms: Option<u64>,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, u64> {
    match timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), fut).await.map_err(|_| ms),
        None => Ok(fut.await),
    }
}

pub async fn handle_read(
    conn: &mut Connection,
    id: u64,
    req: ReadRequest,
) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    let end = session.output_end();
    let since = req.since.unwrap_or(0);
    if since > end {
        return Err(ReplyError::bad(format!(
            "since {since} is past the end of the output ({end})"
        )));
    }
    let mut held = session.read_range(since, end);
    if req.since.is_none() {
        // No offset asked for: the window is simply what there is, nothing was "dropped".
        held.dropped = 0;
    }
    held.data.truncate(req.max.unwrap_or(MAX_READ).min(MAX_READ));
    let next = held.offset + held.data.len() as u64;
    let reply =
        ReadReply { session: session.id, offset: held.offset, next, dropped: held.dropped, end };
    let _ = conn.out.send(Frame::with_data(id, DaemonMessage::OutputRange(reply), held.data)).await;
    Ok(())
}

/// The most a `read` returns at once, so the reply fits in one frame.
const MAX_READ: usize = ipc_proto::MAX_PAYLOAD_LEN;
