//! `spawn`: start a session, optionally attached from its first byte.

use ipc_proto::{DaemonMessage, ErrorCode, Frame, SpawnReply, SpawnRequest};

use super::{answer_later, attach, send_result, ReplyError};
use crate::connection::Connection;
use crate::ring::Replay;

pub async fn handle(conn: &mut Connection, id: u64, req: SpawnRequest) -> Result<(), ReplyError> {
    if req.attach.is_none() && !req.close_with_connection {
        // Nothing else on this connection depends on it, so the connection's next requests
        // go on while the program starts (a bridge creates terminals for many people over
        // one connection), up to the connection's share of spawns under way; past that
        // its next requests wait. (The semaphore is never closed.)
        let turn = conn.spawns.clone().acquire_owned().await.ok();
        let job = conn.pool.spawn_apart(conn.peer, req);
        let out = conn.out.clone();
        answer_later(conn, async move {
            let result = job.await;
            drop(turn);
            let result = match result {
                Ok(Ok(session)) => Ok(spawned(id, &session)),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(ReplyError::new(ErrorCode::Internal, format!("spawn failed: {e}"))),
            };
            send_result(&out, id, result).await;
        });
        return Ok(());
    }
    let owned = req.close_with_connection;
    let (session, sub) = conn.pool.spawn(&conn.peer, req).await?;
    if owned {
        conn.owned.retain(|s| s.exit_status().is_none());
        conn.own(session.clone());
    }
    let _ = conn.out.send(spawned(id, &session)).await;
    if let Some(sub) = sub {
        let replay = Replay { offset: 0, dropped: 0, data: Default::default() };
        attach::start_forwarding(conn, session, Some(sub), replay, None);
    }
    Ok(())
}

fn spawned(id: u64, session: &crate::session::Session) -> Frame<DaemonMessage> {
    Frame::new(id, DaemonMessage::Spawned(SpawnReply { session: session.id, pid: session.pid }))
}
