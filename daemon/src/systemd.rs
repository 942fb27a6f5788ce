//! systemd integration: socket activation, readiness, status, watchdog, stopping.
//!
//! Every notification is a no-op when `NOTIFY_SOCKET` is unset, so ptyd behaves the same
//! with or without systemd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{fstat, SFlag};
use sd_notify::NotifyState;
use tracing::{debug, warn};

/// Variables systemd hands to ptyd that must not leak into session children.
pub const PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// The listening socket passed by systemd (`LISTEN_FDS`), if any. It must be a Unix
/// stream socket: anything else is a unit misconfiguration and an error.
pub fn activated_listener() -> anyhow::Result<Option<UnixListener>> {
    let mut fds = sd_notify::listen_fds()?;
    let Some(fd) = fds.next() else { return Ok(None) };
    if fds.len() > 0 {
        warn!("systemd passed {} extra sockets; using only the first", fds.len());
    }
    let owned = take_fd(fd);
    let stat = fstat(owned.as_raw_fd())?;
    anyhow::ensure!(
        SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK,
        "LISTEN_FDS: fd {fd} is not a socket"
    );
    let kind = getsockopt(&owned, sockopt::SockType)?;
    anyhow::ensure!(
        kind == nix::sys::socket::SockType::Stream,
        "LISTEN_FDS: fd {fd} is not a stream socket"
    );
    let listener = UnixListener::from(owned);
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

#[allow(unsafe_code)]
fn take_fd(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: sd_listen_fds(3) hands this process fds 3.. for it to own; nothing else in
    // ptyd has opened, wrapped or closed them, and LISTEN_PID matched our pid.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The filesystem path a listening socket is bound to, if it has one.
pub fn bound_path(listener: &UnixListener) -> Option<PathBuf> {
    listener.local_addr().ok()?.as_pathname().map(PathBuf::from)
}

/// The notify socket, connected once at start: a daemon out of descriptors can still
/// report STATUS= and STOPPING=, which a socket opened per message could not.
static NOTIFY: OnceLock<Option<UnixDatagram>> = OnceLock::new();

fn open_notify_socket() -> Option<UnixDatagram> {
    let target = std::env::var_os("NOTIFY_SOCKET")?;
    let sock = UnixDatagram::unbound()
        .map_err(|e| warn!(error = %e, "cannot create the notify socket"))
        .ok()?;
    let bytes = target.as_encoded_bytes();
    let connected = match bytes.strip_prefix(b"@") {
        // An abstract-namespace address, as systemd often uses.
        Some(name) => {
            SocketAddr::from_abstract_name(name).and_then(|addr| sock.connect_addr(&addr))
        }
        None => sock.connect(&target),
    };
    match connected {
        Ok(()) => Some(sock),
        Err(e) => {
            warn!(error = %e, socket = ?target, "cannot reach NOTIFY_SOCKET; not notifying systemd");
            None
        }
    }
}

/// Connects to `NOTIFY_SOCKET` (when set); call once at start, before any notification.
pub fn init() {
    NOTIFY.get_or_init(open_notify_socket);
}

fn notify(state: &[NotifyState<'_>]) {
    let Some(sock) = NOTIFY.get_or_init(open_notify_socket) else { return };
    let msg: String = state.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = sock.send(msg.as_bytes()) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// READY=1, once the socket is served.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS=…, e.g. "12/64 sessions".
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// WATCHDOG=1.
pub fn watchdog_ping() {
    notify(&[NotifyState::Watchdog]);
}

/// STOPPING=1.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping: ending sessions")]);
}

/// The interval at which to ping the watchdog (half its timeout), when systemd set one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|t| t / 2)
}
