//! A session's terminal I/O, driven by the runtime: the PTY master is non-blocking and
//! registered with tokio's reactor (`AsyncFd`), one task reads the program's output and
//! one writes its input. No thread per session, and one wake-up per chunk.
//!
//! Flow control is the same as with blocking reads: the output task awaits a lossless
//! subscriber that is full before it reads again, so the kernel's buffer fills and the
//! program waits in its `write`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

/// Largest chunk read at once.
pub const READ_CHUNK: usize = 32 * 1024;

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

    /// Reads the next chunk of output into `buf`: its length, or `None` at EOF (or EIO,
    /// which Linux returns once every slave descriptor is closed).
    pub async fn read(&self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let mut ready = self.0.readable().await.ok()?;
            match ready.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(Ok(0)) => return None,
                Ok(Ok(n)) => return Some(n),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return None,
                // Woken, but the data was taken already: wait again.
                Err(_would_block) => {}
            }
        }
    }

    /// Writes queued input until every sender is gone or the terminal is closed. A child
    /// that does not read its input holds up only this task (and, through the bounded
    /// queue, whoever sends it more).
    pub async fn write_input(self, input: flume::Receiver<Bytes>) {
        while let Ok(data) = input.recv_async().await {
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
        }
    }
}
