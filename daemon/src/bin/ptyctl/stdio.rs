//! Blocking stdin reads and stdout writes, kept off the async runtime's thread.
//!
//! A read of stdin cannot be cancelled, and a write to a stalled pipe can block for ever:
//! either would freeze signal handling and the IPC connection if done on the runtime.

use std::io::{self, Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks of stdin as they arrive, read by a thread of their own; the stream ends after end
/// of file or a read error (which is its last item). The thread stays blocked in `read`
/// when ptyctl is done; exiting the process ends it.
pub fn stdin_chunks() -> mpsc::Receiver<io::Result<Bytes>> {
    // A small queue: keystrokes are small, and piped input should wait for the daemon.
    let (tx, rx) = mpsc::channel(4);
    let spawned = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let item = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let last = item.is_err();
            if tx.blocking_send(item).is_err() || last {
                return;
            }
        }
    });
    if let Err(e) = spawned {
        // Report through the stream itself so callers have one error path.
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Err(e));
        return rx;
    }
    rx
}

/// Writes `data` to stdout and flushes it, on the blocking pool.
pub fn write_stdout(data: Bytes) -> JoinHandle<io::Result<()>> {
    tokio::task::spawn_blocking(move || {
        let mut out = io::stdout().lock();
        out.write_all(&data)?;
        out.flush()
    })
}
