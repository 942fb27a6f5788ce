//! Helpers for cross-process tests that drive the real `ptyd` and `ptyctl` binaries.
//!
//! - [`bins`]: where the built binaries are (`cargo build --workspace --bins` first).
//! - [`daemon`]: [`Daemon`], a ptyd in its own temporary directory, killed on drop.
//! - [`wait`]: [`wait_until`] and friends, bounded polling instead of fixed sleeps.
//! - [`procfs`]: children, zombies, open fds and process lookups from `/proc`.
//! - [`output`]: [`read_until`] and [`read_to_exit`] over an [`ipc_proto::Attachment`].
//! - [`raw`]: [`RawConn`], a byte-level connection for malformed or hand-written frames.
//! - [`docs`]: the runnable examples embedded in `ipc-proto/PROTOCOL.md`.
//! - [`bridge`]: [`bridge::Bridge`], a ptyd-bridge process, with HTTP and WebSocket clients.
//! - [`logfile`]: reading and waiting on the log file of a test process.

pub mod bins;
pub mod blocking;
pub mod bridge;
pub mod daemon;
pub mod docs;
pub mod logfile;
pub mod output;
pub mod outsider;
pub mod procfs;
pub mod raw;
pub mod wait;

pub use bins::{bin_path, ptyctl_bin, ptyd_bin, target_profile_dir, workspace_root};
pub use daemon::{Daemon, DaemonOptions};
pub use output::{collect_until, read_to_exit, read_until, Collected, Pattern};
pub use procfs::{
    children_of, cmdline, descendants_of, fd_count, fd_targets, pids_with_cmdline, pids_with_comm,
    proc_stat, process_alive, rss_bytes, spawn_helper_of, zombie_children, ProcStat, Stopped,
};
pub use raw::{frame_bytes, RawConn, RawFrame};
pub use wait::{wait_until, wait_until_async, wait_until_with};

/// A generous default timeout for conditions in tests (slow CI machines included).
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A string unique to this test process and call, for names that must not collide
/// between tests running in parallel.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
