//! Descriptor hygiene at start: whatever the caller left open without close-on-exec (a
//! lock file, the write end of a pipe) would be held by the bridge for its whole life,
//! and by a ptyd it starts, so that `flock L ptyd-bridge` or `ptyd-bridge | tee log`
//! would never end. Only 0, 1 and 2 are kept, and systemd's passed sockets
//! (`LISTEN_FDS`, when `LISTEN_PID` is ours).

use std::os::fd::RawFd;

/// First descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Closes every descriptor above 2 that the process inherited and did not ask for. Call
/// it first thing in `main`, before any thread or descriptor of our own exists.
pub fn close_inherited() {
    let keep_until = LISTEN_FDS_START + passed_sockets();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    // Listed first, closed after: the listing's own descriptor is among them and is gone
    // (EBADF, ignored) by the time it comes up.
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !(LISTEN_FDS_START..keep_until).contains(fd))
        .collect();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// How many sockets systemd passed to this very process.
fn passed_sockets() -> RawFd {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    if !ours {
        return 0;
    }
    std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse().ok()).unwrap_or(0)
}
