//! A socket's link to ptyd that outlives ptyd's live upgrade, through ipc-proto's
//! [`Follower`]: when ptyd closes the connection because it is replacing its binary, the
//! output side connects again and attaches from the offset after the last byte it passed
//! on, so the browser sees a pause, not a reconnect: nothing lost, nothing twice. Input
//! sent meanwhile goes on the new connection ([`Links`]). Any other loss ends the socket
//! as before (`IpcLost`). The connections are shared ones ([`crate::attach_links`]): the
//! follower takes its place on one after an upgrade as it did before.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ipc_proto::{ClientError, Connect, EndReason, Follower, Links, SessionId};

use super::session::{InputTarget, OutputSource};
use crate::attach_links::{AttachLinks, Slot, WINDOW};

/// The terminal's output, re-attached across ptyd's upgrades.
pub struct RelinkedOutput {
    follower: Follower,
    /// The attachment's place on its shared connection, held while it lives.
    _slot: Arc<Mutex<Option<Slot>>>,
}

impl RelinkedOutput {
    /// Attaches to `session` on a place `slot` of the shared connections `links` (from
    /// `since`, lossless, starting from the screen as `screen` says, with the bridge's
    /// window), following it across ptyd's upgrades.
    pub async fn attach(
        links: Arc<AttachLinks>,
        slot: Slot,
        session: SessionId,
        since: Option<u64>,
        screen: ipc_proto::ScreenStart,
    ) -> Result<RelinkedOutput, ClientError> {
        let att = slot.client().attach_windowed(session, since, true, screen, WINDOW).await?;
        let holder = Arc::new(Mutex::new(Some(slot)));
        let connect: Connect = {
            let holder = holder.clone();
            Arc::new(move || {
                let (links, holder) = (links.clone(), holder.clone());
                Box::pin(async move {
                    // The old place is on the connection that closed for the upgrade.
                    drop(holder.lock().unwrap().take());
                    let slot = links.slot(session).await?;
                    let client = slot.client().clone();
                    *holder.lock().unwrap() = Some(slot);
                    Ok(client)
                })
            })
        };
        Ok(RelinkedOutput { follower: Follower::with_connect(connect, att, true), _slot: holder })
    }

    /// Requests that follow the same connections.
    pub fn links(&self) -> Links {
        self.follower.links()
    }

    /// The attachment's reply (where the stream starts).
    pub fn reply(&self) -> &ipc_proto::AttachReply {
        self.follower.reply()
    }

    /// The screen the stream starts from, if it does.
    pub fn snapshot(&self) -> Option<&Bytes> {
        self.follower.snapshot()
    }
}

/// The terminal's input, on whichever connection the output side has now.
pub struct RelinkedInput {
    /// The terminal.
    pub id: SessionId,
    /// The follower's connections.
    pub links: Links,
}

impl OutputSource for RelinkedOutput {
    async fn next_event(&mut self) -> Option<ipc_proto::SessionEvent> {
        self.follower.next().await
    }

    async fn end_reason(&mut self) -> String {
        // Once the connection is over, any call fails at once with its reason.
        match self.follower.client().info(self.follower.session()).await {
            Err(e) => e.detail(),
            Ok(_) => "ptyd ended the attachment".into(),
        }
    }

    async fn exit_reason(&mut self) -> Option<EndReason> {
        // ptyd keeps the record of an exited session: it says why.
        self.follower.client().info(self.follower.session()).await.ok()?.end_reason
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
