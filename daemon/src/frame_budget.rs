//! What unfinished frames may cost. A client that announces a 1 MiB frame and sends it
//! slowly (or never) makes the codec hold a buffer of that size; a hundred such clients
//! would hold 100 MiB. Each connection's decoder reports what it holds to one daemon-wide
//! [`FrameBudget`], which refuses the connection that would pass the limit, and records
//! since when a frame has been pending so the connection can enforce the frame timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use ipc_proto::ProtoError;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes held in unfinished frames by all connections.
#[derive(Debug)]
pub struct FrameBudget {
    max: usize,
    held: AtomicUsize,
}

impl FrameBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<FrameBudget> {
        Arc::new(FrameBudget { max, held: AtomicUsize::new(0) })
    }

    /// Bytes held right now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Moves one connection's share from `from` to `to` bytes; false (and no change) when
    /// growing would pass the limit.
    fn adjust(&self, from: usize, to: usize) -> bool {
        if to <= from {
            self.held.fetch_sub(from - to, Ordering::Relaxed);
            return true;
        }
        let grow = to - from;
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h + grow <= self.max).then_some(h + grow)
            })
            .is_ok()
    }
}

/// Since when this connection has had an unfinished frame.
#[derive(Debug, Default, Clone)]
pub struct Pending(Arc<Mutex<Option<Instant>>>);

impl Pending {
    /// Since when a frame has been pending, if one is.
    pub fn since(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, pending: bool) {
        let mut since = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (pending, since.is_some()) {
            (true, false) => *since = Some(Instant::now()),
            (false, true) => *since = None,
            _ => {}
        }
    }
}

/// A decoder that accounts what its buffer holds against a [`FrameBudget`].
pub struct Budgeted<C> {
    inner: C,
    budget: Arc<FrameBudget>,
    counted: usize,
    /// The length (prefix included) of the frame being received; the inner codec takes
    /// the prefix out of the buffer, so it is remembered here.
    announced: Option<usize>,
    pending: Pending,
}

impl<C> Budgeted<C> {
    /// Wraps `inner`; `pending` tells the connection since when a frame is unfinished.
    pub fn new(inner: C, budget: Arc<FrameBudget>, pending: Pending) -> Budgeted<C> {
        Budgeted { inner, budget, counted: 0, announced: None, pending }
    }

    /// Charges what the buffer costs now: the whole announced frame (the codec reserves
    /// that much once the prefix is in), else the bytes received.
    fn charge(&mut self, buffered: usize) -> Result<(), ProtoError> {
        let cost = self.announced.unwrap_or(0).max(buffered);
        self.pending.set(self.announced.is_some() || buffered > 0);
        if !self.budget.adjust(self.counted, cost) {
            return Err(ProtoError::Malformed(format!(
                "unfinished frames from all clients would hold more than {} bytes (this one \
                 announces {cost}); closing this connection",
                self.budget.max
            )));
        }
        self.counted = cost;
        Ok(())
    }
}

impl<C> Drop for Budgeted<C> {
    fn drop(&mut self) {
        self.budget.adjust(self.counted, 0);
    }
}

impl<C: Decoder<Error = ProtoError>> Decoder for Budgeted<C> {
    type Item = C::Item;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<C::Item>, ProtoError> {
        if self.announced.is_none() {
            if let Some(p) = src.get(..4) {
                self.announced = Some(4 + u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize);
            }
        }
        // Charged before the codec reserves the frame's buffer, so an oversized share is
        // refused before it is allocated.
        self.charge(src.len())?;
        let item = self.inner.decode(src)?;
        if item.is_some() {
            self.announced = None;
            self.charge(src.len())?;
        }
        Ok(item)
    }
}

impl<C: Encoder<T>, T> Encoder<T> for Budgeted<C> {
    type Error = C::Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), C::Error> {
        self.inner.encode(item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use ipc_proto::{DaemonMessage, FrameCodec, Request};

    fn codec(budget: &Arc<FrameBudget>) -> Budgeted<FrameCodec<Request, DaemonMessage>> {
        Budgeted::new(FrameCodec::default(), budget.clone(), Pending::default())
    }

    #[test]
    fn announced_frames_count_until_they_complete_or_the_connection_goes() {
        let budget = FrameBudget::new(3 * 1024 * 1024);
        let partial = || {
            let mut buf = BytesMut::new();
            buf.put_u32(1024 * 1024);
            buf.put_slice(b"{");
            buf
        };
        let mut a = codec(&budget);
        assert!(a.decode(&mut partial()).unwrap().is_none());
        assert_eq!(budget.held(), 4 + 1024 * 1024);
        assert!(a.pending.since().is_some());
        let mut b = codec(&budget);
        assert!(b.decode(&mut partial()).unwrap().is_none());
        let mut c = codec(&budget);
        let err = c.decode(&mut partial()).unwrap_err();
        assert!(err.to_string().contains("would hold more than"), "{err}");
        drop(a);
        assert_eq!(budget.held(), 4 + 1024 * 1024, "a's share is returned");
        drop(b);
        drop(c);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_completed_frame_gives_its_share_back() {
        let budget = FrameBudget::new(1024 * 1024);
        let mut a = codec(&budget);
        let frame =
            ipc_proto::codec::encode_frame(&ipc_proto::Frame::new(1, Request::List)).unwrap();
        let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
        assert!(a.decode(&mut buf).unwrap().is_none());
        assert!(budget.held() > 0);
        buf.extend_from_slice(&frame[frame.len() - 1..]);
        assert!(a.decode(&mut buf).unwrap().is_some());
        assert_eq!(budget.held(), 0);
        assert!(a.pending.since().is_none());
    }
}
