//! Request targets that gunicorn and nginx accept but the `http` crate's
//! URI parser (behind hyper) refuses with 400: a raw `"`, `<`, `>` or
//! `` ` `` (`curl 'http://host/search?q="hello"'` sends them as they are)
//! and bytes above 0x7F that are not UTF-8 (obs-text; UTF-8 hyper takes).
//! [`Relaxed`] sits between the client's socket and hyper, holds each
//! request line's target until its end, percent-encodes those bytes in a
//! target hyper would refuse, so that hyper parses it, and keeps the
//! target as received for
//! the handler ([`RawTargets`]): `RAW_URI`, `QUERY_STRING` and the ASGI
//! `raw_path` and `query_string` carry the client's own bytes, and
//! `PATH_INFO` decodes to the same bytes either way. Controls, spaces and
//! NUL are left alone, and hyper still answers them 400.
//!
//! To find each request line, [`Scanner`] follows HTTP/1.1 request framing
//! (RFC 9112 section 6): the head up to its empty line, then a body of
//! `Content-Length` bytes or `chunked`, or none. It rewrites nothing but
//! the bytes above, inside a target, and only while it is sure where it
//! is: a head it does not follow (several or odd `Content-Length`s, any
//! `Transfer-Encoding` but `chunked`, `Upgrade: websocket`, `CONNECT`, a head or line
//! longer than [`MAX_LINE`]) makes it step aside for the rest of the
//! connection, and from then on the bytes pass as they are (hyper judges
//! them as it would without it). So a disagreement with hyper can cost a
//! relaxed target, never a body byte that hyper reads as a body.
//!
//! Where it steps aside, hyper and a proxy in front may disagree on where
//! the next request begins (hyper reads a bare LF in chunked trailers as
//! more trailers; a proxy that ends a line at LF sees the next request
//! there, and what it sent as a body would reach the app as a request).
//! So the scanner tells [`RawTargets`] where it stepped aside: the request
//! in hand is answered with `Connection: close`, and any later one hyper
//! parses gets 400 ([`RawTargets::verdict`]), as does a head with a line
//! that ends in a bare LF (gunicorn and uvicorn answer 400).
//!
//! Requests are counted in the same order on both sides (hyper serves one
//! HTTP/1.1 request at a time, in order), so the handler takes the raw
//! target by the request's number on its connection, and only if, encoded,
//! it is the very target hyper parsed ([`RawTargets::next_for`]): were the
//! scanner ever out of step with hyper, a request would keep hyper's
//! target, never take another request's.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The longest request line or header line the scanner follows; past it,
/// it steps aside (hyper's own head limit answers such heads anyway).
pub const MAX_LINE: usize = 64 * 1024;

/// The largest line buffer kept from one line to the next.
const REUSED_LINE: usize = 1024;

/// Bytes the `http` crate refuses in a target (in the path or the query)
/// that gunicorn or nginx take.
fn refused_byte(b: u8) -> bool {
    matches!(b, b'"' | b'<' | b'>' | b'`')
}

/// Whether hyper would refuse `target` for bytes corral relaxes: one of
/// [`refused_byte`], or bytes above 0x7F that are not UTF-8 (UTF-8 it takes).
fn refused_by_hyper(target: &[u8]) -> bool {
    target.iter().any(|&b| refused_byte(b))
        || (!target.is_ascii() && std::str::from_utf8(target).is_err())
}

/// `target` with the bytes hyper refuses percent-encoded: the
/// [`refused_byte`]s, and every byte above 0x7F when they are not UTF-8.
fn encode(target: &[u8], out: &mut Vec<u8>) {
    let high = std::str::from_utf8(target).is_err();
    for &b in target {
        if refused_byte(b) || (high && b >= 0x80) {
            out.extend_from_slice(&[b'%', hex(b >> 4), hex(b & 15)]);
        } else {
            out.push(b);
        }
    }
}

/// The raw targets of one connection's rewritten requests, by request
/// number, from the reader to the handler.
pub struct RawTargets {
    rewritten: Mutex<VecDeque<(u64, Box<[u8]>)>>,
    /// Entries in `rewritten`: most connections never have one, and then
    /// a request takes no lock.
    queued: AtomicU64,
    served: AtomicU64,
    /// Where the scanner stopped following the framing: `(n << 1) | bad`,
    /// for request `n`, `bad` when that request's head has a line that
    /// ends in a bare LF; [`FOLLOWING`] while it follows.
    lost: AtomicU64,
}

/// [`RawTargets::lost`] while the scanner follows the framing.
const FOLLOWING: u64 = u64::MAX;

/// Why the handler answers a request 400 without running it: the scanner
/// could not vouch for where its head begins or ends (see [`RawTargets::verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unframed(pub &'static str);

impl Default for RawTargets {
    fn default() -> Self {
        RawTargets {
            rewritten: Mutex::default(),
            queued: AtomicU64::new(0),
            served: AtomicU64::new(0),
            lost: AtomicU64::new(FOLLOWING),
        }
    }
}

impl RawTargets {
    /// Whether the scanner stopped following this connection's framing:
    /// the response in hand then closes the connection (hyper and a proxy
    /// in front may disagree on where the next request starts).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) != FOLLOWING
    }

    /// Whether the request hyper just parsed (the one [`RawTargets::next`]
    /// was last called for) must be refused: its head has a line that
    /// ends in a bare LF (gunicorn and uvicorn answer 400; a proxy in front
    /// may end that line elsewhere), or it comes after a request whose
    /// framing the scanner lost (hyper may have read that request's end
    /// otherwise than a proxy in front: a bare LF in chunked trailers
    /// makes hyper read the next request's head as trailers, and serve
    /// what the proxy sent as that request's body).
    pub fn verdict(&self) -> Option<Unframed> {
        let lost = self.lost.load(Ordering::Acquire);
        if lost == FOLLOWING {
            return None;
        }
        let n = self.served.load(Ordering::Relaxed).saturating_sub(1);
        let (at, bad_head) = (lost >> 1, lost & 1 == 1);
        if at < n {
            Some(Unframed(
                "an earlier request on this connection was framed ambiguously",
            ))
        } else if at == n && bad_head {
            Some(Unframed("a line of the head ends in a bare LF, not CRLF"))
        } else {
            None
        }
    }

    fn lose(&self, request: u64, bad_head: bool) {
        let _ = self.lost.compare_exchange(
            FOLLOWING,
            (request.min(FOLLOWING >> 2) << 1) | u64::from(bad_head),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The raw target of the connection's next request, if the scanner
    /// rewrote it. Called once per request, in order.
    pub fn next(&self) -> Option<Box<[u8]>> {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = self.rewritten.lock().unwrap_or_else(|e| e.into_inner());
        // Entries of requests hyper never served (it closed first) are
        // older than `n`: drop them.
        let before = queue.len();
        while queue.front().is_some_and(|(i, _)| *i < n) {
            queue.pop_front();
        }
        let raw = match queue.front() {
            Some((i, _)) if *i == n => queue.pop_front().map(|(_, raw)| raw),
            _ => None,
        };
        self.queued
            .fetch_sub((before - queue.len()) as u64, Ordering::Release);
        raw
    }

    /// [`RawTargets::next`], kept only if it is the raw form of `uri`,
    /// the target hyper parsed for that request: encoded, and without its
    /// fragment, byte for byte the same.
    pub fn next_for(&self, uri: &http::Uri) -> Option<Box<[u8]>> {
        self.next().filter(|raw| encodes_to(raw, uri))
    }

    fn push(&self, n: u64, raw: Vec<u8>) {
        let mut queue = self.rewritten.lock().unwrap_or_else(|e| e.into_inner());
        queue.push_back((n, raw.into_boxed_slice()));
        self.queued.fetch_add(1, Ordering::Release);
    }
}

pub use crate::worker::head::RawTarget;

/// Where the scanner is in the client's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before a request line (empty lines before one are allowed).
    Start,
    /// In the method, up to the space.
    Method,
    /// In the target, up to the space.
    Target,
    /// After the target, up to the end of the request line.
    Version,
    /// In a header line (or the empty line that ends the head).
    Header,
    /// In a `Content-Length` body: this many bytes left.
    Body(u64),
    /// In a chunked body's size line.
    ChunkSize,
    /// In a chunk's data: this many bytes left, then CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// In the trailer section after the last chunk.
    Trailer,
    /// Not following any more: everything passes as it is.
    Aside,
}

/// Follows request framing and rewrites targets; see the module docs.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The current header, chunk-size or trailer line, for the decisions
    /// at its end.
    line: Vec<u8>,
    /// Bytes of the current line so far (against [`MAX_LINE`]).
    line_len: usize,
    method: Vec<u8>,
    /// The target so far, while it is cut by the end of a read.
    target: Vec<u8>,
    /// Bytes of `target` were held back from hyper.
    held: bool,
    /// This head's `Content-Length`, and whether it was odd or repeated.
    length: Option<u64>,
    chunked: bool,
    odd: bool,
    /// Requests whose line has begun.
    requests: u64,
    /// The last byte of the line so far was a CR.
    cr: bool,
    /// It stepped aside at a line of the head that ends in a bare LF.
    bad_head: bool,
    /// It told [`RawTargets`] where it stepped aside.
    told: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Start,
            line: Vec::new(),
            line_len: 0,
            method: Vec::new(),
            target: Vec::new(),
            held: false,
            length: None,
            chunked: false,
            odd: false,
            requests: 0,
            cr: false,
            bad_head: false,
            told: false,
        }
    }
}

impl Scanner {
    /// Whether it still follows the stream.
    pub fn following(&self) -> bool {
        self.state != State::Aside
    }

    /// Scans `input`; `None` when it passes unchanged, else the bytes to
    /// pass in its place (possibly none: a target cut by the end of
    /// `input` is held back until its end is seen). Raw targets of
    /// rewritten requests go to `raw`.
    pub fn feed(&mut self, input: &[u8], raw: &RawTargets) -> Option<Vec<u8>> {
        let out = self.scan(input, raw);
        if self.state == State::Aside && !self.told {
            self.told = true;
            raw.lose(self.requests.saturating_sub(1), self.bad_head);
        }
        out
    }

    fn scan(&mut self, input: &[u8], raw: &RawTargets) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Aside => {
                    if let Some(o) = out.as_mut() {
                        o.extend_from_slice(&input[i..]);
                    }
                    return out;
                }
                State::Body(left) | State::ChunkData(left) => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    if let Some(o) = out.as_mut() {
                        o.extend_from_slice(&input[i..i + take]);
                    }
                    i += take;
                    let left = left - take as u64;
                    self.state = match (&self.state, left) {
                        (State::Body(_), 0) => State::Start,
                        (State::Body(_), _) => State::Body(left),
                        (_, 0) => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                }
                State::Target => i = self.target(input, i, &mut out, raw),
                State::Version | State::Header => i = self.line_run(input, i, &mut out),
                _ => {
                    let b = input[i];
                    if let Some(o) = out.as_mut() {
                        o.push(b);
                    }
                    self.step(b);
                    i += 1;
                }
            }
        }
        out
    }

    /// The target from `input[i..]`: up to its end (a space) it is held;
    /// then it passes as it came, or rewritten when hyper would refuse it.
    /// Returns where scanning goes on.
    fn target(
        &mut self,
        input: &[u8],
        i: usize,
        out: &mut Option<Vec<u8>>,
        raw: &RawTargets,
    ) -> usize {
        let rest = &input[i..];
        let end = rest.iter().position(|&b| matches!(b, b' ' | b'\r' | b'\n'));
        let piece = &rest[..end.unwrap_or(rest.len())];
        if self.target.len() + piece.len() > MAX_LINE {
            // Give back what was held, as it came.
            let held = std::mem::take(&mut self.target);
            if self.held {
                out.get_or_insert_with(|| input[..i].to_vec())
                    .extend_from_slice(&held);
            }
            self.aside();
            return i;
        }
        let Some(end) = end else {
            // Cut by the end of the input: hold it until its end comes.
            out.get_or_insert_with(|| input[..i].to_vec());
            self.target.extend_from_slice(piece);
            self.held = true;
            return input.len();
        };
        // Mostly the whole target is in this input: it is read where it is,
        // and copied only to be held or kept.
        let held = std::mem::replace(&mut self.held, false);
        let target: Cow<[u8]> = if held {
            self.target.extend_from_slice(piece);
            Cow::Owned(std::mem::take(&mut self.target))
        } else {
            Cow::Borrowed(piece)
        };
        if rest[end] != b' ' {
            // No version: not a request line hyper takes. Step aside.
            if held {
                out.get_or_insert_with(|| input[..i].to_vec())
                    .extend_from_slice(&target);
            }
            self.aside();
            return i + piece.len();
        }
        let rewrite = refused_by_hyper(&target);
        // As hyper counts it (an upper bound when rewritten).
        self.line_len += if rewrite {
            3 * target.len()
        } else {
            target.len()
        };
        if rewrite || held {
            let o = out.get_or_insert_with(|| input[..i].to_vec());
            if rewrite {
                encode(&target, o);
            } else {
                o.extend_from_slice(&target);
            }
        } else if let Some(o) = out.as_mut() {
            o.extend_from_slice(piece);
        }
        // A fragment hyper drops: kept for `RAW_URI`, as gunicorn keeps it.
        if rewrite || target.contains(&b'#') {
            raw.push(self.requests - 1, target.into_owned());
        }
        self.state = State::Version;
        i + piece.len()
    }

    /// The rest of the request line after the target, or of a header
    /// line, from `input[i..]`, taken up to its end at once (a search for
    /// the LF, not a step per byte: the head is most of what a small
    /// request's bytes are). Returns where scanning goes on.
    fn line_run(&mut self, input: &[u8], i: usize, out: &mut Option<Vec<u8>>) -> usize {
        let rest = &input[i..];
        let (piece, ends) = match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => (&rest[..=lf], true),
            None => (rest, false),
        };
        self.line_len += piece.len();
        if self.line_len > MAX_LINE {
            // The bytes pass on as they came (see `State::Aside`).
            self.aside();
            return i;
        }
        if let Some(o) = out.as_mut() {
            o.extend_from_slice(piece);
        }
        if self.state == State::Header {
            self.line.extend_from_slice(piece);
        }
        if !ends {
            self.cr = piece.last() == Some(&b'\r');
        }
        if ends {
            // A line of the head ends at CRLF: gunicorn and uvicorn answer
            // a bare LF 400, and a proxy in front may not end the line
            // there (hyper would).
            let cr_before = match piece.len() {
                1 => self.cr,
                n => piece[n - 2] == b'\r',
            };
            self.cr = false;
            if !cr_before {
                self.bad_head = true;
                self.aside();
                return i + piece.len();
            }
            if self.state == State::Version {
                self.new_line(State::Header);
            } else {
                let whole = std::mem::take(&mut self.line);
                let line = whole.strip_suffix(b"\n").unwrap_or(&whole);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    self.end_of_head();
                } else {
                    self.header(line);
                }
                self.line_len = 0;
                self.reuse_line(whole);
            }
        }
        i + piece.len()
    }

    /// One byte outside a target, a line that [`Scanner::line_run`] takes
    /// and a body's data.
    fn step(&mut self, b: u8) {
        if self.state != State::Start {
            self.line_len += 1;
            if self.line_len > MAX_LINE {
                return self.aside();
            }
        }
        match self.state {
            State::Start => match b {
                b'\r' | b'\n' => {}
                _ => {
                    self.requests += 1;
                    self.method.clear();
                    self.method.push(b);
                    self.line_len = 1;
                    self.length = None;
                    self.chunked = false;
                    self.odd = false;
                    self.state = State::Method;
                }
            },
            State::Method => match b {
                b' ' => self.state = State::Target,
                b'\r' | b'\n' => self.aside(),
                _ => self.method.push(b),
            },
            State::ChunkSize => {
                self.line.push(b);
                if b == b'\n' {
                    let line = std::mem::take(&mut self.line);
                    match chunk_size(&line) {
                        Some(0) => self.new_line(State::Trailer),
                        Some(n) => self.new_line(State::ChunkData(n)),
                        None => self.aside(),
                    }
                    self.reuse_line(line);
                }
            }
            State::ChunkEnd => {
                // Exactly CRLF, as hyper takes it (a bare LF it refuses).
                self.line.push(b);
                match (self.line.as_slice(), b) {
                    (b"\r", b'\r') => {}
                    (b"\r\n", b'\n') => self.new_line(State::ChunkSize),
                    _ => self.aside(),
                }
            }
            State::Trailer => {
                // hyper ends a trailer line, and the trailer section, at
                // CRLF only: a bare LF is a byte of the line to it, so the
                // section would not end where a scanner that took LF for
                // a line's end thinks. Any line but `field CRLF` with no
                // other CR or LF makes it step aside.
                self.line.push(b);
                if b == b'\n' {
                    let line = std::mem::take(&mut self.line);
                    self.line_len = 0;
                    match trailer_line(&line) {
                        Some(true) => self.state = State::Start,
                        Some(false) => {}
                        None => self.aside(),
                    }
                    self.reuse_line(line);
                }
            }
            State::Target
            | State::Version
            | State::Header
            | State::Body(_)
            | State::ChunkData(_)
            | State::Aside => {}
        }
    }

    /// Takes back a finished line's buffer, emptied, so that the next line
    /// does not allocate one: not once the scanner stepped aside, nor a
    /// buffer a long line grew (an idle connection keeps no more than a
    /// short line's worth).
    fn reuse_line(&mut self, mut line: Vec<u8>) {
        if self.state != State::Aside && line.capacity() <= REUSED_LINE {
            line.clear();
            self.line = line;
        }
    }

    fn new_line(&mut self, state: State) {
        self.line.clear();
        self.line_len = 0;
        self.state = state;
    }

    /// A header line of the head: only the framing ones matter.
    fn header(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return self.aside();
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (n, self.length) {
                (Some(n), None) => self.length = Some(n),
                _ => self.odd = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.chunked || !value.eq_ignore_ascii_case(b"chunked") {
                self.odd = true;
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case(b"upgrade")
            && value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        {
            // The connection may turn into a WebSocket after this (corral
            // takes no other upgrade: after `Upgrade: h2c` the client's
            // next bytes are HTTP/1.1 again).
            self.odd = true;
        }
    }

    fn end_of_head(&mut self) {
        if self.odd
            || (self.chunked && self.length.is_some())
            || self.method.eq_ignore_ascii_case(b"CONNECT")
        {
            return self.aside();
        }
        self.new_line(State::Start);
        self.state = match (self.chunked, self.length) {
            (true, _) => State::ChunkSize,
            (false, Some(n)) if n > 0 => State::Body(n),
            _ => State::Start,
        };
    }

    fn aside(&mut self) {
        self.state = State::Aside;
        self.line = Vec::new();
        self.method = Vec::new();
        self.target = Vec::new();
    }
}

/// A chunk-size line as hyper takes it and a proxy in front would read it
/// alike: hex digits, then CRLF, or spaces or tabs, `;` and extensions
/// with no control byte but tabs, then CRLF. `None` for anything else:
/// hyper refuses it, or a proxy may read it otherwise (white space with no
/// extension after it, a control byte in one: gunicorn and uvicorn answer
/// both 400), or a size past 15 digits.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let end = line
        .iter()
        .position(|&b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(end);
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let lws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &rest[lws..];
    let extensions = match rest {
        [] if lws == 0 => true,
        [b';', ..] => true,
        _ => false,
    };
    if !extensions || rest.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// A trailer line as hyper takes it: `Some(true)` for the CRLF that ends
/// the trailers, `Some(false)` for a field line (bytes with no CR or LF,
/// then CRLF), `None` for anything else.
fn trailer_line(line: &[u8]) -> Option<bool> {
    let field = line.strip_suffix(b"\r\n")?;
    if field.iter().any(|&b| b == b'\r' || b == b'\n') {
        return None;
    }
    Some(field.is_empty())
}

/// Whether `raw`, encoded as the scanner encodes it, is `uri` (an
/// origin-form target's path and query; any other form, as `uri` shows it).
fn encodes_to(raw: &[u8], uri: &http::Uri) -> bool {
    let mut encoded = Vec::with_capacity(raw.len() * 3);
    encode(raw, &mut encoded);
    // `encode` never writes a '#': the fragment hyper leaves out starts at
    // the same one.
    let end = encoded
        .iter()
        .position(|&b| b == b'#')
        .unwrap_or(encoded.len());
    let encoded = &encoded[..end];
    match uri.path_and_query() {
        Some(pq) if uri.scheme().is_none() => encoded == pq.as_str().as_bytes(),
        _ => encoded == uri.to_string().as_bytes(),
    }
}

fn hex(n: u8) -> u8 {
    b"0123456789ABCDEF"[usize::from(n)]
}

/// A client stream whose request targets are relaxed (see the module docs).
pub struct Relaxed<S> {
    io: S,
    scanner: Scanner,
    raw: std::sync::Arc<RawTargets>,
    /// Rewritten bytes that did not fit in the caller's buffer.
    pending: Vec<u8>,
    sent: usize,
}

impl<S> Relaxed<S> {
    pub fn new(io: S, raw: std::sync::Arc<RawTargets>) -> Relaxed<S> {
        Relaxed {
            io,
            scanner: Scanner::default(),
            raw,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Relaxed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sent < this.pending.len() {
            let n = (this.pending.len() - this.sent).min(buf.remaining());
            buf.put_slice(&this.pending[this.sent..this.sent + n]);
            this.sent += n;
            if this.sent == this.pending.len() {
                this.pending = Vec::new();
                this.sent = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        loop {
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            let read = buf.filled().len() - start;
            if read == 0 || !this.scanner.following() {
                return Poll::Ready(Ok(()));
            }
            let Some(out) = this.scanner.feed(&buf.filled()[start..], &this.raw) else {
                return Poll::Ready(Ok(()));
            };
            buf.set_filled(start);
            let n = out.len().min(buf.remaining());
            buf.put_slice(&out[..n]);
            if n < out.len() {
                this.pending = out;
                this.sent = n;
            }
            // All of it held back (a target cut by the read): read on, as
            // an empty read would mean the end of the stream to hyper.
            if n > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

super::write_through!(Relaxed);

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw targets by request number.
    type Raws = Vec<(u64, Vec<u8>)>;

    /// Feeds `input` in pieces of `step` bytes; the output, the raw
    /// targets, and whether the scanner still follows.
    fn scan(input: &[u8], step: usize) -> (Vec<u8>, Raws, bool) {
        let raw = RawTargets::default();
        let mut s = Scanner::default();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            match s.feed(piece, &raw) {
                Some(o) => out.extend_from_slice(&o),
                None => out.extend_from_slice(piece),
            }
        }
        let targets = raw
            .rewritten
            .lock()
            .unwrap()
            .iter()
            .map(|(n, t)| (*n, t.to_vec()))
            .collect();
        (out, targets, s.following())
    }

    #[test]
    fn targets_are_encoded_and_kept_raw() {
        let input = b"GET /s?q=\"a<b>\"&t=`x` HTTP/1.1\r\nHost: h\r\n\r\n";
        for step in [1, 3, 7, input.len()] {
            let (out, raw, following) = scan(input, step);
            assert_eq!(
                out,
                b"GET /s?q=%22a%3Cb%3E%22&t=%60x%60 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()
            );
            assert_eq!(raw, vec![(0, b"/s?q=\"a<b>\"&t=`x`".to_vec())]);
            assert!(following);
        }
        // Bytes above 0x7F: all encoded when they are no UTF-8, left as
        // they are when they are (hyper takes UTF-8).
        let (out, raw, _) = scan(b"GET /caf\xc3\xa9/\xff HTTP/1.1\r\n\r\n", 2);
        assert_eq!(out, b"GET /caf%C3%A9/%FF HTTP/1.1\r\n\r\n".to_vec());
        assert_eq!(raw[0].1, b"/caf\xc3\xa9/\xff");
        let (out, raw, _) = scan(b"GET /caf\xc3\xa9?q=\"\xc3\xa9\" HTTP/1.1\r\n\r\n", 3);
        assert_eq!(
            out,
            b"GET /caf\xc3\xa9?q=%22\xc3\xa9%22 HTTP/1.1\r\n\r\n".to_vec()
        );
        assert_eq!(raw[0].1, b"/caf\xc3\xa9?q=\"\xc3\xa9\"");
        let utf8 = b"GET /caf\xc3\xa9/\xe2\x80\xae HTTP/1.1\r\n\r\n";
        assert_eq!(scan(utf8, 1), (utf8.to_vec(), vec![], true));
    }

    #[test]
    fn clean_requests_pass_untouched() {
        let input = b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX: \"<q>\"\r\n\r\n";
        let raw = RawTargets::default();
        assert_eq!(Scanner::default().feed(input, &raw), None);
        assert!(raw.rewritten.lock().unwrap().is_empty());
        // A target cut by a read is held back, then passes whole.
        let mut s = Scanner::default();
        assert_eq!(s.feed(b"GET /a?b", &raw).as_deref(), Some(&b"GET "[..]));
        assert_eq!(s.feed(b"=c", &raw).as_deref(), Some(&b""[..]));
        assert_eq!(
            s.feed(b"d HTTP/1.1\r\n", &raw).as_deref(),
            Some(&b"/a?b=cd HTTP/1.1\r\n"[..])
        );
        assert_eq!(s.feed(b"\r\n", &raw), None);
    }

    #[test]
    fn bodies_are_never_rewritten_and_pipelined_requests_are() {
        let mut input = Vec::new();
        input.extend_from_slice(
            b"POST /x HTTP/1.1\r\nContent-Length: 21\r\n\r\nGET /\"<>\" HTTP/1.1\r\n\r\n",
        );
        input.extend_from_slice(b"GET /two\" HTTP/1.1\r\n\r\n");
        input.extend_from_slice(
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n<\"\">>\r\n3\r\n\"`\"\r\n0\r\nT: \"\r\n\r\n",
        );
        input.extend_from_slice(b"\r\nGET /four< HTTP/1.1\r\n\r\n");
        for step in [1, 2, 5, input.len()] {
            let (out, raw, following) = scan(&input, step);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("\r\n\r\nGET /\"<>\" HTTP/1.1\r\n\r\nGET /two%22 "),
                "{text}"
            );
            assert!(
                text.contains("\r\n<\"\">>\r\n3\r\n\"`\"\r\n0\r\nT: \"\r\n\r\n"),
                "{text}"
            );
            assert!(
                text.ends_with("\r\nGET /four%3C HTTP/1.1\r\n\r\n"),
                "{text}"
            );
            assert_eq!(
                raw,
                vec![(1, b"/two\"".to_vec()), (3, b"/four<".to_vec())],
                "step {step}"
            );
            assert!(following);
        }
    }

    #[test]
    fn heads_it_does_not_follow_make_it_step_aside() {
        for head in [
            &b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
            b"CONNECT h:443 HTTP/1.1\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /a\r\n",
            b"GET /a HTTP/1.1\r\nno colon\r\n\r\n",
            // Chunked framing hyper reads otherwise than "a line ends at
            // LF": a bare LF in the trailers is a byte of a trailer line to
            // hyper, which then reads on as trailers.
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\rb\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 2\r\nx\r\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nx\r\n0\r\n\r\n",
            // hyper takes these, gunicorn and uvicorn answer 400, and a
            // proxy in front may read them otherwise.
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\x00b\r\nx\r\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\x7f\r\nx\r\n0\r\n\r\n",
        ] {
            let mut input = head.to_vec();
            input.extend_from_slice(b"GET /\"b HTTP/1.1\r\n\r\n");
            let (out, raw, following) = scan(&input, 4);
            assert_eq!(out, input, "{}", String::from_utf8_lossy(head));
            assert!(raw.is_empty() && !following);
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        let (_, _, following) = scan(long.as_bytes(), 4096);
        assert!(!following, "a line over MAX_LINE");
        // An upgrade corral never takes leaves the connection HTTP/1.1.
        let h2c = b"GET /a HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\nGET /\"b HTTP/1.1\r\n\r\n";
        let (_, raw, following) = scan(h2c, 5);
        assert!(following);
        assert_eq!(raw, vec![(1, b"/\"b".to_vec())]);
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r\n"), Some(0x1a));
        assert_eq!(chunk_size(b"1 ;a=b\r\n"), Some(1));
        assert_eq!(chunk_size(b"1;a=\"x\ty\"\r\n"), Some(1));
        for line in [
            &b"1 \r\n"[..],
            b"1\t\r\n",
            b"1;a\x00\r\n",
            b"1;a\x1b\r\n",
            b"1;a\nb\r\n",
            b"\r\n",
            b"1\n",
            b"1234567890abcdef\r\n",
        ] {
            assert_eq!(chunk_size(line), None, "{line:?}");
        }
    }

    /// Where the scanner stepped aside decides what the handler does with
    /// each request hyper parses: served (and the connection closed after
    /// it), or refused.
    #[test]
    fn requests_after_the_framing_is_lost_and_bare_lf_heads_are_refused() {
        let verdicts = |input: &[u8], requests: usize| {
            let raw = RawTargets::default();
            let mut s = Scanner::default();
            for piece in input.chunks(3) {
                s.feed(piece, &raw);
            }
            (0..requests)
                .map(|_| {
                    raw.next();
                    raw.verdict().map(|Unframed(why)| why)
                })
                .collect::<Vec<_>>()
        };
        let later = Some("an earlier request on this connection was framed ambiguously");
        let bare = Some("a line of the head ends in a bare LF, not CRLF");
        // Lost in the first request's trailers: the second is refused.
        let input =
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /s HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(input, 2), vec![None, later]);
        // A head it does not follow is served; what follows is not.
        let input = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(input, 2), vec![None, later]);
        // A bare LF anywhere in a head refuses that request.
        for input in [
            &b"GET / HTTP/1.1\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n\n",
        ] {
            assert_eq!(verdicts(input, 1), vec![bare], "{input:?}");
        }
        let input = b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nX: y\n\r\n";
        assert_eq!(verdicts(input, 2), vec![None, bare]);
        // Bare LFs before a request line are blank lines; CRLF split
        // between reads is a CRLF.
        let input = b"\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(verdicts(input, 1), vec![None]);
        let raw = RawTargets::default();
        let mut s = Scanner::default();
        for piece in [&b"GET / HTTP/1.1\r"[..], b"\nHost: h\r", b"\n\r", b"\n"] {
            s.feed(piece, &raw);
        }
        assert!(s.following());
        assert!(!raw.lost());
    }

    #[test]
    fn the_handler_takes_raw_targets_by_request_number() {
        let raw = RawTargets::default();
        raw.push(1, b"/one\"".to_vec());
        raw.push(3, b"/three\"".to_vec());
        assert_eq!(raw.next(), None);
        assert_eq!(raw.next().as_deref(), Some(&b"/one\""[..]));
        assert_eq!(raw.next(), None);
        assert_eq!(raw.next().as_deref(), Some(&b"/three\""[..]));
        assert_eq!(raw.next(), None);
        // A raw target is taken only for the target hyper parsed from it.
        raw.push(5, b"/five\"?q=<1>#f\"".to_vec());
        raw.push(6, b"/six\"".to_vec());
        raw.push(7, b"http://h/seven\"".to_vec());
        let uri = |t: &str| t.parse::<http::Uri>().unwrap();
        assert_eq!(
            raw.next_for(&uri("/five%22?q=%3C1%3E#f%22")).as_deref(),
            Some(&b"/five\"?q=<1>#f\""[..])
        );
        assert_eq!(raw.next_for(&uri("/admin%22")), None, "another target");
        assert_eq!(
            raw.next_for(&uri("http://h/seven%22")).as_deref(),
            Some(&b"http://h/seven\""[..])
        );
        let t = RawTarget(b"/p\"a?q=<1>?x#frag".to_vec().into_boxed_slice());
        assert_eq!(t.path(), b"/p\"a");
        assert_eq!(t.query(), b"q=<1>?x");
        assert_eq!(t.without_fragment(), b"/p\"a?q=<1>?x");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// What hyper serves from `input` behind a [`Relaxed`] stream: each
    /// request's target as hyper parsed it, and the raw target the scanner
    /// kept under that request's number (taken unchecked, by `next`).
    fn hyper_serves(input: &[u8]) -> Vec<(http::Uri, Option<Box<[u8]>>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let input = input.to_vec();
        rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let raw = std::sync::Arc::new(RawTargets::default());
            let io = hyper_util::rt::TokioIo::new(Relaxed::new(server, raw.clone()));
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                log.lock().unwrap().push((req.uri().clone(), raw.next()));
                async move {
                    let body: hyper::body::Incoming = req.into_body();
                    let _ = http_body_util::BodyExt::collect(body).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                        bytes::Bytes,
                    >::new(
                    )))
                }
            });
            // Half-close: the client's end of input is not a reason to
            // stop serving what it sent before.
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(io, service);
            let send = async move {
                let _ = client.write_all(&input).await;
                let _ = client.shutdown().await;
                let _ = client.read_to_end(&mut Vec::new()).await;
            };
            let both = futures_util::future::join(conn, send);
            // hyper may end the connection with an error (odd framing):
            // what it served before is what counts.
            let (_served, ()) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
                .await
                .expect("hyper finished");
        });
        std::mem::take(&mut *seen.lock().unwrap())
    }

    /// Every raw target the scanner kept is, encoded, the target hyper
    /// parsed for the request of its number.
    fn in_step_with_hyper(input: &[u8]) -> Result<usize, String> {
        let served = hyper_serves(input);
        for (n, (uri, raw)) in served.iter().enumerate() {
            if let Some(raw) = raw
                && !encodes_to(raw, uri)
            {
                return Err(format!(
                    "request {n}: hyper parsed {uri}, the scanner kept {:?}",
                    String::from_utf8_lossy(raw)
                ));
            }
        }
        Ok(served.len())
    }

    #[test]
    fn a_bare_lf_in_the_trailers_keeps_the_scanner_in_step_with_hyper() {
        // hyper reads `X: y\n\nGET /admin?...` as trailer bytes, up to the
        // next CRLF; a scanner that ended the trailers at the bare LF took
        // that line for a request and gave its target to hyper's next one.
        let input = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
            0\r\nX: y\n\nGET /admin?role=admin&x=\" HTTP/1.1\r\n\r\n\
            GET /env?safe=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        let served = hyper_serves(input);
        assert_eq!(in_step_with_hyper(input), Ok(2));
        assert_eq!(served[1].0, "/env?safe=1");
        assert_eq!(served[1].1, None);
        // Well-formed trailers: the next request's raw target is kept.
        let input = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
            1\r\nx\r\n0\r\nX: \"y\"\r\n\r\nGET /q?x=\" HTTP/1.1\r\nHost: h\r\n\r\n";
        let served = hyper_serves(input);
        assert_eq!(served.len(), 2);
        assert_eq!(served[1].1.as_deref(), Some(&b"/q?x=\""[..]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Chunked bodies whose framing is odd in every way (bare CR and
        /// LF, extensions, trailers), with requests whose targets need
        /// encoding around and inside them: hyper and the scanner agree on
        /// every request the scanner keeps a raw target for.
        #[test]
        fn odd_chunked_framing_never_puts_the_scanner_out_of_step_with_hyper(
            framing in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(prop_oneof![
                        Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b'1'), Just(b'a'), Just(b';'),
                        Just(b':'), Just(b' '), Just(b'"'), Just(b'x'),
                    ], 1..8),
                    Just(b"0\r\n".to_vec()),
                    Just(b"1\r\nx\r\n".to_vec()),
                    Just(b"\r\n".to_vec()),
                    Just(b"\n".to_vec()),
                    Just(b"X: y\n".to_vec()),
                    Just(b"X: y\r\n".to_vec()),
                    Just(b"GET /in\"side HTTP/1.1\r\n\r\n".to_vec()),
                ],
                1..10,
            ),
            tail in 0u8..100,
        ) {
            let mut input =
                b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend(framing.concat());
            for n in [tail, tail + 1] {
                input.extend(format!("GET /t\"{n}?q=< HTTP/1.1\r\nHost: h\r\n\r\n").bytes());
            }
            if let Err(e) = in_step_with_hyper(&input) {
                prop_assert!(false, "{}\n{:?}", e, String::from_utf8_lossy(&input));
            }
        }
    }

    proptest! {
        /// Any bytes, in any pieces: no panic; without a byte to encode the
        /// output is the input; a rewrite only ever percent-encodes.
        #[test]
        fn any_stream(input in proptest::collection::vec(any::<u8>(), 0..600), step in 1usize..64) {
            // A last space ends a target the input may end in (held back).
            let mut input = input;
            input.push(b' ');
            let raw = RawTargets::default();
            let mut s = Scanner::default();
            let mut out = Vec::new();
            for piece in input.chunks(step) {
                match s.feed(piece, &raw) {
                    Some(o) => out.extend_from_slice(&o),
                    None => out.extend_from_slice(piece),
                }
            }
            if !input.iter().any(|&b| refused_byte(b)) && std::str::from_utf8(&input).is_ok() {
                prop_assert_eq!(&out, &input);
            }
            let decode = |b: &[u8]| percent_encoding::percent_decode(b).collect::<Vec<u8>>();
            prop_assert_eq!(decode(&out), decode(&input));
        }

        /// Pipelined well-formed requests with targets full of bytes to
        /// encode and bodies (by length or chunked) full of request-like
        /// bytes, in any pieces: every target is encoded and kept raw by
        /// its number, every body passes byte for byte.
        #[test]
        fn pipelined_requests(
            requests in proptest::collection::vec(
                (
                    proptest::collection::vec(prop_oneof![
                        Just(b'"'), Just(b'<'), Just(b'>'), Just(b'`'), Just(b'a'), Just(b'/'),
                        Just(b'?'), Just(b'%'), 0x80u8..=0xff,
                    ], 0..12),
                    proptest::collection::vec(prop_oneof![
                        Just(b'"'), Just(b'<'), Just(b' '), Just(b'\r'), Just(b'\n'), Just(b'G'), any::<u8>(),
                    ], 0..80),
                    any::<bool>(),
                ),
                1..6,
            ),
            step in 1usize..40,
        ) {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            let mut raws = Vec::new();
            for (n, (target, body, chunked)) in requests.iter().enumerate() {
                let mut t = b"/".to_vec();
                t.extend_from_slice(target);
                let mut head_in = b"POST ".to_vec();
                head_in.extend_from_slice(&t);
                let mut head_out = b"POST ".to_vec();
                if refused_by_hyper(&t) {
                    encode(&t, &mut head_out);
                    raws.push((n as u64, t.clone()));
                } else {
                    head_out.extend_from_slice(&t);
                }
                let mut rest = b" HTTP/1.1\r\nHost: h\r\n".to_vec();
                if *chunked {
                    rest.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for piece in body.chunks(17) {
                        rest.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        rest.extend_from_slice(piece);
                        rest.extend_from_slice(b"\r\n");
                    }
                    rest.extend_from_slice(b"0\r\n\r\n");
                } else {
                    rest.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                    rest.extend_from_slice(body);
                }
                input.extend_from_slice(&head_in);
                input.extend_from_slice(&rest);
                expected.extend_from_slice(&head_out);
                expected.extend_from_slice(&rest);
            }
            let raw = RawTargets::default();
            let mut s = Scanner::default();
            let mut out = Vec::new();
            for piece in input.chunks(step) {
                match s.feed(piece, &raw) {
                    Some(o) => out.extend_from_slice(&o),
                    None => out.extend_from_slice(piece),
                }
            }
            prop_assert_eq!(out, expected);
            prop_assert!(s.following());
            let got: Vec<(u64, Vec<u8>)> = raw
                .rewritten
                .lock()
                .unwrap()
                .iter()
                .map(|(n, t)| (*n, t.to_vec()))
                .collect();
            prop_assert_eq!(got, raws);
        }
    }
}
