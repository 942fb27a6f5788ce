//! A socket's link to ptyd that outlives ptyd's live upgrade, through ipc-proto's
//! [`Follower`]: when ptyd closes the connection because it is replacing its binary, the
//! output side connects again and attaches from the offset after the last byte it passed
//! on, so the browser sees a pause, not a reconnect: nothing lost, nothing twice. Input
//! sent meanwhile goes on the new connection ([`Links`]). Any other loss ends the socket
//! as before (`IpcLost`).

use bytes::Bytes;
use ipc_proto::{ClientError, EndReason, Follower, Links, SessionId};

use super::session::{InputTarget, OutputSource};

/// The terminal's output, re-attached across ptyd's upgrades.
pub struct RelinkedOutput(pub Follower);

/// The terminal's input, on whichever connection the output side has now.
pub struct RelinkedInput {
    /// The terminal.
    pub id: SessionId,
    /// The follower's connections.
    pub links: Links,
}

impl OutputSource for RelinkedOutput {
    async fn next_event(&mut self) -> Option<ipc_proto::SessionEvent> {
        self.0.next().await
    }

    async fn end_reason(&mut self) -> String {
        // Once the connection is over, any call fails at once with its reason.
        match self.0.client().info(self.0.session()).await {
            Err(e) => e.detail(),
            Ok(_) => "ptyd ended the attachment".into(),
        }
    }

    async fn exit_reason(&mut self) -> Option<EndReason> {
        // ptyd keeps the record of an exited session: it says why.
        self.0.client().info(self.0.session()).await.ok()?.end_reason
    }
}

impl InputTarget for RelinkedInput {
    async fn input(&self, data: Bytes) -> Result<(), ClientError> {
        let id = self.id;
        self.links
            .call(|c| {
                let data = data.clone();
                async move { c.input(id, data).await }
            })
            .await
    }

    async fn resize(&self, cols: u16, rows: u16) -> Result<(), ClientError> {
        let id = self.id;
        self.links.call(|c| async move { c.resize(id, cols, rows).await }).await
    }
}
