//! `lease` and `release`: an agent holds a session against its idle timeout.

use ipc_proto::{DaemonMessage, SessionId};

use super::{session, ReplyError};
use crate::connection::Connection;

pub async fn handle_lease(
    conn: &mut Connection,
    id: u64,
    sid: SessionId,
) -> Result<(), ReplyError> {
    let session = session(conn, sid)?;
    // One lease per connection and session: leasing twice is harmless.
    if let std::collections::hash_map::Entry::Vacant(slot) = conn.leases.entry(sid) {
        session.lease();
        slot.insert(session);
    }
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}

pub async fn handle_release(
    conn: &mut Connection,
    id: u64,
    sid: SessionId,
) -> Result<(), ReplyError> {
    session(conn, sid)?;
    if let Some(session) = conn.leases.remove(&sid) {
        session.release();
    }
    conn.reply(id, DaemonMessage::Ok).await;
    Ok(())
}
