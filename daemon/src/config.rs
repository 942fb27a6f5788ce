//! The daemon's settings, with every default in one place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::{CgroupTree, Limits};
use crate::spawner::SpawnHelper;

/// Defaults, with units in their names' types.
pub mod defaults {
    use std::time::Duration;

    /// Sessions that may run at once.
    pub const CAPACITY: usize = 64;
    /// Output kept per session for replay.
    pub const REPLAY_BYTES: usize = 4096;
    /// Idle time (no input, no output, no client) after which a session is killed.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Time between SIGHUP and SIGKILL when a session ends.
    pub const KILL_GRACE: Duration = Duration::from_secs(1);
    /// How long an exited session's status stays available to `wait`, `info` and `attach`.
    pub const RETENTION: Duration = Duration::from_secs(5 * 60);
    /// Exited sessions kept at most, oldest dropped first.
    pub const MAX_RETAINED: usize = 1024;
    /// Largest replay window a spawn may ask for.
    pub const MAX_REPLAY_BYTES: usize = 16 * 1024 * 1024;
    /// Memory exited sessions may keep in all (their output and records), oldest dropped
    /// first: bounds retention by size as well as by time and count.
    pub const MAX_RETAINED_BYTES: usize = 64 * 1024 * 1024;
    /// A connection with nothing open (no attachment, wait, lease, subscription or owned
    /// session) that sends nothing for this long is closed; zero disables it.
    pub const IPC_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// A frame that has begun must be complete within this time.
    pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
    /// Bytes all connections together may hold in unfinished frames.
    pub const MAX_PARTIAL_FRAME_BYTES: usize = 64 * 1024 * 1024;
    /// Lines of history each session's screen keeps (about 32 bytes per cell: 2.5 KiB per
    /// 80-column line once filled; an idle shell fills none).
    pub const SCROLLBACK_LINES: usize = 1000;
}

/// How ptyd runs. Built by `main.rs` from flags, environment and the TOML file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The IPC socket path.
    pub socket: PathBuf,
    /// Pool capacity.
    pub capacity: usize,
    /// Default replay window per session.
    pub replay_bytes: usize,
    /// Lines of history each session's screen keeps; `None`: no screen model
    /// (`--screen off`, for measuring what it costs).
    pub scrollback_lines: Option<usize>,
    /// Default idle timeout; zero disables it.
    pub idle_timeout: Duration,
    /// SIGHUP → SIGKILL grace.
    pub kill_grace: Duration,
    /// Exited-session retention.
    pub retention: Duration,
    /// Cap on retained exited sessions.
    pub max_retained: usize,
    /// Cap on the memory retained exited sessions keep.
    pub max_retained_bytes: usize,
    /// Close connections with nothing open after this long without a frame; zero: never.
    pub ipc_idle_timeout: Duration,
    /// A frame that has begun must be complete within this time.
    pub frame_timeout: Duration,
    /// Bytes all connections together may hold in unfinished frames.
    pub max_partial_frame_bytes: usize,
    /// Per-principal admission: the most sessions one uid may run at once.
    pub max_sessions_per_uid: Option<usize>,
    /// Slots only interactive sessions (browser terminals, `ptyctl attach`) may take, so
    /// agents filling the pool cannot lock people out.
    pub interactive_reserve: usize,
    /// A group whose members may connect besides the daemon's uid and root.
    pub allow_gid: Option<u32>,
    /// The largest frame accepted.
    pub max_frame_len: usize,
    /// Limits written into every session's cgroup (`pids.max`, `memory.max`).
    pub session_limits: Limits,
    /// Where sessions get cgroups of their own; `None` contains them by process group
    /// only. Set up by `main.rs` with [`CgroupTree::setup`] from `session_limits`.
    pub cgroups: Option<Arc<CgroupTree>>,
    /// Give the interactive bash and zsh that sessions start semantic prompt marks
    /// (`shell_integration.rs`), for `run`.
    pub shell_integration: bool,
    /// The spawn helper forked at start (`spawner.rs`); `None`: ptyd forks each child
    /// itself (tests that run the daemon in their own process).
    pub spawner: Option<Arc<SpawnHelper>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: ipc_proto::socket_path_from_env(),
            capacity: defaults::CAPACITY,
            replay_bytes: defaults::REPLAY_BYTES,
            scrollback_lines: Some(defaults::SCROLLBACK_LINES),
            idle_timeout: defaults::IDLE_TIMEOUT,
            kill_grace: defaults::KILL_GRACE,
            retention: defaults::RETENTION,
            max_retained: defaults::MAX_RETAINED,
            max_retained_bytes: defaults::MAX_RETAINED_BYTES,
            ipc_idle_timeout: defaults::IPC_IDLE_TIMEOUT,
            frame_timeout: defaults::FRAME_TIMEOUT,
            max_partial_frame_bytes: defaults::MAX_PARTIAL_FRAME_BYTES,
            max_sessions_per_uid: None,
            interactive_reserve: 0,
            allow_gid: None,
            max_frame_len: ipc_proto::MAX_FRAME_LEN,
            session_limits: Limits::default(),
            cgroups: None,
            shell_integration: true,
            spawner: None,
        }
    }
}
