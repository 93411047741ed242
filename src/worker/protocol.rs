//! The framed protocol between corral and a Python worker.
//!
//! Every frame is a 9-byte header, `<u32 payload length, u8 kind, u32
//! stream id>` (little endian), then the payload. Stream 0 carries control
//! messages; every request gets its own stream id, so requests on one worker
//! never block each other (no head-of-line blocking).
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | `REQUEST` | corral → worker | `u8 flags` (bit 0: more body follows), `u32 head length`, head, first body bytes |
//! | `BODY` / `BODY_END` | corral → worker | request body bytes / none |
//! | `WINDOW` | corral → worker | `u32`: the worker may send that many more response bytes |
//! | `CANCEL` | corral → worker | none: the client went away; `t`: the request timed out (an ASGI worker cancels its task) |
//! | `WS_TEXT` / `WS_BINARY` | both | one whole WebSocket message |
//! | `WS_CLOSE` | both | `u16` close code (little endian), UTF-8 reason: the sender closed the WebSocket |
//! | `BOOT_OK` / `BOOT_ERROR` | worker → corral | JSON `{pid, import_ms, interface}` / traceback text |
//! | `START` | worker → corral | response head |
//! | `DATA` / `END` | worker → corral | response body bytes / none |
//! | `RESPONSE` | worker → corral | `u32 head length`, head, whole body of at most [`RESPONSE_WINDOW`] bytes (start + data + end in one) |
//! | `ABORT` | worker → corral | traceback: the app failed after the head was sent |
//! | `BODY_WINDOW` | worker → corral | `u32`: corral may send that many more request body bytes |
//! | `HEARTBEAT` | worker → corral | none: a thread that needs the GIL is alive (stream 0) |
//! | `WS_ACCEPT` | worker → corral | fields: subprotocol, then name and value of each header: the app accepted the WebSocket |
//!
//! A REQUEST whose flags have [`FLAG_WEBSOCKET`] is a WebSocket handshake
//! for an ASGI app: the worker answers `WS_ACCEPT`, or a RESPONSE to refuse.
//!
//! A request head for a WSGI worker is latin-1 text `KEY\0VALUE\0KEY\0VALUE...`
//! whose keys are already WSGI environ keys (`REQUEST_METHOD`, `PATH_INFO`,
//! `HTTP_HOST`, ...), so the worker builds the environ with one `split` and
//! one `dict.update`. For an ASGI worker it is the scope's fields in a fixed
//! order, then the header pairs (see `worker/head/scope.rs`).
//!
//! A response head is fields: the status line (`200 OK`, or just `200`),
//! then the name and value of each header. Fields are `u16 header count`,
//! one `u32` length per field (1 + 2 × count of them), then the fields'
//! bytes back to back: a length ends a field, never a byte in it, so a value
//! cannot smuggle in another header. `200 OK` with `Content-Type:
//! text/plain` is the bytes `01 00`, `06 00 00 00`, `0c 00 00 00`,
//! `0a 00 00 00`, then `200 OKContent-Typetext/plain`. A `WS_ACCEPT` payload
//! is fields too, with the subprotocol first (empty for none).
//!
//! The worker refuses names that are not RFC 9110 tokens and values or
//! reasons with control characters; corral checks every field again
//! ([`parse_response_head`], [`parse_accept`]) and answers 500 to a head
//! that fails.
//!
//! Flow control: the worker may have [`RESPONSE_WINDOW`] response bytes
//! unacknowledged per stream, and corral [`BODY_CREDIT`] request body bytes
//! beyond the first [`INLINE_BODY`]; so memory per request is bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};
use hyper::ext::ReasonPhrase;

pub const HEADER_LEN: usize = 9;

/// What a frame is, its header's `u8 kind`. The worker script names the
/// same numbers `K_*` (a unit test reads them from the script, so the two
/// cannot drift apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    // corral -> worker
    Request = 1,
    Body = 2,
    BodyEnd = 3,
    Window = 4,
    Cancel = 5,
    // worker -> corral
    BootOk = 10,
    BootError = 11,
    Start = 12,
    Data = 13,
    End = 14,
    Abort = 15,
    BodyWindow = 16,
    Response = 17,
    Heartbeat = 18,
    WsAccept = 20,
    // both ways
    WsText = 21,
    WsBinary = 22,
    WsClose = 23,
}

/// A `u8 kind` no [`FrameKind`] has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown frame kind {0}")]
pub struct UnknownKind(pub u8);

impl TryFrom<u8> for FrameKind {
    type Error = UnknownKind;

    fn try_from(byte: u8) -> Result<FrameKind, UnknownKind> {
        use FrameKind::*;
        Ok(match byte {
            1 => Request,
            2 => Body,
            3 => BodyEnd,
            4 => Window,
            5 => Cancel,
            10 => BootOk,
            11 => BootError,
            12 => Start,
            13 => Data,
            14 => End,
            15 => Abort,
            16 => BodyWindow,
            17 => Response,
            18 => Heartbeat,
            20 => WsAccept,
            21 => WsText,
            22 => WsBinary,
            23 => WsClose,
            other => return Err(UnknownKind(other)),
        })
    }
}

impl FrameKind {
    /// Every kind, in the order of their numbers.
    #[cfg(test)]
    pub const ALL: [FrameKind; 18] = {
        use FrameKind::*;
        [
            Request, Body, BodyEnd, Window, Cancel, BootOk, BootError, Start, Data, End, Abort,
            BodyWindow, Response, Heartbeat, WsAccept, WsText, WsBinary, WsClose,
        ]
    };

    /// The kind's name in the protocol table above (and, with `K_` in
    /// front, in the worker script).
    pub fn name(self) -> &'static str {
        use FrameKind::*;
        match self {
            Request => "REQUEST",
            Body => "BODY",
            BodyEnd => "BODY_END",
            Window => "WINDOW",
            Cancel => "CANCEL",
            BootOk => "BOOT_OK",
            BootError => "BOOT_ERROR",
            Start => "START",
            Data => "DATA",
            End => "END",
            Abort => "ABORT",
            BodyWindow => "BODY_WINDOW",
            Response => "RESPONSE",
            Heartbeat => "HEARTBEAT",
            WsAccept => "WS_ACCEPT",
            WsText => "WS_TEXT",
            WsBinary => "WS_BINARY",
            WsClose => "WS_CLOSE",
        }
    }
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", *self as u8, self.name())
    }
}

pub const FLAG_MORE_BODY: u8 = 1;
pub const FLAG_WEBSOCKET: u8 = 2;

/// Response bytes a worker may send on one stream before corral grants more
/// (must match `RESPONSE_WINDOW` in the worker script).
pub const RESPONSE_WINDOW: usize = 256 * 1024;
/// Request body bytes corral sends beyond the inline part before the worker
/// grants more.
pub const BODY_CREDIT: usize = 256 * 1024;
/// Request body bytes read before dispatch and sent inside the REQUEST frame.
pub const INLINE_BODY: usize = 64 * 1024;
/// Largest frame payload corral sends.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest WebSocket message either way (uvicorn's default too).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest response head frame from a worker: the worker refuses heads
/// over 1 MiB of names and values; this leaves room for the field lengths.
pub const MAX_HEAD_FRAME: usize = 2 * 1024 * 1024;
/// Largest frame payload corral accepts from a worker (each kind has its
/// own, smaller limit; see `channel::max_payload`).
pub const MAX_INCOMING_FRAME: usize = MAX_MESSAGE + 64 * 1024;

/// One decoded frame from a worker.
#[derive(Debug)]
pub struct Frame {
    /// Its kind, or the byte that names no kind (the reader logs it and
    /// skips the frame).
    pub kind: Result<FrameKind, UnknownKind>,
    pub stream: u32,
    pub payload: Bytes,
}

/// Encodes a frame header followed by `payload`.
pub fn encode(kind: FrameKind, stream: u32, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
    put_header(&mut buf, kind, stream, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

pub fn put_header(buf: &mut BytesMut, kind: FrameKind, stream: u32, len: usize) {
    buf.put_u32_le(len as u32);
    buf.put_u8(kind as u8);
    buf.put_u32_le(stream);
}

/// A REQUEST frame: head and the first body bytes; `flags` are
/// [`FLAG_MORE_BODY`] and [`FLAG_WEBSOCKET`].
pub fn encode_request(stream: u32, head: &[u8], body: &[u8], flags: u8) -> Bytes {
    let len = 1 + 4 + head.len() + body.len();
    let mut buf = BytesMut::with_capacity(HEADER_LEN + len);
    put_header(&mut buf, FrameKind::Request, stream, len);
    buf.put_u8(flags);
    buf.put_u32_le(head.len() as u32);
    buf.put_slice(head);
    buf.put_slice(body);
    buf.freeze()
}

pub fn encode_u32(kind: FrameKind, stream: u32, value: u32) -> Bytes {
    encode(kind, stream, &value.to_le_bytes())
}

/// A `WS_CLOSE` frame.
pub fn encode_close(stream: u32, code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_le_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode(FrameKind::WsClose, stream, &payload)
}

/// Splits a `WS_CLOSE` payload into code and reason (1005, "no status", when
/// it carries none).
pub fn decode_close(payload: &[u8]) -> (u16, String) {
    match payload {
        [a, b, reason @ ..] => (
            u16::from_le_bytes([*a, *b]),
            String::from_utf8_lossy(reason).into_owned(),
        ),
        _ => (1005, String::new()),
    }
}

/// Why the frames from a worker cannot be read on: the channel closes.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header announces a payload over [`MAX_INCOMING_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Payloads up to this size are copied out of the read buffer.
const COPY_BELOW: usize = 64 * 1024;

/// Splits one whole frame off the front of `buf`, if one is there.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if len > MAX_INCOMING_FRAME {
        return Err(DecodeError::TooLarge(len));
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    let kind = FrameKind::try_from(buf[4]);
    let stream = u32::from_le_bytes(buf[5..9].try_into().unwrap());
    // Small payloads are copied out, so a response waiting for a slow client
    // does not pin the reader's whole buffer (memory stays bounded); large
    // ones are split off without a copy.
    let payload = if len <= COPY_BELOW {
        let p = Bytes::copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + len]);
        buf.advance(HEADER_LEN + len);
        p
    } else {
        let mut frame = buf.split_to(HEADER_LEN + len);
        frame.split_off(HEADER_LEN).freeze()
    };
    Ok(Some(Frame {
        kind,
        stream,
        payload,
    }))
}

/// Splits a RESPONSE payload into head and body.
pub fn split_full(payload: &Bytes) -> Option<(Bytes, Bytes)> {
    let len = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    if payload.len() < 4 + len {
        return None;
    }
    Some((payload.slice(4..4 + len), payload.slice(4 + len..)))
}

/// A response head from the worker, every field checked: a status of 100
/// to 999, a reason phrase and header values with no control character but
/// HTAB, header names that are RFC 9110 tokens.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// None when the worker sent an empty reason.
    pub reason: Option<ReasonPhrase>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A `WS_ACCEPT` payload, every field checked as in [`ResponseHead`].
#[derive(Debug)]
pub struct AcceptHead {
    /// None when the app chose no subprotocol.
    pub subprotocol: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why a response head (or a `WS_ACCEPT` payload) from a worker was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    #[error("invalid status line {0}: expected e.g. \"200 OK\"")]
    Status(String),
    #[error("invalid reason phrase {0}: control characters are not allowed")]
    Reason(String),
    #[error("invalid header name {0}: a header name is a token (RFC 9110)")]
    Name(String),
    #[error("invalid value for header {0}: control characters are not allowed")]
    Value(HeaderName),
    #[error("invalid subprotocol {0}")]
    Subprotocol(String),
}

/// Bytes from a worker shown in a log line: quoted, escaped, cut at 100.
pub fn shown(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes.iter().take(100) {
        s.extend(std::ascii::escape_default(b).map(char::from));
    }
    if bytes.len() > 100 {
        s.push_str("...");
    }
    s.push('"');
    s
}

/// Splits `u16 pairs`, `u32` lengths of `1 + 2 * pairs` fields, the fields:
/// into the first field and the name/value pairs.
fn split_fields(b: &Bytes) -> Result<(Bytes, Vec<(Bytes, Bytes)>), HeadError> {
    let pairs = u16::from_le_bytes(
        b.get(..2)
            .ok_or(HeadError::Malformed("no header count"))?
            .try_into()
            .unwrap_or_default(),
    ) as usize;
    let count = 1 + 2 * pairs;
    let lens = b
        .get(2..2 + 4 * count)
        .ok_or(HeadError::Malformed("field lengths cut short"))?;
    let mut at = 2 + 4 * count;
    let mut fields = lens.chunks_exact(4).map(|l| {
        let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        let field = b.get(at..at.checked_add(len)?).map(|f| b.slice_ref(f));
        at = at.saturating_add(len);
        field
    });
    let first = fields
        .next()
        .flatten()
        .ok_or(HeadError::Malformed("field cut short"))?;
    let mut headers = Vec::with_capacity(pairs);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match (name, value) {
            (Some(name), Some(value)) => headers.push((name, value)),
            _ => return Err(HeadError::Malformed("field cut short")),
        }
    }
    drop(fields);
    if at != b.len() {
        return Err(HeadError::Malformed("bytes after the last field"));
    }
    Ok((first, headers))
}

fn check_headers(pairs: Vec<(Bytes, Bytes)>) -> Result<Vec<(HeaderName, HeaderValue)>, HeadError> {
    pairs
        .into_iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(&name).map_err(|_| HeadError::Name(shown(&name)))?;
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| HeadError::Value(name.clone()))?;
            Ok((name, value))
        })
        .collect()
}

/// Parses and checks a response head (`START`, or the head of a `RESPONSE`).
pub fn parse_response_head(head: &Bytes) -> Result<ResponseHead, HeadError> {
    let (line, headers) = split_fields(head)?;
    // "200", or "200 OK": three digits, then a space and the reason.
    let (code, reason) = match (line.get(..3), line.get(3)) {
        (Some(code), None) => (code, Bytes::new()),
        (Some(code), Some(b' ')) => (code, line.slice(4..)),
        _ => return Err(HeadError::Status(shown(&line))),
    };
    let status = StatusCode::from_bytes(code).map_err(|_| HeadError::Status(shown(&line)))?;
    let reason = if reason.is_empty() {
        None
    } else {
        Some(
            ReasonPhrase::try_from(reason.clone())
                .map_err(|_| HeadError::Reason(shown(&reason)))?,
        )
    };
    Ok(ResponseHead {
        status,
        reason,
        headers: check_headers(headers)?,
    })
}

/// Parses and checks a `WS_ACCEPT` payload.
pub fn parse_accept(payload: &Bytes) -> Result<AcceptHead, HeadError> {
    let (subprotocol, headers) = split_fields(payload)?;
    let subprotocol = if subprotocol.is_empty() {
        None
    } else {
        Some(
            HeaderValue::from_maybe_shared(subprotocol.clone())
                .map_err(|_| HeadError::Subprotocol(shown(&subprotocol)))?,
        )
    };
    Ok(AcceptHead {
        subprotocol,
        headers: check_headers(headers)?,
    })
}

/// The fields of a response head or `WS_ACCEPT` payload, as the worker
/// encodes them.
#[cfg(test)]
pub fn encode_fields(first: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
    out.extend_from_slice(&(first.len() as u32).to_le_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(first);
    for (name, value) in headers {
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out
}

/// A response head as the worker encodes it.
#[cfg(test)]
pub fn encode_response_head(status_line: &[u8], headers: &[(&[u8], &[u8])]) -> Bytes {
    encode_fields(status_line, headers).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_at_boundaries() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode(FrameKind::Data, 7, b"hello"));
        buf.extend_from_slice(&encode(FrameKind::End, 7, b""));
        let partial = buf.split_off(12);
        let mut first = buf;
        assert!(decode(&mut first).unwrap().is_none());
        first.unsplit(partial);
        let f = decode(&mut first).unwrap().unwrap();
        assert_eq!(
            (f.kind, f.stream, &f.payload[..]),
            (Ok(FrameKind::Data), 7, &b"hello"[..])
        );
        let f = decode(&mut first).unwrap().unwrap();
        assert_eq!(
            (f.kind, f.stream, f.payload.len()),
            (Ok(FrameKind::End), 7, 0)
        );
        assert!(first.is_empty());
    }

    #[test]
    fn every_kind_round_trips_through_its_byte() {
        let mut seen = std::collections::HashSet::new();
        for kind in FrameKind::ALL {
            assert!(seen.insert(kind as u8), "{kind} twice");
            assert_eq!(FrameKind::try_from(kind as u8), Ok(kind));
            let mut buf = BytesMut::from(&encode(kind, 3, b"xy")[..]);
            assert_eq!(buf[4], kind as u8);
            let f = decode(&mut buf).unwrap().unwrap();
            assert_eq!(
                (f.kind, f.stream, &f.payload[..]),
                (Ok(kind), 3, &b"xy"[..])
            );
        }
        for byte in 0..=u8::MAX {
            match FrameKind::try_from(byte) {
                Ok(kind) => assert_eq!(kind as u8, byte),
                Err(e) => {
                    assert_eq!(e, UnknownKind(byte));
                    assert!(!seen.contains(&byte));
                }
            }
        }
    }

    #[test]
    fn an_unknown_kind_is_decoded_as_such_and_the_next_frame_still_read() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[2, 0, 0, 0, 99, 5, 0, 0, 0, b'a', b'b']);
        buf.extend_from_slice(&encode(FrameKind::Heartbeat, 0, b""));
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (f.kind, f.stream, &f.payload[..]),
            (Err(UnknownKind(99)), 5, &b"ab"[..])
        );
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind, Ok(FrameKind::Heartbeat));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_its_payload_arrives() {
        let too_long = (MAX_INCOMING_FRAME + 1) as u32;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&too_long.to_le_bytes());
        buf.extend_from_slice(&[FrameKind::Data as u8, 1, 0, 0, 0]);
        assert_eq!(
            decode(&mut buf).unwrap_err(),
            DecodeError::TooLarge(MAX_INCOMING_FRAME + 1)
        );
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 13, 0, 0, 0, 0][..]);
        assert_eq!(
            decode(&mut buf).unwrap_err(),
            DecodeError::TooLarge(u32::MAX as usize)
        );
        // At the limit a frame is awaited, not refused; a short header is
        // awaited whatever it says.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(MAX_INCOMING_FRAME as u32).to_le_bytes());
        buf.extend_from_slice(&[FrameKind::WsBinary as u8, 1, 0, 0, 0]);
        assert!(decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= HEADER_LEN + MAX_INCOMING_FRAME);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 13, 0, 0, 0][..]);
        assert!(decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn large_payloads_are_split_off_small_ones_copied_both_whole() {
        for len in [0, 1, COPY_BELOW, COPY_BELOW + 1, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = BytesMut::from(&encode(FrameKind::Data, 9, &payload)[..]);
            buf.extend_from_slice(b"rest");
            let f = decode(&mut buf).unwrap().unwrap();
            assert_eq!(&f.payload[..], &payload[..], "{len}");
            assert_eq!(&buf[..], b"rest", "{len}");
        }
    }

    #[test]
    fn request_frames_carry_flags_head_and_body() {
        let frame = encode_request(7, b"HEAD", b"body", FLAG_MORE_BODY | FLAG_WEBSOCKET);
        let mut buf = BytesMut::from(&frame[..]);
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.kind, f.stream), (Ok(FrameKind::Request), 7));
        assert_eq!(&f.payload[..], b"\x03\x04\0\0\0HEADbody");
        let f = encode_u32(FrameKind::Window, 2, 65536);
        assert_eq!(&f[..], b"\x04\0\0\0\x04\x02\0\0\0\0\0\x01\0");
    }

    #[test]
    fn close_frames_round_trip_and_a_short_one_means_no_status() {
        let mut buf = BytesMut::from(&encode_close(4, 1001, "going away")[..]);
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind, Ok(FrameKind::WsClose));
        assert_eq!(decode_close(&f.payload), (1001, "going away".to_string()));
        assert_eq!(decode_close(b""), (1005, String::new()));
        assert_eq!(decode_close(b"\x01"), (1005, String::new()));
        assert_eq!(
            decode_close(b"\xe8\x03\xff"),
            (1000, "\u{fffd}".to_string())
        );
    }

    #[test]
    fn response_payloads_split_only_when_the_head_fits() {
        let mut p = 3u32.to_le_bytes().to_vec();
        p.extend_from_slice(b"abcBODY");
        let (head, body) = split_full(&p.into()).unwrap();
        assert_eq!((&head[..], &body[..]), (&b"abc"[..], &b"BODY"[..]));
        for bad in [&b""[..], b"\x03\0\0", b"\x03\0\0\0ab", b"\xff\xff\xff\xffx"] {
            assert!(
                split_full(&Bytes::copy_from_slice(bad)).is_none(),
                "{bad:?}"
            );
        }
    }

    /// The worker's `K_*` numbers are the ones above, every one of them,
    /// and it names no other.
    #[test]
    fn the_worker_script_numbers_the_kinds_as_corral_does() {
        let script = crate::worker::script::file("corral_worker/protocol.py");
        let mut found = std::collections::BTreeMap::new();
        for line in script.lines() {
            let Some(rest) = line.strip_prefix("K_") else {
                continue;
            };
            let (name, value) = rest.split_once('=').expect("K_NAME = number");
            let value: u8 = value.trim().parse().expect("a number");
            assert!(
                found.insert(name.trim().to_string(), value).is_none(),
                "{line}"
            );
        }
        let ours: std::collections::BTreeMap<String, u8> = FrameKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), *k as u8))
            .collect();
        assert_eq!(found, ours);
    }

    #[test]
    fn response_head_parses_status_reason_and_headers() {
        let head = encode_response_head(
            b"404 Not Found",
            &[(b"Content-Type", b"text/plain"), (b"X-A", b"")],
        );
        let h = parse_response_head(&head).unwrap();
        assert_eq!(h.status, 404);
        assert_eq!(h.reason.unwrap().as_bytes(), b"Not Found");
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[0].0, "content-type");
        assert_eq!(h.headers[1].1, "");
    }

    #[test]
    fn a_nul_in_a_value_is_refused_not_split() {
        let head = encode_response_head(
            b"200 OK",
            &[(b"Content-Disposition", b"attachment\0set-cookie\0x")],
        );
        assert_eq!(
            parse_response_head(&head).unwrap_err().to_string(),
            "invalid value for header content-disposition: control characters are not allowed"
        );
        let head = encode_response_head(b"200 OK\r\nSet-Cookie: x", &[]);
        assert!(matches!(
            parse_response_head(&head),
            Err(HeadError::Reason(_))
        ));
        let head = encode_response_head(b"200 OK", &[(b"Bad Name", b"x")]);
        assert_eq!(
            parse_response_head(&head).unwrap_err(),
            HeadError::Name("\"Bad Name\"".into())
        );
    }

    #[test]
    fn latin1_reasons_are_kept_as_bytes() {
        let head = encode_response_head(b"200 Caf\xe9 \xe9\xe9\xe9", &[]);
        let h = parse_response_head(&head).unwrap();
        assert_eq!(h.reason.unwrap().as_bytes(), b"Caf\xe9 \xe9\xe9\xe9");
    }

    #[test]
    fn cut_or_padded_heads_are_malformed() {
        let head = encode_response_head(b"200 OK", &[(b"A", b"b")]);
        for end in 0..head.len() {
            assert!(parse_response_head(&head.slice(..end)).is_err(), "{end}");
        }
        let mut padded = head.to_vec();
        padded.push(b'x');
        assert!(parse_response_head(&padded.into()).is_err());
        for line in [
            &b"42"[..],
            b"042 x",
            b"2000",
            b"20x OK",
            b"200\tOK",
            b"\xe9\xe9\xe9",
        ] {
            let head = encode_response_head(line, &[]);
            assert!(
                matches!(parse_response_head(&head), Err(HeadError::Status(_))),
                "{line:?}"
            );
        }
        assert_eq!(
            parse_response_head(&encode_response_head(b"204", &[]))
                .unwrap()
                .status,
            204
        );
    }

    #[test]
    fn accept_payload_has_subprotocol_and_headers() {
        let p = Bytes::from(encode_fields(b"chat", &[(b"X-Id", b"7")]));
        let a = parse_accept(&p).unwrap();
        assert_eq!(a.subprotocol.unwrap(), "chat");
        assert_eq!(a.headers[0].0, "x-id");
        let p = Bytes::from(encode_fields(b"", &[(b"X-Id", b"7\r\nx: y")]));
        assert!(parse_accept(&p).is_err());
    }

    /// Property tests of the decoders: any bytes a worker sends are decoded
    /// or refused, never a panic. 256 cases each by default; for a longer
    /// run: `PROPTEST_CASES=100000 cargo test --bin corral protocol::tests::props`.
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A few frames: kinds, streams and payloads, some over the size
        /// that is split off the read buffer instead of copied.
        fn frames() -> impl Strategy<Value = Vec<(FrameKind, u32, Vec<u8>)>> {
            let payload = prop_oneof![
                8 => proptest::collection::vec(any::<u8>(), 0..100),
                1 => (COPY_BELOW - 2..COPY_BELOW + 100).prop_map(|n| vec![7u8; n]),
            ];
            let kind = prop::sample::select(FrameKind::ALL.to_vec());
            proptest::collection::vec((kind, any::<u32>(), payload), 0..6)
        }

        /// An RFC 9110 token.
        fn token() -> impl Strategy<Value = Vec<u8>> {
            let tchar = prop::sample::select(
                b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    .to_vec(),
            );
            proptest::collection::vec(tchar, 1..20)
        }

        /// A field value (or reason): HTAB, SP, visible ASCII, obs-text.
        fn text(max: usize) -> impl Strategy<Value = Vec<u8>> {
            let byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff,];
            proptest::collection::vec(byte, 0..max)
        }

        /// Status, reason and header pairs.
        type Head = (u16, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

        fn head() -> impl Strategy<Value = Head> {
            (
                100u16..1000,
                text(30),
                proptest::collection::vec((token(), text(40)), 0..8),
            )
        }

        fn head_bytes((status, reason, headers): &Head) -> Bytes {
            let mut line = status.to_string().into_bytes();
            if !reason.is_empty() {
                line.push(b' ');
                line.extend_from_slice(reason);
            }
            let pairs: Vec<(&[u8], &[u8])> =
                headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            encode_response_head(&line, &pairs)
        }

        proptest! {
            #[test]
            fn decode_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(frame)) = decode(&mut buf) {
                    prop_assert!(frame.payload.len() <= MAX_INCOMING_FRAME);
                }
            }

            #[test]
            fn frames_round_trip_however_the_input_is_cut(
                frames in frames(),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            ) {
                let wire: Vec<u8> = frames.iter().flat_map(|(k, s, p)| encode(*k, *s, p).to_vec()).collect();
                let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
                cuts.push(wire.len());
                cuts.sort_unstable();
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                let mut from = 0;
                for to in cuts {
                    buf.extend_from_slice(&wire[from..to]);
                    from = to;
                    while let Some(f) = decode(&mut buf).unwrap() {
                        got.push((f.kind.unwrap(), f.stream, f.payload.to_vec()));
                    }
                }
                prop_assert!(buf.is_empty());
                prop_assert_eq!(got, frames);
            }

            #[test]
            fn response_heads_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let bytes = Bytes::from(bytes);
                let _ = parse_response_head(&bytes);
                let _ = parse_accept(&bytes);
            }

            #[test]
            fn mutated_heads_never_panic(
                head in head(),
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut bytes = head_bytes(&head).to_vec();
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
                if let Ok(h) = parse_response_head(&Bytes::from(bytes)) {
                    for (_, value) in &h.headers {
                        prop_assert!(value.as_bytes().iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
                    }
                }
            }

            #[test]
            fn valid_heads_round_trip(head in head()) {
                let h = parse_response_head(&head_bytes(&head)).unwrap();
                let (status, reason, headers) = head;
                prop_assert_eq!(h.status.as_u16(), status);
                prop_assert_eq!(h.reason.as_ref().map_or(&b""[..], |r| r.as_bytes()), &reason[..]);
                prop_assert_eq!(h.headers.len(), headers.len());
                for ((name, value), (n, v)) in h.headers.iter().zip(&headers) {
                    prop_assert_eq!(name.as_str().as_bytes(), &n.to_ascii_lowercase()[..]);
                    prop_assert_eq!(value.as_bytes(), &v[..]);
                }
            }

            #[test]
            fn a_control_character_in_any_value_is_refused(
                head in head().prop_filter("a header", |h| !h.2.is_empty()),
                which in any::<prop::sample::Index>(),
                at in any::<prop::sample::Index>(),
                ctl in prop_oneof![0u8..9, 10u8..32, Just(0x7f)],
            ) {
                let mut head = head;
                let i = which.index(head.2.len());
                let value = &mut head.2[i].1;
                let at = at.index(value.len() + 1);
                value.insert(at, ctl);
                let name = HeaderName::from_bytes(&head.2[i].0).unwrap();
                // The first bad header is the one named.
                match parse_response_head(&head_bytes(&head)) {
                    Err(HeadError::Value(n)) => prop_assert!(n == name || head.2[..i].iter().any(|(_, v)| v.contains(&ctl))),
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }
    }
}
