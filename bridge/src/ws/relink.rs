//! A socket's link to ptyd that outlives ptyd's live upgrade. When ptyd closes the
//! connection because it is replacing its binary (`Upgrading`), the output side connects
//! again (new connections wait until the new image serves) and attaches from the offset
//! after the last byte it passed on, so the browser sees a pause, not a reconnect: nothing
//! lost, nothing twice. Input sent meanwhile waits for the new connection and goes on it.
//! Any other loss ends the socket as before (`IpcLost`).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ipc_proto::{Attachment, Client, ClientError, EndReason, ScreenStart, SessionEvent, SessionId};
use tokio::sync::watch;
use tokio::time::Instant;

use super::session::{InputTarget, OutputSource};

/// How long a terminal waits for ptyd to serve again after it began an upgrade.
const RELINK_LIMIT: Duration = Duration::from_secs(10);
/// Between attempts to connect while it has not.
const RETRY: Duration = Duration::from_millis(20);

/// The connection a socket uses now, and how many times it was replaced.
type Current = watch::Sender<(u64, Client)>;

/// The terminal's output, re-attached across ptyd's upgrades.
pub struct RelinkedOutput {
    att: Attachment,
    socket: PathBuf,
    id: SessionId,
    /// The offset after the last byte handed to the socket loop.
    next: u64,
    current: Current,
}

/// The terminal's input, on whichever connection the output side has now.
pub struct RelinkedInput {
    id: SessionId,
    current: watch::Receiver<(u64, Client)>,
}

/// Both sides of a socket's link to ptyd, starting from `att` (on `client`).
pub fn link(socket: PathBuf, client: Client, att: Attachment) -> (RelinkedOutput, RelinkedInput) {
    let id = att.session();
    let next = att.reply.offset;
    let (current, rx) = watch::channel((0, client));
    (RelinkedOutput { att, socket, id, next, current }, RelinkedInput { id, current: rx })
}

impl RelinkedOutput {
    /// Connects again and attaches from `next`; false if ptyd does not serve the terminal
    /// again within the limit.
    async fn relink(&mut self) -> bool {
        tracing::info!(
            "ptyd is upgrading; re-attaching terminal {} at offset {}",
            self.id,
            self.next
        );
        let deadline = Instant::now() + RELINK_LIMIT;
        while Instant::now() < deadline {
            let attempt = async {
                let client = Client::connect(&self.socket).await?;
                let att = client.attach_from(self.id, Some(self.next), true, ScreenStart::Never);
                Ok::<_, ClientError>((att.await?, client))
            };
            match attempt.await {
                Ok((att, client)) => {
                    if att.reply.dropped > 0 {
                        // Cannot happen with a lossless attachment; say so if it does.
                        tracing::warn!(
                            "{} bytes of terminal {} were lost",
                            att.reply.dropped,
                            self.id
                        );
                    }
                    self.att = att;
                    self.current.send_modify(|(gen, c)| {
                        *gen += 1;
                        *c = client;
                    });
                    tracing::info!("re-attached terminal {} after ptyd's upgrade", self.id);
                    return true;
                }
                // The session is gone: nothing to go on with.
                Err(e @ ClientError::Daemon { .. }) => {
                    tracing::warn!(
                        "cannot re-attach terminal {} after ptyd's upgrade: {e}",
                        self.id
                    );
                    return false;
                }
                Err(_) => tokio::time::sleep(RETRY).await,
            }
        }
        tracing::warn!("ptyd did not serve terminal {} again within {RELINK_LIMIT:?}", self.id);
        false
    }
}

impl OutputSource for RelinkedOutput {
    async fn next_event(&mut self) -> Option<SessionEvent> {
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
                    if !upgrading || !self.relink().await {
                        return None;
                    }
                }
            }
        }
    }

    async fn end_reason(&mut self) -> String {
        // Once the connection is over, any call fails at once with its reason.
        match self.att.client().info(self.id).await {
            Err(e) => e.detail(),
            Ok(_) => "ptyd ended the attachment".into(),
        }
    }

    async fn exit_reason(&mut self) -> Option<EndReason> {
        // ptyd keeps the record of an exited session: it says why.
        self.att.client().info(self.id).await.ok()?.end_reason
    }
}

impl RelinkedInput {
    /// Runs `call` on the current connection; if ptyd closed it to upgrade, once more on
    /// the next one (the output side makes it), waiting for that at most the limit.
    async fn on_current<F, Fut>(&self, call: F) -> Result<(), ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<(), ClientError>>,
    {
        let (gen, client) = self.current.borrow().clone();
        match call(client.clone()).await {
            Err(e)
                if e.is_upgrading() || client.close_reason().is_some_and(|r| r.is_upgrading()) =>
            {
                let mut rx = self.current.clone();
                let next = async {
                    let now = rx.wait_for(|(g, _)| *g > gen).await.ok()?;
                    Some(now.1.clone())
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

impl InputTarget for RelinkedInput {
    async fn input(&self, data: Bytes) -> Result<(), ClientError> {
        let id = self.id;
        self.on_current(|c| {
            let data = data.clone();
            async move { c.input(id, data).await }
        })
        .await
    }

    async fn resize(&self, cols: u16, rows: u16) -> Result<(), ClientError> {
        let id = self.id;
        self.on_current(|c| async move { c.resize(id, cols, rows).await }).await
    }
}
