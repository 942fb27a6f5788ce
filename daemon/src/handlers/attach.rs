//! `attach` and `detach`, and the task that forwards a session's output to a client.

use std::sync::Arc;

use bytes::Bytes;
use ipc_proto::{
    AttachReply, AttachRequest, DaemonMessage, DroppedEvent, ExitEvent, Frame, OutputEvent,
    SessionId,
};

use super::{session, ReplyError};
use crate::connection::{Connection, Outgoing};
use crate::ring::Replay;
use crate::session::{AttachMode, Session, Subscription};

/// Output events carry at most this much, so replays of large windows stay in frame.
const MAX_EVENT_BYTES: usize = 64 * 1024;

pub async fn handle_attach(
    conn: &mut Connection,
    id: u64,
    req: AttachRequest,
) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    let (replay, end, sub) =
        session.subscribe(req.since, AttachMode::from_lossless(req.lossless))?;
    let reply =
        AttachReply { session: session.id, offset: replay.offset, dropped: replay.dropped, end };
    conn.reply(id, DaemonMessage::Attached(reply)).await;
    start_forwarding(conn, session, sub, replay);
    Ok(())
}

pub async fn handle_detach(
    conn: &mut Connection,
    id: u64,
    sid: SessionId,
) -> Result<(), ReplyError> {
    session(conn, sid)?;
    if let Some(task) = conn.attachments.remove(&sid) {
        task.abort();
    }
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}

/// Sends `replay`, then live output, then the exit event, in a task of its own.
pub fn start_forwarding(
    conn: &mut Connection,
    session: Arc<Session>,
    sub: Option<Subscription>,
    replay: Replay,
) {
    let sid = session.id;
    let task = tokio::spawn(forward(session, sub, replay, conn.out.clone()));
    conn.add_attachment(sid, task.abort_handle());
}

async fn forward(
    session: Arc<Session>,
    sub: Option<Subscription>,
    replay: Replay,
    out: Outgoing,
) -> Option<()> {
    let sid = session.id;
    let mut next = replay.offset + replay.data.len() as u64;
    send_output(&out, sid, replay.offset, replay.data).await?;
    if let Some(sub) = sub {
        while let Ok(chunk) = sub.rx.recv_async().await {
            if chunk.offset > next {
                // This client was too slow for some chunks: resend what the ring still has.
                send_gap(&out, &session, next, chunk.offset).await?;
            }
            next = chunk.offset + chunk.data.len() as u64;
            send_output(&out, sid, chunk.offset, chunk.data).await?;
        }
        // The session ended; a lossy client may have missed the last chunks.
        let end = session.output_end();
        if end > next {
            send_gap(&out, &session, next, end).await?;
        }
    }
    let status = session.exit_status()?;
    out.send(Frame::new(0, DaemonMessage::Exit(ExitEvent { session: sid, status }))).await.ok()
}

async fn send_gap(out: &Outgoing, session: &Session, from: u64, to: u64) -> Option<()> {
    let held = session.read_range(from, to);
    if held.dropped > 0 {
        let ev = DroppedEvent { session: session.id, offset: from, bytes: held.dropped };
        out.send(Frame::new(0, DaemonMessage::Dropped(ev))).await.ok()?;
    }
    send_output(out, session.id, held.offset, held.data).await
}

async fn send_output(
    out: &Outgoing,
    session: SessionId,
    mut offset: u64,
    mut data: Bytes,
) -> Option<()> {
    while !data.is_empty() {
        let piece = data.split_to(data.len().min(MAX_EVENT_BYTES));
        let len = piece.len() as u64;
        let ev = DaemonMessage::Output(OutputEvent { session, offset });
        out.send(Frame::with_data(0, ev, piece)).await.ok()?;
        offset += len;
    }
    Some(())
}
