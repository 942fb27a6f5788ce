//! Error names shared by the wire (`ErrorCode`) and the Rust side (`ProtoError`, `ClientError`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The machine-readable name in an `error` reply. Names are contract: never renamed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The pool has no free slot: "pty pool is at capacity ({max})".
    AtCapacity,
    /// A per-principal limit refused the spawn: "session quota reached: {used}/{limit} for
    /// uid {uid}", or the agents' share of a pool with slots reserved for interactive
    /// sessions. Other principals may still spawn; retry when one of yours ends.
    QuotaExceeded,
    /// No session has this id: "pty handle not found: <uuid>".
    HandleNotFound,
    /// The PTY or the child could not be created: "pty spawn failed: <details>".
    SpawnFailed,
    /// The client speaks a protocol version the daemon does not.
    VersionMismatch,
    /// The peer's credentials are not allowed to use this daemon.
    PermissionDenied,
    /// The frame could not be decoded; the connection is closed after this error.
    MalformedFrame,
    /// The frame is larger than the limit; the connection is closed after this error.
    FrameTooLarge,
    /// The session has exited, so its terminal takes no input or resize.
    SessionExited,
    /// A well-formed request with invalid fields (bad signal name, zero size…).
    BadRequest,
    /// A request `type` the daemon does not know.
    UnknownRequest,
    /// A `wait` with a timeout did not see the exit in time.
    Timeout,
    /// The daemon is shutting down and takes no new sessions.
    ShuttingDown,
    /// A bug or an unexpected OS failure inside the daemon.
    Internal,
    /// A code this client does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Framing failures. Any of these ends the connection it happened on.
#[derive(thiserror::Error, Debug)]
pub enum ProtoError {
    /// A length prefix over the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The announced frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame whose inner structure or JSON header is invalid.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtoError {
    /// The wire code that reports this failure to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtoError::Malformed(_) => ErrorCode::MalformedFrame,
            ProtoError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// What a call on the async client can fail with.
#[derive(thiserror::Error, Debug, Clone)]
pub enum ClientError {
    /// The daemon answered with an error; `Display` is the daemon's message.
    #[error("{message}")]
    Daemon {
        /// The wire code, e.g. `AtCapacity`.
        code: ErrorCode,
        /// The daemon's text, e.g. `pty pool is at capacity (64)`.
        message: String,
    },
    /// The daemon could not be reached, or the connection broke.
    #[error("IPC error: {0}")]
    Ipc(String),
}

impl ClientError {
    /// The daemon's error code, when the daemon sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon { code, .. } => Some(*code),
            ClientError::Ipc(_) => None,
        }
    }
}
