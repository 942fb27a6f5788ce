//! A byte-level connection to ptyd for protocol tests: hand-written JSON headers,
//! malformed frames, oversized length prefixes, and checking what the daemon answers
//! and whether it closes the connection.
//!
//! Frames are `u32 BE frame_len | u32 BE header_len | JSON header | payload`, with
//! `frame_len = 4 + header_len + payload_len` (see `ipc_proto::codec`).

use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use ipc_proto::codec::encode_frame;
use ipc_proto::{Frame, PROTOCOL_VERSION};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The wire bytes of a frame with this exact header text and payload. The header is not
/// checked, so it may be invalid JSON on purpose.
pub fn frame_bytes(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + header.len() + payload.len());
    out.extend_from_slice(&((4 + header.len() + payload.len()) as u32).to_be_bytes());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    out
}

/// One frame as received: the header as generic JSON, and the payload.
#[derive(Clone, Debug, PartialEq)]
pub struct RawFrame {
    /// The JSON header, e.g. `{"id":2,"type":"spawned","session":"…","pid":123}`.
    pub header: Value,
    /// The payload bytes (terminal output for `output` events).
    pub payload: Bytes,
}

impl RawFrame {
    /// The header's `type` (empty when missing).
    pub fn kind(&self) -> &str {
        self.header.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The header's `id`; 0 when absent (events, refused connections).
    pub fn id(&self) -> u64 {
        self.header.get("id").and_then(Value::as_u64).unwrap_or(0)
    }

    /// The `code` of an `error` frame.
    pub fn error_code(&self) -> Option<&str> {
        (self.kind() == "error").then(|| self.header.get("code").and_then(Value::as_str))?
    }

    /// The `message` of an `error` frame.
    pub fn error_message(&self) -> Option<&str> {
        (self.kind() == "error").then(|| self.header.get("message").and_then(Value::as_str))?
    }
}

/// A connection that sends and receives frames without the client library's checks.
#[derive(Debug)]
pub struct RawConn {
    stream: UnixStream,
    buf: BytesMut,
    next_id: u64,
}

impl RawConn {
    /// Connects without any handshake.
    pub async fn connect(path: impl AsRef<Path>) -> Result<RawConn> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .with_context(|| format!("cannot connect to {}", path.display()))?;
        Ok(RawConn { stream, buf: BytesMut::new(), next_id: 1 })
    }

    /// Connects and performs the `hello` handshake with id 1; fails unless the daemon
    /// answers `hello`. Later [`RawConn::request`] ids start at 2.
    pub async fn connect_hello(path: impl AsRef<Path>) -> Result<RawConn> {
        let mut conn = RawConn::connect(path).await?;
        let reply = conn
            .request(
                json!({"type": "hello", "protocol_version": PROTOCOL_VERSION, "client": "raw"}),
            )
            .await?;
        if reply.kind() != "hello" {
            bail!("handshake refused: {}", reply.header);
        }
        Ok(conn)
    }

    /// The underlying stream, e.g. to shut down its write half.
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Writes bytes as they are (partial frames, garbage, oversized prefixes…).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Sends a frame with this JSON header (sent exactly as given, `id` included or not)
    /// and payload.
    pub async fn send_json(&mut self, header: &Value, payload: &[u8]) -> io::Result<()> {
        let header = serde_json::to_vec(header).map_err(io::Error::other)?;
        self.send_raw(&frame_bytes(&header, payload)).await
    }

    /// Sends a typed frame encoded by `ipc_proto::codec::encode_frame`.
    pub async fn send<T: Serialize>(&mut self, frame: &Frame<T>) -> Result<()> {
        let bytes = encode_frame(frame)?;
        self.send_raw(&bytes).await?;
        Ok(())
    }

    /// Sends `header` (a JSON object) with the next request id added, and returns the
    /// frame that carries that id, skipping events received meanwhile.
    pub async fn request(&mut self, header: Value) -> Result<RawFrame> {
        self.request_with(header, &[]).await
    }

    /// [`RawConn::request`] with a payload (e.g. for `input`).
    pub async fn request_with(&mut self, mut header: Value, payload: &[u8]) -> Result<RawFrame> {
        let id = self.next_id;
        self.next_id += 1;
        header
            .as_object_mut()
            .context("a request header must be a JSON object")?
            .insert("id".into(), id.into());
        self.send_json(&header, payload).await?;
        loop {
            let frame = self
                .recv(crate::TIMEOUT)
                .await?
                .with_context(|| format!("connection closed before the reply to {header}"))?;
            if frame.id() == id {
                return Ok(frame);
            }
        }
    }

    /// The next frame, or `None` when the daemon closed the connection (a reset counts
    /// as closed). Fails on a timeout or an undecodable frame.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Option<RawFrame>> {
        match tokio::time::timeout(timeout, self.recv_inner()).await {
            Ok(r) => r,
            Err(_) => bail!("no frame from ptyd within {timeout:?}"),
        }
    }

    async fn recv_inner(&mut self) -> Result<Option<RawFrame>> {
        loop {
            if self.buf.len() >= 8 {
                let frame_len = u32::from_be_bytes(self.buf[..4].try_into()?) as usize;
                let header_len = u32::from_be_bytes(self.buf[4..8].try_into()?) as usize;
                if frame_len < 4 || header_len > frame_len - 4 {
                    bail!("bad frame from ptyd: frame_len {frame_len}, header_len {header_len}");
                }
                if self.buf.len() >= 4 + frame_len {
                    self.buf.advance(8);
                    let header = self.buf.split_to(header_len);
                    let payload = self.buf.split_to(frame_len - 4 - header_len).freeze();
                    let header: Value = serde_json::from_slice(&header)
                        .with_context(|| format!("header is not JSON: {header:?}"))?;
                    return Ok(Some(RawFrame { header, payload }));
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    if !self.buf.is_empty() {
                        bail!("connection closed inside a frame ({} bytes left)", self.buf.len());
                    }
                    return Ok(None);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads frames until the daemon closes the connection; returns the frames received
    /// before the close. Fails if it stays open for `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Result<Vec<RawFrame>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return Ok(frames),
                Err(e) => {
                    bail!("connection still open after {timeout:?} ({e}); got {frames:?}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_bytes_layout() {
        let bytes = frame_bytes(br#"{"type":"list"}"#, b"xy");
        assert_eq!(&bytes[..4], &(4u32 + 15 + 2).to_be_bytes());
        assert_eq!(&bytes[4..8], &15u32.to_be_bytes());
        assert_eq!(&bytes[8..23], br#"{"type":"list"}"#);
        assert_eq!(&bytes[23..], b"xy");
    }

    #[tokio::test]
    async fn reads_frames_and_eof_from_a_peer() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut conn = RawConn { stream: a, buf: BytesMut::new(), next_id: 1 };
        let mut wire = frame_bytes(br#"{"id":1,"type":"ok"}"#, b"");
        wire.extend(frame_bytes(br#"{"type":"output","session":"s","offset":0}"#, b"hi\r\n"));
        // Deliver in two pieces to exercise partial reads.
        b.write_all(&wire[..5]).await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::task::yield_now().await;
            b.write_all(&wire[5..]).await.unwrap();
            drop(b);
        });
        let first = conn.recv(crate::TIMEOUT).await.unwrap().unwrap();
        assert_eq!((first.id(), first.kind()), (1, "ok"));
        let second = conn.recv(crate::TIMEOUT).await.unwrap().unwrap();
        assert_eq!((second.id(), second.kind()), (0, "output"));
        assert_eq!(&second.payload[..], b"hi\r\n");
        writer.await.unwrap();
        assert!(conn.expect_closed(crate::TIMEOUT).await.unwrap().is_empty());
    }
}
