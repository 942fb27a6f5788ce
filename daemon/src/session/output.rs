//! A session's output: the replay ring with absolute offsets, the subscribers that
//! stream it, and the taps that observe it. Subscribers and the ring share one lock, so a
//! subscription starts exactly where its replay ends; taps (`OutputTap`) have a lock of
//! their own and see every chunk, in order, after the ring has it, so a tap that reports
//! "I reflect the output up to offset N" can always be followed by a replay from N.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::ring::{OutputRing, Replay};

/// Bytes of output a subscriber may have on its way (queued for it, and, for an
/// attachment, queued for its client's socket) before it counts as slow: a lossless one
/// then holds the program back, a lossy one misses chunks. Bytes, not chunks, so that
/// what a paused client lets the program run ahead is the same whatever size the reads
/// happen to be.
pub const SUBSCRIBER_BYTES: usize = 128 * 1024;

/// What a chunk counts against its subscriber's budget besides its bytes: a stream of
/// tiny chunks is bounded too.
const CHUNK_OVERHEAD: usize = 64;

/// A piece of output at an absolute offset.
#[derive(Debug)]
pub struct Chunk {
    /// Offset of `data[0]`.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// Its share of the subscriber's budget, given back when dropped: keep it as long as
    /// the bytes are on their way (an attachment keeps it until they are written to the
    /// socket).
    pub held: Held,
}

/// Chunks being merged into one, up to `max` bytes: the first, and the bytes of those
/// that follow on from it, copied once into one buffer.
pub struct Merge {
    first: Chunk,
    /// The merged bytes, once a second chunk came.
    data: Option<bytes::BytesMut>,
    max: usize,
}

impl Merge {
    /// A merge starting with `first`.
    pub fn new(first: Chunk, max: usize) -> Merge {
        Merge { first, data: None, max }
    }

    fn len(&self) -> usize {
        self.data.as_ref().map_or(self.first.data.len(), |d| d.len())
    }

    /// Appends `next` when it follows on directly and still fits, taking over its share
    /// of the budget too; else hands it back.
    pub fn absorb(&mut self, next: Chunk) -> Result<(), Chunk> {
        let len = self.len();
        if next.offset != self.first.offset + len as u64 || len + next.data.len() > self.max {
            return Err(next);
        }
        let first = &self.first.data;
        let data = self.data.get_or_insert_with(|| {
            // Grows by doubling from here, so the copying stays linear in the bytes merged.
            let mut data = bytes::BytesMut::with_capacity(2 * (first.len() + next.data.len()));
            data.extend_from_slice(first);
            data
        });
        data.extend_from_slice(&next.data);
        self.first.held.0.merge(next.held.0);
        Ok(())
    }

    /// The merged chunk.
    pub fn finish(self) -> Chunk {
        let Merge { mut first, data, .. } = self;
        if let Some(data) = data {
            first.data = data.freeze();
        }
        first
    }
}

/// A chunk's share of its subscriber's [`SUBSCRIBER_BYTES`].
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] OwnedSemaphorePermit);

/// What a chunk of `len` bytes costs; a chunk larger than the whole budget takes all of it.
fn cost(len: usize) -> u32 {
    (len + CHUNK_OVERHEAD).min(SUBSCRIBER_BYTES) as u32
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
    /// The budget of bytes on their way; closed when the subscription ends, so that a
    /// backlog waiting for room does not wait for a reader that is gone.
    room: Arc<Semaphore>,
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

/// A chunk that a lossless subscriber had no room for yet.
struct Owed {
    tx: flume::Sender<Chunk>,
    room: Arc<Semaphore>,
    offset: u64,
    data: Bytes,
}

/// Chunks that lossless subscribers had no room for yet.
#[must_use = "a lossless subscriber loses the chunk unless the backlog is delivered"]
pub struct Backlog(Vec<Owed>);

impl Backlog {
    /// Waits until every lossless subscriber has room for its chunk (or is gone), and
    /// hands it over.
    pub async fn deliver(self) {
        for owed in self.0 {
            // Closed: the subscription ended meanwhile.
            if let Ok(permit) = owed.room.acquire_many_owned(cost(owed.data.len())).await {
                let chunk = Chunk { offset: owed.offset, data: owed.data, held: Held(permit) };
                let _ = owed.tx.send(chunk);
            }
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

    /// Output that crossed from another daemon image: `ring` held, starting at `start`.
    pub fn restore(replay_bytes: usize, start: u64, ring: &[u8]) -> Output {
        let out = Output::new(replay_bytes);
        out.state().ring = OutputRing::restore(replay_bytes, start, ring);
        out
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
            let targets: Vec<_> =
                st.subscribers.iter().map(|s| (s.tx.clone(), s.room.clone(), s.mode)).collect();
            (offset, targets)
        };
        for tap in self.taps.read().unwrap_or_else(|p| p.into_inner()).iter() {
            tap.observe(offset, data);
        }
        let mut backlog = Backlog(Vec::new());
        for (tx, room, mode) in targets {
            match room.clone().try_acquire_many_owned(cost(data.len())) {
                // A gone subscriber is pruned on the next push.
                Ok(permit) => {
                    let _ = tx.send(Chunk { offset, data: chunk_data.clone(), held: Held(permit) });
                }
                Err(TryAcquireError::NoPermits) if mode == AttachMode::Lossless => {
                    backlog.0.push(Owed { tx, room, offset, data: chunk_data.clone() });
                }
                // Lossy and full: it misses this chunk and sees the gap in the offsets.
                Err(TryAcquireError::NoPermits) => {}
                Err(TryAcquireError::Closed) => {}
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
            // Unbounded in chunks: the room semaphore bounds it in bytes.
            let (tx, rx) = flume::unbounded();
            let room = Arc::new(Semaphore::new(SUBSCRIBER_BYTES));
            st.subscribers.push(Subscriber { id, tx, room, mode });
            (id, rx)
        });
        Ok(Attached { replay, end, feed })
    }

    /// Ends subscription `id`.
    pub fn unsubscribe(&self, id: u64) {
        self.state().subscribers.retain(|s| {
            if s.id == id {
                s.room.close();
            }
            s.id != id
        });
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

    #[tokio::test]
    async fn a_lossless_subscriber_holds_output_back_by_bytes_not_chunks() {
        let out = Output::new(1 << 20);
        let (_, rx) = out.subscribe(None, AttachMode::Lossless).unwrap().feed.unwrap();
        let piece = vec![b'x'; 16 * 1024];
        // Pieces fit until their bytes would pass the budget, however few they are.
        let mut fitted = 0;
        loop {
            let backlog = out.push(&piece);
            if !backlog.0.is_empty() {
                let delivered = tokio::spawn(backlog.deliver());
                tokio::task::yield_now().await;
                assert!(!delivered.is_finished(), "delivered with no room");
                // Taking one chunk off (and dropping it: written on) makes room.
                drop(rx.recv_async().await.unwrap());
                delivered.await.unwrap();
                break;
            }
            fitted += 1;
        }
        assert_eq!(fitted, SUBSCRIBER_BYTES / (16 * 1024 + CHUNK_OVERHEAD));
        // A lossy subscriber misses what does not fit instead.
        let lossy = out.subscribe(Some(out.end()), AttachMode::Lossy).unwrap();
        let (_, lossy_rx) = lossy.feed.unwrap();
        for _ in 0..fitted + 3 {
            // The lossless reader keeps up.
            drop(rx.drain());
            let backlog = out.push(&piece);
            assert!(backlog.0.is_empty());
        }
        assert_eq!(lossy_rx.len(), fitted);
    }

    #[tokio::test]
    async fn a_backlog_for_a_subscriber_that_left_is_not_waited_for() {
        let out = Output::new(1 << 20);
        let (id, rx) = out.subscribe(None, AttachMode::Lossless).unwrap().feed.unwrap();
        let big = vec![b'x'; SUBSCRIBER_BYTES];
        let _ = out.push(&big);
        let backlog = out.push(b"more");
        assert_eq!(backlog.0.len(), 1);
        // The reader is gone with a full queue: nothing will ever make room.
        out.unsubscribe(id);
        drop(rx);
        tokio::time::timeout(std::time::Duration::from_secs(5), backlog.deliver())
            .await
            .expect("the backlog waited for a subscriber that had left");
    }

    #[tokio::test]
    async fn chunks_that_follow_on_merge_with_their_budget_and_others_do_not() {
        let out = Output::new(1 << 20);
        let (id, rx) = out.subscribe(None, AttachMode::Lossy).unwrap().feed.unwrap();
        for piece in [&b"ab"[..], b"cd", b"efg"] {
            let _ = out.push(piece);
        }
        let mut merge = Merge::new(rx.try_recv().unwrap(), 4);
        merge.absorb(rx.try_recv().unwrap()).unwrap();
        // Over the bound: handed back whole.
        let third = merge.absorb(rx.try_recv().unwrap()).unwrap_err();
        assert_eq!((third.offset, &third.data[..]), (4, &b"efg"[..]));
        let first = merge.finish();
        assert_eq!((first.offset, &first.data[..]), (0, &b"abcd"[..]));
        // Not following on: handed back too.
        let mut merge = Merge::new(third, 64);
        let gap = Chunk { offset: 9, data: Bytes::from_static(b"z"), held: later_held(&out, id) };
        assert!(merge.absorb(gap).is_err());
        let later = merge.finish();
        // Every share of the budget comes back once the chunks are gone.
        drop((first, later));
        let st = out.state();
        let room = &st.subscribers.iter().find(|s| s.id == id).unwrap().room;
        assert_eq!(room.available_permits(), SUBSCRIBER_BYTES);
    }

    /// A share of subscriber `id`'s budget, as a pushed chunk would hold.
    fn later_held(out: &Output, id: u64) -> Held {
        let st = out.state();
        let room = st.subscribers.iter().find(|s| s.id == id).unwrap().room.clone();
        Held(room.try_acquire_many_owned(1).unwrap())
    }
}
