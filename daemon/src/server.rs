//! Accepting connections: the peer-credential check, one task per connection, and the
//! drain at shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use ipc_proto::{DaemonMessage, ErrorCode, ErrorReply, Frame, FrameCodec, Request};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

use crate::admission::Peer;
use crate::connection;
use crate::frame_budget::FrameBudget;
use crate::pool::PtyPool;

/// How long connections get to flush their last frames once the sessions have ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Accepts until `stop`, then ends every session and closes every connection.
pub async fn serve(listener: UnixListener, pool: Arc<PtyPool>, stop: CancellationToken) {
    let conns = TaskTracker::new();
    let conn_stop = CancellationToken::new();
    let budget = FrameBudget::new(pool.config.max_partial_frame_bytes);
    let mut frozen = pool.quiesce.watch();
    loop {
        // While a live upgrade hands over, new clients wait in the listener's backlog for
        // the next image (or for this one, if the upgrade does not happen).
        if *frozen.borrow_and_update() {
            tokio::select! {
                _ = frozen.changed() => continue,
                _ = stop.cancelled() => break,
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = frozen.changed() => continue,
            _ = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and keep serving.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(cred) = stream.peer_cred() else {
            warn!("refused a peer whose credentials could not be read");
            continue;
        };
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid().unwrap_or(0));
        let span = tracing::info_span!("conn", peer_uid = uid, peer_pid = pid);
        if !peer_allowed(uid, gid, pid, pool.config.allow_gid) {
            warn!(parent: &span, "refused peer uid {uid} pid {pid}: not the daemon's user, root or an allowed group");
            let message = format!("peer uid {uid} (pid {pid}) is not allowed to use this ptyd");
            conns.spawn(refuse(stream, message));
            continue;
        }
        let peer = Peer { uid, gid, pid };
        let conn = connection::serve(stream, peer, pool.clone(), budget.clone(), conn_stop.clone());
        conns.spawn(conn.instrument(span));
    }
    drop(listener);
    info!(active_count = pool.active(), "stopped accepting; ending sessions");
    pool.shutdown().await;
    conn_stop.cancel();
    conns.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, conns.wait()).await.is_err() {
        warn!("some connections did not close in time");
    }
}

/// The daemon's own uid and root may connect; so may members of the allowed group.
fn peer_allowed(uid: u32, gid: u32, pid: i32, allow_gid: Option<u32>) -> bool {
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return true;
    }
    let Some(allowed) = allow_gid else { return false };
    gid == allowed || supplementary_groups(pid).contains(&allowed)
}

/// The peer's supplementary groups, from /proc (SO_PEERCRED carries only the primary).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// Tells a refused peer why, then lingers until it hangs up (at most a second): closing
/// at once would make the peer's first write fail before it reads the reason.
async fn refuse(stream: UnixStream, message: String) {
    let (mut rd, wr) = stream.into_split();
    let mut w = FramedWrite::new(wr, FrameCodec::<Request, DaemonMessage>::default());
    let err = DaemonMessage::Error(ErrorReply { code: ErrorCode::PermissionDenied, message });
    let linger = async {
        if w.send(Frame::new(0, err)).await.is_err() {
            return;
        }
        // Whatever the peer sends is discarded unread: it is not allowed to ask anything.
        let mut sink = [0u8; 4096];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}
