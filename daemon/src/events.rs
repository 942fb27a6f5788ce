//! The daemon-wide event feed (`subscribe`): spawned, exited, idle-killed and resized
//! sessions, broadcast to every subscriber. A subscriber that falls behind by more than
//! the buffer is told how many it missed (see `handlers/events.rs`).

use ipc_proto::{DaemonEvent, DaemonEventKind};
use tokio::sync::broadcast;

use crate::session::{now_ms, Session};

/// Daemon-wide events buffered per subscriber before it counts as lagging.
const EVENT_DEPTH: usize = 1024;

/// The broadcast of daemon-wide events.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<DaemonEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { tx: broadcast::channel(EVENT_DEPTH).0 }
    }
}

impl EventBus {
    /// Publishes an event about `session`; `fill` sets the kind's fields.
    pub fn emit(
        &self,
        event: DaemonEventKind,
        session: &Session,
        fill: impl FnOnce(&mut DaemonEvent),
    ) {
        let mut ev = DaemonEvent::new(event, session.id, now_ms());
        fill(&mut ev);
        // No subscribers is fine: nobody is listening.
        let _ = self.tx.send(ev);
    }

    /// A feed of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DaemonEvent> {
        self.tx.subscribe()
    }
}
