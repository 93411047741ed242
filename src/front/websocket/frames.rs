//! WebSocket frames (RFC 6455 section 5): a client's read into whole
//! messages ([`Reader`]), corral's written ([`Writer`]).
//!
//! tungstenite reads a frame into one buffer, and writes one into another,
//! that it keeps for the life of the socket: after a 15 MiB message a
//! socket held 15 MiB until it closed, so 100 sockets that each sent one
//! and then idled held 1.5 GiB (and a chat room's sockets each held the
//! largest message the app sent them). Here a frame's header goes through
//! a small buffer of [`READ_BUFFER`] bytes, its payload straight into the
//! message it belongs to, and a message is let go of whole: once the app
//! has it, the socket holds nothing but that small buffer. A message to
//! the client is written from the app's bytes as they are, after a header
//! of its own.
//!
//! What the client has sent of a message not yet whole counts in
//! [`Unfinished`] over all sockets: past its cap the read fails
//! ([`Refused::Busy`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Unfinished;

/// The bytes read at a time for frame headers and small frames.
pub const READ_BUFFER: usize = 2048;
/// The longest frame header: 2 bytes, a 64-bit length and a mask.
const MAX_HEAD: usize = 14;

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Message {
        text: bool,
        data: Bytes,
    },
    Ping(Bytes),
    Pong,
    /// A close frame: its code and reason, if it has them.
    Close(Option<(u16, String)>),
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// A message over `ws_max_message` (close with 1009).
    TooBig,
    /// Unfinished messages of all sockets are over their cap (1013).
    Busy,
    /// A frame RFC 6455 forbids (1002).
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8 (1007).
    NotUtf8,
    /// The connection ended or failed.
    Gone,
}

/// A frame's header.
struct Head {
    fin: bool,
    opcode: u8,
    len: usize,
    mask: [u8; 4],
}

/// A message whose first frames came.
struct Partial {
    text: bool,
    data: Vec<u8>,
}

pub struct Reader<R> {
    io: R,
    buf: BytesMut,
    partial: Option<Partial>,
    max_message: usize,
    all: Arc<Unfinished>,
    /// What this socket counts in `all`.
    mine: usize,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(io: R, max_message: usize, all: Arc<Unfinished>) -> Reader<R> {
        Reader {
            io,
            buf: BytesMut::with_capacity(READ_BUFFER),
            partial: None,
            max_message,
            all,
            mine: 0,
        }
    }

    /// The next message or control frame.
    pub async fn next(&mut self) -> Result<Incoming, Refused> {
        loop {
            let head = self.head().await?;
            if head.opcode >= 8 {
                if !head.fin || head.len > 125 {
                    return Err(Refused::Protocol(
                        "a control frame fragmented or over 125 bytes",
                    ));
                }
                let mut payload = Vec::with_capacity(head.len);
                self.payload(&head, &mut payload).await?;
                return control(head.opcode, payload);
            }
            let start = match (head.opcode, &self.partial) {
                (0, None) => return Err(Refused::Protocol("a continuation frame with no message")),
                (0, Some(_)) => None,
                (1 | 2, None) => Some(head.opcode == 1),
                (1 | 2, Some(_)) => {
                    return Err(Refused::Protocol("a new message before the last one ended"));
                }
                _ => return Err(Refused::Protocol("a reserved opcode")),
            };
            let mut partial = match start {
                Some(text) => Partial {
                    text,
                    data: Vec::new(),
                },
                None => self.partial.take().unwrap_or(Partial {
                    text: false,
                    data: Vec::new(),
                }),
            };
            if head.len > self.max_message - partial.data.len() {
                return Err(Refused::TooBig);
            }
            self.count(head.len)?;
            partial.data.reserve(head.len);
            self.payload(&head, &mut partial.data).await?;
            if !head.fin {
                self.partial = Some(partial);
                continue;
            }
            self.give_back();
            if partial.text && std::str::from_utf8(&partial.data).is_err() {
                return Err(Refused::NotUtf8);
            }
            return Ok(Incoming::Message {
                text: partial.text,
                data: Bytes::from(partial.data),
            });
        }
    }

    /// Counts `n` more bytes of an unfinished message.
    fn count(&mut self, n: usize) -> Result<(), Refused> {
        self.mine += n;
        if self.all.held.fetch_add(n, Ordering::AcqRel) + n > self.all.cap {
            return Err(Refused::Busy);
        }
        Ok(())
    }

    /// A message came whole (or the socket ended): its bytes are no longer
    /// unfinished.
    fn give_back(&mut self) {
        let n = std::mem::take(&mut self.mine);
        self.all.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// Reads more into the small buffer; at least a byte.
    async fn fill(&mut self) -> Result<(), Refused> {
        if self.buf.capacity() - self.buf.len() < MAX_HEAD {
            self.buf.reserve(READ_BUFFER);
        }
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(Refused::Gone),
            Ok(_) => Ok(()),
        }
    }

    async fn head(&mut self) -> Result<Head, Refused> {
        while self.buf.len() < 2 {
            self.fill().await?;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        if b0 & 0x70 != 0 {
            return Err(Refused::Protocol(
                "reserved bits set (no extension is in use)",
            ));
        }
        if b1 & 0x80 == 0 {
            return Err(Refused::Protocol("an unmasked frame from a client"));
        }
        let extra = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let size = 2 + extra + 4;
        while self.buf.len() < size {
            self.fill().await?;
        }
        let len = match extra {
            2 => u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
            8 => u64::from_be_bytes(self.buf[2..10].try_into().unwrap_or_default()),
            _ => u64::from(b1 & 0x7f),
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.buf[2 + extra..size]);
        self.buf.advance(size);
        Ok(Head {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            // A length past what this machine can hold is over any limit.
            len: usize::try_from(len).unwrap_or(usize::MAX),
            mask,
        })
    }

    /// Appends the frame's payload, unmasked, to `out` (which has room).
    async fn payload(&mut self, head: &Head, out: &mut Vec<u8>) -> Result<(), Refused> {
        let start = out.len();
        let from_buf = head.len.min(self.buf.len());
        out.extend_from_slice(&self.buf[..from_buf]);
        self.buf.advance(from_buf);
        let mut rest = (head.len - from_buf) as u64;
        while rest > 0 {
            let n = (&mut self.io)
                .take(rest)
                .read_buf(out)
                .await
                .map_err(|_| Refused::Gone)?;
            if n == 0 {
                return Err(Refused::Gone);
            }
            rest -= n as u64;
        }
        unmask(&mut out[start..], head.mask);
        Ok(())
    }
}

impl<R> Drop for Reader<R> {
    fn drop(&mut self) {
        self.all.held.fetch_sub(self.mine, Ordering::AcqRel);
    }
}

/// Writes corral's frames: whole, unmasked, one at a time (a send returns
/// once the client's connection took the frame).
pub struct Writer<W> {
    io: W,
}

/// The opcodes corral sends.
pub const TEXT: u8 = 1;
pub const BINARY: u8 = 2;
pub const CLOSE: u8 = 8;
pub const PING: u8 = 9;
pub const PONG: u8 = 10;

/// Payloads up to this go out in one write with their header.
const SMALL: usize = 4096;

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(io: W) -> Writer<W> {
        Writer { io }
    }

    /// Sends one final frame of `opcode` with `payload`.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut head = [0u8; 10];
        head[0] = 0x80 | opcode;
        let n = match payload.len() {
            n if n < 126 => {
                head[1] = n as u8;
                2
            }
            n if n <= 0xffff => {
                head[1] = 126;
                head[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                head[1] = 127;
                head[2..10].copy_from_slice(&(n as u64).to_be_bytes());
                10
            }
        };
        if payload.len() <= SMALL {
            let mut frame = Vec::with_capacity(n + payload.len());
            frame.extend_from_slice(&head[..n]);
            frame.extend_from_slice(payload);
            self.io.write_all(&frame).await?;
        } else {
            self.io.write_all(&head[..n]).await?;
            self.io.write_all(payload).await?;
        }
        self.io.flush().await
    }

    /// Sends a close frame: `code` (none when None) and `reason`.
    pub async fn close(&mut self, code: Option<u16>, reason: &str) -> std::io::Result<()> {
        let mut payload = Vec::with_capacity(2 + reason.len());
        if let Some(code) = code {
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
        }
        self.send(CLOSE, &payload).await
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// A control frame's meaning (RFC 6455 section 5.5).
fn control(opcode: u8, payload: Vec<u8>) -> Result<Incoming, Refused> {
    match opcode {
        8 => {
            if payload.is_empty() {
                return Ok(Incoming::Close(None));
            }
            if payload.len() == 1 {
                return Err(Refused::Protocol("a close frame with a 1-byte code"));
            }
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !super::sendable(code) {
                return Err(Refused::Protocol("a close code that may not be sent"));
            }
            let reason = String::from_utf8(payload[2..].to_vec()).map_err(|_| Refused::NotUtf8)?;
            Ok(Incoming::Close(Some((code, reason))))
        }
        9 => Ok(Incoming::Ping(Bytes::from(payload))),
        10 => Ok(Incoming::Pong),
        _ => Err(Refused::Protocol("a reserved opcode")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn read_all(bytes: Vec<u8>, max: usize) -> (Vec<Result<Incoming, Refused>>, Arc<Unfinished>) {
        let all = Unfinished::new(max);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut out = Vec::new();
        rt.block_on(async {
            let mut r = Reader::new(&bytes[..], max, all.clone());
            loop {
                let next = r.next().await;
                let end = next.is_err();
                out.push(next);
                if end {
                    break;
                }
            }
        });
        (out, all)
    }

    #[test]
    fn fragments_and_control_frames_between_them_make_whole_messages() {
        let big = vec![7u8; 70_000];
        let mut wire = frame(false, 1, "héllo, ".as_bytes());
        wire.extend(frame(true, 9, b"are you there"));
        wire.extend(frame(false, 0, b"wor"));
        wire.extend(frame(true, 0, b"ld"));
        wire.extend(frame(true, 2, &big));
        wire.extend(frame(true, 10, b""));
        wire.extend(frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e']));
        let (got, all) = read_all(wire, 1 << 20);
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Ping(Bytes::from_static(b"are you there"))),
                Ok(Incoming::Message {
                    text: true,
                    data: Bytes::from("héllo, world")
                }),
                Ok(Incoming::Message {
                    text: false,
                    data: Bytes::from(big)
                }),
                Ok(Incoming::Pong),
                Ok(Incoming::Close(Some((1000, "bye".into())))),
                Err(Refused::Gone),
            ]
        );
        assert_eq!(all.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn written_frames_have_the_shortest_header_for_their_length() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (len, head) in [
            (0, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xff, 0xff]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            rt.block_on(Writer::new(&mut out).send(BINARY, &payload))
                .unwrap();
            assert_eq!(out[..head.len()], head[..], "{len}");
            assert_eq!(out[head.len()..], payload[..], "{len}");
        }
        let mut out = Vec::new();
        rt.block_on(Writer::new(&mut out).close(Some(1001), "bye"))
            .unwrap();
        assert_eq!(out, [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']);
        let mut out = Vec::new();
        rt.block_on(Writer::new(&mut out).close(None, "")).unwrap();
        assert_eq!(out, [0x88, 0]);
    }

    #[test]
    fn frames_rfc_6455_forbids_are_refused() {
        let protocol = |wire: Vec<u8>| {
            let (got, all) = read_all(wire, 1 << 20);
            assert_eq!(all.held.load(Ordering::Relaxed), 0);
            got.into_iter().last().unwrap()
        };
        let mut unmasked = frame(true, 2, b"x");
        unmasked[1] &= 0x7f;
        assert!(matches!(protocol(unmasked), Err(Refused::Protocol(_))));
        let mut rsv = frame(true, 2, b"x");
        rsv[0] |= 0x40;
        assert!(matches!(protocol(rsv), Err(Refused::Protocol(_))));
        for bad in [
            frame(true, 0, b"x"),
            frame(true, 3, b"x"),
            frame(true, 11, b""),
            frame(false, 9, b"x"),
            frame(true, 9, &[0; 126]),
            frame(true, 8, &[3]),
            frame(true, 8, &[0x03, 0xed]),
            [frame(false, 1, b"a"), frame(true, 2, b"b")].concat(),
        ] {
            assert!(matches!(protocol(bad), Err(Refused::Protocol(_))));
        }
        assert_eq!(protocol(frame(true, 1, &[0xff])), Err(Refused::NotUtf8));
        assert_eq!(
            protocol(frame(true, 8, &[0x03, 0xe8, 0xff])),
            Err(Refused::NotUtf8)
        );
        assert_eq!(
            protocol([frame(true, 2, b"abc")[..8].to_vec()].concat()),
            Err(Refused::Gone)
        );
    }

    #[test]
    fn a_message_over_the_limit_is_too_big_before_its_payload_is_read() {
        let (got, _) = read_all(frame(true, 2, &[0; 101]), 100);
        assert_eq!(got, vec![Err(Refused::TooBig)]);
        let mut wire = frame(false, 2, &[0; 60]);
        wire.extend(frame(true, 0, &[0; 41]));
        let (got, all) = read_all(wire, 100);
        assert_eq!(got, vec![Err(Refused::TooBig)]);
        assert_eq!(all.held.load(Ordering::Relaxed), 0, "given back on drop");
        // A length no machine holds.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(read_all(huge, 100).0, vec![Err(Refused::TooBig)]);
        let (got, _) = read_all(frame(true, 2, &[0; 100]), 100);
        assert!(matches!(got[0], Ok(Incoming::Message { .. })));
    }

    #[test]
    fn unfinished_messages_over_the_cap_of_all_sockets_are_busy() {
        // The cap is 8 times the largest message: 800 bytes.
        let all = Unfinished::new(100);
        all.held.fetch_add(750, Ordering::Relaxed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let wire = frame(false, 2, &[0; 60]);
        let got = rt.block_on(async {
            let mut r = Reader::new(&wire[..], 100, all.clone());
            r.next().await
        });
        assert_eq!(got, Err(Refused::Busy));
        assert_eq!(all.held.load(Ordering::Relaxed), 750);
    }
}
