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
//! | `RESPONSE` | worker → corral | `u32 head length`, head, whole body (start + data + end in one) |
//! | `ABORT` | worker → corral | traceback: the app failed after the head was sent |
//! | `BODY_WINDOW` | worker → corral | `u32`: corral may send that many more request body bytes |
//! | `HEARTBEAT` | worker → corral | none: a thread that needs the GIL is alive (stream 0) |
//! | `WS_ACCEPT` | worker → corral | `SUBPROTOCOL\0NAME\0VALUE...`: the app accepted the WebSocket |
//!
//! A REQUEST whose flags have [`FLAG_WEBSOCKET`] is a WebSocket handshake
//! for an ASGI app: the worker answers `WS_ACCEPT`, or a RESPONSE to refuse.
//!
//! A request head for a WSGI worker is latin-1 text `KEY\0VALUE\0KEY\0VALUE...`
//! whose keys are already WSGI environ keys (`REQUEST_METHOD`, `PATH_INFO`,
//! `HTTP_HOST`, ...), so the worker builds the environ with one `split` and
//! one `dict.update`. For an ASGI worker it is the scope's fields in a fixed
//! order, then the header pairs (see `front/scope.rs`).
//! A response head is `STATUS\0NAME\0VALUE\0...` (e.g. `200 OK\0Content-Type\0text/plain`).
//!
//! Flow control: the worker may have [`RESPONSE_WINDOW`] response bytes
//! unacknowledged per stream, and corral [`BODY_CREDIT`] request body bytes
//! beyond the first [`INLINE_BODY`]; so memory per request is bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const HEADER_LEN: usize = 9;

pub const REQUEST: u8 = 1;
pub const BODY: u8 = 2;
pub const BODY_END: u8 = 3;
pub const WINDOW: u8 = 4;
pub const CANCEL: u8 = 5;

pub const BOOT_OK: u8 = 10;
pub const BOOT_ERROR: u8 = 11;
pub const START: u8 = 12;
pub const DATA: u8 = 13;
pub const END: u8 = 14;
pub const ABORT: u8 = 15;
pub const BODY_WINDOW: u8 = 16;
pub const RESPONSE: u8 = 17;
pub const HEARTBEAT: u8 = 18;
pub const WS_ACCEPT: u8 = 20;
pub const WS_TEXT: u8 = 21;
pub const WS_BINARY: u8 = 22;
pub const WS_CLOSE: u8 = 23;

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
/// Largest frame payload corral accepts from a worker.
pub const MAX_INCOMING_FRAME: usize = 64 * 1024 * 1024;

/// One decoded frame from a worker.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub stream: u32,
    pub payload: Bytes,
}

/// Encodes a frame header followed by `payload`.
pub fn encode(kind: u8, stream: u32, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
    put_header(&mut buf, kind, stream, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

pub fn put_header(buf: &mut BytesMut, kind: u8, stream: u32, len: usize) {
    buf.put_u32_le(len as u32);
    buf.put_u8(kind);
    buf.put_u32_le(stream);
}

/// A REQUEST frame: head and the first body bytes; `flags` are
/// [`FLAG_MORE_BODY`] and [`FLAG_WEBSOCKET`].
pub fn encode_request(stream: u32, head: &[u8], body: &[u8], flags: u8) -> Bytes {
    let len = 1 + 4 + head.len() + body.len();
    let mut buf = BytesMut::with_capacity(HEADER_LEN + len);
    put_header(&mut buf, REQUEST, stream, len);
    buf.put_u8(flags);
    buf.put_u32_le(head.len() as u32);
    buf.put_slice(head);
    buf.put_slice(body);
    buf.freeze()
}

pub fn encode_u32(kind: u8, stream: u32, value: u32) -> Bytes {
    encode(kind, stream, &value.to_le_bytes())
}

/// A `WS_CLOSE` frame.
pub fn encode_close(stream: u32, code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_le_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode(WS_CLOSE, stream, &payload)
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

/// Payloads up to this size are copied out of the read buffer.
const COPY_BELOW: usize = 64 * 1024;

/// Splits one whole frame off the front of `buf`, if one is there.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if len > MAX_INCOMING_FRAME {
        return Err(format!("frame of {len} bytes exceeds the limit"));
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    let kind = buf[4];
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

/// A response head from the worker: status code, reason and header pairs.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Bytes,
    pub headers: Vec<(Bytes, Bytes)>,
}

/// Parses `STATUS\0NAME\0VALUE...`.
pub fn parse_response_head(head: &Bytes) -> Result<ResponseHead, String> {
    let mut parts = head.split(|&b| b == 0);
    let status_line = parts.next().unwrap_or_default();
    let status_str = String::from_utf8_lossy(status_line);
    let (code, reason) = status_str
        .split_once(' ')
        .unwrap_or((status_str.as_ref(), ""));
    let status: u16 = code
        .parse()
        .ok()
        .filter(|c| (100..=999).contains(c))
        .ok_or_else(|| format!("invalid status line {status_str:?}: expected e.g. \"200 OK\""))?;
    let reason = head.slice_ref(&status_line[status_line.len() - reason.len()..]);
    let mut headers = Vec::new();
    while let Some(name) = parts.next() {
        let Some(value) = parts.next() else {
            return Err(format!(
                "header {:?} has no value",
                String::from_utf8_lossy(name)
            ));
        };
        headers.push((head.slice_ref(name), head.slice_ref(value)));
    }
    Ok(ResponseHead {
        status,
        reason,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_at_boundaries() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode(DATA, 7, b"hello"));
        buf.extend_from_slice(&encode(END, 7, b""));
        let partial = buf.split_off(12);
        let mut first = buf;
        assert!(decode(&mut first).unwrap().is_none());
        first.unsplit(partial);
        let f = decode(&mut first).unwrap().unwrap();
        assert_eq!((f.kind, f.stream, &f.payload[..]), (DATA, 7, &b"hello"[..]));
        let f = decode(&mut first).unwrap().unwrap();
        assert_eq!((f.kind, f.stream, f.payload.len()), (END, 7, 0));
        assert!(first.is_empty());
    }

    #[test]
    fn response_head_parses_status_reason_and_headers() {
        let head = Bytes::from_static(b"404 Not Found\0Content-Type\0text/plain\0X-A\0");
        let h = parse_response_head(&head).unwrap();
        assert_eq!(h.status, 404);
        assert_eq!(&h.reason[..], b"Not Found");
        assert_eq!(h.headers.len(), 2);
        assert_eq!(&h.headers[1].1[..], b"");
        assert!(parse_response_head(&Bytes::from_static(b"OK\0A\0b")).is_err());
        assert!(parse_response_head(&Bytes::from_static(b"200 OK\0A")).is_err());
    }
}
