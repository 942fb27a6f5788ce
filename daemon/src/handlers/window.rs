//! Flow control of one attachment by its client's acknowledgements (`attach` with a
//! `window`, then `ack`): a client carrying many sessions over one connection lets each
//! have output in flight up to its window, so one that is slow to take its output holds
//! up only its own session, never the connection.

use ipc_proto::{AckRequest, DaemonMessage, SessionId};
use tokio::sync::watch;

use super::ReplyError;
use crate::connection::Connection;

/// The forwarding task's side: how far it may send.
pub struct Credit {
    window: u64,
    acked: watch::Receiver<u64>,
}

/// The connection's side: where acks for the attachment go.
pub type Acks = watch::Sender<u64>;

/// A window of `window` bytes counted from `start` (the attachment's first offset).
pub fn open(window: u64, start: u64) -> (Acks, Credit) {
    let (tx, acked) = watch::channel(start);
    (tx, Credit { window, acked })
}

impl Credit {
    /// Waits until output may go out from `sent` on (fewer than `window` bytes sent past
    /// the last ack); `None` once the attachment is gone (detached, connection closed).
    pub async fn room(&mut self, sent: u64) -> Option<()> {
        let window = self.window;
        self.acked.wait_for(|acked| sent.saturating_sub(*acked) < window).await.ok().map(drop)
    }
}

/// Waits for room when the attachment has a window; at once when it has none.
pub async fn room(credit: &mut Option<Credit>, sent: u64) -> Option<()> {
    match credit {
        Some(credit) => credit.room(sent).await,
        None => Some(()),
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
