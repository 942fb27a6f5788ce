//! Waiting for a cgroup to empty, driven by the events the kernel raises on
//! `cgroup.events` whenever its `populated` line changes (inotify `IN_MODIFY`).
//!
//! The daemon has one inotify instance, created at start and shared by every session
//! that waits: inotify instances are limited per user (often 128), and a daemon ending
//! 64 sessions at once must not run out of them.
//!
//! `unsafe` is allowed here for one call: registering the inotify descriptor with tokio
//! (`AsyncFd::register_with_interest`), whose contract the type system cannot check.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;
use tokio::sync::{Notify, OnceCell};

use super::populated;

/// The shared watcher. Registered with the runtime on first use, since it is created
/// before the runtime exists.
pub(super) struct Watcher {
    inotify: Mutex<Option<Inotify>>,
    registered: OnceCell<Registered>,
}

/// The inotify instance in the runtime, and who waits for which watch.
struct Registered {
    fd: AsyncFd<InotifyFd>,
    waiters: Mutex<HashMap<WatchDescriptor, Arc<Notify>>>,
}

/// `Inotify` as the raw descriptor `AsyncFd` wants.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn new_inotify() -> io::Result<Inotify> {
    Ok(Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?)
}

/// Watches `dir`'s `cgroup.events`, which the kernel marks modified when `populated`
/// changes.
fn watch_events(inotify: &Inotify, dir: &Path) -> io::Result<WatchDescriptor> {
    Ok(inotify.add_watch(&dir.join("cgroup.events"), AddWatchFlags::IN_MODIFY)?)
}

impl Watcher {
    /// Creates the inotify instance.
    pub(super) fn new() -> io::Result<Watcher> {
        Ok(Watcher { inotify: Mutex::new(Some(new_inotify()?)), registered: OnceCell::new() })
    }

    async fn registered(&self) -> io::Result<&Registered> {
        self.registered
            .get_or_try_init(|| async {
                let inotify = self.inotify.lock().unwrap_or_else(|p| p.into_inner()).take();
                let inotify = inotify.ok_or_else(|| io::Error::other("inotify already taken"))?;
                // SAFETY: `InotifyFd` owns the descriptor (an `OwnedFd` inside `Inotify`),
                // never replaces or closes it, and always returns the same one; it lives
                // exactly as long as the `AsyncFd`.
                let fd = unsafe {
                    AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE)?
                };
                Ok(Registered { fd, waiters: Mutex::default() })
            })
            .await
    }

    /// Waits until the cgroup `dir` is empty, for at most `limit`; returns whether it is.
    pub(super) async fn wait_empty(&self, dir: &Path, limit: Duration) -> io::Result<bool> {
        let reg = self.registered().await?;
        // Only this daemon removes its session cgroups, and only after waiting, so the
        // events file is all there is to watch.
        let wd = match watch_events(reg.inotify(), dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            other => other?,
        };
        let notify = Arc::new(Notify::new());
        reg.waiters().insert(wd, notify.clone());
        let _unwatch = scopeguard::guard((), |()| {
            reg.waiters().remove(&wd);
            // Fails once the directory is gone, which removed the watch already.
            let _ = reg.inotify().rm_watch(wd);
        });
        let wait = async {
            // The watch exists before the first check, so no change can be missed.
            while populated(dir) {
                tokio::select! {
                    _ = notify.notified() => {}
                    ready = reg.fd.readable() => reg.dispatch(ready?)?,
                }
            }
            Ok(())
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(result) => result.map(|()| true),
            Err(_) => Ok(false),
        }
    }
}

impl Registered {
    fn inotify(&self) -> &Inotify {
        &self.fd.get_ref().0
    }

    fn waiters(&self) -> MutexGuard<'_, HashMap<WatchDescriptor, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the pending events and wakes the waiter of each.
    fn dispatch(&self, mut ready: AsyncFdReadyGuard<'_, InotifyFd>) -> io::Result<()> {
        let Ok(read) = ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from))
        else {
            // Another waiter read them first and woke their owners.
            return Ok(());
        };
        let waiters = self.waiters();
        for event in read? {
            if let Some(notify) = waiters.get(&event.wd) {
                notify.notify_one();
            }
        }
        Ok(())
    }
}

/// [`Watcher::wait_empty`] without a runtime (at start and at exit): an inotify
/// instance of its own and poll(2).
///
/// Another starting ptyd may be removing the same stale subtree. The kernel rate-limits
/// `cgroup.events` notifications and drops a pending one when the cgroup is removed, and
/// cgroupfs raises no `IN_DELETE_SELF`, so the parent directory is watched for the
/// removal too.
pub(super) fn wait_empty_blocking(dir: &Path, limit: Duration) -> io::Result<bool> {
    let inotify = new_inotify()?;
    if let Some(parent) = dir.parent() {
        inotify.add_watch(parent, AddWatchFlags::IN_DELETE | AddWatchFlags::IN_ONLYDIR)?;
    }
    match watch_events(&inotify, dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        other => other?,
    };
    let deadline = Instant::now() + limit;
    while populated(dir) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        match inotify.read_events() {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}
