//! `spawn`: start a session, optionally attached from its first byte.

use ipc_proto::{DaemonMessage, SpawnReply, SpawnRequest};

use super::{attach, ReplyError};
use crate::connection::Connection;
use crate::ring::Replay;

pub async fn handle(conn: &mut Connection, id: u64, req: SpawnRequest) -> Result<(), ReplyError> {
    let owned = req.close_with_connection;
    let (session, sub) = conn.pool.spawn(&conn.peer, req).await?;
    if owned {
        conn.owned.retain(|s| s.exit_status().is_none());
        conn.own(session.clone());
    }
    conn.reply(id, DaemonMessage::Spawned(SpawnReply { session: session.id, pid: session.pid }))
        .await;
    if let Some(sub) = sub {
        let replay = Replay { offset: 0, dropped: 0, data: Default::default() };
        attach::start_forwarding(conn, session, Some(sub), replay);
    }
    Ok(())
}
