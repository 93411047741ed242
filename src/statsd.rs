//! gunicorn's StatsD instrumentation (`--statsd-host`, `--statsd-prefix`,
//! `--dogstatsd-tags`): the metrics gunicorn sends, under gunicorn's names,
//! to a StatsD or DogStatsD agent over UDP or a Unix datagram socket, so
//! that dashboards and alerts built on a gunicorn's metrics keep working.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `gunicorn.requests` | counter | answered requests |
//! | `gunicorn.request.status.NNN` | counter | answers with status NNN |
//! | `gunicorn.request.duration` | timer (ms) | each request's time to its response head |
//! | `gunicorn.workers` | gauge | workers in service |
//! | `gunicorn.log.error`, `gunicorn.log.warning` | counter | lines corral logged at that level |
//!
//! Where gunicorn sends one datagram per metric per request (three system
//! calls a request), corral writes the request's duration line into its
//! front shard's batch and adds its counts there ([`Statsd::request`], a
//! lock no other thread takes but once a second); a batch goes out as one
//! datagram of newline-separated lines (which StatsD, DogStatsD and
//! Telegraf read) when the next line would not fit, and every second
//! [`Statsd::flush`] sends what is left with the counters summed up. A
//! counter of N is the same to the agent as N counters of 1.
//!
//! Nothing from a client or an app goes into a line: the names are
//! corral's, the values numbers, and the prefix and tags come from the
//! config, checked ([`check_prefix`], [`check_tags`]) to hold none of the
//! characters that separate a line's fields. Sending never blocks: a
//! datagram the socket cannot take now is dropped, and a failing agent is
//! logged once every ten minutes, not once a datagram. A Unix socket is connected under the
//! rule of `logfile` (in a folder another user may write to, a symlink is
//! refused, and so is a socket owned by neither corral's user nor the
//! folder's owner).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// gunicorn's default port for `statsd_host` without one.
pub const DEFAULT_PORT: u16 = 8125;
/// Largest datagram over UDP: what fits an Ethernet frame with room for
/// tunnels (DogStatsD's advice).
const UDP_PAYLOAD: usize = 1432;
/// Largest datagram over a Unix socket (DogStatsD's default buffer).
const UNIX_PAYLOAD: usize = 8192;
/// How often [`run`] sends the counters.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A failing agent is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(600);
/// The workers gauge is sent when it changes and at least this often.
const GAUGE_EVERY: u32 = 10;
/// Room for a line's name and value beside the prefix and the tags.
const LINE_ROOM: usize = 64;
/// Longest prefix plus tags: a line must fit a UDP datagram.
pub const MAX_AFFIXES: usize = UDP_PAYLOAD - LINE_ROOM;

/// Where the agent listens: gunicorn's `statsd_host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT`, `HOST` (port 8125) or `[V6]:PORT`.
    Udp { host: String, port: u16 },
    /// `unix:PATH` or `unix://PATH`.
    Unix(PathBuf),
}

impl Target {
    /// Reads `statsd_host` as gunicorn does; a relative Unix path stays
    /// relative (the config resolves it).
    pub fn parse(text: &str) -> Result<Target, String> {
        Target::parse_with_port(text, DEFAULT_PORT)
    }

    /// "HOST:PORT" (`default` when the port is left out), "[V6]:PORT",
    /// "udp://HOST:PORT" or "unix:PATH": an address a datagram goes to.
    pub fn parse_with_port(text: &str, default: u16) -> Result<Target, String> {
        let text = text.trim();
        let example = format!("HOST:PORT (localhost:{default}) or unix:PATH");
        if let Some(path) = text
            .strip_prefix("unix://")
            .or_else(|| text.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err("names no socket: write unix:/run/statsd.sock".into());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let rest = text.strip_prefix("udp://").unwrap_or(text);
        if rest.contains("://") {
            return Err(format!(
                "has a scheme other than unix:// or udp://: write {example}"
            ));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("has a '[' without its ']': write [::1]:{default}"))?;
                match after {
                    "" => (host, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Err("has text after ']' that is not :PORT".into()),
                    },
                }
            }
            None => match rest.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(format!(
                        "is an IPv6 address without brackets: write [::1]:{default}"
                    ));
                }
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        if host.is_empty() {
            return Err(format!("names no host: write {example}"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("has {host:?} as its host: write {example}"));
        }
        let port = match port {
            None => default,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("has {p:?} as its port: give 1 to 65535")),
            },
        };
        Ok(Target::Udp {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn payload(&self) -> usize {
        match self {
            Target::Udp { .. } => UDP_PAYLOAD,
            Target::Unix(_) => UNIX_PAYLOAD,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Udp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Udp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `[log] statsd_host`, `statsd_prefix` and `dogstatsd_tags`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    /// With its trailing dot, or empty.
    pub prefix: String,
    /// DogStatsD tags, `tag1:value1,tag2`, or empty.
    pub tags: String,
}

/// A character that would end a metric's name or a line.
fn separator(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, ':' | '|' | '@' | '#')
}

/// `statsd_prefix`, with the dot gunicorn adds when it has none.
pub fn check_prefix(prefix: &str) -> Result<String, String> {
    if let Some(c) = prefix.chars().find(|c| separator(*c) || !c.is_ascii()) {
        return Err(format!(
            "holds {c:?}, which StatsD reads as a separator: use letters, digits, '.', '_' and '-'"
        ));
    }
    let trimmed = prefix.trim_end_matches('.');
    Ok(match trimmed {
        "" => String::new(),
        p => format!("{p}."),
    })
}

/// `dogstatsd_tags`: `tag1:value1,tag2` (a tag may hold ':').
pub fn check_tags(tags: &str) -> Result<String, String> {
    let tags = tags.trim();
    if let Some(c) = tags
        .chars()
        .find(|c| (separator(*c) && *c != ':') || !c.is_ascii())
    {
        return Err(format!(
            "holds {c:?}, which DogStatsD reads as a separator: write tag1:value1,tag2"
        ));
    }
    if tags.split(',').any(str::is_empty) && !tags.is_empty() {
        return Err("has an empty tag: write tag1:value1,tag2".into());
    }
    Ok(tags.to_owned())
}

/// What corral logged at the levels gunicorn counts, since it started.
static LOG_ERRORS: AtomicU64 = AtomicU64::new(0);
static LOG_WARNINGS: AtomicU64 = AtomicU64::new(0);

/// Counts corral's log lines at error and warning level for
/// `gunicorn.log.*`: a layer on corral's log.
pub struct LogCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        match *event.metadata().level() {
            tracing::Level::ERROR => LOG_ERRORS.fetch_add(1, Ordering::Relaxed),
            tracing::Level::WARN => LOG_WARNINGS.fetch_add(1, Ordering::Relaxed),
            _ => return,
        };
    }
}

/// The socket to the agent.
enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Socket {
    fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Udp(s) => s.send(datagram),
            Socket::Unix(s) => s.send(datagram),
        }
    }
}

/// One front shard's lines and counts since they last went out.
#[derive(Default)]
struct Batch {
    /// Duration lines, each ending in '\n'.
    lines: Vec<u8>,
    requests: u64,
    /// Answers by status; a handful of statuses, so a short list.
    statuses: Vec<(u16, u64)>,
}

#[repr(align(128))]
struct Shard(Mutex<Batch>);

/// What [`Statsd::flush`] remembers from one call to the next.
#[derive(Default)]
struct Flushed {
    log_errors: u64,
    log_warnings: u64,
    workers: Option<usize>,
    /// Flushes since the workers gauge last went out.
    since_gauge: u32,
}

/// corral's StatsD client: built once, shared by the front shards (which
/// call [`request`](Statsd::request)) and [`run`].
pub struct Statsd {
    target: Target,
    prefix: String,
    /// `|#tags`, or empty.
    suffix: String,
    payload: usize,
    socket: RwLock<Option<Socket>>,
    shards: Box<[Shard]>,
    flushed: Mutex<Flushed>,
    /// When a failure was last logged: a failing agent is logged once
    /// every [`WARN_EVERY`], not once a datagram.
    warned: Mutex<Option<Instant>>,
}

impl Statsd {
    /// A client for `shards` front shards; [`run`] connects it.
    pub fn new(settings: &Settings, shards: usize) -> Statsd {
        Statsd {
            payload: settings.target.payload(),
            target: settings.target.clone(),
            prefix: settings.prefix.clone(),
            suffix: match settings.tags.as_str() {
                "" => String::new(),
                t => format!("|#{t}"),
            },
            socket: RwLock::new(None),
            shards: (0..shards.max(1))
                .map(|_| Shard(Mutex::default()))
                .collect(),
            flushed: Mutex::default(),
            warned: Mutex::new(None),
        }
    }

    /// Counts one answered request and writes its duration line; sends
    /// the shard's batch first when the line would not fit in it.
    pub fn request(&self, status: u16, elapsed: Duration) {
        let shard = &self.shards[crate::shards::current() % self.shards.len()];
        let mut batch = shard.0.lock().unwrap_or_else(|e| e.into_inner());
        batch.requests += 1;
        match batch.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => batch.statuses.push((status, 1)),
        }
        if batch.lines.len() + self.line_room() > self.payload {
            self.send(&batch.lines);
            batch.lines.clear();
        }
        let us = elapsed.as_micros();
        let _ = writeln!(
            batch.lines,
            "{}gunicorn.request.duration:{}.{:03}|ms{}",
            self.prefix,
            us / 1000,
            us % 1000,
            self.suffix
        );
    }

    /// The most one line takes.
    fn line_room(&self) -> usize {
        self.prefix.len() + self.suffix.len() + LINE_ROOM
    }

    /// Sends every shard's lines, then the counters summed over the
    /// shards, corral's log counts and, when it changed (or every
    /// [`GAUGE_EVERY`] calls), `workers` as the workers gauge.
    pub fn flush(&self, workers: Option<usize>) {
        let mut requests = 0;
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        for shard in &self.shards {
            let mut batch = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            if !batch.lines.is_empty() {
                self.send(&batch.lines);
                batch.lines.clear();
            }
            requests += std::mem::take(&mut batch.requests);
            for (status, n) in batch.statuses.drain(..) {
                *statuses.entry(status).or_default() += n;
            }
        }
        let mut guard = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        let flushed = &mut *guard;
        let mut out = Packer::new(self);
        if requests > 0 {
            out.line(format_args!("gunicorn.requests:{requests}|c"));
        }
        for (status, n) in statuses {
            out.line(format_args!("gunicorn.request.status.{status}:{n}|c"));
        }
        let errors = LOG_ERRORS.load(Ordering::Relaxed);
        let warnings = LOG_WARNINGS.load(Ordering::Relaxed);
        for (name, now, before) in [
            ("error", errors, &mut flushed.log_errors),
            ("warning", warnings, &mut flushed.log_warnings),
        ] {
            if now > *before {
                out.line(format_args!("gunicorn.log.{name}:{}|c", now - *before));
                *before = now;
            }
        }
        flushed.since_gauge += 1;
        if let Some(n) = workers
            && (flushed.workers != Some(n) || flushed.since_gauge >= GAUGE_EVERY)
        {
            out.line(format_args!("gunicorn.workers:{n}|g"));
            flushed.workers = Some(n);
            flushed.since_gauge = 0;
        }
        out.finish();
    }

    /// Opens the socket if it is not open; logs why not (see
    /// [`WARN_EVERY`]).
    pub fn connect(&self) {
        if self.socket.read().is_ok_and(|s| s.is_some()) {
            return;
        }
        match open(&self.target) {
            Ok(socket) => {
                if let Ok(mut slot) = self.socket.write() {
                    *slot = Some(socket);
                }
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Sends one datagram; drops it if the socket cannot take it now.
    fn send(&self, datagram: &[u8]) {
        let Ok(socket) = self.socket.read() else {
            return;
        };
        let Some(sock) = socket.as_ref() else {
            return;
        };
        match sock.send(datagram) {
            Ok(_) => {}
            // A full socket buffer: the agent is behind; drop, as UDP would.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                let unix = matches!(sock, Socket::Unix(_));
                drop(socket);
                // An agent restarted on a Unix socket is a new socket:
                // connect again at the next flush.
                if unix && let Ok(mut slot) = self.socket.write() {
                    *slot = None;
                }
                self.failed(&format!("cannot send to {}: {e}", self.target));
            }
        }
    }

    fn failed(&self, why: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(
                "statsd: {why}; metrics are dropped while it fails (logged again in {} minutes if it still does)",
                WARN_EVERY.as_secs() / 60
            );
        }
    }
}

/// Packs lines into datagrams of at most the target's payload.
struct Packer<'a> {
    statsd: &'a Statsd,
    buf: Vec<u8>,
}

impl<'a> Packer<'a> {
    fn new(statsd: &'a Statsd) -> Packer<'a> {
        Packer {
            statsd,
            buf: Vec::new(),
        }
    }

    fn line(&mut self, what: std::fmt::Arguments<'_>) {
        if self.buf.len() + self.statsd.line_room() > self.statsd.payload {
            self.finish();
        }
        let _ = writeln!(
            self.buf,
            "{}{what}{}",
            self.statsd.prefix, self.statsd.suffix
        );
    }

    fn finish(&mut self) {
        if !self.buf.is_empty() {
            self.statsd.send(&self.buf);
            self.buf.clear();
        }
    }
}

/// A non-blocking socket connected to `target`.
fn open(target: &Target) -> Result<Socket, String> {
    match target {
        Target::Udp { host, port } => connect_udp(host, *port).map(Socket::Udp),
        Target::Unix(path) => connect_unix(path).map(Socket::Unix),
    }
}

/// A non-blocking UDP socket connected to `host:port` (its first
/// address); syslog's too.
pub fn connect_udp(host: &str, port: u16) -> Result<UdpSocket, String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    UdpSocket::bind(local)
        .and_then(|s| s.connect(addr).map(|()| s))
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|e| format!("cannot open a UDP socket to {host}:{port}: {e}"))
}

/// Connects to the socket at `path` through a descriptor opened without
/// following a symlink, when its folder is one another user may change.
/// A non-blocking datagram socket connected to the socket at `path`
/// (syslog's too), opened so that a path another user may change is
/// refused: no symlink in a shared folder, no socket of a stranger's there,
/// and the socket checked is the one connected. Run as root, a path through
/// a folder above its own that another user may change is refused too, as
/// log and pid files are (`private_fs::folders_above_not_private`): that
/// user could swap a folder below it for a symlink to a socket of theirs,
/// and the checks of the last folder would then pass in a folder of their
/// choosing.
pub fn connect_unix(path: &Path) -> Result<UnixDatagram, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = crate::private_fs::folder_of(path);
    if let Some(why) = crate::private_fs::folders_above_not_private(path) {
        return Err(format!("refusing the socket {}: {why}", path.display()));
    }
    let shared = crate::private_fs::not_private(dir, false);
    let fd = crate::private_fs::open_node(path, shared.is_none())
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = fd
        .metadata()
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "refusing {}: it is a symlink in a folder another user may change ({}); give the real path",
            path.display(),
            shared.as_deref().unwrap_or("")
        ));
    }
    if !meta.file_type().is_socket() {
        return Err(format!("{} is not a socket", path.display()));
    }
    if let Some(why) = shared {
        let me = nix::unistd::geteuid().as_raw();
        let dir_owner = std::fs::metadata(dir).map(|m| m.uid()).ok();
        if meta.uid() != me && meta.uid() != 0 && Some(meta.uid()) != dir_owner {
            return Err(format!(
                "refusing {}: it belongs to uid {}, and its folder is not private ({why})",
                path.display(),
                meta.uid()
            ));
        }
    }
    // The descriptor, not the name: what was checked is what is connected.
    let sock =
        UnixDatagram::unbound().map_err(|e| format!("cannot open a Unix datagram socket: {e}"))?;
    sock.connect(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .and_then(|()| sock.set_nonblocking(true))
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    Ok(sock)
}

/// Sends the counters every second until the process ends, reading the
/// workers in service from `workers`. On its own thread: resolving the
/// agent's name may block.
pub fn run(statsd: Arc<Statsd>, workers: impl Fn() -> usize + Send + 'static) -> io::Result<()> {
    tracing::info!("statsd: sending gunicorn's metrics to {}", statsd.target);
    std::thread::Builder::new()
        .name("corral-statsd".into())
        .spawn(move || {
            // Connected at once: the workers boot meanwhile, so the first
            // requests find the socket open (a full batch that finds none
            // is dropped).
            statsd.connect();
            loop {
                std::thread::sleep(FLUSH_EVERY);
                statsd.connect();
                statsd.flush(Some(workers()));
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests;
