//! `attach` and `detach`, and the task that forwards a session's output to a client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ipc_proto::{
    AttachReply, AttachRequest, DaemonMessage, DroppedEvent, ExitEvent, Frame, OutputEvent,
    ScreenStart, SessionId,
};

use super::window::{self, Credit};
use super::{session, ReplyError};
use crate::connection::{Connection, Outgoing};
use crate::ring::Replay;
use crate::session::screen::Snapshot;
use crate::session::{AttachMode, Session, Subscription};

/// Output events carry at most this much, so replays of large windows stay in frame.
const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Live output queued for a client is merged into events of up to this much: as large as
/// one read, so that what a client's flow control lets through past its mark is never
/// more than one read, whether or not the client fell behind.
const MERGED_EVENT_BYTES: usize = crate::pty_io::READ_CHUNK;
const _: () = assert!(MERGED_EVENT_BYTES <= MAX_EVENT_BYTES);

pub async fn handle_attach(
    conn: &mut Connection,
    id: u64,
    req: AttachRequest,
) -> Result<(), ReplyError> {
    let session = session(conn, req.session)?;
    window::check(req.window)?;
    let mode = AttachMode::from_lossless(req.lossless);
    let from_screen = match req.screen {
        ScreenStart::Never => false,
        ScreenStart::Always => true,
        // Bytes while `since` is inside the window: the cheapest exact path.
        ScreenStart::Auto => req.since.is_none_or(|since| since < session.output_start()),
    } && session.has_screen();
    if from_screen {
        return attach_from_screen(conn, id, session, req.since, mode, req.window).await;
    }
    let (replay, end, sub) = session.subscribe(req.since, mode)?;
    let reply = AttachReply::bytes(session.id, replay.offset, replay.dropped, end);
    conn.reply(id, DaemonMessage::Attached(reply)).await;
    start_forwarding(conn, session, sub, replay, req.window);
    Ok(())
}

/// How long an attach waits for the screen to catch up with the output it subscribed
/// after (the reader thread updates it right after the ring; this is a bound, not a wait
/// anyone should see).
const SCREEN_CATCH_UP: Duration = Duration::from_millis(500);

/// Subscribes to live output, then sends the screen as of an offset at or past the
/// subscription's start and forwards live output from exactly that offset.
async fn attach_from_screen(
    conn: &mut Connection,
    id: u64,
    session: Arc<Session>,
    since: Option<u64>,
    mode: AttachMode,
    window: Option<u64>,
) -> Result<(), ReplyError> {
    let (_, end, sub) = session.subscribe(Some(session.output_end()), mode)?;
    let scrollback = conn.pool.config.scrollback_lines.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + SCREEN_CATCH_UP;
    let snap = loop {
        let snap = fitting_snapshot(&session, scrollback)?;
        if snap.offset >= end || tokio::time::Instant::now() >= deadline {
            break snap;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let reply = AttachReply {
        session: session.id,
        offset: snap.offset,
        // What the client asked for as bytes and gets as a screen instead.
        dropped: since.map_or(0, |since| snap.offset.saturating_sub(since)),
        end,
        snapshot: true,
        cols: Some(snap.cols),
        rows: Some(snap.rows),
    };
    let frame = Frame::with_data(id, DaemonMessage::Attached(reply), Bytes::from(snap.ansi));
    let _ = conn.out.send(frame).await;
    // Live output from the screen's offset: what the subscription has before it is
    // skipped, and if the screen lagged behind the subscription, the ring fills the gap.
    let start = Replay { offset: snap.offset, data: Bytes::new(), dropped: 0 };
    start_forwarding(conn, session, sub, start, window);
    Ok(())
}

/// The screen with as much history as fits one frame.
fn fitting_snapshot(session: &Session, mut scrollback: usize) -> Result<Snapshot, ReplyError> {
    loop {
        let snap = session.snapshot(scrollback).map_err(|e| ReplyError::bad(e.to_string()))?;
        if snap.ansi.len() <= ipc_proto::MAX_PAYLOAD_LEN - 64 * 1024 || scrollback == 0 {
            return Ok(snap);
        }
        scrollback /= 2;
    }
}

pub async fn handle_detach(
    conn: &mut Connection,
    id: u64,
    sid: SessionId,
) -> Result<(), ReplyError> {
    session(conn, sid)?;
    conn.remove_attachment(sid);
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}

/// Sends `replay`, then live output, then the exit event, in a task of its own; with a
/// `window`, only as far as the client's acks allow.
pub fn start_forwarding(
    conn: &mut Connection,
    session: Arc<Session>,
    sub: Option<Subscription>,
    replay: Replay,
    window: Option<u64>,
) {
    let sid = session.id;
    let (acks, credit) = match window {
        Some(window) => {
            let (acks, credit) = window::open(window, replay.offset);
            (Some(acks), Some(credit))
        }
        None => (None, None),
    };
    let task = tokio::spawn(forward(session, sub, replay, conn.out.clone(), credit));
    conn.add_attachment(sid, task.abort_handle(), acks);
}

async fn forward(
    session: Arc<Session>,
    sub: Option<Subscription>,
    replay: Replay,
    out: Outgoing,
    mut credit: Option<Credit>,
) -> Option<()> {
    let sid = session.id;
    let mut next = replay.offset + replay.data.len() as u64;
    // Boxed, as the gaps below: the idle wait for output keeps only its own state.
    Box::pin(send_output(&out, sid, replay.offset, replay.data, &mut credit)).await?;
    if let Some(mut sub) = sub {
        while let Some(mut chunk) = sub.next_merged(MERGED_EVENT_BYTES).await {
            let chunk_end = chunk.offset + chunk.data.len() as u64;
            if chunk_end <= next {
                // Already covered (by the screen an attach started from).
                continue;
            }
            if chunk.offset < next {
                chunk.data = chunk.data.slice((next - chunk.offset) as usize..);
                chunk.offset = next;
            }
            if chunk.offset > next {
                // This client was too slow for some chunks: resend what the ring still has.
                Box::pin(send_gap(&out, &session, next, chunk.offset, &mut credit)).await?;
            }
            window::room(&mut credit).await?;
            next = chunk.offset + chunk.data.len() as u64;
            window::sent(&mut credit, next, chunk.data.len() as u64);
            let ev = DaemonMessage::Output(OutputEvent { session: sid, offset: chunk.offset });
            // One frame, holding the chunk's share of the subscriber's budget until it is
            // written.
            out.send_held(Frame::with_data(0, ev, chunk.data), chunk.held).await.ok()?;
        }
        // The session ended; a lossy client may have missed the last chunks.
        let end = session.output_end();
        if end > next {
            Box::pin(send_gap(&out, &session, next, end, &mut credit)).await?;
        }
    }
    let status = session.exit_status()?;
    out.send(Frame::new(0, DaemonMessage::Exit(ExitEvent { session: sid, status }))).await.ok()
}

async fn send_gap(
    out: &Outgoing,
    session: &Session,
    from: u64,
    to: u64,
    credit: &mut Option<Credit>,
) -> Option<()> {
    let held = session.read_range(from, to);
    if held.dropped > 0 {
        let ev = DroppedEvent { session: session.id, offset: from, bytes: held.dropped };
        out.send(Frame::new(0, DaemonMessage::Dropped(ev))).await.ok()?;
    }
    send_output(out, session.id, held.offset, held.data, credit).await
}

async fn send_output(
    out: &Outgoing,
    session: SessionId,
    mut offset: u64,
    mut data: Bytes,
    credit: &mut Option<Credit>,
) -> Option<()> {
    while !data.is_empty() {
        window::room(credit).await?;
        let piece = data.split_to(data.len().min(MAX_EVENT_BYTES));
        let len = piece.len() as u64;
        window::sent(credit, offset + len, len);
        let ev = DaemonMessage::Output(OutputEvent { session, offset });
        out.send(Frame::with_data(0, ev, piece)).await.ok()?;
        offset += len;
    }
    Some(())
}
