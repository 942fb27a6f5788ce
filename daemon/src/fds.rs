//! Descriptor hygiene at start: ptyd closes every descriptor it inherited and did not ask
//! for, so that a lock file or a pipe its caller held open is not held for the daemon's
//! whole life (`flock L ptyd …` would otherwise keep L locked long after its parent left).
//!
//! `unsafe` is allowed here for the one `close_range(2)` system call, which neither std
//! nor nix wraps.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// The first descriptor systemd's socket activation hands over (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Closes every descriptor from 3 up, except those systemd passed for socket activation
/// (3..3+`LISTEN_FDS`, only when `LISTEN_PID` is this process). Returns the first
/// descriptor closed.
///
/// Call first thing in `main`, while nothing in the process owns a descriptor above 2
/// and no other thread exists: closing a descriptor someone else owns would be a bug.
pub fn close_inherited() -> RawFd {
    let first = LISTEN_FDS_START + activation_fds();
    // SAFETY: close_range(2) takes plain integers and touches no memory of ours; at the
    // start of main no Rust object owns a descriptor in this range (see above).
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            first as u32,
            u32::MAX,
            0 as nix::libc::c_uint,
        )
    };
    if rc != 0 {
        // A kernel before 5.9: close what /proc lists, one by one.
        close_listed(first);
    }
    first
}

/// Closes every descriptor from 3 up except `keep` (those a live upgrade's handover state
/// names). Same contract as [`close_inherited`].
pub fn close_inherited_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd >= LISTEN_FDS_START).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = LISTEN_FDS_START;
    for fd in keep.into_iter().chain([RawFd::MAX]) {
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd.saturating_add(1);
    }
}

/// Closes `[first, last]`.
fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: as in `close_inherited`: plain integers, no descriptor in the range owned.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            first as u32,
            last as u32,
            0 as nix::libc::c_uint,
        )
    };
    if rc != 0 {
        for fd in first..=last.min(65535) {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// How many descriptors systemd passed to this very process.
fn activation_fds() -> RawFd {
    let pid = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        return 0;
    }
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .filter(|n| (0..=4096).contains(n))
        .unwrap_or(0)
}

fn close_listed(first: RawFd) {
    // Collect first: the directory listing is itself a descriptor, closed after the loop.
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= first)
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        // EBADF for the listing's own descriptor, already closed.
        let _ = nix::unistd::close(fd);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn activation_fds_need_our_pid() {
        // The test runner is not socket-activated.
        assert_eq!(super::activation_fds(), 0);
    }
}
