//! ttRPC framing over any byte stream (UNIX socket, virtio-serial port, vsock).
//!
//! A frame is a 10-byte header — payload length (u32 big-endian), stream id (u32 big-endian),
//! message type (u8: 1 request, 2 response, 3 data), flags (u8) — followed by the payload. The
//! payload of a request or response is the protobuf ttRPC envelope ([`Request`], [`Response`])
//! whose own `payload` is the method's message.
//!
//! Frames are bounded by [`MAX_FRAME`] (4 MiB, ttRPC's own default). A frame announcing more is
//! not buffered: [`read_frame`] skips its payload without keeping it and reports
//! [`FrameError::Oversized`] with the stream id, so a server can answer that stream with an
//! error and keep the connection. A stream that ends inside a frame is
//! [`FrameError::Truncated`]; an unknown message type is [`FrameError::UnknownType`] (payload
//! skipped, connection usable).

#![forbid(unsafe_code)]

use std::fmt;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload accepted or sent (ttRPC's default `MESSAGE_LENGTH_MAX`).
pub const MAX_FRAME: usize = 4 << 20;
/// Header size in bytes.
pub const HEADER_LEN: usize = 10;

/// Message type of a request frame.
pub const TYPE_REQUEST: u8 = 1;
/// Message type of a response frame.
pub const TYPE_RESPONSE: u8 = 2;
/// Message type of a data frame (ttRPC streaming; not used by the agent API).
pub const TYPE_DATA: u8 = 3;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub length: u32,
    /// Stream id (odd for client-initiated streams).
    pub stream_id: u32,
    /// Message type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
}

impl Header {
    /// The 10 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind;
        b[9] = self.flags;
        b
    }

    /// Parses 10 header bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Self {
        Header {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
        }
    }
}

/// A whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header (its `length` equals `payload.len()`).
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream ended cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes expected.
        want: usize,
        /// Bytes received.
        got: usize,
    },
    /// The frame is larger than [`MAX_FRAME`]; its payload was skipped.
    #[error("frame of {length} bytes on stream {stream_id} exceeds the {MAX_FRAME}-byte limit")]
    Oversized {
        /// Announced length.
        length: u32,
        /// Its stream.
        stream_id: u32,
        /// Its message type.
        kind: u8,
    },
    /// A message type this side does not handle; its payload was skipped.
    #[error("unknown message type {kind} on stream {stream_id}")]
    UnknownType {
        /// The type.
        kind: u8,
        /// Its stream.
        stream_id: u32,
    },
    /// A payload that is not the expected protobuf message.
    #[error("undecodable {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A transport error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Whether the connection can still be used after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, FrameError::Oversized { .. } | FrameError::UnknownType { .. } | FrameError::Decode { .. })
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(n < len)` at end of stream.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Discards `n` bytes without buffering them.
async fn skip<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Result<(), FrameError> {
    let copied = tokio::io::copy(&mut r.take(n as u64), &mut tokio::io::sink()).await?;
    let copied = usize::try_from(copied).unwrap_or(usize::MAX);
    if copied < n {
        return Err(FrameError::Truncated { want: n, got: copied });
    }
    Ok(())
}

/// Reads one frame of a known type (request, response or data).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    match read_full(r, &mut hb).await? {
        0 => return Err(FrameError::Closed),
        n if n < HEADER_LEN => return Err(FrameError::Truncated { want: HEADER_LEN, got: n }),
        _ => {}
    }
    let header = Header::decode(&hb);
    let len = usize::try_from(header.length).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        skip(r, len).await?;
        return Err(FrameError::Oversized { length: header.length, stream_id: header.stream_id, kind: header.kind });
    }
    if !matches!(header.kind, TYPE_REQUEST | TYPE_RESPONSE | TYPE_DATA) {
        skip(r, len).await?;
        return Err(FrameError::UnknownType { kind: header.kind, stream_id: header.stream_id });
    }
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload).await?;
    if got < len {
        return Err(FrameError::Truncated { want: len, got });
    }
    Ok(Frame { header, payload })
}

/// Writes one frame (header and payload in one buffer, so concurrent writers sharing a lock
/// never interleave) and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream_id: u32,
    kind: u8,
    payload: &[u8],
) -> Result<(), FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::Oversized {
            length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            stream_id,
            kind,
        });
    }
    let header = Header { length: payload.len() as u32, stream_id, kind, flags: 0 };
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Decodes a protobuf payload, mapping failures to [`FrameError::Decode`].
pub fn decode<M: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M, FrameError> {
    M::decode(bytes).map_err(|e| FrameError::Decode { what, message: e.to_string() })
}

/// A ttRPC metadata entry.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The ttRPC request envelope.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// Service, e.g. `grpc.AgentService`.
    #[prost(string, tag = "1")]
    pub service: String,
    /// Method, e.g. `CreateContainer`.
    #[prost(string, tag = "2")]
    pub method: String,
    /// The method's request message.
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// Deadline relative to receipt, in nanoseconds (0: none).
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
    /// Metadata.
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<KeyValue>,
}

/// `google.rpc.Status` (without `details`, which the agent never sends and ignores).
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    /// A [`Code`] value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Human-readable message.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The ttRPC response envelope.
#[derive(Clone, PartialEq, Message)]
pub struct Response {
    /// Absent or code 0 on success.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// The method's response message.
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// gRPC status codes used by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
#[non_exhaustive]
pub enum Code {
    /// Success.
    Ok = 0,
    /// Cancelled.
    Cancelled = 1,
    /// Unknown.
    Unknown = 2,
    /// A malformed request.
    InvalidArgument = 3,
    /// The request's deadline passed.
    DeadlineExceeded = 4,
    /// No such container or process.
    NotFound = 5,
    /// The container or process exists already.
    AlreadyExists = 6,
    /// The agent policy refused the request.
    PermissionDenied = 7,
    /// A limit was hit (frame size, buffer, count).
    ResourceExhausted = 8,
    /// Wrong state for the request (e.g. starting a started container).
    FailedPrecondition = 9,
    /// Unknown method or service.
    Unimplemented = 12,
    /// The agent failed.
    Internal = 13,
}

impl Code {
    /// The numeric code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The gRPC name of a numeric code (`PERMISSION_DENIED`), `UNKNOWN` for unlisted ones.
    pub fn name_of(code: i32) -> &'static str {
        match code {
            0 => "OK",
            1 => "CANCELLED",
            3 => "INVALID_ARGUMENT",
            4 => "DEADLINE_EXCEEDED",
            5 => "NOT_FOUND",
            6 => "ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "RESOURCE_EXHAUSTED",
            9 => "FAILED_PRECONDITION",
            10 => "ABORTED",
            11 => "OUT_OF_RANGE",
            12 => "UNIMPLEMENTED",
            13 => "INTERNAL",
            14 => "UNAVAILABLE",
            15 => "DATA_LOSS",
            16 => "UNAUTHENTICATED",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Code::name_of(self.as_i32()))
    }
}

impl Status {
    /// A status with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status { code: code.as_i32(), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    async fn frames_from(bytes: &[u8]) -> Vec<Result<Frame, String>> {
        let mut r = bytes;
        let mut out = Vec::new();
        loop {
            match read_frame(&mut r).await {
                Ok(f) => out.push(Ok(f)),
                Err(FrameError::Closed) => break,
                Err(e) => {
                    let stop = !e.is_recoverable();
                    out.push(Err(e.to_string()));
                    if stop {
                        break;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn header_layout_is_ttrpc() {
        let h = Header { length: 0x0102_0304, stream_id: 0x0506_0708, kind: TYPE_REQUEST, flags: 0 };
        assert_eq!(h.encode(), [1, 2, 3, 4, 5, 6, 7, 8, 1, 0]);
        assert_eq!(Header::decode(&h.encode()), h);
    }

    #[test]
    fn round_trip_and_truncation() {
        rt().block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut buf, 3, TYPE_REQUEST, b"hello").await.unwrap();
            write_frame(&mut buf, 5, TYPE_RESPONSE, b"").await.unwrap();
            let got = frames_from(&buf).await;
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].as_ref().unwrap().payload, b"hello");
            assert_eq!(got[1].as_ref().unwrap().header.stream_id, 5);
            // Every strict prefix that cuts a frame is Truncated, never a panic or a frame.
            for cut in 1..buf.len() {
                let got = frames_from(&buf[..cut]).await;
                if cut == 15 {
                    assert_eq!(got.len(), 1, "cut {cut}");
                    continue;
                }
                let last = got.last().unwrap();
                assert!(last.as_ref().is_err_and(|e| e.contains("inside a frame")), "cut {cut}: {got:?}");
            }
        });
    }

    #[test]
    fn oversized_is_skipped_and_reported() {
        rt().block_on(async {
            let mut buf = Header { length: (MAX_FRAME + 1) as u32, stream_id: 7, kind: 1, flags: 0 }.encode().to_vec();
            buf.resize(HEADER_LEN + MAX_FRAME + 1, 0xAA);
            write_frame(&mut buf, 9, TYPE_REQUEST, b"next").await.unwrap();
            let mut r = &buf[..];
            match read_frame(&mut r).await {
                Err(FrameError::Oversized { stream_id: 7, .. }) => {}
                other => panic!("{other:?}"),
            }
            let f = read_frame(&mut r).await.unwrap();
            assert_eq!((f.header.stream_id, f.payload.as_slice()), (9, &b"next"[..]));
            // Writing an oversized payload is refused.
            let big = vec![0u8; MAX_FRAME + 1];
            assert!(matches!(write_frame(&mut Vec::new(), 1, 1, &big).await, Err(FrameError::Oversized { .. })));
            // An oversized header whose payload never comes is truncated, not buffered.
            let h = Header { length: u32::MAX, stream_id: 1, kind: 1, flags: 0 }.encode();
            assert!(matches!(read_frame(&mut &h[..]).await, Err(FrameError::Truncated { .. })));
        });
    }

    #[test]
    fn unknown_type_is_skipped() {
        rt().block_on(async {
            let mut buf = Vec::new();
            buf.extend_from_slice(&Header { length: 3, stream_id: 1, kind: 9, flags: 0 }.encode());
            buf.extend_from_slice(b"abc");
            write_frame(&mut buf, 3, TYPE_REQUEST, b"ok").await.unwrap();
            let got = frames_from(&buf).await;
            assert!(got[0].as_ref().is_err_and(|e| e.contains("unknown message type 9")));
            assert_eq!(got[1].as_ref().unwrap().payload, b"ok");
        });
    }

    #[test]
    fn envelope_field_numbers() {
        // Request{service=1, method=2, payload=3, timeout_nano=4, metadata=5}, hand-encoded.
        let r = Request {
            service: "s".into(),
            method: "m".into(),
            payload: vec![1],
            timeout_nano: 2,
            metadata: vec![KeyValue { key: "k".into(), value: "v".into() }],
        };
        assert_eq!(
            r.encode_to_vec(),
            [0x0a, 1, b's', 0x12, 1, b'm', 0x1a, 1, 1, 0x20, 2, 0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']
        );
        let resp = Response { status: Some(Status::new(Code::PermissionDenied, "x")), payload: vec![9] };
        assert_eq!(resp.encode_to_vec(), [0x0a, 5, 0x08, 7, 0x12, 1, b'x', 0x12, 1, 9]);
        assert!(decode::<Request>("request", &[0xff, 0xff, 0xff]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic and never yield a frame over the limit.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let got = rt().block_on(frames_from(&bytes));
            for f in got.into_iter().flatten() {
                prop_assert!(f.payload.len() <= MAX_FRAME);
                prop_assert_eq!(f.payload.len(), f.header.length as usize);
            }
            // Envelopes decode or fail cleanly.
            let _ = decode::<Request>("request", &bytes);
            let _ = decode::<Response>("response", &bytes);
        }

        /// Any sequence of frames round-trips, whatever the read chunking.
        #[test]
        fn frames_round_trip(
            frames in proptest::collection::vec((any::<u32>(), 1u8..=3, proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
        ) {
            let got = rt().block_on(async {
                let mut buf = Vec::new();
                for (id, kind, p) in &frames {
                    write_frame(&mut buf, *id, *kind, p).await.unwrap();
                }
                frames_from(&buf).await
            });
            prop_assert_eq!(got.len(), frames.len());
            for (g, (id, kind, p)) in got.iter().zip(&frames) {
                let g = g.as_ref().unwrap();
                prop_assert_eq!((g.header.stream_id, g.header.kind, &g.payload), (*id, *kind, p));
            }
        }
    }
}
