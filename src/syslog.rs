//! gunicorn's `--log-syslog`: corral's own log (the workers' output and,
//! without an `access_file`, the access lines included) also goes to a
//! syslog daemon, one datagram per line, as gunicorn's `SysLogHandler`
//! sends it: `<PRI>corral.PREFIX.error: [PID] LEVEL message`, where PRI is
//! the facility times 8 plus the line's severity.
//!
//! Sending never waits: the socket is non-blocking and a line the daemon
//! cannot take now is dropped, so a slow or missing syslog daemon never
//! holds corral's log (or what logs) back. A Unix socket (`/dev/log`) is
//! connected again when a send fails, as after a restart of the daemon.

use std::io;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::statsd::{self, Target};

/// gunicorn's `syslog_addr` default on Linux.
pub const DEFAULT_TO: &str = "udp://localhost:514";
/// syslog's port when the address leaves it out.
const DEFAULT_PORT: u16 = 514;
/// The longest datagram sent; a longer line is cut at a character boundary.
const MAX_DATAGRAM: usize = 8192;

/// The facilities gunicorn's `syslog_facility` names, with their codes.
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("security", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// `[log] syslog`, `syslog_to`, `syslog_prefix` and `syslog_facility`,
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    /// What comes between "corral." and ".error" in each line's tag:
    /// `syslog_prefix`, else [`default_prefix`].
    pub prefix: Option<String>,
    pub facility: u8,
}

/// Reads gunicorn's `syslog_addr`: `udp://HOST:PORT` (port 514 when left
/// out), `unix://PATH` or `unix://PATH#dgram`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let text = text.trim();
    if text.starts_with("tcp://") {
        return Err(
            "is a TCP address: corral sends syslog over UDP or a Unix datagram socket \
             (udp://HOST:PORT, unix:///dev/log)"
                .into(),
        );
    }
    let text = match text.strip_suffix("#dgram") {
        Some(t) => t,
        None if text.ends_with("#stream") => {
            return Err(
                "is a Unix stream socket: corral sends syslog as datagrams (unix:///dev/log)"
                    .into(),
            );
        }
        None => text,
    };
    Target::parse_with_port(text, DEFAULT_PORT)
}

/// Reads `syslog_facility`: a name gunicorn takes, in any case.
pub fn parse_facility(name: &str) -> Result<u8, String> {
    let lower = name.trim().to_ascii_lowercase();
    FACILITIES
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            format!("is no syslog facility: give one of {}", names.join(", "))
        })
}

/// A prefix goes into the tag: letters, digits and `._-` only (no space,
/// colon or bracket, which would end the tag).
pub fn check_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(
            "must be 1 to 64 letters, digits, '.', '_' or '-' (it becomes part of the syslog tag)"
                .into(),
        );
    }
    Ok(prefix.to_owned())
}

/// The tag's middle when no `syslog_prefix` is given: the name given with
/// `-n/--name` (`app.proc_name`), as gunicorn tags with its `proc_name`
/// (`:` made `.`, as gunicorn does; what would end the tag, `-`), else
/// the instance's name.
pub fn default_prefix(proc_name: Option<&str>, instance: &str) -> String {
    match proc_name {
        Some(name) => name
            .chars()
            .map(|c| match c {
                ':' => '.',
                c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') => c,
                _ => '-',
            })
            .collect(),
        None => instance.to_owned(),
    }
}

/// How long a Unix socket that could not be reached is left alone: the
/// access lines may come through here, one per request, and a daemon that
/// is down must not cost each of them a connect.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

enum Socket {
    Udp(UdpSocket),
    /// Connected when the daemon was reachable at the last try, which was
    /// at `tried`.
    Unix {
        sock: Option<UnixDatagram>,
        path: PathBuf,
        tried: Option<Instant>,
    },
}

/// The connection to the syslog daemon and what goes before each line.
pub struct Syslog {
    facility: u8,
    /// "corral.PREFIX.error: [PID] ".
    head: String,
    socket: Mutex<Socket>,
}

impl Syslog {
    /// Resolves and connects (UDP) or tries to (a Unix socket that is not
    /// there yet is tried again at each line).
    pub fn open(settings: &Settings, default_prefix: &str) -> Result<Arc<Syslog>, String> {
        let prefix = settings.prefix.as_deref().unwrap_or(default_prefix);
        let head = format!("corral.{prefix}.error: [{}] ", std::process::id());
        let socket = match &settings.target {
            Target::Udp { host, port } => Socket::Udp(
                statsd::connect_udp(host, *port).map_err(|e| format!("log.syslog_to: {e}"))?,
            ),
            Target::Unix(path) => match statsd::connect_unix(path) {
                Ok(sock) => Socket::Unix {
                    sock: Some(sock),
                    path: path.clone(),
                    tried: None,
                },
                // Not there yet (the daemon starts later): tried again with
                // a later line. Refused (a stranger's socket, or a folder on
                // its way another user may change, which holds whether the
                // socket is there yet or not): said now.
                Err(e)
                    if path.exists()
                        || crate::private_fs::folders_above_not_private(path).is_some() =>
                {
                    return Err(format!("log.syslog_to: {e}"));
                }
                Err(_) => Socket::Unix {
                    sock: None,
                    path: path.clone(),
                    tried: Some(Instant::now()),
                },
            },
        };
        Ok(Arc::new(Syslog {
            facility: settings.facility,
            head,
            socket: Mutex::new(socket),
        }))
    }

    /// Sends one line (without its newline) at `severity` (syslog's 0-7).
    fn send(&self, severity: u8, line: &[u8]) {
        let pri = u16::from(self.facility) * 8 + u16::from(severity);
        let mut datagram = format!("<{pri}>{}", self.head).into_bytes();
        let room = MAX_DATAGRAM.saturating_sub(datagram.len());
        let mut cut = line.len().min(room);
        while cut > 0 && cut < line.len() && (line[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        datagram.extend_from_slice(&line[..cut]);
        let Ok(mut socket) = self.socket.lock() else {
            return;
        };
        match &mut *socket {
            Socket::Udp(sock) => {
                let _ = sock.send(&datagram);
            }
            Socket::Unix { sock, path, tried } => {
                // A full buffer drops the line; a refusal means the daemon
                // restarted (a new socket file) or was not there: connect
                // again, at most once a second.
                let gone = match sock.as_ref().map(|s| s.send(&datagram)) {
                    Some(Ok(_)) => false,
                    Some(Err(e)) => e.kind() != io::ErrorKind::WouldBlock,
                    None => true,
                };
                if gone && tried.is_none_or(|t| t.elapsed() >= RECONNECT_EVERY) {
                    *tried = Some(Instant::now());
                    *sock = statsd::connect_unix(path).ok();
                    if let Some(s) = sock {
                        let _ = s.send(&datagram);
                    }
                }
            }
        }
    }
}

/// syslog's severity for a tracing level.
fn severity(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// The layer that sends corral's log lines to `syslog`, as plain text
/// without time (the daemon stamps them); none without one.
pub fn layer<S>(syslog: Option<Arc<Syslog>>) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    syslog.map(|s| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(MakeWriter(s))
    })
}

/// The writer `tracing_subscriber`'s fmt layer formats each line into: the
/// line is sent when the writer is dropped, at the end of the event.
#[derive(Clone)]
pub struct MakeWriter(pub Arc<Syslog>);

pub struct Line {
    syslog: Arc<Syslog>,
    severity: u8,
    buf: Vec<u8>,
}

impl io::Write for Line {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() < MAX_DATAGRAM {
            self.buf.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let line = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        // The level comes padded (" INFO"); the tag's ": [PID] " is the gap.
        let line = line.trim_ascii_start();
        if !line.is_empty() {
            self.syslog.send(self.severity, line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            syslog: self.0.clone(),
            severity: 6,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            syslog: self.0.clone(),
            severity: severity(meta.level()),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorns_syslog_addresses_and_facilities() {
        assert_eq!(
            parse_target("udp://localhost:514"),
            Ok(Target::Udp {
                host: "localhost".into(),
                port: 514
            })
        );
        assert_eq!(
            parse_target("udp://10.0.0.9"),
            Ok(Target::Udp {
                host: "10.0.0.9".into(),
                port: 514
            })
        );
        assert_eq!(
            parse_target("unix:///dev/log#dgram"),
            Ok(Target::Unix("/dev/log".into()))
        );
        assert!(parse_target("tcp://logs:514").unwrap_err().contains("TCP"));
        assert!(
            parse_target("unix:///dev/log#stream")
                .unwrap_err()
                .contains("stream")
        );
        assert_eq!(parse_facility("LOCAL0"), Ok(16));
        assert_eq!(parse_facility("user"), Ok(1));
        assert!(parse_facility("local9").unwrap_err().contains("local7"));
        assert!(check_prefix("my app").is_err());
        assert!(check_prefix("a:b").is_err());
        assert_eq!(check_prefix("shop-api.v2"), Ok("shop-api.v2".into()));
    }

    #[test]
    fn a_socket_path_another_user_may_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        // A symlink in a folder anyone may write to (as /tmp is), pointing
        // at a real socket: whoever made it chooses where the log goes.
        let real = tempfile::tempdir().unwrap();
        let socket = real.path().join("log.sock");
        let _daemon = UnixDatagram::bind(&socket).unwrap();
        let shared = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let link = shared.path().join("log.sock");
        std::os::unix::fs::symlink(&socket, &link).unwrap();
        let settings = |path: PathBuf| Settings {
            target: Target::Unix(path),
            prefix: None,
            facility: 1,
        };
        let err = Syslog::open(&settings(link), "app").err().unwrap();
        assert!(err.contains("refusing") && err.contains("symlink"), "{err}");
        // The socket itself, in a private folder, is taken.
        assert!(Syslog::open(&settings(socket), "app").is_ok());
    }

    #[test]
    fn a_line_is_one_datagram_with_its_priority_and_tag_and_a_long_one_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let daemon = UnixDatagram::bind(&path).unwrap();
        let syslog = Syslog::open(
            &Settings {
                target: Target::Unix(path),
                prefix: Some("shop".into()),
                facility: 16,
            },
            "ignored",
        )
        .unwrap();
        let make = MakeWriter(syslog);
        {
            use std::io::Write;
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&make);
            line.severity = 4;
            line.write_all(b"WARN worker 0 died\n").unwrap();
        }
        let mut buf = vec![0u8; 65536];
        let n = daemon.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(
            text,
            format!(
                "<132>corral.shop.error: [{}] WARN worker 0 died",
                std::process::id()
            )
        );
        {
            use std::io::Write;
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&make);
            line.write_all("é".repeat(10_000).as_bytes()).unwrap();
        }
        let n = daemon.recv(&mut buf).unwrap();
        assert!(n <= MAX_DATAGRAM, "{n}");
        assert!(std::str::from_utf8(&buf[..n]).is_ok());
    }
}
