//! ptyd IPC: message types, framing and an async client.
//!
//! The wire format is documented byte by byte in [`codec`] and message by message in
//! `PROTOCOL.md` beside this crate. Nothing here knows about PTYs or the daemon.

pub mod client;
pub mod codec;
pub mod error;
pub mod follow;
pub mod message;

pub use client::{Attachment, Client, Notice, SessionEvent};
pub use codec::{
    framed_read, framed_write, Frame, FrameCodec, InvalidMessage, MAX_FRAME_LEN, MAX_PAYLOAD_LEN,
    START_BUFFER,
};
pub use error::{ClientError, ConnectionStage, ErrorCode, IpcError, ProtoError};
pub use follow::{Connect, Follower, Links};
pub use message::*;

/// The protocol version this crate speaks. Bumped only for incompatible changes;
/// compatible additions (new optional fields, new message types) keep it.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol version a daemon still serves, with that version's meanings.
/// Version 1 differs from 2 only in where `wait_for` without `since` starts: at the
/// moment of the call (1) or at the session's latest input (2).
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// Environment variable naming the daemon's socket, read by ptyd, ptyctl and the bridge.
pub const SOCKET_ENV: &str = "PTYD_SOCKET";

/// The default socket path: `$XDG_RUNTIME_DIR/ptyd/ptyd.sock`, else `/tmp/ptyd-$UID/ptyd.sock`.
pub fn default_socket_path() -> std::path::PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => std::path::PathBuf::from(dir).join("ptyd").join("ptyd.sock"),
        None => {
            // /proc/self belongs to our effective uid; this keeps libc/nix out of the crate.
            let uid = std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .unwrap_or(0);
            std::path::PathBuf::from(format!("/tmp/ptyd-{uid}/ptyd.sock"))
        }
    }
}

/// The socket path to use: `PTYD_SOCKET` when set, else [`default_socket_path`].
pub fn socket_path_from_env() -> std::path::PathBuf {
    match std::env::var_os(SOCKET_ENV).filter(|v| !v.is_empty()) {
        Some(p) => p.into(),
        None => default_socket_path(),
    }
}
