//! Attachments that go on across the daemon's live upgrades.
//!
//! When ptyd replaces its binary (`upgrade`), it closes every connection with the error
//! code `Upgrading`; new connections wait until the new image serves. A [`Follower`]
//! notices that, connects again and attaches from the offset after the last byte it
//! handed out, so its events go on with nothing lost and nothing twice. Requests that go
//! with the attachment (input, resize) use [`Links`], which follow the same reconnection.
//! Any other loss of the connection ends the events as an [`Attachment`]'s would.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::{Attachment, Client, SessionEvent};
use crate::error::ClientError;
use crate::message::{AttachReply, ScreenStart, SessionId};

/// How long a follower waits for the daemon to serve again after it began an upgrade.
pub const RELINK_LIMIT: Duration = Duration::from_secs(10);
/// Between attempts to connect meanwhile.
const RETRY: Duration = Duration::from_millis(20);

/// The connection a follower uses now, and how many times it was replaced.
#[derive(Clone, Debug)]
struct Link {
    generation: u64,
    client: Client,
}

/// How a follower gets a connection to attach on again: a new one of its own, or one it
/// shares with other followers (see [`Follower::with_connect`]).
pub type Connect = Arc<dyn Fn() -> BoxFuture<'static, Result<Client, ClientError>> + Send + Sync>;

/// A session's events across the daemon's upgrades (see the module's documentation).
pub struct Follower {
    connect: Connect,
    att: Attachment,
    first: AttachReply,
    /// The offset after the last byte handed out.
    next: u64,
    /// Lossless, as the first attachment was.
    lossless: bool,
    /// The first attachment's window, if it had one.
    window: Option<u64>,
    links: watch::Sender<Link>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("session", &self.session())
            .field("next", &self.next)
            .finish()
    }
}

/// Requests for a follower's session on whichever connection it has now.
#[derive(Clone, Debug)]
pub struct Links(watch::Receiver<Link>);

impl Follower {
    /// Follows `att` (made on a connection to the daemon at `socket`, `lossless` as it
    /// was asked).
    pub fn new(socket: impl Into<PathBuf>, att: Attachment, lossless: bool) -> Follower {
        let socket: PathBuf = socket.into();
        let connect: Connect = Arc::new(move || {
            let socket = socket.clone();
            Box::pin(async move { Client::connect(&socket).await })
        });
        Follower::with_connect(connect, att, lossless)
    }

    /// Follows `att`, re-attaching after an upgrade on the connection `connect` gives
    /// (many followers may share one), with the window `att` was made with.
    pub fn with_connect(connect: Connect, att: Attachment, lossless: bool) -> Follower {
        let first = att.reply.clone();
        let next = first.offset;
        let window = att.window();
        let link = Link { generation: 0, client: att.client().clone() };
        Follower { connect, att, first, next, lossless, window, links: watch::channel(link).0 }
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.first.session
    }

    /// The first attachment's reply: where the events start.
    pub fn reply(&self) -> &AttachReply {
        &self.first
    }

    /// The screen the first attachment started from, if it did.
    pub fn snapshot(&self) -> Option<&Bytes> {
        self.att.snapshot()
    }

    /// The connection in use now.
    pub fn client(&self) -> Client {
        self.links.borrow().client.clone()
    }

    /// How many times it re-attached after an upgrade.
    pub fn relinks(&self) -> u64 {
        self.links.borrow().generation
    }

    /// A handle for requests that must follow the same reconnections.
    pub fn links(&self) -> Links {
        Links(self.links.subscribe())
    }

    /// The next event; `None` after `Exit`, or when the connection ended other than by an
    /// upgrade (or the daemon did not serve the session again within [`RELINK_LIMIT`]).
    pub async fn next(&mut self) -> Option<SessionEvent> {
        loop {
            match self.att.next().await {
                Some(event) => {
                    match &event {
                        SessionEvent::Output { offset, data } => {
                            self.next = offset + data.len() as u64
                        }
                        SessionEvent::Dropped { offset, bytes } => self.next = offset + bytes,
                        SessionEvent::Exit(_) => {}
                    }
                    return Some(event);
                }
                None => {
                    let upgrading =
                        self.att.client().close_reason().is_some_and(|e| e.is_upgrading());
                    // Boxed: the rare re-link's state is not part of every wait for output.
                    if !upgrading || !Box::pin(self.relink()).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Connects again and attaches from `next`; false if the daemon does not serve the
    /// session again in time.
    async fn relink(&mut self) -> bool {
        let session = self.session();
        tracing::info!("ptyd is upgrading; re-attaching session {session} at offset {}", self.next);
        let deadline = Instant::now() + RELINK_LIMIT;
        while Instant::now() < deadline {
            let attempt = async {
                let client = (self.connect)().await?;
                let (since, lossless, never) = (Some(self.next), self.lossless, ScreenStart::Never);
                let att = match self.window {
                    Some(w) => client.attach_windowed(session, since, lossless, never, w).await?,
                    None => client.attach_from(session, since, lossless, never).await?,
                };
                Ok::<_, ClientError>((att, client))
            };
            match attempt.await {
                Ok((att, client)) => {
                    self.att = att;
                    self.links.send_modify(|link| {
                        link.generation += 1;
                        link.client = client;
                    });
                    tracing::info!("re-attached session {session} after ptyd's upgrade");
                    return true;
                }
                // The daemon answers but no longer has the session: nothing to go on with.
                Err(e @ ClientError::Daemon { .. }) if !e.is_upgrading() => {
                    tracing::warn!("cannot re-attach session {session} after ptyd's upgrade: {e}");
                    return false;
                }
                Err(_) => tokio::time::sleep(RETRY).await,
            }
        }
        tracing::warn!("ptyd did not serve session {session} again within {RELINK_LIMIT:?}");
        false
    }
}

impl Links {
    /// The connection in use now.
    pub fn client(&self) -> Client {
        self.0.borrow().client.clone()
    }

    /// Runs `call` on the current connection; if the daemon closed that connection to
    /// upgrade, once more on the next one, which the follower makes (waiting for it at
    /// most [`RELINK_LIMIT`]).
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let Link { generation, client } = self.0.borrow().clone();
        match call(client.clone()).await {
            Err(e)
                if e.is_upgrading() || client.close_reason().is_some_and(|r| r.is_upgrading()) =>
            {
                let mut rx = self.0.clone();
                let next = async {
                    let now = rx.wait_for(|link| link.generation > generation).await.ok()?;
                    Some(now.client.clone())
                };
                match tokio::time::timeout(RELINK_LIMIT, next).await {
                    Ok(Some(client)) => call(client).await,
                    _ => Err(e),
                }
            }
            other => other,
        }
    }
}
