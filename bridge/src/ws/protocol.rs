//! The browser wire protocol: JSON control messages in text frames, tagged by `type`, and
//! the close codes. Binary frames carry raw terminal bytes and need no types.
//!
//! `bridge/PROTOCOL.md` documents every message with examples; keep the two in step.

use ipc_proto::{EndReason, ExitStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of this wire protocol, sent in `hello`. 2 added starting from the screen
/// (`?screen=auto`, `hello.snapshot`); a client that does not ask sees version 1 behaviour.
pub const PROTOCOL_VERSION: u32 = 3;

/// Close codes the bridge sends.
pub mod close {
    /// Normal closure: the program exited, or the socket was idle.
    pub const NORMAL: u16 = 1000;
    /// The bridge is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (a malformed frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not valid UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// The request was refused by policy (e.g. a `since` past the end of the output).
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// ptyd is unreachable or the connection to it broke.
    pub const INTERNAL: u16 = 1011;
    /// Another socket took this terminal over.
    pub const TAKEN_OVER: u16 = 4000;
    /// No Pong came back in time.
    pub const PONG_TIMEOUT: u16 = 4001;
    /// The terminal was deleted through the API.
    pub const DELETED: u16 = 4002;
    /// The terminal was detached through the API: it runs on, kept without this socket.
    pub const DETACHED: u16 = 4003;
    /// The share link this socket was opened through was revoked.
    pub const REVOKED: u16 = 4005;
    /// The terminal is Dead (ended between the HTTP check and the upgrade).
    pub const GONE: u16 = 4004;
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Client → server control messages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Change the terminal size.
    Resize {
        /// Columns, at least 1.
        cols: u16,
        /// Rows, at least 1.
        rows: u16,
    },
    /// Application-level liveness check, answered by `pong`.
    Ping {},
    /// Flow control: the client has rendered the output before this terminal offset. The
    /// first `ack` turns flow control on for the socket.
    Ack {
        /// Terminal offset just past the last rendered byte.
        offset: u64,
    },
}

/// Server → client control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every socket: where the binary frames that follow start.
    Hello {
        /// The terminal id.
        id: Uuid,
        /// Terminal offset of the first byte of the binary frames that follow.
        offset: u64,
        /// The terminal's output end when the socket attached (where the replay stops).
        end: u64,
        /// Bytes between the requested `since` and `offset` that are lost.
        dropped: u64,
        /// This protocol's version.
        version: u32,
        /// How long the terminal waits for a new socket after this one goes: the time a
        /// client has to reconnect.
        grace_ms: u64,
        /// When nonzero, the next binary frame is this many bytes that reproduce the
        /// terminal's screen (as of `offset`) in a fresh terminal of `cols` × `rows`: reset
        /// the terminal and write them; they are not output and have no offset.
        #[serde(skip_serializing_if = "is_zero")]
        snapshot: u64,
        /// The snapshot's size.
        #[serde(skip_serializing_if = "Option::is_none")]
        cols: Option<u16>,
        /// The snapshot's size.
        #[serde(skip_serializing_if = "Option::is_none")]
        rows: Option<u16>,
        /// What this viewer may do: `read-write`, or `read-only` (its input is refused).
        role: crate::viewers::Role,
    },
    /// The terminal's size changed (by the resize policy, from the read-write viewers'
    /// windows): a window larger than this shows the terminal smaller than itself.
    Size {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Answer to `ping`.
    Pong {},
    /// Output in `[offset, offset + bytes)` will never arrive.
    Dropped {
        /// First lost byte.
        offset: u64,
        /// How many.
        bytes: u64,
    },
    /// The program ended; the socket closes normally after this.
    Exit {
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Signal number, if a signal killed it.
        signal: Option<i32>,
        /// Why the session ended, as ptyd recorded it (`exited`, `killed`,
        /// `idle_timeout`, …); absent when ptyd could not say.
        #[serde(skip_serializing_if = "Option::is_none")]
        end_reason: Option<EndReason>,
    },
    /// A control message was refused, or an operation failed.
    Error {
        /// Machine-readable name: `BadMessage`, `UnknownMessage`, or a ptyd error code.
        code: String,
        /// Human-readable text.
        message: String,
    },
}

impl ServerMessage {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }

    /// An `exit` message.
    pub fn exit(status: ExitStatus, end_reason: Option<EndReason>) -> ServerMessage {
        ServerMessage::Exit { code: status.code, signal: status.signal, end_reason }
    }

    /// An `error` message.
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error { code: code.into(), message: message.into() }
    }
}

/// Why a text frame was refused; becomes an `error` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, not an object, no string `type`, or wrong fields.
    #[error("{0}")]
    Bad(String),
    /// A `type` this bridge does not know.
    #[error("unknown control message type {0:?}")]
    Unknown(String),
}

impl MessageError {
    /// The `code` of the `error` reply.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::Bad(_) => "BadMessage",
            MessageError::Unknown(_) => "UnknownMessage",
        }
    }

    /// The `error` reply.
    pub fn reply(&self) -> ServerMessage {
        ServerMessage::error(self.code(), self.to_string())
    }
}

/// Parses one text frame into a control message, with a reason fit for the sender on failure.
pub fn parse_client(text: &str) -> Result<ClientMessage, MessageError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| MessageError::Bad(format!("control message is not valid JSON: {e}")))?;
    let kind = match value.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        _ if !value.is_object() => {
            return Err(MessageError::Bad("control message must be a JSON object".into()))
        }
        _ => return Err(MessageError::Bad("control message has no string \"type\" field".into())),
    };
    if !matches!(kind.as_str(), "resize" | "ping" | "ack") {
        return Err(MessageError::Unknown(kind));
    }
    let msg: ClientMessage = serde_json::from_value(value)
        .map_err(|e| MessageError::Bad(format!("invalid {kind} message: {e}")))?;
    if let ClientMessage::Resize { cols, rows } = msg {
        if cols == 0 || rows == 0 {
            return Err(MessageError::Bad(format!(
                "invalid size {cols}x{rows}: both must be at least 1"
            )));
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resize_and_ping() {
        assert_eq!(
            parse_client(r#"{"type":"resize","cols":100,"rows":30}"#),
            Ok(ClientMessage::Resize { cols: 100, rows: 30 })
        );
        assert_eq!(parse_client(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping {}));
        // Unknown fields are ignored, so clients may add some.
        assert_eq!(parse_client(r#"{"type":"ping","t":17}"#), Ok(ClientMessage::Ping {}));
        assert_eq!(
            parse_client(r#"{"type":"ack","offset":42}"#),
            Ok(ClientMessage::Ack { offset: 42 })
        );
        assert!(parse_client(r#"{"type":"ack","offset":-1}"#).is_err());
        assert!(parse_client(r#"{"type":"ack"}"#).is_err());
    }

    #[test]
    fn refuses_malformed_messages_with_a_reason() {
        let cases = [
            ("hello", "BadMessage", "not valid JSON"),
            ("[1,2]", "BadMessage", "must be a JSON object"),
            (r#"{"cols":1}"#, "BadMessage", "no string \"type\""),
            (r#"{"type":7}"#, "BadMessage", "no string \"type\""),
            (
                r#"{"type":"resize","cols":80}"#,
                "BadMessage",
                "invalid resize message: missing field `rows`",
            ),
            (r#"{"type":"resize","cols":-1,"rows":2}"#, "BadMessage", "invalid resize message"),
            (r#"{"type":"resize","cols":0,"rows":24}"#, "BadMessage", "invalid size 0x24"),
            (r#"{"type":"launch"}"#, "UnknownMessage", "unknown control message type \"launch\""),
        ];
        for (text, code, needle) in cases {
            let err = parse_client(text).unwrap_err();
            assert_eq!(err.code(), code, "{text}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn server_messages_are_tagged_by_type() {
        let id = Uuid::nil();
        let hello = ServerMessage::Hello {
            id,
            offset: 5,
            end: 9,
            dropped: 2,
            version: 1,
            grace_ms: 10_000,
            snapshot: 0,
            cols: None,
            rows: None,
            role: crate::viewers::Role::ReadOnly,
        };
        assert_eq!(
            hello.to_json(),
            r#"{"type":"hello","id":"00000000-0000-0000-0000-000000000000","offset":5,"end":9,"dropped":2,"version":1,"grace_ms":10000,"role":"read-only"}"#
        );
        assert_eq!(
            ServerMessage::Size { cols: 80, rows: 24 }.to_json(),
            r#"{"type":"size","cols":80,"rows":24}"#
        );
        assert_eq!(ServerMessage::Pong {}.to_json(), r#"{"type":"pong"}"#);
        assert_eq!(
            ServerMessage::Dropped { offset: 1, bytes: 2 }.to_json(),
            r#"{"type":"dropped","offset":1,"bytes":2}"#
        );
        assert_eq!(
            ServerMessage::exit(ExitStatus { code: None, signal: Some(1) }, None).to_json(),
            r#"{"type":"exit","code":null,"signal":1}"#
        );
        assert_eq!(
            ServerMessage::error("BadMessage", "no").to_json(),
            r#"{"type":"error","code":"BadMessage","message":"no"}"#
        );
    }
}
