//! The wire frame, and the only place it is encoded and decoded.
//!
//! Every message on a ptyd socket is one frame:
//!
//! ```text
//! offset  size  field
//! 0       4     frame_len   u32, big-endian: the number of bytes after this field
//! 4       4     header_len  u32, big-endian: the length of the JSON header
//! 8       h     header      UTF-8 JSON object: {"id": 7, "type": "spawn", ...}
//! 8+h     rest  payload     raw bytes (terminal input or output), possibly empty
//! ```
//!
//! `frame_len = 4 + header_len + payload_len`, and must not exceed the limit
//! (`MAX_FRAME_LEN`, 1 MiB, by default). A larger length prefix is refused before any
//! buffer is sized from it. The header's `id` is the request id (absent or 0 on events).
//! Terminal bytes ride in the payload untouched: no base64, no JSON escaping.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::error::ProtoError;

/// The default maximum frame length (everything after the length prefix): 1 MiB.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// The largest payload a sender should put in one frame, leaving room for the header.
pub const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN - 64 * 1024;

/// What a connection's read and write buffers start with. Most frames are small (a
/// request, a keystroke's echo); the codec makes room for a longer one as soon as its
/// length prefix is read, so a small start costs no extra read, while an idle connection
/// keeps well under the 8 KiB a `Framed` buffer would start with (times both halves
/// and both ends, for every session).
pub const START_BUFFER: usize = 512;

/// `read` framed by `codec`, its buffer starting at [`START_BUFFER`].
pub fn framed_read<R, D>(read: R, codec: D) -> FramedRead<R, D> {
    FramedRead::with_capacity(read, codec, START_BUFFER)
}

/// `write` framed by `codec`, its buffer starting at [`START_BUFFER`].
pub fn framed_write<W, E>(write: W, codec: E) -> FramedWrite<W, E> {
    let mut framed = FramedWrite::new(write, codec);
    *framed.write_buffer_mut() = BytesMut::with_capacity(START_BUFFER);
    framed
}

/// One decoded or to-be-encoded message: the request id, the typed header and the payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame<T> {
    /// Request id; 0 for events.
    pub id: u64,
    /// The typed JSON header.
    pub body: T,
    /// Raw payload bytes.
    pub data: Bytes,
}

impl<T> Frame<T> {
    /// A frame without payload.
    pub fn new(id: u64, body: T) -> Self {
        Frame { id, body, data: Bytes::new() }
    }

    /// A frame with a payload.
    pub fn with_data(id: u64, body: T, data: Bytes) -> Self {
        Frame { id, body, data }
    }
}

/// A frame whose boundaries and JSON were sound but whose message was not valid
/// (a missing field, a wrong type). The connection can go on; the sender is told.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidMessage {
    /// The request id, when the header had one.
    pub id: u64,
    /// What was wrong, from the JSON decoder.
    pub reason: String,
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    #[serde(skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    #[serde(default)]
    id: u64,
    #[serde(flatten)]
    body: T,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: u64,
}

/// The envelope's `type`, as whatever JSON it is: serde's tagged enums would also take a
/// number as the variant's index, which would make the enum's order wire format.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type", default)]
    kind: Option<serde_json::Value>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Decodes frames of `In` and encodes frames of `Out`.
///
/// The daemon uses `FrameCodec<Request, DaemonMessage>`; a client the reverse.
pub struct FrameCodec<In, Out> {
    inner: LengthDelimitedCodec,
    max: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> std::fmt::Debug for FrameCodec<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCodec").field("max", &self.max).finish()
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        FrameCodec { inner, max, _types: PhantomData }
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = Result<Frame<In>, InvalidMessage>;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, ProtoError> {
        // Check the announced length ourselves so the error can say how big it was.
        if src.len() >= 4 {
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            if len > self.max {
                return Err(ProtoError::FrameTooLarge { len, max: self.max });
            }
        }
        let Some(frame) = self.inner.decode(src)? else {
            return Ok(None);
        };
        decode_body(frame.freeze()).map(Some)
    }
}

fn decode_body<T: DeserializeOwned>(
    mut frame: Bytes,
) -> Result<Result<Frame<T>, InvalidMessage>, ProtoError> {
    if frame.len() < 4 {
        return Err(ProtoError::Malformed(format!(
            "frame of {} bytes is shorter than its 4-byte header length",
            frame.len()
        )));
    }
    let header_len = frame.get_u32() as usize;
    if header_len > frame.len() {
        return Err(ProtoError::Malformed(format!(
            "header length {header_len} exceeds the {} bytes left in the frame",
            frame.len()
        )));
    }
    let header = frame.split_to(header_len);
    let parsed = serde_json::from_slice::<EnvelopeIn<T>>(&header);
    let id = match &parsed {
        Ok(env) => env.id,
        Err(err) => match serde_json::from_slice::<IdOnly>(&header) {
            // The header is a JSON object: the message is wrong, the stream is fine.
            Ok(IdOnly { id }) => id,
            Err(_) => {
                return Err(ProtoError::Malformed(format!(
                    "invalid header (a JSON object with a numeric id): {err}"
                )))
            }
        },
    };
    if let Ok(TypeOnly { kind: Some(kind) }) = serde_json::from_slice::<TypeOnly>(&header) {
        if !kind.is_string() {
            let reason = format!("\"type\" must be a string naming the message, not {kind}");
            return Ok(Err(InvalidMessage { id, reason }));
        }
    }
    Ok(match parsed {
        Ok(env) => Ok(Frame { id: env.id, body: env.body, data: frame }),
        Err(err) => Err(InvalidMessage { id, reason: err.to_string() }),
    })
}

impl<In, Out: Serialize> Encoder<Frame<Out>> for FrameCodec<In, Out> {
    type Error = ProtoError;

    fn encode(&mut self, item: Frame<Out>, dst: &mut BytesMut) -> Result<(), ProtoError> {
        encode_into(&item, self.max, dst)
    }
}

/// Appends `frame` in wire form to `dst`.
pub fn encode_into<T: Serialize>(
    frame: &Frame<T>,
    max: usize,
    dst: &mut BytesMut,
) -> Result<(), ProtoError> {
    let header = serde_json::to_vec(&EnvelopeOut { id: frame.id, body: &frame.body })
        .map_err(|e| ProtoError::Malformed(format!("cannot encode header: {e}")))?;
    let len = 4 + header.len() + frame.data.len();
    if len > max {
        return Err(ProtoError::FrameTooLarge { len, max });
    }
    dst.reserve(4 + len);
    dst.put_u32(len as u32);
    dst.put_u32(header.len() as u32);
    dst.put_slice(&header);
    dst.put_slice(&frame.data);
    Ok(())
}

/// The wire bytes of one frame (for tests and simple clients).
pub fn encode_frame<T: Serialize>(frame: &Frame<T>) -> Result<Bytes, ProtoError> {
    let mut buf = BytesMut::new();
    encode_into(frame, MAX_FRAME_LEN, &mut buf)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{DaemonMessage, OutputEvent, Request, SessionId, SessionRef};

    type ServerCodec = FrameCodec<Request, DaemonMessage>;

    #[test]
    fn list_request_exact_bytes() {
        let bytes = encode_frame(&Frame::new(7, Request::List)).unwrap();
        let header = br#"{"id":7,"type":"list"}"#;
        let mut expected = Vec::new();
        expected.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
        expected.extend_from_slice(&(header.len() as u32).to_be_bytes());
        expected.extend_from_slice(header);
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn output_event_has_no_id_and_raw_payload() {
        let session: SessionId = "6f1c2b2e-8d0a-4a57-9a3e-0d6f1f6b9c11".parse().unwrap();
        let frame = Frame::with_data(
            0,
            DaemonMessage::Output(OutputEvent { session, offset: 42 }),
            Bytes::from_static(b"\x1b[1mhi\xff\x00"),
        );
        let bytes = encode_frame(&frame).unwrap();
        let header =
            br#"{"type":"output","session":"6f1c2b2e-8d0a-4a57-9a3e-0d6f1f6b9c11","offset":42}"#;
        assert_eq!(&bytes[4..8], &(header.len() as u32).to_be_bytes());
        assert_eq!(&bytes[8..8 + header.len()], header);
        assert_eq!(&bytes[8 + header.len()..], b"\x1b[1mhi\xff\x00");
        let mut codec = FrameCodec::<DaemonMessage, Request>::default();
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().unwrap(), frame);
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading_the_body() {
        let mut codec = ServerCodec::new(1024);
        let mut buf = BytesMut::from(&2048u32.to_be_bytes()[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooLarge { len: 2048, max: 1024 }), "{err}");
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let bytes = encode_frame(&Frame::new(1, Request::List)).unwrap();
        let mut codec = ServerCodec::default();
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().unwrap(), Frame::new(1, Request::List));
    }

    #[test]
    fn header_length_past_the_frame_is_malformed() {
        let mut buf = BytesMut::new();
        buf.put_u32(6);
        buf.put_u32(100);
        buf.put_slice(b"{}");
        let err = ServerCodec::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtoError::Malformed(_)), "{err}");
    }

    #[test]
    fn non_json_header_is_malformed() {
        let mut buf = BytesMut::new();
        buf.put_u32(4 + 5);
        buf.put_u32(5);
        buf.put_slice(b"hello");
        let err = ServerCodec::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtoError::Malformed(_)), "{err}");
    }

    #[test]
    fn invalid_fields_keep_the_id_and_the_stream() {
        let header = br#"{"id":9,"type":"resize","session":"not-a-uuid","cols":1,"rows":1}"#;
        let mut buf = BytesMut::new();
        buf.put_u32((4 + header.len()) as u32);
        buf.put_u32(header.len() as u32);
        buf.put_slice(header);
        let item = ServerCodec::default().decode(&mut buf).unwrap().unwrap();
        let invalid = item.unwrap_err();
        assert_eq!(invalid.id, 9);
        assert!(buf.is_empty());
    }

    #[test]
    fn unknown_type_decodes_to_unknown() {
        let header = br#"{"id":3,"type":"teleport","to":"mars"}"#;
        let mut buf = BytesMut::new();
        buf.put_u32((4 + header.len()) as u32);
        buf.put_u32(header.len() as u32);
        buf.put_slice(header);
        let frame = ServerCodec::default().decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(frame.id, 3);
        assert_eq!(frame.body, Request::Unknown);
    }

    #[test]
    fn a_numeric_type_is_not_a_variant_index() {
        let header = br#"{"id":4,"type":1}"#;
        let mut buf = BytesMut::new();
        buf.put_u32((4 + header.len()) as u32);
        buf.put_u32(header.len() as u32);
        buf.put_slice(header);
        let invalid = ServerCodec::default().decode(&mut buf).unwrap().unwrap().unwrap_err();
        assert_eq!(invalid.id, 4);
        assert!(invalid.reason.contains("must be a string"), "{}", invalid.reason);
    }

    #[test]
    fn input_payload_round_trips_binary() {
        let session = SessionId::new();
        let data = Bytes::from((0u8..=255).collect::<Vec<_>>());
        let frame = Frame::with_data(5, Request::Input(SessionRef { session }), data);
        let mut buf = BytesMut::from(&encode_frame(&frame).unwrap()[..]);
        assert_eq!(ServerCodec::default().decode(&mut buf).unwrap().unwrap().unwrap(), frame);
    }
}
