//! The access log (off by default): one line per request, in the Common or
//! Combined Log Format of Apache and gunicorn, as JSON, or in gunicorn's
//! `access_log_format` atoms ([`gunicorn`]); written through
//! corral's log (so it goes where the rest goes: stderr, the journal), or
//! to stdout or a file of its own (`[log] access_file`, reopened on
//! SIGUSR1). Everything in a line that a client chose is escaped
//! ([`escape`]), so a line stays one line and cannot fake another.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::request::Parts;

use crate::access_log::{Atom, Format, Piece};
use crate::config::{AccessConfig, AccessTarget};
use crate::logfile::LogFile;

mod gunicorn;

/// The target of access lines in corral's log: they pass its log level,
/// as gunicorn's access log passes its `loglevel`.
pub const TARGET: &str = "access";

/// The access log of a running corral: its format and where it writes.
pub struct Logger {
    format: Format,
    sink: Sink,
    /// The format gives headers beyond Referer and User-Agent
    /// ([`Logger::needs_headers`]), or a response header.
    all_headers: bool,
    response_headers: bool,
    /// JSON lines into corral's own log, itself JSON: each request's
    /// fields go as the record's fields, not as one string of JSON in its
    /// message, which a log pipeline would have to parse twice.
    fields: bool,
}

enum Sink {
    Log,
    /// corral's stdout or stderr, through its writer thread.
    Stream(fn() -> crate::stdio::Out),
    File(Arc<LogFile>),
}

impl Logger {
    /// Opens the access log's file, if it has one; `json_log`: corral's
    /// own log is JSON (`--log-format json`).
    pub fn new(cfg: &AccessConfig, json_log: bool) -> Result<Logger, String> {
        let sink = match &cfg.target {
            AccessTarget::Log => Sink::Log,
            AccessTarget::Stdout => Sink::Stream(crate::stdio::stdout),
            AccessTarget::Stderr => Sink::Stream(crate::stdio::stderr),
            AccessTarget::File(path) => Sink::File(LogFile::open(path)?),
        };
        let gives = |what: fn(&Atom) -> bool| match &cfg.format {
            Format::Gunicorn(pieces) => pieces
                .iter()
                .any(|p| matches!(p, Piece::Atom(a) if what(a))),
            _ => false,
        };
        Ok(Logger {
            fields: json_log && matches!(sink, Sink::Log) && matches!(cfg.format, Format::Json),
            all_headers: gives(Atom::needs_headers),
            response_headers: gives(|a| matches!(a, Atom::ResponseHeader(_))),
            format: cfg.format.clone(),
            sink,
        })
    }

    /// Whether a line needs every request header (not only Referer and
    /// User-Agent).
    pub fn needs_headers(&self) -> bool {
        self.all_headers
    }

    /// Whether a line gives a response header (`%({name}o)s`).
    pub fn needs_response_headers(&self) -> bool {
        self.response_headers
    }

    pub fn log(&self, e: &Entry<'_>) {
        if self.fields {
            let j = JsonEntry::of(e, SystemTime::now());
            tracing::info!(
                target: TARGET,
                bytes = j.bytes,
                duration_ms = j.duration_ms,
                generation = j.generation,
                method = j.method,
                queue_ms = j.queue_ms,
                referer = &*j.referer,
                remote = j.remote,
                request_id = j.request_id,
                status = j.status,
                target = j.target,
                time = j.time,
                user_agent = &*j.user_agent,
                version = j.version,
                worker_pid = j.worker_pid,
                worker_slot = j.worker_slot,
                "{} {} {}",
                j.method,
                j.target,
                j.status
            );
            return;
        }
        let line = self.format.line(e, SystemTime::now());
        match &self.sink {
            Sink::Log => tracing::info!(target: TARGET, "{line}"),
            Sink::Stream(stream) => {
                use std::io::Write as _;
                let _ = stream().write_all(format!("{line}\n").as_bytes());
            }
            Sink::File(file) => file.write_all(format!("{line}\n").as_bytes()),
        }
    }
}

/// What a line says about one request.
pub struct Entry<'a> {
    pub remote: &'a str,
    pub parts: &'a Parts,
    pub status: u16,
    /// The bytes of the response body sent (`-` when None).
    pub bytes: Option<u64>,
    /// From the request's head to the response's last byte.
    pub elapsed: Duration,
    /// The response's headers.
    pub response: &'a HeaderMap,
    /// The request's `X-Request-ID` ([`super::request_id`]).
    pub request_id: &'a str,
    pub trace: Trace,
}

/// What only corral knows of a request: filled in as it goes to a worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trace {
    /// Time it waited in corral for a worker.
    pub queued: Option<Duration>,
    /// The worker that took it.
    pub worker: Option<WorkerRef>,
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerRef {
    pub slot: usize,
    pub pid: u32,
    pub generation: u64,
}

impl Entry<'_> {
    pub(super) fn remote_or_dash(&self) -> &str {
        if self.remote.is_empty() {
            "-"
        } else {
            self.remote
        }
    }

    /// The request target as received.
    pub(super) fn target(&self) -> &str {
        self.parts
            .uri
            .path_and_query()
            .map(|x| x.as_str())
            .unwrap_or("/")
    }

    pub(super) fn protocol(&self) -> &'static str {
        match self.parts.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            // As the app's SERVER_PROTOCOL says it.
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        }
    }
}

impl Format {
    fn line(&self, e: &Entry<'_>, now: SystemTime) -> String {
        let p = e.parts;
        let target = e.target();
        let version = e.protocol();
        let header = |name: http::header::HeaderName| p.headers.get(name).map(|v| v.as_bytes());
        let remote = e.remote_or_dash();
        let bytes = e.bytes.map_or("-".to_string(), |b| b.to_string());
        match self {
            Format::Gunicorn(pieces) => gunicorn::render(pieces, e, now),
            Format::Common | Format::Combined => {
                let mut line = format!(
                    "{} - - [{}] \"{} {} {version}\" {} {bytes}",
                    escape(remote.as_bytes()),
                    clf_time(now),
                    escape(p.method.as_str().as_bytes()),
                    escape(target.as_bytes()),
                    e.status
                );
                if matches!(self, Format::Combined) {
                    let quoted = |v: Option<&[u8]>| v.map_or("-".into(), escape);
                    line.push_str(&format!(
                        " \"{}\" \"{}\"",
                        quoted(header(http::header::REFERER)),
                        quoted(header(http::header::USER_AGENT))
                    ));
                }
                line
            }
            Format::Json => serde_json::to_string(&JsonEntry::of(e, now)).unwrap_or_default(),
        }
    }
}

/// One request as a JSON access line has it (its keys in this order).
/// JSON escapes control characters itself; bytes that are not UTF-8
/// become U+FFFD.
#[derive(serde::Serialize)]
struct JsonEntry<'a> {
    bytes: Option<u64>,
    duration_ms: f64,
    generation: Option<u64>,
    method: &'a str,
    queue_ms: Option<f64>,
    referer: std::borrow::Cow<'a, str>,
    remote: &'a str,
    request_id: &'a str,
    status: u16,
    target: &'a str,
    time: f64,
    user_agent: std::borrow::Cow<'a, str>,
    version: &'static str,
    worker_pid: Option<u32>,
    worker_slot: Option<usize>,
}

impl<'a> JsonEntry<'a> {
    fn of(e: &'a Entry<'a>, now: SystemTime) -> JsonEntry<'a> {
        let text = |name: http::header::HeaderName| {
            e.parts
                .headers
                .get(name)
                .map_or("-".into(), |v| String::from_utf8_lossy(v.as_bytes()))
        };
        JsonEntry {
            bytes: e.bytes,
            duration_ms: e.elapsed.as_secs_f64() * 1000.0,
            generation: e.trace.worker.map(|w| w.generation),
            method: e.parts.method.as_str(),
            queue_ms: e.trace.queued.map(|d| d.as_secs_f64() * 1000.0),
            referer: text(http::header::REFERER),
            remote: e.remote_or_dash(),
            request_id: e.request_id,
            status: e.status,
            target: e.target(),
            time: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            user_agent: text(http::header::USER_AGENT),
            version: e.protocol(),
            worker_pid: e.trace.worker.map(|w| w.pid),
            worker_slot: e.trace.worker.map(|w| w.slot),
        }
    }
}

/// Request data made safe for a log line, as nginx writes it: `"` and `\`
/// get a backslash, and every byte outside printable ASCII (control bytes,
/// DEL, and each byte of a non-ASCII character) is written `\xHH`, so a
/// line stays one line whatever the client sent, and no terminal escape or
/// look-alike character gets through.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
    out
}

/// `26/Nov/2026:05:10:00 +0000` (always UTC).
pub(super) fn clf_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Parts {
        http::Request::builder()
            .method("GET")
            .uri("/a?b=c")
            .header("referer", "http://x/")
            .header("user-agent", "curl/8 \"quoted\"")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn the_protocol_is_the_one_the_request_came_in() {
        let mut p = parts();
        let line = |p: &Parts| {
            let e = Entry {
                remote: "127.0.0.1",
                parts: p,
                status: 200,
                bytes: Some(13),
                elapsed: Duration::from_millis(2),
                response: &HeaderMap::new(),
                request_id: "r1",
                trace: Trace::default(),
            };
            Format::Common.line(&e, UNIX_EPOCH)
        };
        for (version, said) in [
            (http::Version::HTTP_10, "\"GET /a?b=c HTTP/1.0\""),
            (http::Version::HTTP_11, "\"GET /a?b=c HTTP/1.1\""),
            (http::Version::HTTP_2, "\"GET /a?b=c HTTP/2\""),
        ] {
            p.version = version;
            assert!(line(&p).contains(said), "{}", line(&p));
        }
    }

    #[test]
    fn common_and_combined_lines() {
        let p = parts();
        let e = Entry {
            remote: "127.0.0.1",
            parts: &p,
            status: 200,
            bytes: Some(13),
            elapsed: Duration::from_millis(2),
            response: &HeaderMap::new(),
            request_id: "r1",
            trace: Trace::default(),
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_795_669_800); // 2026-11-26 05:10:00 UTC
        assert_eq!(
            Format::Common.line(&e, t),
            "127.0.0.1 - - [26/Nov/2026:05:10:00 +0000] \"GET /a?b=c HTTP/1.1\" 200 13"
        );
        assert!(
            Format::Combined
                .line(&e, t)
                .ends_with(" \"http://x/\" \"curl/8 \\\"quoted\\\"\""),
            "{}",
            Format::Combined.line(&e, t)
        );
        let v: serde_json::Value = serde_json::from_str(&Format::Json.line(&e, t)).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["target"], "/a?b=c");
        assert_eq!(v["user_agent"], "curl/8 \"quoted\"");
    }

    #[test]
    fn client_data_is_escaped_in_text_lines() {
        let p = http::Request::builder()
            .method("GET")
            .uri("/caf%C3%A9/\u{e9}\u{202e}x")
            .header("user-agent", &b"evil\"\t\\ \xe9"[..])
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let e = Entry {
            remote: "10.0.0.1\n127.0.0.1 - - [fake]",
            parts: &p,
            status: 200,
            bytes: None,
            elapsed: Duration::ZERO,
            response: &HeaderMap::new(),
            request_id: "r1",
            trace: Trace::default(),
        };
        let line = Format::Combined.line(&e, UNIX_EPOCH);
        assert_eq!(
            line,
            "10.0.0.1\\x0A127.0.0.1 - - [fake] - - [01/Jan/1970:00:00:00 +0000] \
             \"GET /caf%C3%A9/\\xC3\\xA9\\xE2\\x80\\xAEx HTTP/1.1\" 200 - \
             \"-\" \"evil\\\"\\x09\\\\ \\xE9\""
        );
        assert_eq!(escape(b"\x1b[31mred\x7f"), "\\x1B[31mred\\x7F");
        let v: serde_json::Value =
            serde_json::from_str(&Format::Json.line(&e, UNIX_EPOCH)).unwrap();
        assert_eq!(v["user_agent"], "evil\"\t\\ \u{fffd}");
        assert!(!Format::Json.line(&e, UNIX_EPOCH).contains('\n'));
    }

    #[test]
    fn dates_across_years_and_leap_days() {
        let at = |s| clf_time(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(at(1_704_067_199), "31/Dec/2023:23:59:59 +0000");
    }
}
