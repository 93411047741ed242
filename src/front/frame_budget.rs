//! HTTP/2 frames that ask corral for nothing are rationed per connection.
//!
//! PRIORITY, WINDOW_UPDATE, SETTINGS, PING, RST_STREAM, empty DATA and
//! frames of unknown types make h2 do work and the client gets nothing it
//! asked for. h2 reads them as fast as they come: one connection sending
//! PRIORITY frames flat out took a whole core of corral (40 million frames
//! in 5 s on loopback) and multiplied other clients' latency.
//!
//! [`Rationed`] sits between the (TLS) stream and h2 and reads the frame
//! headers on both sides, never the payloads. Each such frame from the
//! client costs a token. A connection starts with [`START`] tokens, earns
//! [`EARNED`] for each DATA or HEADERS frame corral sends (what a client's
//! WINDOW_UPDATEs, PINGs and resets answer), and [`PER_SECOND`] with time,
//! up to [`MOST`]. A client that spends more is cut off: the read fails,
//! hyper ends the connection, and `corral_http2_floods_total` counts it.
//! Browsers, curl, gRPC and h2load send a few such frames per response, so
//! they never come near it; a flood now costs corral at most [`START`]
//! frames per connection it opens, the price of any connection.
//!
//! HEADERS and CONTINUATION are free here: h2 already bounds header
//! blocks, streams open at once and resets of streams corral never took.
//! So is a DATA frame that carries body bytes or ends its stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::preface::PREFACE;
use crate::metrics::Metrics;

/// Tokens a connection starts with: what a client may send before corral
/// has answered anything. Browsers send about ten at the start.
pub const START: u32 = 1_000;
/// Tokens for each DATA or HEADERS frame corral sends. A client answers a
/// response's frames with a WINDOW_UPDATE for the stream and one for the
/// connection, and perhaps a PING to gauge the round trip (gRPC).
pub const EARNED: u32 = 4;
/// Tokens a connection earns per second of its life.
pub const PER_SECOND: u32 = 10;
/// Tokens a connection may hold: credit from a long download does not
/// buy a long flood later.
pub const MOST: u32 = 10_000;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;

/// A stream of HTTP/2 frames read by their 9-byte headers.
#[derive(Default)]
struct Frames {
    /// Bytes still to skip: the connection preface, or a frame's payload.
    skip: usize,
    head: [u8; 9],
    /// Bytes of `head` read so far.
    have: usize,
    /// A padded DATA frame whose first payload byte (its padding's
    /// length) is next: its payload length and flags.
    padded: Option<(usize, u8)>,
}

/// What a frame header says, as far as the budget cares.
#[derive(Debug, PartialEq)]
enum Frame {
    /// HEADERS, CONTINUATION, DATA with body bytes or END_STREAM.
    Work,
    /// Anything else.
    Idle,
}

impl Frames {
    /// The frames of the client's side, which begins with the preface.
    fn client() -> Frames {
        Frames {
            skip: PREFACE.len(),
            ..Frames::default()
        }
    }

    /// Reads `bytes` on from where the last call stopped and calls
    /// `each` for every frame whose header (and, for a padded DATA frame,
    /// padding length) they complete, with its type.
    fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(u8, Frame)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            if let Some((len, flags)) = self.padded.take() {
                let pad = usize::from(bytes[0]);
                let data = len.saturating_sub(1 + pad);
                each(DATA, data_frame(data, flags));
                self.skip = len - 1;
                bytes = &bytes[1..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = self.head;
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            self.skip = len;
            match kind {
                DATA if flags & PADDED != 0 && len > 0 => {
                    self.skip = 0;
                    self.padded = Some((len, flags));
                }
                DATA => each(kind, data_frame(len, flags)),
                HEADERS | CONTINUATION => each(kind, Frame::Work),
                _ => each(kind, Frame::Idle),
            }
        }
    }
}

/// A DATA frame carrying `data` body bytes works if it carries any or
/// ends its stream.
fn data_frame(data: usize, flags: u8) -> Frame {
    if data > 0 || flags & END_STREAM != 0 {
        Frame::Work
    } else {
        Frame::Idle
    }
}

/// One connection's tokens.
struct Tokens {
    tokens: u32,
    /// Time earns tokens from here on.
    since: Instant,
}

impl Tokens {
    fn new() -> Tokens {
        Tokens {
            tokens: START,
            since: Instant::now(),
        }
    }

    fn earn(&mut self, n: u32) {
        self.tokens = self.tokens.saturating_add(n).min(MOST);
    }

    /// Takes a token; false if none is left, even with what time earned.
    /// The clock is read only when the tokens run out.
    fn spend(&mut self) -> bool {
        if self.tokens == 0 {
            let tick = Duration::from_secs(1) / PER_SECOND;
            let now = Instant::now();
            let ticks = (now - self.since).as_nanos() / tick.as_nanos();
            match u32::try_from(ticks) {
                Ok(ticks) if ticks < MOST => self.since += tick * ticks,
                _ => self.since = now,
            }
            self.earn(u32::try_from(ticks).unwrap_or(MOST));
        }
        match self.tokens.checked_sub(1) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }
}

/// An HTTP/2 connection's stream that rations the client's frames that
/// ask for nothing (see the module).
pub struct Rationed<S> {
    io: S,
    read: Frames,
    written: Frames,
    tokens: Tokens,
    metrics: Arc<Metrics>,
}

impl<S> Rationed<S> {
    pub fn new(io: S, metrics: Arc<Metrics>) -> Rationed<S> {
        Rationed {
            io,
            read: Frames::client(),
            written: Frames::default(),
            tokens: Tokens::new(),
            metrics,
        }
    }

    fn wrote(&mut self, bytes: &[u8]) {
        let tokens = &mut self.tokens;
        self.written.feed(bytes, |kind, _| {
            if kind == DATA || kind == HEADERS {
                tokens.earn(EARNED);
            }
        });
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rationed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let mut broke = false;
        let tokens = &mut this.tokens;
        this.read.feed(&buf.filled()[before..], |_, frame| {
            if frame == Frame::Idle && !broke && !tokens.spend() {
                broke = true;
            }
        });
        if broke {
            this.metrics.http2_flood();
            tracing::debug!(
                "HTTP/2 connection closed: more than its ration of frames that ask for nothing"
            );
            return Poll::Ready(Err(io::Error::other(
                "HTTP/2 flood: too many frames that ask for nothing",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rationed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.wrote(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            let part = left.min(b.len());
            this.wrote(&b[..part]);
            left -= part;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([kind, flags, 0, 0, 0, 1]);
        f.extend(payload);
        f
    }

    /// Every frame `bytes` holds, fed in pieces of `step` bytes.
    fn frames(bytes: &[u8], step: usize) -> Vec<(u8, Frame)> {
        let mut f = Frames::client();
        let mut got = Vec::new();
        for piece in bytes.chunks(step) {
            f.feed(piece, |kind, frame| got.push((kind, frame)));
        }
        got
    }

    #[test]
    fn frames_are_read_by_their_headers_however_the_bytes_are_cut() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(4, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
        bytes.extend(frame(HEADERS, 0x4, &[0x82; 20]));
        bytes.extend(frame(2, 0, &[0, 0, 0, 3, 16])); // PRIORITY
        bytes.extend(frame(DATA, 0, b"body")); // body bytes
        bytes.extend(frame(DATA, 0, b"")); // empty
        bytes.extend(frame(DATA, PADDED, &[3, 0, 0, 0])); // padding only
        bytes.extend(frame(DATA, PADDED, &[1, b'x', 0])); // a byte, padded
        bytes.extend(frame(DATA, END_STREAM, b""));
        bytes.extend(frame(0x20, 0, &[9; 300])); // unknown type
        let want = vec![
            (4, Frame::Idle),
            (HEADERS, Frame::Work),
            (2, Frame::Idle),
            (DATA, Frame::Work),
            (DATA, Frame::Idle),
            (DATA, Frame::Idle),
            (DATA, Frame::Work),
            (DATA, Frame::Work),
            (0x20, Frame::Idle),
        ];
        for step in [1, 2, 7, 9, 10, 64, bytes.len()] {
            assert_eq!(frames(&bytes, step), want, "fed {step} bytes at a time");
        }
    }

    #[test]
    fn padding_longer_than_its_frame_costs_a_token_and_panics_nothing() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(DATA, PADDED, &[200]));
        bytes.extend(frame(DATA, PADDED, &[255, 1, 2]));
        assert_eq!(
            frames(&bytes, 3),
            vec![(DATA, Frame::Idle), (DATA, Frame::Idle)]
        );
    }

    proptest::proptest! {
        /// Any bytes at all, cut anywhere: the same frames as read whole,
        /// and no panic.
        #[test]
        fn any_bytes_cut_anywhere_read_as_the_same_frames(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            step in 1usize..40,
        ) {
            proptest::prop_assert_eq!(frames(&bytes, step), frames(&bytes, bytes.len().max(1)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_run_out_and_come_back_with_time_and_answers() {
        let mut b = Tokens::new();
        for _ in 0..START {
            assert!(b.spend());
        }
        assert!(!b.spend());
        tokio::time::advance(Duration::from_millis(250)).await;
        // Two tenths of a second: two tokens.
        assert!(b.spend() && b.spend());
        assert!(!b.spend());
        b.earn(EARNED);
        for _ in 0..EARNED {
            assert!(b.spend());
        }
        assert!(!b.spend());
        // A long quiet spell earns no more than MOST.
        tokio::time::advance(Duration::from_secs(100_000)).await;
        for _ in 0..MOST {
            assert!(b.spend());
        }
        assert!(!b.spend());
    }
}
