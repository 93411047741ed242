//! The HTTP front: serves on the sockets of the [`listeners`] table,
//! terminates TLS on the listeners that have it (`crate::tls`: each its
//! certificate set, none on `insecure_bind`'s; in each connection's own
//! task) and HTTP
//! with hyper (parsing, limits, keep-alive, timeouts are all handled here,
//! in Rust) and hands each request to [`handler`]; WebSocket upgrades for
//! ASGI apps go on to [`websocket`]. A connection speaks HTTP/2 when ALPN
//! chose `h2`, or on a plain bind when it opens with HTTP/2's preface
//! ([`preface`], h2c with prior knowledge); else HTTP/1.x. hyper's own
//! `server::conn::auto` builder is not used: it has no HTTP/1
//! `max_header_size`, which `max_header_bytes` needs.
//!
//! What a client may cost is bounded here: at most `server.max_connections`
//! connections (then corral stops accepting; [`conn`]), `keepalive` to
//! finish a TLS handshake and to send a request head of at most
//! `max_header_bytes` (hyper; on HTTP/2 the decoded header list; a proxy
//! in front has at least [`PROXY_IDLE`] between its requests), at most
//! `max_concurrent_streams` HTTP/2 streams per connection, `body_timeout`
//! between two body bytes ([`upload`] and the handler), `send_timeout`
//! without taking a response byte ([`conn`]).

/// `AsyncWrite` for a wrapper that only changes what is read (a field `io`
/// holds the stream): every write goes straight through.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through;

pub mod access;
pub mod body;
pub mod checks;
pub mod coalesce;
pub mod conn;
pub mod forwarded;
pub mod frame_budget;
pub mod handler;
pub mod hangup;
pub mod listeners;
pub mod preface;
pub mod proxy;
pub mod reply;
pub mod request_id;
pub mod streams;
pub mod target;
pub mod upload;
pub mod websocket;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};

use crate::config::{ProxyProtocol, ServerConfig};
use crate::shards::{OnShard, Shards};
use crate::tls::BindTls;
use crate::worker::head::ConnInfo;
use handler::Shared;
use hangup::{Hangup, Socket, SocketIo};
pub use listeners::Listener;

/// The open connections and WebSockets, and the signal that asks them to
/// finish: an HTTP connection closes once its request in flight is
/// answered, a WebSocket closes with 1001 (going away).
pub struct Drain {
    closing: watch::Sender<bool>,
    open: AtomicUsize,
    idle: Notify,
    /// corral is about to drain (`shutdown_delay`, and a graceful stop's
    /// first 300 ms): HTTP/1.1 answers say `Connection: close`, so that
    /// clients and proxies that pool connections leave them before the
    /// drain cuts those that idle.
    leaving: std::sync::atomic::AtomicBool,
}

/// Resolves once `closing` (from [`Drain::closing`]) turns true.
pub async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// Counts one connection or WebSocket as open while it lives.
pub struct DrainGuard(Arc<Drain>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain {
            closing: watch::channel(false).0,
            open: AtomicUsize::new(0),
            idle: Notify::new(),
            leaving: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether corral is about to drain (see [`Front::leaving`]).
    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    pub fn enter(self: &Arc<Self>) -> DrainGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        DrainGuard(self.clone())
    }

    /// Turns true when everything open should finish: see [`closed`].
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Asks everything open to finish and waits up to `grace` for it;
    /// false when the time ran out first.
    async fn finish(&self, grace: Duration) -> bool {
        self.closing.send_replace(true);
        let all_closed = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(grace, all_closed).await.is_ok()
    }
}

/// The running front: stop it with [`Front::shutdown`].
pub struct Front {
    stop: watch::Sender<bool>,
    drain: Arc<Drain>,
    accept_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Front {
    /// Starts accepting on `listeners`, each with its TLS (`None`: plain
    /// HTTP); with `gate`, only once it turns true (a re-executed corral
    /// accepts once its workers are in service, while its parent keeps
    /// accepting on the same sockets).
    pub fn start(
        listeners: Vec<(Listener, Option<BindTls>)>,
        server: &ServerConfig,
        shared: Arc<Shared>,
        gate: Option<watch::Receiver<bool>>,
        shards: &Arc<Shards>,
    ) -> Front {
        let (stop, stop_rx) = watch::channel(false);
        let drain = shared.drain.clone();
        let opts = Arc::new(ConnOpts {
            keepalive: server.keepalive,
            max_header_bytes: server.max_header_bytes,
            max_headers: server.head_limits.fields,
            max_concurrent_streams: server.max_concurrent_streams,
        });
        // One cap for all the listen sockets together.
        let limits = conn::Limits::new(
            server.max_connections,
            server.send_timeout,
            Some(shared.metrics.clone()),
        );
        let builders = Arc::new(builders(&opts));
        let (inboxes, queues): (Vec<_>, Vec<_>) =
            (0..shards.len()).map(|_| mpsc::unbounded_channel()).unzip();
        let inboxes = Arc::new(inboxes);
        for (shard, queue) in queues.into_iter().enumerate() {
            shards.handle(shard).spawn(take_handoffs(queue));
        }
        let mut accept_tasks = Vec::new();
        for (listener, tls) in listeners {
            let serving = Arc::new(Serving {
                tls,
                shared: shared.clone(),
                builders: builders.clone(),
                handshake_timeout: head_timeout(opts.keepalive),
                shards: shards.clone(),
                inboxes: inboxes.clone(),
            });
            // Every shard accepts on every listen socket, each through its
            // own handle on it (registered with its own event loop).
            let mut on_shards = Vec::new();
            for shard in 1..shards.len() {
                let _on_shard = shards.handle(shard).enter();
                match listener.try_clone() {
                    Ok(l) => on_shards.push((shard, l)),
                    Err(e) => tracing::warn!(
                        "front shard {shard} does not accept on {}: {e}",
                        listener.describe()
                    ),
                }
            }
            on_shards.push((0, listener));
            for (shard, listener) in on_shards {
                accept_tasks.push(shards.handle(shard).spawn(accept_loop(
                    listener,
                    serving.clone(),
                    limits.clone(),
                    stop_rx.clone(),
                    gate.clone(),
                )));
            }
        }
        Front {
            stop,
            drain,
            accept_tasks,
        }
    }

    /// Stops accepting, lets requests in flight finish (idle keep-alive
    /// connections close after 300 ms, WebSockets close with 1001), waiting
    /// at most `grace`. Returns false when the grace period ran out first.
    pub async fn shutdown(self, grace: Duration) -> bool {
        // Every HTTP/1.1 answer from now on closes its connection: a proxy
        // that pools connections (nginx's upstream keepalive) leaves those
        // it sends a request on in the next 300 ms, rather than send one
        // as corral closes them idle (a GET retried, a POST a 502).
        self.leaving();
        let _ = self.stop.send(true);
        for t in self.accept_tasks {
            let _ = t.await;
        }
        // A connection accepted a moment ago whose request hyper has not
        // read yet looks idle, and a graceful shutdown would close it unread:
        // give such requests time to start first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.drain.finish(grace).await
    }

    /// corral will drain soon (`shutdown_delay`): it serves on, and every
    /// HTTP/1.1 answer from now on closes its connection.
    pub fn leaving(&self) {
        self.drain.leaving.store(true, Ordering::Relaxed);
    }

    /// A fast stop: accepts no more and tells everything open to finish
    /// now, without waiting (an open WebSocket is closed with 1001, also
    /// when its worker is stopped first).
    pub fn stop_now(self) {
        let _ = self.stop.send(true);
        self.drain.closing.send_replace(true);
    }
}

struct ConnOpts {
    keepalive: Duration,
    max_header_bytes: usize,
    max_headers: usize,
    max_concurrent_streams: u32,
}

/// hyper's HTTP/1 settings for a connection: `keepalive` is also the time a
/// client has to send a whole request head (hyper's header read timeout
/// runs from the end of the previous response), and the head may be at
/// most `max_header_bytes`, counted exactly by hyper (431 beyond).
/// `keepalive` 0 turns keep-alive off, as gunicorn's `--keep-alive 0`: each
/// response closes its connection.
pub fn http1(keepalive: Duration, max_header_bytes: usize) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(head_timeout(keepalive))
        .max_header_size(max_header_bytes)
        // The read buffer: a head that cannot fit is refused before it grows.
        .max_buf_size(max_header_bytes.max(MIN_BUF))
        .keep_alive(!keepalive.is_zero());
    b
}

/// The time a client has for a TLS handshake, a PROXY header or a request
/// head: `keepalive`, or with keep-alive off (0) the default keepalive's.
pub fn head_timeout(keepalive: Duration) -> Duration {
    match keepalive.is_zero() {
        true => NO_KEEPALIVE_HEAD_TIMEOUT,
        false => keepalive,
    }
}

/// [`head_timeout`] with keep-alive off: `server.keepalive`'s default.
const NO_KEEPALIVE_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// hyper's smallest `max_buf_size`.
const MIN_BUF: usize = 8192;

/// What every accept loop of a listen socket shares.
struct Serving {
    tls: Option<BindTls>,
    shared: Arc<Shared>,
    builders: Arc<Builders>,
    handshake_timeout: Duration,
    shards: Arc<Shards>,
    /// Each shard's hand-off queue: a connection accepted on a shard with
    /// more open than another is served there instead.
    inboxes: Arc<Vec<mpsc::UnboundedSender<Handoff>>>,
}

/// A connection moved to another shard: its socket, out of the event
/// loop that accepted it, and what serves it.
struct Handoff {
    socket: StdSocket,
    info: ConnInfo,
    slot: conn::Slot,
    on_shard: OnShard,
    serving: Arc<Serving>,
}

/// A socket between two event loops.
enum StdSocket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl StdSocket {
    fn of(socket: Socket) -> std::io::Result<StdSocket> {
        Ok(match socket {
            Socket::Tcp(s) => StdSocket::Tcp(s.into_std()?),
            Socket::Unix(s) => StdSocket::Unix(s.into_std()?),
        })
    }

    /// Registers it with the event loop of the runtime it is called in.
    fn into_socket(self) -> std::io::Result<Socket> {
        Ok(match self {
            StdSocket::Tcp(s) => Socket::Tcp(tokio::net::TcpStream::from_std(s)?),
            StdSocket::Unix(s) => Socket::Unix(tokio::net::UnixStream::from_std(s)?),
        })
    }
}

/// Serves the connections other shards hand to this one, until the last
/// accept loop has stopped.
async fn take_handoffs(mut inbox: mpsc::UnboundedReceiver<Handoff>) {
    while let Some(h) = inbox.recv().await {
        match h.socket.into_socket() {
            Ok(socket) => serve_accepted(socket, h.info, h.slot, h.on_shard, h.serving),
            Err(e) => tracing::warn!("cannot take over a connection from another shard: {e}"),
        }
    }
}

/// hyper's builders for a listener's connections.
fn builders(opts: &ConnOpts) -> Builders {
    let mut client = http1(opts.keepalive, opts.max_header_bytes);
    client.max_headers(opts.max_headers);
    let mut proxy = client.clone();
    proxy.header_read_timeout(proxy_idle(head_timeout(opts.keepalive)));
    Builders {
        client: Http1::new(client),
        proxy: Http1::new(proxy),
        http2: http2(opts),
    }
}

impl Http1 {
    fn new(http1: http1::Builder) -> Http1 {
        let mut watched = http1.clone();
        // corral watches these connections for the client leaving (see
        // `hangup`): hyper need not read them while a request is in flight.
        watched.half_close(true);
        Http1 { http1, watched }
    }
}

/// How long a proxy in front may keep an idle connection open, at least:
/// longer than nginx keeps an idle upstream connection (its upstream
/// `keepalive_timeout`, 60 s by default) and AWS's load balancers (their
/// idle timeout, 60 s by default), so that the proxy closes it, and corral
/// never closes one just as the proxy sends a request on it. Such a
/// request is lost: nginx logs "upstream prematurely closed connection"
/// and answers 502 where it may not send the request again (a POST).
const PROXY_IDLE: Duration = Duration::from_secs(75);

/// The time a proxy in front has for its next request head on a
/// connection: `head_timeout`, but at least [`PROXY_IDLE`].
fn proxy_idle(head_timeout: Duration) -> Duration {
    head_timeout.max(PROXY_IDLE)
}

/// Whether the peer is a proxy in front of corral, which may keep a pool
/// of idle connections to it (nginx's upstream `keepalive`, a cloud load
/// balancer's): a peer trusted with `X-Forwarded-*` (`forwarded_allow_ips`,
/// 127.0.0.1 and ::1 by default, where a local nginx connects from), a
/// Unix socket's peer (a local process the socket's permissions let in),
/// or one whose PROXY protocol header corral took (`proxy_allow_ips`).
/// Other TCP peers are clients, whose idle connections and slow heads
/// `keepalive` bounds.
fn from_proxy(info: &ConnInfo) -> bool {
    info.trusted || info.proxy.is_some() || info.remote_addr.is_empty()
}

/// How often a failing accept (out of file descriptors) is said at most.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

async fn accept_loop(
    listener: Listener,
    serving: Arc<Serving>,
    limits: Arc<conn::Limits>,
    mut stop: watch::Receiver<bool>,
    gate: Option<watch::Receiver<bool>>,
) {
    if let Some(mut gate) = gate {
        tokio::select! {
            _ = stop.changed() => return,
            r = gate.wait_for(|open| *open) => if r.is_err() { return },
        }
    }
    let here = crate::shards::current();
    // Failed accepts since the last one said, and when that was: out of
    // file descriptors, they come 20 times a second.
    let mut failed: (u64, Option<tokio::time::Instant>) = (0, None);
    loop {
        // At the cap, stop accepting: new connections wait in the backlog.
        let slot = tokio::select! {
            _ = stop.changed() => return,
            s = limits.slot() => s,
        };
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = accept_socket(&listener) => a,
        };
        let (socket, mut info) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and
                // say so once every 10 s, with how many, not 20 times a
                // second.
                failed.0 += 1;
                if failed.1.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_EVERY) {
                    let more = match failed.0 {
                        1 => String::new(),
                        n => format!(" ({n} failed accepts since the last such line)"),
                    };
                    tracing::warn!("accept failed: {e}{more}");
                    failed = (0, Some(tokio::time::Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A Unix socket's peer has no address: only local processes the
        // socket's permissions let in can connect, so they are trusted.
        info.trusted = info
            .remote_addr
            .parse::<std::net::IpAddr>()
            .map_or(true, |ip| serving.shared.forwarded_allow.allows(ip));
        // Whichever shard's loop woke first took it; the one with the
        // fewest connections serves it, so that each shard's workers get
        // their share of the clients.
        let there = serving.shards.fewest_open(here);
        // Counted there at once: the next accept sees it.
        let on_shard = serving.shards.opened(there);
        if there == here {
            serve_accepted(socket, info, slot, on_shard, serving.clone());
            continue;
        }
        match StdSocket::of(socket) {
            Ok(socket) => {
                let handoff = Handoff {
                    socket,
                    info,
                    slot,
                    on_shard,
                    serving: serving.clone(),
                };
                // Its inbox lives as long as the shard's runtime: for good.
                let _ = serving.inboxes[there].send(handoff);
            }
            Err(e) => tracing::warn!("cannot hand a connection to another shard: {e}"),
        }
    }
}

/// Serves an accepted connection in a task of its own on this shard.
fn serve_accepted(
    socket: Socket,
    mut info: ConnInfo,
    slot: conn::Slot,
    on_shard: OnShard,
    serving: Arc<Serving>,
) {
    let socket = Arc::new(socket);
    let slot = slot.opened_on(Some(on_shard));
    let io: Box<dyn Io> = Box::new(conn::Guarded::new(SocketIo(socket.clone()), slot.clone()));
    let open = serving.shared.drain.enter();
    let last = socket.clone();
    // The handshake runs in the connection's task: a slow client
    // holds up no other.
    tokio::spawn(async move {
        let _open = open;
        // Until the lingering close ends: the socket is open until then,
        // and counts against `max_connections`.
        let _slot = slot;
        let io = match serving.shared.proxy_protocol {
            ProxyProtocol::Off => io,
            mode => match read_proxy_header(io, mode, &mut info, &serving).await {
                Some(io) => io,
                None => return,
            },
        };
        let (io, h2, socket) = match &serving.tls {
            None => (io, false, Some(socket)),
            Some(tls) => match tls.accept(io, serving.handshake_timeout).await {
                Ok((stream, tls)) => {
                    // Only the TLS stream reads and writes it from here.
                    drop(socket);
                    info.scheme = "https";
                    let h2 = tls.h2;
                    info.tls = Some(Arc::new(tls));
                    (Box::new(stream) as Box<dyn Io>, h2, None)
                }
                Err(e) => {
                    serving.shared.metrics.tls_handshake_failed();
                    tracing::debug!("TLS handshake with {} failed: {e}", info.remote_addr);
                    return;
                }
            },
        };
        let conn = Conn {
            io,
            h2,
            socket,
            info,
        };
        serve(
            conn,
            serving.shared.clone(),
            &serving.builders,
            serving.handshake_timeout,
        )
        .await;
        // Counted open meanwhile: a graceful stop waits for it too. Not
        // a connection upgraded to a WebSocket, whose task has the socket
        // now and ends it with a close frame.
        if let Some(socket) = Arc::into_inner(last) {
            socket.linger().await;
        }
    });
}

/// Reads the PROXY header a connection may begin with (within the
/// handshake timeout) and takes the client's address from it. A connection
/// refused for its header gets 400 or 403 on a plain bind, is closed
/// without an answer on a TLS one (its bytes are not TLS), and is counted
/// in `corral_proxy_header_refusals_total`.
async fn read_proxy_header(
    io: Box<dyn Io>,
    mode: ProxyProtocol,
    info: &mut ConnInfo,
    serving: &Serving,
) -> Option<Box<dyn Io>> {
    let shared = &serving.shared;
    // A Unix socket's peer has no address: the socket's permissions decide.
    let allowed = info
        .remote_addr
        .parse::<std::net::IpAddr>()
        .map_or(true, |ip| shared.proxy_allow.allows(ip));
    let read = proxy::read(io, mode, allowed);
    let (mut io, header) = match tokio::time::timeout(serving.handshake_timeout, read).await {
        Ok(Ok(x)) => x,
        Ok(Err(_)) | Err(_) => return None,
    };
    match header {
        Ok(None) | Ok(Some(proxy::Header::Local)) => Some(io),
        Ok(Some(proxy::Header::Proxied {
            protocol,
            source,
            destination,
        })) => {
            info.remote_addr = source.0.to_canonical().to_string();
            info.remote_port = source.1.to_string();
            info.proxy = Some(crate::worker::head::ProxyInfo {
                protocol,
                addr: destination.0.to_canonical().to_string(),
                port: destination.1.to_string(),
            });
            // X-Forwarded-* count from the client the header named.
            info.trusted = shared.forwarded_allow.allows(source.0);
            Some(io)
        }
        Err(e) => {
            tracing::debug!("connection from {} refused: {e}", info.remote_addr);
            shared.metrics.proxy_header_refused();
            if serving.tls.is_none() {
                let status = match e {
                    proxy::ProxyError::Forbidden => "403 Forbidden",
                    _ => "400 Bad Request",
                };
                let body = format!("{e}\n");
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let write = io.write_all(answer.as_bytes());
                let _ = tokio::time::timeout(serving.handshake_timeout, write).await;
                let _ = tokio::time::timeout(serving.handshake_timeout, io.shutdown()).await;
            }
            None
        }
    }
}

/// hyper's HTTP/2 settings: at most `max_concurrent_streams` streams at
/// once, a decoded header list of at most `max_header_bytes`, at most
/// [`H2_RECEIVE_WINDOW`] of unread request body per connection, and the
/// flood guards set here rather than left to hyper's and h2's defaults
/// (which may change under us; tests/http2.rs holds each):
///
/// - rapid reset (CVE-2023-44487): a client whose streams are reset before
///   corral took them, more than [`H2_PENDING_RESETS`] at once, gets GOAWAY
///   ENHANCE_YOUR_CALM; streams corral took and the client reset cost one
///   cancelled request each (measured in the README);
/// - corral's own resets (a client that keeps making streams corral must
///   refuse): more than [`H2_LOCAL_RESETS`] per connection end it;
/// - CONTINUATION floods (CVE-2024-27316 class): h2 holds at most
///   `max_header_bytes` of header block and counts CONTINUATION frames (at
///   most `max_header_bytes` / 16 KiB + 25 %, and at least 5), then GOAWAY;
/// - SETTINGS and PING floods: h2 reads the next frame only once the
///   last one's ACK is buffered, so a client that reads no ACKs stops
///   being read, and the send timeout ([`conn`]) closes it;
/// - floods of frames that ask for nothing (PRIORITY, WINDOW_UPDATE,
///   PING, unknown types...), which h2 reads flat out: rationed per
///   connection by [`frame_budget`], set beneath h2 in [`serve`].
fn http2(opts: &ConnOpts) -> http2::Builder<streams::Local> {
    let mut b = http2::Builder::new(streams::Local);
    b.timer(TokioTimer::new())
        .initial_stream_window_size(H2_RECEIVE_WINDOW)
        .initial_connection_window_size(H2_RECEIVE_WINDOW)
        .max_concurrent_streams(opts.max_concurrent_streams)
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_PENDING_RESETS)
        .max_local_error_reset_streams(H2_LOCAL_RESETS);
    b
}

/// The request body bytes a client may send on one HTTP/2 connection (and
/// on one stream) before corral reads them: what h2 holds for a request
/// that waits for a worker or for the read-ahead budget ([`upload`]).
/// hyper's default is 1 MiB, so that 2,000 connections whose requests
/// waited held 2 GiB; this is 256 KiB per connection, twice the kernel's
/// default receive buffer that an HTTP/1.1 connection's unread body waits
/// in (`tcp_rmem`), and still 5 MB/s for one upload at 50 ms round trip.
const H2_RECEIVE_WINDOW: u32 = 256 * 1024;

/// Streams a client may reset before corral accepted them, at once (h2's
/// default, made explicit).
const H2_PENDING_RESETS: usize = 20;
/// Streams corral may reset for protocol errors on one connection (hyper's
/// default, made explicit).
const H2_LOCAL_RESETS: usize = 1024;

struct Builders {
    /// For a client.
    client: Http1,
    /// For a proxy in front ([`from_proxy`]): the next request head may
    /// take [`PROXY_IDLE`].
    proxy: Http1,
    http2: http2::Builder<streams::Local>,
}

/// hyper's HTTP/1.x builders for one kind of peer.
struct Http1 {
    /// Over TLS, where hyper watches for the client leaving.
    http1: http1::Builder,
    /// Plain, where corral does (`half_close`).
    watched: http1::Builder,
}

/// An accepted connection, after its TLS handshake if any.
struct Conn {
    io: Box<dyn Io>,
    /// ALPN chose HTTP/2.
    h2: bool,
    /// The plain socket beneath `io`, to watch for the client leaving.
    socket: Option<Arc<Socket>>,
    info: ConnInfo,
}

/// Serves one connection until it closes or the front drains it (GOAWAY
/// on HTTP/2, `Connection: close` on HTTP/1.1), or, on HTTP/2, it has had
/// no stream open for `head_timeout` (GOAWAY). On a plain connection, the
/// HTTP/2 preface chooses HTTP/2 (h2c with prior knowledge).
async fn serve(conn: Conn, shared: Arc<Shared>, builders: &Builders, head_timeout: Duration) {
    let send_timeout = shared.send_timeout;
    let Conn {
        io,
        h2,
        socket,
        info,
    } = conn;
    // A proxy in front closes its idle connections itself, before corral.
    let proxy = from_proxy(&info);
    let head_timeout = if proxy {
        proxy_idle(head_timeout)
    } else {
        head_timeout
    };
    let (io, h2) = if h2 || info.tls.is_some() {
        (io, h2)
    } else {
        match tokio::time::timeout(head_timeout, preface::sniff(io)).await {
            Ok(Ok(x)) => x,
            _ => return,
        }
    };
    let raw = Arc::new(target::RawTargets::default());
    let io: Box<dyn Io> = if h2 {
        io
    } else {
        Box::new(target::Relaxed::new(io, raw.clone()))
    };
    let mut closing = shared.drain.closing();
    // HTTP/2 reads its connections all the time: hyper sees a client leave.
    let hangup = socket.filter(|_| !h2).map(Hangup::new);
    let peer = if proxy {
        &builders.proxy
    } else {
        &builders.client
    };
    let http1 = if hangup.is_some() {
        &peer.watched
    } else {
        &peer.http1
    };
    let metrics = shared.metrics.clone();
    // The peer, for the DEBUG line on a malformed head.
    let remote = tracing::enabled!(tracing::Level::DEBUG).then(|| match &info.remote_addr {
        a if a.is_empty() => "a Unix socket's peer".to_owned(),
        a => a.clone(),
    });
    let service = {
        let info = Arc::new(info);
        service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            // Once per request, in order: see `target::RawTargets`.
            if let Some(t) = raw.next_for(req.uri()) {
                req.extensions_mut().insert(target::RawTarget(t));
            }
            if let Some(why) = raw.verdict() {
                req.extensions_mut().insert(why);
            }
            shared.metrics.request_version(req.version());
            // corral drains soon: an HTTP/1.1 answer closes its connection.
            let leaving = req.version() < http::Version::HTTP_2 && shared.drain.leaving();
            let http10 =
                req.version() == http::Version::HTTP_10 && req.method() != http::Method::HEAD;
            let answer = handler::handle(req, shared.clone(), info.clone(), hangup.clone());
            let raw = raw.clone();
            async move {
                let mut resp = answer.await?;
                // Framing the scanner could not follow: hyper and a proxy
                // in front may disagree on where the next request starts,
                // so there is none on this connection. Nor when corral
                // drains soon.
                // An HTTP/1.0 answer whose body ends where the connection
                // does says so, as gunicorn's does: hyper closes it all the
                // same, but for a keep-alive request it writes `Connection:
                // keep-alive` first, unless the answer is said to be
                // HTTP/1.0 (it reads the answer's version, where it means
                // the client's).
                let unbounded = http10 && ends_by_close(&resp);
                if unbounded {
                    *resp.version_mut() = http::Version::HTTP_10;
                }
                if (raw.lost() || leaving || unbounded)
                    && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
                {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, handler::ClientGone>(resp)
            }
        })
    };
    if h2 {
        let io = frame_budget::Rationed::new(io, metrics);
        let io = TokioIo::new(coalesce::Coalesce::new(io));
        let conn = builders.http2.serve_connection(io, service);
        // Idle as long as an HTTP/1.1 connection may wait for its next head.
        streams::serve(
            conn,
            closed(&mut closing),
            |c| c.graceful_shutdown(),
            head_timeout,
            send_timeout,
        )
        .await;
    } else {
        let io = TokioIo::new(io);
        let conn = http1.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let ended = tokio::select! {
            ended = conn.as_mut() => ended,
            _ = closed(&mut closing) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        // A head hyper refused (it answered 400 or 431 and closed): counted,
        // and said at DEBUG, as gunicorn says "Invalid request from ip=".
        if let Err(e) = ended
            && e.is_parse()
        {
            metrics.malformed(e.is_parse_too_large());
            tracing::debug!(
                "invalid request from {}: {e}",
                remote.as_deref().unwrap_or("?")
            );
        }
    }
}

pub type BoxedIo = TokioIo<Box<dyn Io>>;

/// A connected stream, TCP or Unix.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Whether an answer to an HTTP/1.0 request has a body whose end only the
/// connection's end can mark: a streamed one with no Content-Length (HTTP/1.0
/// has no chunks).
fn ends_by_close(resp: &http::Response<body::Body>) -> bool {
    use hyper::body::Body as _;
    let status = resp.status();
    !status.is_informational()
        && status != http::StatusCode::NO_CONTENT
        && status != http::StatusCode::NOT_MODIFIED
        && !resp.headers().contains_key(http::header::CONTENT_LENGTH)
        && resp.body().size_hint().exact().is_none()
}

/// Accepts one connection on `listener` (TCP gets TCP_NODELAY), counted in
/// `slot` while it lives (see [`conn::Guarded`]). With `raw`, its request
/// targets are relaxed and their raw bytes kept there (see [`target`]).
pub async fn accept(
    listener: &Listener,
    slot: conn::Slot,
    raw: Option<Arc<target::RawTargets>>,
) -> std::io::Result<(BoxedIo, ConnInfo)> {
    let (socket, info) = accept_socket(listener).await?;
    let io: Box<dyn Io> = Box::new(conn::Guarded::new(
        SocketIo(Arc::new(socket)),
        slot.opened(),
    ));
    let io = match raw {
        Some(raw) => Box::new(target::Relaxed::new(io, raw)),
        None => io,
    };
    Ok((TokioIo::new(io), info))
}

/// Accepts one connection: its socket and what the app is told of it.
async fn accept_socket(listener: &Listener) -> std::io::Result<(Socket, ConnInfo)> {
    Ok(match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            let local = s.local_addr()?;
            let info = ConnInfo {
                tls: None,
                proxy: None,
                remote_addr: peer.ip().to_string(),
                remote_port: peer.port().to_string(),
                server_name: local.ip().to_string(),
                server_port: local.port().to_string(),
                scheme: "http",
                trusted: false,
            };
            (Socket::Tcp(s), info)
        }
        Listener::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            let info = ConnInfo {
                tls: None,
                proxy: None,
                remote_addr: String::new(),
                remote_port: String::new(),
                server_name: path.display().to_string(),
                server_port: String::new(),
                scheme: "http",
                trusted: false,
            };
            (Socket::Unix(s), info)
        }
    })
}
