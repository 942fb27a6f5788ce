//! The connections the WebSockets attach over: a few shared ones instead of one each.
//!
//! Each socket's attachment has a window of its own (ptyd's `attach` with `window`), so a
//! browser that is slow to render holds up only its own terminal, never the others on
//! its connection. A connection carries one attachment per terminal (attaching again on
//! the same connection would replace the first), so a terminal's second viewer goes on
//! another connection; and at most [`PER_CONNECTION`] attachments, so that no single
//! connection's tasks carry every terminal. A connection that ended is dropped from the
//! pool; its sockets end (or, for a live upgrade, follow onto a new one).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipc_proto::{Client, ClientError, IpcError, SessionId};

/// Attachments one shared connection carries at most.
pub const PER_CONNECTION: usize = 64;

/// Output in flight per attachment between ptyd and the bridge (beside what the bridge
/// holds for the browser's own flow control).
pub const WINDOW: u64 = 128 * 1024;

/// The pool of shared connections.
pub struct AttachLinks {
    socket: PathBuf,
    links: Mutex<Vec<Link>>,
    next_id: AtomicU64,
    /// One new connection at a time: after a live upgrade every socket looks for a place
    /// at once, and all but the first find the connection the first one made.
    connecting: tokio::sync::Mutex<()>,
}

struct Link {
    id: u64,
    client: Client,
    sessions: HashSet<SessionId>,
}

/// A terminal's place on a shared connection, given back when dropped.
pub struct Slot {
    links: Arc<AttachLinks>,
    link: u64,
    session: SessionId,
    client: Client,
}

impl Slot {
    /// The connection to attach on.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut links = self.links.links.lock().unwrap();
        if let Some(link) = links.iter_mut().find(|l| l.id == self.link) {
            link.sessions.remove(&self.session);
        }
        // One connection without attachments stays for the next socket; more go.
        let mut idle = 0;
        links.retain(|l| {
            idle += usize::from(l.sessions.is_empty());
            idle <= 1 || !l.sessions.is_empty()
        });
    }
}

impl AttachLinks {
    /// A pool of connections to the daemon at `socket`, none open yet.
    pub fn new(socket: PathBuf) -> Arc<AttachLinks> {
        Arc::new(AttachLinks {
            socket,
            links: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// A place for `session` on a connection that has none for it and room, opening a new
    /// connection when none has.
    pub async fn slot(self: &Arc<Self>, session: SessionId) -> Result<Slot, ClientError> {
        if let Some(slot) = self.place(session, None) {
            return Ok(slot);
        }
        let _turn = self.connecting.lock().await;
        if let Some(slot) = self.place(session, None) {
            return Ok(slot);
        }
        // Bounded: every other socket looking for a place waits behind this connect.
        let connect = Client::connect(&self.socket);
        let client = match tokio::time::timeout(crate::daemon_link::CONNECT_TIMEOUT, connect).await
        {
            Ok(client) => client?,
            Err(_) => return Err(IpcError::Timeout(crate::daemon_link::CONNECT_TIMEOUT).into()),
        };
        let slot = self.place(session, Some(client)).expect("a new connection has room");
        Ok(slot)
    }

    /// Takes a place on an open connection, or on `new` (added to the pool) when none
    /// fits.
    fn place(self: &Arc<Self>, session: SessionId, new: Option<Client>) -> Option<Slot> {
        let mut links = self.links.lock().unwrap();
        links.retain(|l| l.client.close_reason().is_none());
        let fits =
            |l: &&mut Link| l.sessions.len() < PER_CONNECTION && !l.sessions.contains(&session);
        let link = match links.iter_mut().find(fits) {
            Some(link) => link,
            None => {
                let client = new?;
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                links.push(Link { id, client, sessions: HashSet::new() });
                links.last_mut().expect("just pushed")
            }
        };
        link.sessions.insert(session);
        Some(Slot { links: self.clone(), link: link.id, session, client: link.client.clone() })
    }

    /// Open shared connections.
    pub fn connections(&self) -> usize {
        self.links.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ptyd stand-in that accepts connections and answers their hello.
    async fn fake_ptyd(dir: &std::path::Path) -> PathBuf {
        use futures::{SinkExt, StreamExt};
        use ipc_proto::{DaemonMessage, Frame, FrameCodec, HelloReply, Request};
        let path = dir.join("ptyd.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut framed = tokio_util::codec::Framed::new(
                        stream,
                        FrameCodec::<Request, DaemonMessage>::default(),
                    );
                    while let Some(Ok(Ok(frame))) = framed.next().await {
                        if let Request::Hello(h) = frame.body {
                            let reply = HelloReply {
                                protocol_version: h.protocol_version,
                                daemon_version: "test".into(),
                                pid: 1,
                            };
                            let _ = framed
                                .send(Frame::new(frame.id, DaemonMessage::Hello(reply)))
                                .await;
                        }
                    }
                });
            }
        });
        path
    }

    #[tokio::test]
    async fn a_terminal_has_one_place_per_connection_and_connections_fill_up_first() {
        let dir = tempfile::tempdir().unwrap();
        let links = AttachLinks::new(fake_ptyd(dir.path()).await);
        let (a, b) = (SessionId::new(), SessionId::new());
        let first = links.slot(a).await.unwrap();
        let other = links.slot(b).await.unwrap();
        assert_eq!(links.connections(), 1, "two terminals share a connection");
        // A second viewer of `a` cannot share its connection (it would replace the first).
        let second_viewer = links.slot(a).await.unwrap();
        assert_eq!(links.connections(), 2);
        assert_ne!(first.link, second_viewer.link);
        assert_eq!(other.link, first.link);
        // Places given back: one idle connection stays for the next socket.
        drop((first, other, second_viewer));
        assert_eq!(links.connections(), 1);
        // Many at once (as after an upgrade) open only what they need.
        let many = futures::future::join_all(
            (0..PER_CONNECTION + 1).map(|_| links.slot(SessionId::new())),
        );
        let slots: Vec<Slot> = many.await.into_iter().map(Result::unwrap).collect();
        assert_eq!(links.connections(), 2);
        drop(slots);
    }
}
