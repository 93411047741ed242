//! The HTTP front: binds the listen sockets, terminates HTTP/1.x with hyper
//! (parsing, limits, keep-alive, timeouts are all handled here, in Rust) and
//! hands each request to [`handler`]; WebSocket upgrades for ASGI apps go
//! on to [`websocket`].
//!
//! What a client may cost is bounded here: at most `server.max_connections`
//! connections (then corral stops accepting; [`conn`]), `keepalive` to send
//! a request head of at most `max_header_bytes` (hyper), `body_timeout`
//! between two body bytes ([`upload`] and the handler), `send_timeout`
//! without taking a response byte ([`conn`]).

pub mod access;
pub mod access_format;
pub mod body;
pub mod checks;
pub mod conn;
pub mod forwarded;
pub mod handler;
pub mod reply;
pub mod target;
pub mod upload;
pub mod websocket;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, watch};

use crate::config::{Bind, BindAddr, ServerConfig};
use crate::worker::head::ConnInfo;
use handler::Shared;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "cannot listen on {addr} (set by {origin}): {source}{hint}",
        hint = hint(source)
    )]
    Listen {
        addr: String,
        origin: String,
        #[source]
        source: std::io::Error,
    },
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "\n  another process already listens there: stop it, or choose another address with --bind or [server] bind"
        }
        std::io::ErrorKind::PermissionDenied => {
            "\n  ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port above 1024"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "\n  no local interface has that address: use 127.0.0.1, 0.0.0.0 or one of this machine's addresses"
        }
        _ => "",
    }
}

/// A bound listen socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl Listener {
    /// The address as a user would type it, e.g. `http://127.0.0.1:8000`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "tcp".into(),
            },
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }
}

/// Binds every configured address (before any worker starts).
pub fn bind_all(binds: &[Bind], backlog: u32) -> Result<Vec<Listener>, BindError> {
    binds
        .iter()
        .enumerate()
        .map(|(i, b)| bind_one(b, backlog, &format!("server{i}")))
        .collect()
}

/// Binds `bind`, or adopts the socket a USR2 parent handed down under the
/// key `role` (`server0`, `server1`, ..., `status`).
pub fn bind_one(bind: &Bind, backlog: u32, role: &str) -> Result<Listener, BindError> {
    if let Some(l) = adopt(bind, role) {
        return Ok(l);
    }
    let err = |source| BindError::Listen {
        addr: match &bind.addr {
            BindAddr::Tcp(a) => a.to_string(),
            BindAddr::Unix(p) => format!("unix:{}", p.display()),
        },
        origin: bind.origin.clone(),
        source,
    };
    match &bind.addr {
        BindAddr::Tcp(addr) => {
            use socket2::{Domain, Protocol, Socket, Type};
            let sock = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )
            .map_err(err)?;
            sock.set_reuse_address(true).map_err(err)?;
            if addr.is_ipv6() {
                sock.set_only_v6(true).map_err(err)?;
            }
            sock.bind(&(*addr).into()).map_err(err)?;
            sock.listen(backlog.min(i32::MAX as u32) as i32)
                .map_err(err)?;
            sock.set_nonblocking(true).map_err(err)?;
            let std: std::net::TcpListener = sock.into();
            Ok(Listener::Tcp(TcpListener::from_std(std).map_err(err)?))
        }
        BindAddr::Unix(path) => {
            // A socket file left by a previous run that nobody listens on is
            // stale: remove it. A live one is an error, and so is anything
            // that is not a socket (corral never deletes a regular file).
            if std::fs::symlink_metadata(path).is_ok() {
                if !crate::private_fs::is_socket(path) {
                    return Err(err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file that is not a socket is in the way; corral does not delete it: remove it yourself or choose another path",
                    )));
                }
                if std::os::unix::net::UnixStream::connect(path).is_err() {
                    let _ = std::fs::remove_file(path);
                }
            }
            // The mode it always had (0666 under the umask), set only once
            // bound: in between nobody else may connect.
            let std = crate::private_fs::bind_unix(path, crate::private_fs::default_mode())
                .map_err(err)?;
            std.set_nonblocking(true).map_err(err)?;
            Ok(Listener::Unix(
                UnixListener::from_std(std).map_err(err)?,
                path.clone(),
            ))
        }
    }
}

/// The name of a listen socket in `CORRAL_INHERIT`: its role and its
/// address as configured (two `127.0.0.1:0` binds must not collide).
pub fn inherit_key(bind: &Bind, role: &str) -> String {
    match &bind.addr {
        BindAddr::Tcp(a) => format!("{role}#{a}"),
        BindAddr::Unix(p) => format!("{role}#unix:{}", p.display()),
    }
}

/// A listen socket handed down by the corral that re-executed us (USR2).
fn adopt(bind: &Bind, role: &str) -> Option<Listener> {
    let fd = *crate::reexec::inherited()
        .fds
        .get(&inherit_key(bind, role))?;
    let path = match &bind.addr {
        BindAddr::Tcp(_) => None,
        BindAddr::Unix(p) => Some(p.clone()),
    };
    adopt_fd(fd, path)
}

/// Takes over a listening socket this process inherited (systemd socket
/// activation or a USR2 parent): a Unix socket when `unix_path` is given.
pub fn adopt_fd(fd: std::os::fd::RawFd, unix_path: Option<std::path::PathBuf>) -> Option<Listener> {
    use std::os::fd::FromRawFd;
    crate::reexec::set_cloexec(fd);
    match unix_path {
        None => {
            // SAFETY: the fd is a listening TCP socket handed down to this
            // process for serving; nothing else in this process owns it.
            let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            std.set_nonblocking(true).ok()?;
            TcpListener::from_std(std).ok().map(Listener::Tcp)
        }
        Some(path) => {
            // SAFETY: as above, a listening Unix socket.
            let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
            std.set_nonblocking(true).ok()?;
            UnixListener::from_std(std)
                .ok()
                .map(|l| Listener::Unix(l, path))
        }
    }
}

/// The inherited sockets to serve on instead of binding, if any: from a
/// USR2 parent that was itself socket-activated, or from systemd.
pub fn inherited_listeners() -> Option<(Vec<Listener>, Option<Listener>)> {
    let unix_path =
        |fd| crate::activation::is_unix(fd).then(|| std::path::PathBuf::from(format!("(fd {fd})")));
    let from_parent = &crate::reexec::inherited().fds;
    let mut handed: Vec<(&String, &std::os::fd::RawFd)> = from_parent
        .iter()
        .filter(|(k, _)| k.starts_with("activated"))
        .collect();
    let pairs: Vec<(std::os::fd::RawFd, String)> = if !handed.is_empty() {
        handed.sort();
        handed
            .into_iter()
            .map(|(k, fd)| (*fd, k.trim_start_matches("activated-").to_string()))
            .collect()
    } else {
        crate::activation::sockets().to_vec()
    };
    if pairs.is_empty() {
        return None;
    }
    let mut listeners = Vec::new();
    let mut status = None;
    for (fd, name) in pairs {
        let l = adopt_fd(fd, unix_path(fd))?;
        if name == "status" {
            status = Some(l);
        } else {
            listeners.push(l);
        }
    }
    Some((listeners, status))
}

impl Listener {
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

/// The open connections and WebSockets, and the signal that asks them to
/// finish: an HTTP connection closes once its request in flight is
/// answered, a WebSocket closes with 1001 (going away).
pub struct Drain {
    closing: watch::Sender<bool>,
    open: AtomicUsize,
    idle: Notify,
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
        })
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
    /// Starts accepting on `listeners`; with `gate`, only once it turns
    /// true (a re-executed corral accepts once its workers are in service,
    /// while its parent keeps accepting on the same sockets).
    pub fn start(
        listeners: Vec<Listener>,
        server: &ServerConfig,
        shared: Arc<Shared>,
        gate: Option<watch::Receiver<bool>>,
    ) -> Front {
        let (stop, stop_rx) = watch::channel(false);
        let drain = shared.drain.clone();
        let opts = Arc::new(ConnOpts {
            keepalive: server.keepalive,
            max_header_bytes: server.max_header_bytes,
            max_headers: server.head_limits.fields,
        });
        // One cap for all the listen sockets together.
        let limits = conn::Limits::new(
            server.max_connections,
            server.send_timeout,
            Some(shared.metrics.clone()),
        );
        let accept_tasks = listeners
            .into_iter()
            .map(|l| {
                tokio::spawn(accept_loop(
                    l,
                    shared.clone(),
                    opts.clone(),
                    limits.clone(),
                    stop_rx.clone(),
                    gate.clone(),
                ))
            })
            .collect();
        Front {
            stop,
            drain,
            accept_tasks,
        }
    }

    /// Stops accepting, lets requests in flight finish (idle keep-alive
    /// connections close at once, WebSockets close with 1001), waiting at
    /// most `grace`. Returns false when the grace period ran out first.
    pub async fn shutdown(self, grace: Duration) -> bool {
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
}

/// hyper's HTTP/1 settings for a connection: `keepalive` is also the time a
/// client has to send a whole request head (hyper's header read timeout
/// runs from the end of the previous response), and the head may be at
/// most `max_header_bytes`, counted exactly by hyper (431 beyond).
pub fn http1(keepalive: Duration, max_header_bytes: usize) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(keepalive)
        .max_header_size(max_header_bytes)
        // The read buffer: a head that cannot fit is refused before it grows.
        .max_buf_size(max_header_bytes.max(MIN_BUF))
        .keep_alive(true);
    b
}

/// hyper's smallest `max_buf_size`.
const MIN_BUF: usize = 8192;

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    opts: Arc<ConnOpts>,
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
    let mut builder = http1(opts.keepalive, opts.max_header_bytes);
    builder.max_headers(opts.max_headers);
    loop {
        // At the cap, stop accepting: new connections wait in the backlog.
        let slot = tokio::select! {
            _ = stop.changed() => return,
            s = limits.slot() => s,
        };
        let raw = Arc::new(target::RawTargets::default());
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = accept(&listener, slot, Some(raw.clone())) => a,
        };
        let (io, mut info) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A Unix socket's peer has no address: only local processes the
        // socket's permissions let in can connect, so they are trusted.
        info.trusted = info
            .remote_addr
            .parse::<std::net::IpAddr>()
            .map_or(true, |ip| shared.forwarded_allow.allows(ip));
        let service = {
            let shared = shared.clone();
            let info = Arc::new(info);
            let raw = raw.clone();
            service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                // Once per request, in order: see `target::RawTargets`.
                if let Some(t) = raw.next() {
                    req.extensions_mut().insert(target::RawTarget(t));
                }
                handler::handle(req, shared.clone(), info.clone())
            })
        };
        let conn = builder.serve_connection(io, service).with_upgrades();
        let open = shared.drain.enter();
        let mut closing = shared.drain.closing();
        tokio::spawn(async move {
            let _open = open;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closed(&mut closing) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
}

pub type BoxedIo = TokioIo<Box<dyn Io>>;

/// A connected stream, TCP or Unix.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Accepts one connection on `listener` (TCP gets TCP_NODELAY), counted in
/// `slot` while it lives (see [`conn::Guarded`]). With `raw`, its request
/// targets are relaxed and their raw bytes kept there (see [`target`]).
pub async fn accept(
    listener: &Listener,
    slot: conn::Slot,
    raw: Option<Arc<target::RawTargets>>,
) -> std::io::Result<(BoxedIo, ConnInfo)> {
    fn boxed<S: Io + 'static>(
        s: S,
        slot: conn::Slot,
        raw: Option<Arc<target::RawTargets>>,
    ) -> BoxedIo {
        TokioIo::new(match raw {
            Some(raw) => Box::new(conn::Guarded::new(target::Relaxed::new(s, raw), slot)),
            None => Box::new(conn::Guarded::new(s, slot)) as Box<dyn Io>,
        })
    }
    match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            let local = s.local_addr()?;
            let info = ConnInfo {
                remote_addr: peer.ip().to_string(),
                remote_port: peer.port().to_string(),
                server_name: local.ip().to_string(),
                server_port: local.port().to_string(),
                scheme: "http",
                trusted: false,
            };
            Ok((boxed(s, slot, raw), info))
        }
        Listener::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            let info = ConnInfo {
                remote_addr: String::new(),
                remote_port: String::new(),
                server_name: path.display().to_string(),
                server_port: String::new(),
                scheme: "http",
                trusted: false,
            };
            Ok((boxed(s, slot, raw), info))
        }
    }
}
