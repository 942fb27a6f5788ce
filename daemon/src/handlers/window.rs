//! Flow control of one attachment by its client's acknowledgements (`attach` with a
//! `window`, then `ack`): a client carrying many sessions over one connection lets each
//! have output in flight up to its window, so one that is slow to take its output holds
//! up only its own session, never the connection.

use std::collections::VecDeque;

use ipc_proto::{AckRequest, DaemonMessage, SessionId};
use tokio::sync::watch;

use super::ReplyError;
use crate::connection::Connection;

/// What each event counts against a window besides its payload, so that a window also
/// bounds how many events a client may have to hold (a program printing a byte at a
/// time would otherwise have a 128 KiB window send 131 072 of them).
pub const EVENT_COST: u64 = 64;

/// The forwarding task's side: how far it may send.
pub struct Credit {
    window: u64,
    acked: watch::Receiver<u64>,
    /// The events sent and not yet acknowledged: where each ends, what it costs.
    unacked: VecDeque<(u64, u64)>,
}

/// The connection's side: where acks for the attachment go.
pub type Acks = watch::Sender<u64>;

/// A window of `window` bytes counted from `start` (the attachment's first offset).
pub fn open(window: u64, start: u64) -> (Acks, Credit) {
    let (tx, acked) = watch::channel(start);
    (tx, Credit { window, acked, unacked: VecDeque::new() })
}

impl Credit {
    /// Waits until another event may go out: the events sent and not acknowledged (an
    /// event is once the ack reaches its end) cost less than the window, each its bytes
    /// plus [`EVENT_COST`]. Bytes reported as dropped cost nothing. `None` once the
    /// attachment is gone (detached, connection closed).
    pub async fn room(&mut self) -> Option<()> {
        let (window, unacked) = (self.window, &self.unacked);
        let acked = *self
            .acked
            .wait_for(|acked| {
                let in_flight = unacked.iter().rev().take_while(|(end, _)| *end > *acked);
                in_flight.map(|(_, cost)| cost).sum::<u64>() < window
            })
            .await
            .ok()?;
        while self.unacked.front().is_some_and(|(end, _)| *end <= acked) {
            self.unacked.pop_front();
        }
        Some(())
    }

    /// Counts an event of `len` bytes, ending at `end`, that went out.
    pub fn sent(&mut self, end: u64, len: u64) {
        self.unacked.push_back((end, len + EVENT_COST));
    }
}

/// Waits for room for another event when the attachment has a window (at once when it
/// has none).
pub async fn room(credit: &mut Option<Credit>) -> Option<()> {
    match credit {
        Some(credit) => credit.room().await,
        None => Some(()),
    }
}

/// Counts an event of `len` bytes ending at `end` against the window, if there is one.
pub fn sent(credit: &mut Option<Credit>, end: u64, len: u64) {
    if let Some(credit) = credit {
        credit.sent(end, len);
    }
}

/// Refuses a window of 0, with which nothing could ever be sent.
pub fn check(window: Option<u64>) -> Result<(), ReplyError> {
    match window {
        Some(0) => Err(ReplyError::bad("window must be at least 1 byte")),
        _ => Ok(()),
    }
}

pub async fn handle_ack(conn: &mut Connection, id: u64, req: AckRequest) -> Result<(), ReplyError> {
    let Some(acks) = conn.windows.get(&req.session) else {
        return Err(not_windowed(req.session));
    };
    // Acks only move forward; a stale one (sent before a later one arrived) is no news.
    acks.send_if_modified(|acked| {
        let later = req.offset > *acked;
        if later {
            *acked = req.offset;
        }
        later
    });
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}

fn not_windowed(session: SessionId) -> ReplyError {
    ReplyError::bad(format!("session {session} is not attached with a window on this connection"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn bytes_and_events_count_against_the_window_until_acknowledged() {
        let (acks, mut credit) = open(1000, 0);
        // One-byte events: each costs 65, so 16 go out (975 before the last).
        let mut sent = 0;
        while credit.room().now_or_never().is_some() {
            sent += 1;
            credit.sent(sent, 1);
            assert!(sent < 100, "the window never filled");
        }
        assert_eq!(sent, 16);
        acks.send_replace(8);
        assert!(credit.room().now_or_never().is_some(), "room after an ack");
        assert_eq!(credit.unacked.len(), 8, "acknowledged events are forgotten");
        // Bytes: one large event fills it; the next waits. Dropped bytes between events
        // (a lossy attachment) cost nothing.
        let (acks, mut credit) = open(1000, 100);
        assert!(credit.room().now_or_never().is_some());
        credit.sent(1100, 1000);
        assert!(credit.room().now_or_never().is_none());
        acks.send_replace(1100);
        assert!(credit.room().now_or_never().is_some());
        credit.sent(900_000, 10);
        assert!(credit.room().now_or_never().is_some(), "a gap counted against the window");
    }
}
