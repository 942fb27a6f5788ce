//! A session's output: the replay ring with absolute offsets, the subscribers that
//! stream it, and the taps that observe it. Subscribers and the ring share one lock, so a
//! subscription starts exactly where its replay ends; taps (`OutputTap`) have a lock of
//! their own and see every chunk, in order, after the ring has it, so a tap that reports
//! "I reflect the output up to offset N" can always be followed by a replay from N.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;

use crate::ring::{OutputRing, Replay};

/// Chunks a subscriber may have queued before it counts as slow. With 32 KiB reads this
/// bounds a subscriber's queue to 1 MiB.
const SUBSCRIBER_DEPTH: usize = 32;

/// A piece of output at an absolute offset.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Offset of `data[0]`.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
}

/// How a subscriber takes output it cannot keep up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Every byte: a full queue holds the program back (the output task waits for it).
    Lossless,
    /// A full queue misses chunks; the subscriber sees the gap in the offsets.
    Lossy,
}

impl AttachMode {
    /// The wire's `lossless` flag as a mode.
    pub fn from_lossless(lossless: bool) -> AttachMode {
        if lossless {
            AttachMode::Lossless
        } else {
            AttachMode::Lossy
        }
    }
}

/// Something that observes a session's output as it is produced (bracketed-paste mode
/// and the screen). Called from the session's output task for every chunk, in
/// offset order: keep it short and never block on a client.
pub trait OutputTap: Send + Sync {
    /// Sees `data`, which starts at absolute output offset `offset`.
    fn observe(&self, offset: u64, data: &[u8]);
}

struct Subscriber {
    id: u64,
    tx: flume::Sender<Chunk>,
    mode: AttachMode,
}

struct State {
    ring: OutputRing,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
    /// The session has ended: no new subscriptions.
    closed: bool,
}

/// The output side of a session.
pub struct Output {
    state: Mutex<State>,
    taps: RwLock<Vec<Arc<dyn OutputTap>>>,
}

/// Chunks that lossless subscribers had no room for yet.
#[must_use = "a lossless subscriber loses the chunk unless the backlog is delivered"]
pub struct Backlog(Vec<(flume::Sender<Chunk>, Chunk)>);

impl Backlog {
    /// Waits until every lossless subscriber has taken its chunk (or is gone).
    pub async fn deliver(self) {
        for (tx, chunk) in self.0 {
            let _ = tx.send_async(chunk).await;
        }
    }
}

/// What a subscriber gets at once: the replay, and the output end at that moment.
pub struct Attached {
    /// What the ring still holds from the requested offset.
    pub replay: Replay,
    /// The output end when the subscription began (where the live feed starts).
    pub end: u64,
    /// The live feed; none once the session has ended.
    pub feed: Option<(u64, flume::Receiver<Chunk>)>,
}

/// An offset past the end of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeyondEnd {
    /// Requested.
    pub since: u64,
    /// Current end.
    pub end: u64,
}

impl Output {
    /// Output with a replay window of `replay_bytes`.
    pub fn new(replay_bytes: usize) -> Output {
        Output {
            state: Mutex::new(State {
                ring: OutputRing::new(replay_bytes),
                subscribers: Vec::new(),
                next_subscriber: 1,
                closed: false,
            }),
            taps: RwLock::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take every later request on this session down too.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an observer of everything produced from now on.
    pub fn add_tap(&self, tap: Arc<dyn OutputTap>) {
        self.taps.write().unwrap_or_else(|p| p.into_inner()).push(tap);
    }

    /// Records a chunk of output and hands it to every subscriber that has room: a lossy
    /// one that is full misses it (and later sees the gap); a lossless one that is full is
    /// left in the returned [`Backlog`], which the output task awaits before it reads on,
    /// so the program is held back. Taps see the chunk after the ring has it.
    pub fn push(&self, data: &[u8]) -> Backlog {
        let chunk_data = Bytes::copy_from_slice(data);
        let (offset, targets) = {
            let mut st = self.state();
            let offset = st.ring.push(data);
            st.subscribers.retain(|s| !s.tx.is_disconnected());
            let targets: Vec<_> = st.subscribers.iter().map(|s| (s.tx.clone(), s.mode)).collect();
            (offset, targets)
        };
        for tap in self.taps.read().unwrap_or_else(|p| p.into_inner()).iter() {
            tap.observe(offset, data);
        }
        let mut backlog = Backlog(Vec::new());
        for (tx, mode) in targets {
            let chunk = Chunk { offset, data: chunk_data.clone() };
            // A gone subscriber is pruned on the next push.
            if let Err(flume::TrySendError::Full(chunk)) = tx.try_send(chunk) {
                if mode == AttachMode::Lossless {
                    backlog.0.push((tx, chunk));
                }
            }
        }
        backlog
    }

    /// Replays from `since` (the window start when `None`) and, unless the session has
    /// ended, subscribes to what follows, in one step so that nothing is missed or sent
    /// twice.
    pub fn subscribe(&self, since: Option<u64>, mode: AttachMode) -> Result<Attached, BeyondEnd> {
        let mut st = self.state();
        let end = st.ring.end();
        if let Some(since) = since.filter(|s| *s > end) {
            return Err(BeyondEnd { since, end });
        }
        let replay = st.ring.since(since);
        let feed = (!st.closed).then(|| {
            let id = st.next_subscriber;
            st.next_subscriber += 1;
            let (tx, rx) = flume::bounded(SUBSCRIBER_DEPTH);
            st.subscribers.push(Subscriber { id, tx, mode });
            (id, rx)
        });
        Ok(Attached { replay, end, feed })
    }

    /// Ends subscription `id`.
    pub fn unsubscribe(&self, id: u64) {
        self.state().subscribers.retain(|s| s.id != id);
    }

    /// Subscribers right now.
    pub fn subscribers(&self) -> usize {
        self.state().subscribers.len()
    }

    /// What the ring still holds of `[from, to)`.
    pub fn range(&self, from: u64, to: u64) -> Replay {
        self.state().ring.range(from, to)
    }

    /// Total output so far.
    pub fn end(&self) -> u64 {
        self.state().ring.end()
    }

    /// Offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.state().ring.start()
    }

    /// Memory the replay window takes.
    pub fn held(&self) -> usize {
        self.state().ring.held()
    }

    /// The session ended: every subscription ends (after draining what it has queued),
    /// and none begins.
    pub fn close(&self) {
        let mut st = self.state();
        st.closed = true;
        st.subscribers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Seen(Mutex<Vec<(u64, Vec<u8>)>>);

    impl OutputTap for Seen {
        fn observe(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn taps_see_every_chunk_at_its_offset_and_subscribers_start_where_replay_ends() {
        let out = Output::new(8);
        let seen = Arc::new(Seen(Mutex::default()));
        out.add_tap(seen.clone());
        let _ = out.push(b"hello ");
        let attached = out.subscribe(Some(2), AttachMode::Lossless).unwrap();
        assert_eq!(attached.end, 6);
        let (_, rx) = attached.feed.unwrap();
        let _ = out.push(b"world");
        assert_eq!(rx.try_recv().unwrap().offset, 6);
        assert_eq!(*seen.0.lock().unwrap(), vec![(0, b"hello ".to_vec()), (6, b"world".to_vec())]);
        assert_eq!(
            out.subscribe(Some(12), AttachMode::Lossy).err(),
            Some(BeyondEnd { since: 12, end: 11 })
        );
        out.close();
        assert!(out.subscribe(None, AttachMode::Lossy).unwrap().feed.is_none());
    }
}
