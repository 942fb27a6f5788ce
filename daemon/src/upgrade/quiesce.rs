//! Holding the daemon still for a handover: no connection is accepted (clients wait in
//! the listener's backlog), open connections close with a reason, and no session's
//! output is read, so that each output ring ends exactly where the kernel's buffer
//! begins, and no spawn is under way. [`Quiesce::freeze`] returns once all of that holds;
//! [`Quiesce::thaw`] undoes it when the upgrade does not go ahead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// The daemon-wide switch, and who has stopped for it.
#[derive(Debug)]
pub struct Quiesce {
    frozen: watch::Sender<bool>,
    /// Output tasks alive, and those of them parked.
    readers: AtomicUsize,
    parked: AtomicUsize,
    /// Client connections open.
    connections: AtomicUsize,
    /// Spawns answered apart from their connection's read loop, not finished yet.
    spawns: AtomicUsize,
    changed: Notify,
}

impl Default for Quiesce {
    fn default() -> Self {
        Quiesce {
            frozen: watch::channel(false).0,
            readers: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            spawns: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }
}

/// What did not stop in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the daemon did not hold still within {waited:?}: {readers} of its sessions' output \
     readers, {connections} client connections and {spawns} spawns were still busy"
)]
pub struct Busy {
    /// How long it waited.
    pub waited: Duration,
    /// Output tasks not parked.
    pub readers: usize,
    /// Connections still open besides the asker's.
    pub connections: usize,
    /// Spawns under way.
    pub spawns: usize,
}

/// Counts one output task or connection while it lives.
#[must_use]
pub struct Counted<'a> {
    counter: &'a AtomicUsize,
    changed: &'a Notify,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }
}

/// Counts one spawn under way, owned by the task that carries it out.
#[must_use]
pub struct SpawnUnderWay(Arc<Quiesce>);

impl Drop for SpawnUnderWay {
    fn drop(&mut self) {
        self.0.spawns.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

impl Quiesce {
    /// Counts a spawn from now until the guard drops: taken before its connection can
    /// close, so a freeze never finds the daemon still while a session is being made.
    pub fn spawn_under_way(self: &Arc<Self>) -> SpawnUnderWay {
        self.spawns.fetch_add(1, Ordering::AcqRel);
        SpawnUnderWay(self.clone())
    }

    fn count<'a>(&'a self, counter: &'a AtomicUsize) -> Counted<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        Counted { counter, changed: &self.changed }
    }

    /// Counts a session's output task while it lives.
    pub fn reader(&self) -> Counted<'_> {
        self.count(&self.readers)
    }

    /// Counts a client connection while it is open.
    pub fn connection(&self) -> Counted<'_> {
        self.count(&self.connections)
    }

    /// Whether the daemon is held still now.
    pub fn is_frozen(&self) -> bool {
        *self.frozen.borrow()
    }

    /// A receiver that sees every freeze and thaw.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.frozen.subscribe()
    }

    /// Resolves once a freeze has begun (at once if one has), through `rx`, a receiver
    /// from [`Quiesce::watch`] kept by the caller (no subscription per call on a hot path).
    pub async fn frozen(rx: &mut watch::Receiver<bool>) {
        if rx.wait_for(|f| *f).await.is_err() {
            // The daemon is going away: never frozen again.
            std::future::pending::<()>().await;
        }
    }

    /// Called by an output task between reads, with its receiver from [`Quiesce::watch`]:
    /// while the daemon is frozen, waits (counted as parked) until it thaws.
    pub async fn park_if_frozen(&self, rx: &mut watch::Receiver<bool>) {
        if !*rx.borrow_and_update() {
            return;
        }
        let _parked = self.count(&self.parked);
        let _ = rx.wait_for(|f| !*f).await;
    }

    /// Freezes, and waits until every output task is parked, no spawn is under way and at
    /// most `keep` connections (the asker's) are open, for at most `limit`.
    pub async fn freeze(&self, keep: usize, limit: Duration) -> Result<(), Busy> {
        self.frozen.send_replace(true);
        let started = tokio::time::Instant::now();
        loop {
            let changed = self.changed.notified();
            let readers = self.readers.load(Ordering::Acquire);
            let parked = self.parked.load(Ordering::Acquire);
            let connections = self.connections.load(Ordering::Acquire);
            let spawns = self.spawns.load(Ordering::Acquire);
            if parked >= readers && connections <= keep && spawns == 0 {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= limit {
                return Err(Busy {
                    waited,
                    readers: readers.saturating_sub(parked),
                    connections: connections.saturating_sub(keep),
                    spawns,
                });
            }
            // Counts change through guards, which notify; the timeout bounds a missed one.
            let _ = tokio::time::timeout(Duration::from_millis(20), changed).await;
        }
    }

    /// Lets everything go on as before.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freeze_waits_for_every_reader_to_park_and_thaw_lets_them_go() {
        let q = Arc::new(Quiesce::default());
        let (went_on_tx, mut went_on) = tokio::sync::mpsc::unbounded_channel();
        let reader = {
            let q = q.clone();
            tokio::spawn(async move {
                let _alive = q.reader();
                let mut rx = q.watch();
                for round in 0..2 {
                    q.park_if_frozen(&mut rx).await;
                    let _ = went_on_tx.send(round);
                    if round == 0 {
                        Quiesce::frozen(&mut rx).await;
                    }
                }
            })
        };
        assert_eq!(went_on.recv().await, Some(0));
        let conn = q.connection();
        // One connection besides the asker's is still open: not still yet.
        let busy = q.freeze(0, Duration::from_millis(100)).await.unwrap_err();
        assert_eq!(busy.connections, 1);
        drop(conn);
        let spawn = q.spawn_under_way();
        let busy = q.freeze(0, Duration::from_millis(100)).await.unwrap_err();
        assert_eq!((busy.connections, busy.spawns), (0, 1));
        drop(spawn);
        q.freeze(0, Duration::from_secs(5)).await.unwrap();
        assert!(went_on.try_recv().is_err(), "a reader went on while frozen");
        q.thaw();
        assert_eq!(went_on.recv().await, Some(1));
        reader.await.unwrap();
    }
}
