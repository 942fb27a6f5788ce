//! A session's terminal I/O, driven by the runtime: the PTY master is non-blocking and
//! registered with tokio's reactor (`AsyncFd`), one task reads the program's output and
//! input is written by whoever sends it (a task drains what the terminal does not take at
//! once). No thread per session, and no task hop for a keystroke.
//!
//! Flow control is the same as with blocking reads: the output task awaits a lossless
//! subscriber that is full before it reads again, so the kernel's buffer fills and the
//! program waits in its `write`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tracing::Instrument;

/// Largest chunk read at once.
pub const READ_CHUNK: usize = 32 * 1024;

thread_local! {
    /// Where output is read before it is recorded; one per runtime thread.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// What [`read_available`] read.
#[derive(Debug)]
struct Available {
    /// Bytes read; 0 at EOF.
    len: usize,
    /// Whether a read found nothing more (the descriptor is empty for now).
    drained: bool,
}

/// Reads into `buf` until it is full or nothing more is there, or the first read's error.
/// An error after some bytes ends the chunk; the next read meets it again.
fn read_available(mut fd: &File, buf: &mut [u8]) -> io::Result<Available> {
    let mut got = fd.read(buf)?;
    let mut drained = false;
    while got > 0 && got < buf.len() {
        match fd.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                drained = e.kind() == io::ErrorKind::WouldBlock;
                break;
            }
        }
    }
    Ok(Available { len: got, drained })
}

/// A PTY master, ready for the runtime. Its flags are the open file's, shared by every
/// descriptor of the master (the one kept for resizing too), which only ever ioctls.
#[derive(Clone)]
pub struct PtyIo(Arc<AsyncFd<File>>);

impl PtyIo {
    /// Makes `master` (a descriptor of the PTY master) non-blocking and registers it.
    /// Must be called within the runtime.
    #[allow(unsafe_code)]
    pub fn new(master: File) -> io::Result<PtyIo> {
        let flags = OFlag::from_bits_truncate(fcntl(master.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(master.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: a `File` owns its descriptor, which stays open and the same until the
        // `AsyncFd` (its only owner) drops it.
        let fd = unsafe { AsyncFd::register(master) }?;
        Ok(PtyIo(Arc::new(fd)))
    }

    /// Waits for the next chunk of output and hands it to `take`, or `None` at EOF (or
    /// EIO, which Linux returns once every slave descriptor is closed).
    ///
    /// The chunk is read into a buffer of the worker thread, not of the session: an idle
    /// session holds no read buffer (it was 32 KiB of RSS each, zeroed at allocation).
    /// The kernel hands a PTY's output over about 4 KiB at a time; what is already there
    /// beyond that is read at once into the same chunk (up to [`READ_CHUNK`]), so a flood
    /// travels in fewer, larger events, and a lone keystroke's echo waits for nothing.
    pub async fn read_with<R>(&self, mut take: impl FnMut(&[u8]) -> R) -> Option<R> {
        loop {
            let mut ready = self.0.readable().await.ok()?;
            let read = SCRATCH.with_borrow_mut(|buf| {
                read_available(ready.get_inner(), buf)
                    .map(|chunk| (chunk.drained, (chunk.len > 0).then(|| take(&buf[..chunk.len]))))
            });
            match read {
                Ok((drained, taken)) => {
                    // Known empty: the next call waits for the reactor instead of reading
                    // once more to find out.
                    if drained {
                        ready.clear_ready();
                    }
                    return taken;
                }
                // Woken, but the data was taken already: wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Writes `data` now, as far as the terminal takes it without waiting.
    fn write_now(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.get_ref().write(data) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                done => return done,
            }
        }
    }

    /// Writes queued input until every sender is gone or the terminal is closed. A child
    /// that does not read its input holds up only this task (and, through the bounded
    /// queue, whoever sends it more).
    async fn write_queued(self, queue: flume::Receiver<Bytes>, ahead: Arc<AtomicUsize>) {
        while let Ok(data) = queue.recv_async().await {
            let mut rest = &data[..];
            while !rest.is_empty() {
                let Ok(mut ready) = self.0.writable().await else { return };
                match ready.try_io(|fd| fd.get_ref().write(rest)) {
                    Ok(Ok(0)) => return,
                    Ok(Ok(n)) => rest = &rest[n..],
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) => return,
                    Err(_would_block) => {}
                }
            }
            ahead.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The terminal closed: input can no longer be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A session's input. A write goes straight to the terminal when nothing is queued
/// ahead of it and the terminal takes it at once (a keystroke: no task hop); the rest of
/// it, and every write while something is queued, waits in a bounded queue that one task
/// drains in order. Writes are whole and in the order they are sent.
pub struct Input {
    pty: PtyIo,
    queue: flume::Sender<Bytes>,
    /// Chunks queued or being written by the task.
    ahead: Arc<AtomicUsize>,
    /// One writer at a time, so that a write is never split by another.
    order: tokio::sync::Mutex<()>,
}

impl Input {
    /// The input of `pty`, queueing up to `depth` writes; spawns the task that drains
    /// them, which ends once this is dropped and the queue is empty.
    pub fn start(pty: PtyIo, depth: usize) -> Input {
        let (queue, rx) = flume::bounded(depth);
        let ahead = Arc::new(AtomicUsize::new(0));
        tokio::spawn(pty.clone().write_queued(rx, ahead.clone()).in_current_span());
        Input { pty, queue, ahead, order: tokio::sync::Mutex::new(()) }
    }

    /// Whether everything sent has been written to the terminal.
    pub fn is_drained(&self) -> bool {
        self.ahead.load(Ordering::Acquire) == 0
    }

    /// Writes `data` to the terminal, or queues what it does not take at once; waits
    /// while the queue is full.
    pub async fn send(&self, data: Bytes) -> Result<(), Closed> {
        let _order = self.order.lock().await;
        let rest = if self.ahead.load(Ordering::Acquire) == 0 {
            match self.pty.write_now(&data) {
                Ok(n) if n == data.len() => return Ok(()),
                Ok(n) => data.slice(n..),
                Err(_) => return Err(Closed),
            }
        } else {
            data
        };
        self.ahead.fetch_add(1, Ordering::AcqRel);
        // Not queued after all (the write was dropped, or the terminal closed): not ahead.
        let counted = scopeguard::guard(&self.ahead, |ahead| {
            ahead.fetch_sub(1, Ordering::AcqRel);
        });
        self.queue.send_async(rest).await.map_err(|_| Closed)?;
        scopeguard::ScopeGuard::into_inner(counted);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;

    /// A descriptor that, like a PTY master, hands over its data in pieces: one datagram
    /// per read.
    fn pieces() -> (UnixDatagram, File) {
        let (tx, rx) = UnixDatagram::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        (tx, File::from(OwnedFd::from(rx)))
    }

    #[test]
    fn what_is_there_is_read_as_one_chunk() {
        let (tx, rx) = pieces();
        let mut buf = vec![0u8; 16 * 1024];
        for byte in [b'a', b'b', b'c'] {
            tx.send(&[byte; 4096]).unwrap();
        }
        assert_eq!(read_available(&rx, &mut buf).unwrap().len, 3 * 4096);
        assert_eq!((buf[0], buf[4096], buf[8192]), (b'a', b'b', b'c'));
        // A full buffer ends the chunk; the rest is the next one.
        for byte in [b'd', b'e', b'f'] {
            tx.send(&[byte; 4096]).unwrap();
        }
        assert_eq!(read_available(&rx, &mut buf[..8192]).unwrap().len, 8192);
        assert_eq!(read_available(&rx, &mut buf).unwrap().len, 4096);
        assert_eq!(buf[0], b'f');
        // A lone byte is handed over at once, and then there is nothing to wait for.
        tx.send(b"y").unwrap();
        let lone = read_available(&rx, &mut buf).unwrap();
        assert_eq!((lone.len, lone.drained), (1, true));
        let empty = read_available(&rx, &mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }
}
