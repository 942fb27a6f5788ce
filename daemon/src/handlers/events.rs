//! `subscribe`: stream daemon-wide session events to this connection.

use ipc_proto::{DaemonMessage, EventsDropped, Frame};
use tokio::sync::broadcast::error::RecvError;

use super::ReplyError;
use crate::connection::Connection;

pub async fn handle_subscribe(conn: &mut Connection, id: u64) -> Result<(), ReplyError> {
    if conn.events.as_ref().is_some_and(|t| !t.is_finished()) {
        conn.reply(id, DaemonMessage::Ok).await;
        return Ok(());
    }
    // Subscribe before replying so that no event after the reply can be missed.
    let mut rx = conn.pool.events.subscribe();
    conn.reply(id, DaemonMessage::Ok).await;
    let out = conn.out.clone();
    let task = tokio::spawn(async move {
        loop {
            let msg = match rx.recv().await {
                Ok(ev) => DaemonMessage::Event(ev),
                Err(RecvError::Lagged(count)) => {
                    DaemonMessage::EventsDropped(EventsDropped { count })
                }
                Err(RecvError::Closed) => return,
            };
            if out.send(Frame::new(0, msg)).await.is_err() {
                return;
            }
        }
    });
    conn.events = Some(task.abort_handle());
    Ok(())
}
