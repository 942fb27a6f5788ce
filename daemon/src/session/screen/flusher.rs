//! One thread for the daemon that parses what screens hold back once their session has
//! been quiet for a moment: a burst of output is parsed once, shortened, and off the
//! session's reader thread, and an idle session holds no unparsed output.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{OnceLock, Weak};
use std::thread;

use super::{Screen, QUIET};

static QUEUE: OnceLock<Option<flume::Sender<Weak<Screen>>>> = OnceLock::new();

/// Has `screen` parsed once its session is quiet; false when there is no flusher (its
/// thread could not start), and the screen then parses when it is looked at or full.
pub(super) fn schedule(screen: Weak<Screen>) -> bool {
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = flume::unbounded();
        match thread::Builder::new().name("screen-flush".into()).spawn(move || run(&rx)) {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "no screen flusher thread: screens parse when read");
                None
            }
        }
    });
    queue.as_ref().is_some_and(|tx| tx.send(screen).is_ok())
}

fn run(rx: &flume::Receiver<Weak<Screen>>) {
    let mut waiting: Vec<Weak<Screen>> = Vec::new();
    loop {
        if waiting.is_empty() {
            match rx.recv() {
                Ok(screen) => waiting.push(screen),
                Err(_) => return,
            }
        }
        thread::sleep(QUIET / 2);
        waiting.extend(rx.try_iter());
        waiting.retain(|screen| {
            let Some(screen) = screen.upgrade() else { return false };
            // A screen that panics the emulator must not stop every other screen's flush.
            match catch_unwind(AssertUnwindSafe(|| screen.flush_if_quiet(QUIET))) {
                Ok(done) => !done,
                Err(_) => {
                    tracing::error!("the terminal emulator panicked on a session's output");
                    false
                }
            }
        });
    }
}
