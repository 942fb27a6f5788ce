//! A session's recent output, addressed by absolute byte offsets.
//!
//! Every session numbers its output bytes from 0. The ring keeps the last `capacity`
//! of them, so a client that remembers the offset it has seen can resume exactly.

use std::collections::VecDeque;

use bytes::Bytes;

/// The last `capacity` bytes of a session's output.
#[derive(Debug)]
pub struct OutputRing {
    buf: VecDeque<u8>,
    capacity: usize,
    end: u64,
}

/// What the ring still holds from a requested offset on.
#[derive(Debug, PartialEq, Eq)]
pub struct Replay {
    /// Offset of `data[0]`.
    pub offset: u64,
    /// Bytes that were asked for but have left the ring.
    pub dropped: u64,
    /// The bytes, up to the ring's end.
    pub data: Bytes,
}

impl OutputRing {
    /// An empty ring that keeps up to `capacity` bytes. It allocates as output comes, so
    /// a quiet session (a shell at its prompt) holds what it printed, not its whole window.
    pub fn new(capacity: usize) -> Self {
        OutputRing { buf: VecDeque::new(), capacity, end: 0 }
    }

    /// A ring that keeps up to `capacity` bytes, holding `held` (its last `capacity` bytes)
    /// as the output just before `start + held.len()`: a ring carried across a live upgrade.
    pub fn restore(capacity: usize, start: u64, held: &[u8]) -> Self {
        let mut ring = OutputRing::new(capacity);
        ring.end = start;
        ring.push(held);
        ring
    }

    /// Appends `data`; returns the absolute offset of its first byte.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        let offset = self.end;
        self.end += data.len() as u64;
        let keep = data.len().min(self.capacity);
        let overflow = (self.buf.len() + keep).saturating_sub(self.capacity);
        self.buf.drain(..overflow);
        let wanted = self.buf.len() + keep;
        if wanted > self.buf.capacity() {
            // Doubling, but never past the window.
            let grown = wanted.max(self.buf.capacity() * 2).min(self.capacity);
            self.buf.reserve_exact(grown - self.buf.len());
        }
        self.buf.extend(&data[data.len() - keep..]);
        offset
    }

    /// Bytes of memory the window takes (its allocation, not just what it holds now).
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    /// Offset the next byte will get (total bytes ever pushed).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Everything held from `from` up to `to` (clamped to the ring), and how much of
    /// `[from, to)` is gone.
    pub fn range(&self, from: u64, to: u64) -> Replay {
        let to = to.min(self.end);
        let from = from.min(to);
        // The first byte we can give: `from` itself, or the window start if it moved past.
        let start = from.max(self.start());
        if start >= to {
            return Replay { offset: to, dropped: to - from, data: Bytes::new() };
        }
        let skip = (start - self.start()) as usize;
        let len = (to - start) as usize;
        let data: Vec<u8> = self.buf.range(skip..skip + len).copied().collect();
        Replay { offset: start, dropped: start - from, data: Bytes::from(data) }
    }

    /// Everything held after `since` (the whole ring when `None`).
    pub fn since(&self, since: Option<u64>) -> Replay {
        self.range(since.unwrap_or(self.start()), self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_absolute_and_the_window_slides() {
        let mut ring = OutputRing::new(8);
        assert_eq!(ring.push(b"hello"), 0);
        assert_eq!(ring.push(b" world"), 5);
        assert_eq!((ring.start(), ring.end()), (3, 11));
        assert_eq!(
            ring.since(None),
            Replay { offset: 3, dropped: 0, data: Bytes::from_static(b"lo world") }
        );
    }

    #[test]
    fn since_inside_the_window_resumes_exactly() {
        let mut ring = OutputRing::new(8);
        ring.push(b"hello world");
        let r = ring.since(Some(6));
        assert_eq!((r.offset, r.dropped, &r.data[..]), (6, 0, &b"world"[..]));
        assert!(ring.since(Some(11)).data.is_empty());
    }

    #[test]
    fn since_before_the_window_counts_the_dropped_bytes() {
        let mut ring = OutputRing::new(4);
        ring.push(b"0123456789");
        let r = ring.since(Some(2));
        assert_eq!((r.offset, r.dropped, &r.data[..]), (6, 4, &b"6789"[..]));
    }

    #[test]
    fn the_window_allocates_as_output_comes_and_never_past_its_capacity() {
        let mut ring = OutputRing::new(4096);
        assert_eq!(ring.held(), 0);
        ring.push(b"prompt$ ");
        assert!(ring.held() < 64, "a quiet session holds {} bytes", ring.held());
        for _ in 0..1000 {
            ring.push(&[b'x'; 100]);
            assert!(ring.held() <= 4096, "{} held", ring.held());
        }
        assert_eq!(ring.held(), 4096);
        assert_eq!(ring.since(None).data.len(), 4096);
        assert_eq!(ring.start(), ring.end() - 4096);
    }

    #[test]
    fn a_push_larger_than_the_ring_keeps_its_tail() {
        let mut ring = OutputRing::new(3);
        ring.push(b"ab");
        ring.push(b"cdefg");
        assert_eq!(&ring.since(None).data[..], b"efg");
        assert_eq!(ring.start(), 4);
    }

    #[test]
    fn a_range_that_left_the_window_is_all_dropped() {
        let mut ring = OutputRing::new(4);
        ring.push(b"0123456789");
        assert_eq!(ring.range(0, 3), Replay { offset: 3, dropped: 3, data: Bytes::new() });
        assert_eq!(ring.range(2, 6), Replay { offset: 6, dropped: 4, data: Bytes::new() });
        assert_eq!(
            ring.range(9, 20),
            Replay { offset: 9, dropped: 0, data: Bytes::from_static(b"9") }
        );
    }

    #[test]
    fn range_fills_a_gap() {
        let mut ring = OutputRing::new(6);
        ring.push(b"abcdefghij");
        let r = ring.range(2, 7);
        assert_eq!((r.offset, r.dropped, &r.data[..]), (4, 2, &b"efg"[..]));
    }
}
