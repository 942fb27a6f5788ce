//! Error names shared by the wire (`ErrorCode`) and the Rust side (`ProtoError`, `ClientError`
//! and its transport half, `IpcError`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// `run` on a session whose shell prints no semantic prompt marks (OSC 133).
    NoShellIntegration,
    /// `run` on a session whose shell is running a command already.
    SessionBusy,
    /// `upgrade` could not replace the daemon (the binary is missing, is not a ptyd, or
    /// cannot take over its state); the daemon runs on, on its old binary, every session
    /// intact.
    UpgradeFailed,
    /// The daemon is replacing its binary (`upgrade`) and closed this connection; connect
    /// again (new connections wait until the new image serves them). Sessions go on.
    Upgrading,
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
    /// The daemon could not be reached, or the connection broke. `Display` already says
    /// why, so the `IpcError` is not also returned by `source()`: chain printers such as
    /// anyhow's `{:#}` would print it twice.
    #[error("IPC error: {0}")]
    Ipc(IpcError),
}

impl ClientError {
    /// The daemon's error code, when the daemon sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon { code, .. } => Some(*code),
            ClientError::Ipc(_) => None,
        }
    }

    /// Whether the daemon closed the connection because it is replacing its binary
    /// (`upgrade`): connect again and go on where you were.
    pub fn is_upgrading(&self) -> bool {
        matches!(
            self,
            ClientError::Ipc(IpcError::ClosedByDaemon { code: ErrorCode::Upgrading, .. })
                // Refused at the handshake: connected just as the upgrade began.
                | ClientError::Daemon { code: ErrorCode::Upgrading, .. }
        )
    }

    /// The text without the `IPC error: ` prefix: the daemon's message, or what happened
    /// to the connection.
    pub fn detail(&self) -> String {
        match self {
            ClientError::Daemon { message, .. } => message.clone(),
            ClientError::Ipc(e) => e.to_string(),
        }
    }
}

impl From<IpcError> for ClientError {
    fn from(e: IpcError) -> ClientError {
        ClientError::Ipc(e)
    }
}

/// How far a connection had got when it failed. Part of the message, and of what a caller
/// may want to know (a daemon that hangs up during the handshake is refusing this client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionStage {
    /// Sending the client's `hello`.
    SendingHello,
    /// Waiting for the daemon's `hello`.
    AwaitingHello,
    /// After the handshake: requests, replies and events.
    Connected,
}

/// Why the connection to ptyd failed, with the cause kept for callers that branch on it.
///
/// `Display` is the wording operators and tests know (e.g. `cannot connect to ptyd at
/// /run/ptyd/ptyd.sock: Connection refused (os error 111)`); it includes the
/// `std::io::Error`'s text, so `source()` does not return it again. Use
/// [`IpcError::io_kind`] or match the variant instead of reading the text.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum IpcError {
    /// `connect(2)` on the socket failed: `NotFound` (no socket file),
    /// `ConnectionRefused` (a socket file nobody listens on), `PermissionDenied`…
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The OS error (shared, so the error stays `Clone`).
        cause: Arc<io::Error>,
    },
    /// ptyd ended the connection (end of stream) without saying why.
    Closed {
        /// When.
        stage: ConnectionStage,
    },
    /// The socket failed under the connection (`ECONNRESET`, `EPIPE`…).
    Broken {
        /// When.
        stage: ConnectionStage,
        /// The OS error.
        cause: Arc<io::Error>,
    },
    /// ptyd sent an error frame without a request id and closed the connection, e.g.
    /// `Timeout` for a connection idle with nothing open.
    ClosedByDaemon {
        /// The wire code.
        code: ErrorCode,
        /// The daemon's text.
        message: String,
    },
    /// The peer broke the protocol: a frame that does not decode, one over the size limit,
    /// or a reply of the wrong type. The text says which.
    Protocol(String),
    /// ptyd did not answer within the caller's deadline.
    Timeout(Duration),
    /// No connection is up, so none was tried: a supervisor that reconnects on its own
    /// (the bridge's) knows ptyd is away. `last` is why its last attempt failed, `None`
    /// before the first one ended.
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// The last attempt's failure.
        last: Option<Box<ClientError>>,
    },
}

impl IpcError {
    /// A failed `connect(2)` on `path`.
    pub fn connect(path: impl Into<PathBuf>, cause: io::Error) -> IpcError {
        IpcError::Connect { path: path.into(), cause: Arc::new(cause) }
    }

    /// A framing failure on a connection at `stage`: an I/O error is `Broken`, anything
    /// else a `Protocol` violation.
    pub(crate) fn from_proto(stage: ConnectionStage, e: ProtoError) -> IpcError {
        match e {
            ProtoError::Io(cause) => IpcError::Broken { stage, cause: Arc::new(cause) },
            other => IpcError::Protocol(format!("{}{other}", prefix(stage))),
        }
    }

    /// The OS error behind this failure, if there is one (for `Unreachable`, the last
    /// attempt's).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            IpcError::Connect { cause, .. } | IpcError::Broken { cause, .. } => Some(cause),
            IpcError::Unreachable { last: Some(last), .. } => match &**last {
                ClientError::Ipc(e) => e.io_error(),
                ClientError::Daemon { .. } => None,
            },
            _ => None,
        }
    }

    /// The kind of [`IpcError::io_error`]: match `ConnectionRefused`, `NotFound`,
    /// `PermissionDenied` and so on.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.io_error().map(io::Error::kind)
    }

    /// The errno of [`IpcError::io_error`], when the OS gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }

    /// The socket path, for the failures that name one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            IpcError::Connect { path, .. } | IpcError::Unreachable { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// What the message of a failure at `stage` starts with.
fn prefix(stage: ConnectionStage) -> &'static str {
    match stage {
        ConnectionStage::SendingHello => "handshake failed: ",
        ConnectionStage::AwaitingHello => "",
        ConnectionStage::Connected => "connection to ptyd failed: ",
    }
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::Connect { path, cause } => {
                write!(f, "cannot connect to ptyd at {}: {cause}", path.display())
            }
            IpcError::Closed { stage: ConnectionStage::Connected } => {
                f.write_str("ptyd closed the connection")
            }
            IpcError::Closed { .. } => {
                f.write_str("ptyd closed the connection during the handshake")
            }
            // The same words as `ProtoError::Io`, which this came from.
            IpcError::Broken { stage, cause } => {
                write!(f, "{}transport error: {cause}", prefix(*stage))
            }
            IpcError::ClosedByDaemon { code, message } => write!(f, "{message} ({code})"),
            IpcError::Protocol(detail) => f.write_str(detail),
            IpcError::Timeout(after) => write!(f, "ptyd did not answer within {after:?}"),
            IpcError::Unreachable { path, last } => {
                write!(f, "ptyd is not reachable at {}: ", path.display())?;
                match last {
                    Some(last) => f.write_str(&last.detail()),
                    None => f.write_str("not connected yet"),
                }
            }
        }
    }
}

impl std::error::Error for IpcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_is_recognized_whether_it_closed_the_connection_or_refused_the_hello() {
        let message = "ptyd is being upgraded; reconnect".to_string();
        let closed =
            IpcError::ClosedByDaemon { code: ErrorCode::Upgrading, message: message.clone() };
        assert!(ClientError::Ipc(closed).is_upgrading());
        assert!(ClientError::Daemon { code: ErrorCode::Upgrading, message }.is_upgrading());
        let idle = IpcError::ClosedByDaemon { code: ErrorCode::Timeout, message: "idle".into() };
        assert!(!ClientError::Ipc(idle).is_upgrading());
    }

    fn refused() -> io::Error {
        io::Error::from_raw_os_error(111)
    }

    #[test]
    fn connect_failures_keep_path_kind_and_errno() {
        let e = ClientError::from(IpcError::connect("/run/ptyd.sock", refused()));
        assert_eq!(
            e.to_string(),
            "IPC error: cannot connect to ptyd at /run/ptyd.sock: Connection refused (os error 111)"
        );
        let ClientError::Ipc(ipc) = &e else { panic!("{e:?}") };
        assert_eq!(ipc.io_kind(), Some(io::ErrorKind::ConnectionRefused));
        assert_eq!(ipc.raw_os_error(), Some(111));
        assert_eq!(ipc.path(), Some(Path::new("/run/ptyd.sock")));
        assert!(std::error::Error::source(&e).is_none(), "the cause is in the text once");
    }

    #[test]
    fn messages_keep_their_wording() {
        let reset = || Arc::new(io::Error::from(io::ErrorKind::ConnectionReset));
        let cases = [
            (IpcError::Closed { stage: ConnectionStage::Connected }, "ptyd closed the connection"),
            (
                IpcError::Closed { stage: ConnectionStage::AwaitingHello },
                "ptyd closed the connection during the handshake",
            ),
            (
                IpcError::Broken { stage: ConnectionStage::Connected, cause: reset() },
                "connection to ptyd failed: transport error: connection reset",
            ),
            (
                IpcError::Broken { stage: ConnectionStage::SendingHello, cause: reset() },
                "handshake failed: transport error: connection reset",
            ),
            (
                IpcError::Broken { stage: ConnectionStage::AwaitingHello, cause: reset() },
                "transport error: connection reset",
            ),
            (
                IpcError::ClosedByDaemon { code: ErrorCode::Timeout, message: "idle".into() },
                "idle (Timeout)",
            ),
            (IpcError::Timeout(Duration::from_secs(5)), "ptyd did not answer within 5s"),
            (
                IpcError::Unreachable { path: "/s".into(), last: None },
                "ptyd is not reachable at /s: not connected yet",
            ),
            (
                IpcError::Unreachable {
                    path: "/s".into(),
                    last: Some(Box::new(IpcError::connect("/s", refused()).into())),
                },
                "ptyd is not reachable at /s: cannot connect to ptyd at /s: Connection refused \
                 (os error 111)",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn unreachable_reports_the_last_attempts_cause() {
        let last = ClientError::from(IpcError::connect("/s", io::ErrorKind::NotFound.into()));
        let e = IpcError::Unreachable { path: "/s".into(), last: Some(Box::new(last)) };
        assert_eq!(e.io_kind(), Some(io::ErrorKind::NotFound));
        let frame =
            IpcError::from_proto(ConnectionStage::Connected, ProtoError::Malformed("x".into()));
        assert!(
            matches!(&frame, IpcError::Protocol(t) if t == "connection to ptyd failed: malformed frame: x")
        );
        assert_eq!(frame.io_kind(), None);
    }
}
