//! `upgrade`: replace the daemon's binary without ending a session (`upgrade/`).

use ipc_proto::{ErrorCode, UpgradeRequest};
use tracing::warn;

use super::ReplyError;
use crate::connection::Connection;

pub async fn handle(conn: &mut Connection, id: u64, req: UpgradeRequest) -> Result<(), ReplyError> {
    let Some(upgrader) = conn.pool.upgrader.get() else {
        return Err(ReplyError::new(ErrorCode::Internal, "ptyd is not serving yet"));
    };
    if conn.peer.uid != nix::unistd::geteuid().as_raw() && conn.peer.uid != 0 {
        warn!(peer = %conn.peer, "refused an upgrade from another user");
        return Err(ReplyError::new(
            ErrorCode::PermissionDenied,
            "only the daemon's own user or root may upgrade it",
        ));
    }
    // SAFETY of the borrow: the connection's socket is open while it is served.
    #[allow(unsafe_code)]
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(conn.fd) };
    let out = conn.out.clone();
    let flush = async move {
        let _ = out.flushed().await;
    };
    // Returns only if the upgrade did not happen; else the new image answers.
    Err(upgrader.upgrade(&conn.pool, fd, flush, id, req).await)
}
