//! Exited sessions kept for `wait`, `info`, `read` and `attach`, bounded three ways: by
//! time (`--retention`), by count (`--max-retained`) and by the memory they keep
//! (`--max-retained-bytes`), the oldest forgotten first. One queue in exit order and one
//! sweeper task replace a sleeping task per session, which kept every session's memory
//! for the whole retention period however many came after it.

use std::collections::VecDeque;
use std::time::Duration;

use ipc_proto::SessionId;
use tokio::time::Instant;

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How long an exited session is kept.
    pub time: Duration,
    /// How many are kept at most.
    pub count: usize,
    /// How much memory they may keep in all.
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: SessionId,
    expires: Instant,
    bytes: usize,
}

/// The retained sessions in exit order.
#[derive(Debug)]
pub struct Retained {
    bounds: Bounds,
    queue: VecDeque<Entry>,
    bytes: usize,
}

impl Retained {
    /// An empty queue.
    pub fn new(bounds: Bounds) -> Retained {
        Retained { bounds, queue: VecDeque::new(), bytes: 0 }
    }

    /// Adds a session that exited at `now` and keeps `bytes`; returns the ones to forget
    /// (the oldest, past any bound; possibly `id` itself when it alone is over the bytes).
    pub fn retire(&mut self, id: SessionId, bytes: usize, now: Instant) -> Vec<SessionId> {
        self.queue.push_back(Entry { id, expires: now + self.bounds.time, bytes });
        self.bytes += bytes;
        let mut gone = self.expired(now);
        while self.queue.len() > self.bounds.count || self.bytes > self.bounds.bytes {
            let Some(old) = self.pop() else { break };
            gone.push(old);
        }
        gone
    }

    /// Removes and returns the sessions whose time is up at `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<SessionId> {
        let mut gone = Vec::new();
        while self.queue.front().is_some_and(|e| e.expires <= now) {
            gone.extend(self.pop());
        }
        gone
    }

    /// When the next one expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.queue.front().map(|e| e.expires)
    }

    /// Forgets `id` if it is retained (e.g. dropped by other means).
    pub fn remove(&mut self, id: SessionId) {
        if let Some(i) = self.queue.iter().position(|e| e.id == id) {
            if let Some(e) = self.queue.remove(i) {
                self.bytes -= e.bytes;
            }
        }
    }

    /// Sessions and bytes retained.
    pub fn usage(&self) -> (usize, usize) {
        (self.queue.len(), self.bytes)
    }

    fn pop(&mut self) -> Option<SessionId> {
        let e = self.queue.pop_front()?;
        self.bytes -= e.bytes;
        Some(e.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_time_count_and_bytes_oldest_first() {
        let bounds = Bounds { time: Duration::from_secs(60), count: 3, bytes: 1000 };
        let mut r = Retained::new(bounds);
        let t0 = Instant::now();
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::new()).collect();
        assert!(r.retire(ids[0], 100, t0).is_empty());
        assert!(r.retire(ids[1], 100, t0).is_empty());
        assert!(r.retire(ids[2], 100, t0).is_empty());
        assert_eq!(r.retire(ids[3], 100, t0), vec![ids[0]], "count");
        assert_eq!(r.retire(ids[4], 850, t0), vec![ids[1], ids[2]], "count, then bytes");
        assert_eq!(r.usage(), (2, 950));
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(r.expired(t0 + Duration::from_secs(60)), vec![ids[3], ids[4]], "time");
        assert_eq!(r.usage(), (0, 0));
    }
}
