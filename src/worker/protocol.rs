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
//! | `BOOT_OK` / `BOOT_ERROR` | worker → corral | JSON `{pid, import_ms, interface}` (an ASGI worker's also `loop`, `lifespan`) / traceback text |
//! | `START` | worker → corral | response head |
//! | `DATA` / `END` | worker → corral | response body bytes / none |
//! | `RESPONSE` | worker → corral | `u32 head length`, head, whole body of at most [`RESPONSE_WINDOW`] bytes (start + data + end in one) |
//! | `ABORT` | worker → corral | traceback: the app failed after the head was sent |
//! | `BODY_WINDOW` | worker → corral | `u32`: corral may send that many more request body bytes |
//! | `HEARTBEAT` | worker → corral | none: a thread that needs the GIL is alive (stream 0) |
//! | `RETURN` | worker → corral | none: every thread is held by a long request, and this one, not started, whole body in its `REQUEST`, goes back for another worker to run |
//! | `WS_ACCEPT` | worker → corral | fields: subprotocol, then name and value of each header: the app accepted the WebSocket |
//!
//! A REQUEST whose flags have [`FLAG_WEBSOCKET`] is a WebSocket handshake
//! for an ASGI app: the worker answers `WS_ACCEPT`, or a RESPONSE to refuse.
//! One with [`FLAG_STAY`] (a readiness probe) is never given back with
//! `RETURN`.
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
//! unacknowledged per stream ([`SMALL_WINDOW`] under [`FLAG_SMALL_WINDOW`];
//! a DATA frame is never bigger than what is left), and corral
//! [`BODY_CREDIT`] request body bytes beyond the first [`INLINE_BODY`]; so
//! memory per request is bounded.

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
    Return = 19,
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
            19 => Return,
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
    pub const ALL: [FrameKind; 19] = {
        use FrameKind::*;
        [
            Request, Body, BodyEnd, Window, Cancel, BootOk, BootError, Start, Data, End, Abort,
            BodyWindow, Response, Heartbeat, Return, WsAccept, WsText, WsBinary, WsClose,
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
            Return => "RETURN",
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
/// The request is for this worker alone (a readiness probe): the worker
/// runs it even when it gives its other queued requests back (`RETURN`).
pub const FLAG_STAY: u8 = 4;
/// The response's window starts at [`SMALL_WINDOW`], not
/// [`RESPONSE_WINDOW`]: corral holds its budget of response windows
/// (HTTP/2 streams whose clients take their bytes slowly, or not at all),
/// and a body bigger than that streams under credit.
pub const FLAG_SMALL_WINDOW: u8 = 8;

/// Response bytes a worker may send on one stream before corral grants more
/// (must match `RESPONSE_WINDOW` in the worker script).
pub const RESPONSE_WINDOW: usize = 256 * 1024;
/// A response's window under [`FLAG_SMALL_WINDOW`] (must match
/// `SMALL_WINDOW` in the worker script).
pub const SMALL_WINDOW: usize = 16 * 1024;
/// Request body bytes corral sends beyond the inline part before the worker
/// grants more.
pub const BODY_CREDIT: usize = 256 * 1024;
/// Request body bytes read before dispatch and sent inside the REQUEST frame.
pub const INLINE_BODY: usize = 64 * 1024;
/// Largest frame payload corral sends.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest WebSocket message either way (defined in [`crate::limits`],
/// which config checks `ws_max_message` against).
pub use crate::limits::MAX_MESSAGE;
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
/// [`FLAG_MORE_BODY`], [`FLAG_WEBSOCKET`] and [`FLAG_STAY`].
pub fn encode_request(stream: u32, head: &[u8], body: &[u8], flags: u8) -> Bytes {
    let mut buf = request_head(stream, head, body.len(), flags, body.len());
    buf.put_slice(body);
    buf.freeze()
}

/// A REQUEST frame up to its body, which is `body_len` bytes sent after it
/// (as their own pieces: see [`super::channel::Channel::send_pieces`]).
pub fn encode_request_head(stream: u32, head: &[u8], body_len: usize, flags: u8) -> Bytes {
    request_head(stream, head, body_len, flags, 0).freeze()
}

fn request_head(stream: u32, head: &[u8], body_len: usize, flags: u8, room: usize) -> BytesMut {
    let len = 1 + 4 + head.len() + body_len;
    let mut buf = BytesMut::with_capacity(HEADER_LEN + 1 + 4 + head.len() + room);
    put_header(&mut buf, FrameKind::Request, stream, len);
    buf.put_u8(flags);
    buf.put_u32_le(head.len() as u32);
    buf.put_slice(head);
    buf
}

/// Frames queued as pieces go out in order, a write taking as much as the
/// socket or the ring has room for: after `n` more bytes went from
/// `batch[first..]`, the index of the first piece with bytes left (pieces
/// emptied, and empty ones, are passed over; `n = 0` only passes over the
/// empty ones). `batch.len()` when all is written.
pub fn consume(batch: &mut [Bytes], mut first: usize, mut n: usize) -> usize {
    while let Some(piece) = batch.get_mut(first) {
        let k = n.min(piece.len());
        piece.advance(k);
        n -= k;
        if !piece.is_empty() {
            break;
        }
        first += 1;
    }
    first
}

/// The header of a frame whose `len` payload bytes are sent after it.
pub fn frame_header(kind: FrameKind, stream: u32, len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    put_header(&mut buf, kind, stream, len);
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
pub const COPY_BELOW: usize = 64 * 1024;

/// A frame's header, its length checked against [`MAX_INCOMING_FRAME`].
pub struct Header {
    pub len: usize,
    pub kind: Result<FrameKind, UnknownKind>,
    pub stream: u32,
}

/// Reads a frame's header.
pub fn header(bytes: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
    let [l0, l1, l2, l3, kind, s0, s1, s2, s3] = *bytes;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_INCOMING_FRAME {
        return Err(DecodeError::TooLarge(len));
    }
    Ok(Header {
        len,
        kind: FrameKind::try_from(kind),
        stream: u32::from_le_bytes([s0, s1, s2, s3]),
    })
}

/// Splits one whole frame off the front of `buf`, if one is there.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    let Some(first) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let Header { len, kind, stream } = header(first)?;
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
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
    #[error("{0} header fields: at most {MAX_RESPONSE_FIELDS} may go in a response")]
    TooManyFields(usize),
}

/// The most header fields a response (or a `websocket.accept`) may carry:
/// far beyond any real one, and below what an `http::HeaderMap` can hold
/// (about 24,500: past it, it panics).
pub const MAX_RESPONSE_FIELDS: usize = 10_000;

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
    if pairs > MAX_RESPONSE_FIELDS {
        return Err(HeadError::TooManyFields(pairs));
    }
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
            // A field value has no white space around it (RFC 9110 section
            // 5.5): gunicorn strips a WSGI app's, and so does corral.
            let start = value
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
            let end = value.len()
                - value[start..]
                    .iter()
                    .rev()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
            let value = if start == 0 && end == value.len() {
                value
            } else {
                value.slice(start..end)
            };
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
mod tests;
