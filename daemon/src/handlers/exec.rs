//! `exec`: run a command to completion and answer with its status and bounded output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ipc_proto::{AttachMode, DaemonMessage, ExecRequest, ExecResult, Frame, SpawnRequest};

use super::{answer_later, send_result, ReplyError};
use crate::connection::Connection;
use crate::ring::OutputRing;
use crate::session::EndReason;

/// The most output an exec result carries, so it fits in one frame.
const MAX_OUTPUT: usize = ipc_proto::MAX_PAYLOAD_LEN;

pub async fn handle(conn: &mut Connection, id: u64, req: ExecRequest) -> Result<(), ReplyError> {
    let max_output = req.max_output.unwrap_or(MAX_OUTPUT).min(MAX_OUTPUT);
    let spawn = SpawnRequest {
        command: req.command,
        args: req.args,
        env: req.env,
        cwd: req.cwd,
        cols: req.cols,
        rows: req.rows,
        labels: BTreeMap::from([("ptyd.exec".to_string(), "1".to_string())]),
        idle_timeout_ms: Some(0),
        replay_bytes: None,
        attach: Some(AttachMode { lossless: true }),
        close_with_connection: true,
        // A command run to completion is an agent's, never a person's terminal.
        interactive: false,
    };
    let started = Instant::now();
    // Spawned in the read loop, so that it is ordered with the requests around it.
    let (session, sub) = conn.pool.spawn(&conn.peer, spawn).await?;
    conn.own(session.clone());
    let Some(sub) = sub else {
        return Err(ReplyError::new(
            ipc_proto::ErrorCode::Internal,
            "attached spawn returned no subscription",
        ));
    };
    let out = conn.out.clone();
    answer_later(conn, async move {
        // The output ring doubles as the tail buffer: it keeps the last bytes and counts all.
        let mut tail = OutputRing::new(max_output);
        let timed_out = {
            let collect = async {
                while let Ok(chunk) = sub.rx.recv_async().await {
                    tail.push(&chunk.data);
                }
            };
            tokio::pin!(collect);
            match req.timeout_ms {
                Some(ms) => {
                    match tokio::time::timeout(Duration::from_millis(ms), &mut collect).await {
                        Ok(()) => false,
                        Err(_) => {
                            tracing::info!(session_id = %session.id, "exec timed out after {ms} ms; ending its process group");
                            session.request_end(EndReason::ExecTimeout);
                            collect.await;
                            true
                        }
                    }
                }
                None => {
                    collect.await;
                    false
                }
            }
        };
        let status = session.wait().await;
        let kept = tail.since(None).data;
        let result = ExecResult {
            session: session.id,
            code: status.code,
            signal: status.signal,
            timed_out,
            truncated: tail.end() > kept.len() as u64,
            total_bytes: tail.end(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        send_result(&out, id, Ok(Frame::with_data(id, DaemonMessage::ExecResult(result), kept)))
            .await;
    });
    Ok(())
}
