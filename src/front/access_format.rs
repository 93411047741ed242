//! gunicorn's `access_log_format` (`--access-logformat`): Python
//! `%(atom)s` placeholders, parsed once at start-up ([`parse`]) and filled
//! per request ([`render`]) with what corral knows about it. The atoms are
//! gunicorn's (`h l u t r s m U q H b B f a T D M L p`, `{header}i`,
//! `{header}o`, `{variable}e`), and corral's own for what only it knows:
//! `request_id`, `queue_ms`, `worker_slot`, `worker_pid`, `generation`.
//! One corral cannot know, or an unknown one, is written "-", as gunicorn
//! writes it. Everything a client or the app
//! chose goes through [`escape`], so a line stays one line.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use percent_encoding::percent_decode_str;

use super::access::{Entry, clf_time, escape};

/// One part of a format: literal text or an atom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Atom(Atom),
}

/// A gunicorn atom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Atom {
    /// `h`: the client address.
    Remote,
    /// `t`: `[10/Oct/2000:13:55:36 +0000]`.
    Time,
    /// `r`: `GET /path?q HTTP/1.1`.
    RequestLine,
    /// `s`
    Status,
    /// `m`
    Method,
    /// `U`: the path, percent-decoded, without the query.
    Path,
    /// `q`
    Query,
    /// `H`
    Protocol,
    /// `b`: the body size, or "-"; `B` is the same here (corral knows the
    /// size only from Content-Length).
    Bytes,
    /// `f`
    Referer,
    /// `a`
    UserAgent,
    /// `T`: whole seconds.
    Seconds,
    /// `D`: microseconds.
    Micros,
    /// `M`: milliseconds.
    Millis,
    /// `L`: seconds with six decimals.
    DecimalSeconds,
    /// `p`: `<pid>` of corral.
    Pid,
    /// `{name}i`, lowercased.
    RequestHeader(String),
    /// `{name}o`, lowercased.
    ResponseHeader(String),
    /// `{name}e`: the WSGI environ variable, lowercased.
    Environ(String),
    /// `request_id`: the request's `X-Request-ID`.
    RequestId,
    /// `queue_ms`: milliseconds (three decimals) the request waited in
    /// corral for a worker.
    QueueMillis,
    /// `worker_slot`, `worker_pid`, `generation`: the worker that took it.
    WorkerSlot,
    WorkerPid,
    Generation,
    /// `l`, `u` (corral does not decode the user of Basic authentication)
    /// and every atom gunicorn does not know: "-".
    Dash,
}

impl Atom {
    fn from_name(name: &str) -> Atom {
        if let Some(inner) = name.strip_prefix('{') {
            if let Some((key, kind)) = inner.rsplit_once('}') {
                let key = key.to_ascii_lowercase();
                return match kind {
                    "i" => Atom::RequestHeader(key),
                    "o" => Atom::ResponseHeader(key),
                    "e" => Atom::Environ(key),
                    _ => Atom::Dash,
                };
            }
            return Atom::Dash;
        }
        match name {
            "h" => Atom::Remote,
            "t" => Atom::Time,
            "r" => Atom::RequestLine,
            "s" => Atom::Status,
            "m" => Atom::Method,
            "U" => Atom::Path,
            "q" => Atom::Query,
            "H" => Atom::Protocol,
            "b" | "B" => Atom::Bytes,
            "f" => Atom::Referer,
            "a" => Atom::UserAgent,
            "T" => Atom::Seconds,
            "D" => Atom::Micros,
            "M" => Atom::Millis,
            "L" => Atom::DecimalSeconds,
            "p" => Atom::Pid,
            "request_id" => Atom::RequestId,
            "queue_ms" => Atom::QueueMillis,
            "worker_slot" => Atom::WorkerSlot,
            "worker_pid" => Atom::WorkerPid,
            "generation" => Atom::Generation,
            _ => Atom::Dash,
        }
    }

    /// Whether rendering needs request headers beyond Referer and
    /// User-Agent.
    pub fn needs_headers(&self) -> bool {
        matches!(self, Atom::RequestHeader(_) | Atom::Environ(_))
    }
}

/// Parses a gunicorn access log format. `%(name)s` (any conversion letter,
/// with optional flags and width, which are ignored) is an atom and `%%` a
/// literal "%"; any other "%" is a mistake, named with its place.
pub fn parse(format: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(i) = rest.find('%') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let at = format.len() - rest.len() + i;
        if let Some(more) = after.strip_prefix('%') {
            text.push('%');
            rest = more;
            continue;
        }
        let Some(inner) = after.strip_prefix('(') else {
            return Err(format!(
                "has a '%' at byte {at} that starts no atom: write atoms like %(h)s, and %% for a literal %"
            ));
        };
        let Some(close) = inner.find(')') else {
            return Err(format!(
                "has an atom at byte {at} with no closing ')': write it like %(h)s"
            ));
        };
        let name = &inner[..close];
        let spec = &inner[close + 1..];
        let flags = spec
            .find(|c: char| !matches!(c, '-' | '#' | '0' | ' ' | '+' | '.' | '1'..='9'))
            .unwrap_or(spec.len());
        let Some(conversion) = spec[flags..].chars().next() else {
            return Err(format!(
                "ends inside the atom %({name}) at byte {at}: add its conversion, like %({name})s"
            ));
        };
        if !"sdirafFeEgGxXoc".contains(conversion) {
            return Err(format!(
                "has the atom %({name}) at byte {at} with the conversion '{conversion}': use %({name})s"
            ));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Atom(Atom::from_name(name)));
        rest = &spec[flags + conversion.len_utf8()..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// One access line for `e`, at `now`.
pub fn render(pieces: &[Piece], e: &Entry<'_>, now: SystemTime) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Atom(atom) => atom_value(&mut out, atom, e, now),
        }
    }
    out
}

fn header_or_dash(out: &mut String, headers: &HeaderMap, name: &str) {
    match headers.get(name) {
        Some(v) => out.push_str(&escape(v.as_bytes())),
        None => out.push('-'),
    }
}

fn atom_value(out: &mut String, atom: &Atom, e: &Entry<'_>, now: SystemTime) {
    let p = e.parts;
    let elapsed: Duration = e.elapsed;
    match atom {
        Atom::Remote => out.push_str(&escape(e.remote_or_dash().as_bytes())),
        Atom::Time => {
            let _ = write!(out, "[{}]", clf_time(now));
        }
        Atom::RequestLine => {
            let _ = write!(
                out,
                "{} {} {}",
                escape(p.method.as_str().as_bytes()),
                escape(e.target().as_bytes()),
                e.protocol()
            );
        }
        Atom::Status => {
            let _ = write!(out, "{}", e.status);
        }
        Atom::Method => out.push_str(&escape(p.method.as_str().as_bytes())),
        Atom::Path => {
            let path: Vec<u8> = percent_decode_str(p.uri.path()).collect();
            out.push_str(&escape(&path));
        }
        Atom::Query => out.push_str(&escape(p.uri.query().unwrap_or("").as_bytes())),
        Atom::Protocol => out.push_str(e.protocol()),
        Atom::Bytes => match e.bytes {
            Some(b) => {
                let _ = write!(out, "{b}");
            }
            None => out.push('-'),
        },
        Atom::Referer => header_or_dash(out, &p.headers, "referer"),
        Atom::UserAgent => header_or_dash(out, &p.headers, "user-agent"),
        Atom::Seconds => {
            let _ = write!(out, "{}", elapsed.as_secs());
        }
        Atom::Micros => {
            let _ = write!(out, "{}", elapsed.as_micros());
        }
        Atom::Millis => {
            let _ = write!(out, "{}", elapsed.as_millis());
        }
        Atom::DecimalSeconds => {
            let _ = write!(out, "{}.{:06}", elapsed.as_secs(), elapsed.subsec_micros());
        }
        Atom::Pid => {
            let _ = write!(out, "<{}>", std::process::id());
        }
        Atom::RequestHeader(name) => header_or_dash(out, &p.headers, name),
        Atom::ResponseHeader(name) => header_or_dash(out, e.response, name),
        Atom::Environ(name) => environ(out, name, e),
        Atom::RequestId => out.push_str(&escape(e.request_id.as_bytes())),
        Atom::QueueMillis => match e.trace.queued {
            Some(d) => {
                let _ = write!(out, "{:.3}", d.as_secs_f64() * 1000.0);
            }
            None => out.push('-'),
        },
        Atom::WorkerSlot | Atom::WorkerPid | Atom::Generation => match e.trace.worker {
            Some(w) => {
                let _ = match atom {
                    Atom::WorkerSlot => write!(out, "{}", w.slot),
                    Atom::WorkerPid => write!(out, "{}", w.pid),
                    _ => write!(out, "{}", w.generation),
                };
            }
            None => out.push('-'),
        },
        Atom::Dash => out.push('-'),
    }
}

/// The WSGI environ variables corral can name for the access log.
fn environ(out: &mut String, name: &str, e: &Entry<'_>) {
    let p = e.parts;
    let value: Option<Vec<u8>> = match name {
        "request_method" => Some(p.method.as_str().into()),
        "raw_uri" => Some(e.target().into()),
        "path_info" => Some(percent_decode_str(p.uri.path()).collect()),
        "query_string" => Some(p.uri.query().unwrap_or("").into()),
        "server_protocol" => Some(e.protocol().into()),
        "remote_addr" => Some(e.remote_or_dash().into()),
        "content_type" => p.headers.get("content-type").map(|v| v.as_bytes().into()),
        "content_length" => p.headers.get("content-length").map(|v| v.as_bytes().into()),
        other => other.strip_prefix("http_").and_then(|h| {
            let header = h.replace('_', "-");
            p.headers.get(header.as_str()).map(|v| v.as_bytes().into())
        }),
    };
    match value {
        Some(v) => out.push_str(&escape(&v)),
        None => out.push('-'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::access::{Trace, WorkerRef};
    use std::time::UNIX_EPOCH;

    const GUNICORN_DEFAULT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

    fn entry_parts() -> (http::request::Parts, HeaderMap) {
        let parts = http::Request::builder()
            .method("POST")
            .uri("/caf%C3%A9/x?a=1&b=%22")
            .header("referer", "http://r/")
            .header("user-agent", "ua \"q\"")
            .header("x-request-id", &b"abc\xe9 \"1\""[..])
            .header("host", "example.com")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut response = HeaderMap::new();
        response.insert("content-type", "text/plain".parse().unwrap());
        (parts, response)
    }

    fn line(format: &str) -> String {
        let (parts, response) = entry_parts();
        let e = Entry {
            remote: "10.1.2.3",
            parts: &parts,
            status: 201,
            bytes: Some(42),
            elapsed: Duration::from_micros(1_234_567),
            response: &response,
            request_id: "7f3a",
            trace: Trace {
                queued: Some(Duration::from_micros(2_500)),
                worker: Some(WorkerRef {
                    slot: 3,
                    pid: 4242,
                    generation: 2,
                }),
            },
        };
        render(&parse(format).unwrap(), &e, UNIX_EPOCH)
    }

    #[test]
    fn gunicorn_default_and_timing_atoms() {
        assert_eq!(
            line(GUNICORN_DEFAULT),
            "10.1.2.3 - - [01/Jan/1970:00:00:00 +0000] \"POST /caf%C3%A9/x?a=1&b=%22 HTTP/1.1\" \
             201 42 \"http://r/\" \"ua \\\"q\\\"\""
        );
        assert_eq!(line("%(D)s %(M)s %(T)s %(L)s"), "1234567 1234 1 1.234567");
        assert_eq!(
            line("%(m)s|%(U)s|%(q)s|%(H)s|%(B)s"),
            "POST|/caf\\xC3\\xA9/x|a=1&b=%22|HTTP/1.1|42"
        );
        assert_eq!(line("%(p)s"), format!("<{}>", std::process::id()));
    }

    #[test]
    fn corral_atoms() {
        assert_eq!(
            line("%(request_id)s %(queue_ms)s %(worker_slot)s %(worker_pid)s %(generation)s"),
            "7f3a 2.500 3 4242 2"
        );
    }

    #[test]
    fn header_environ_and_unknown_atoms() {
        assert_eq!(
            line("%({X-Request-Id}i)s %({content-type}o)s %({missing}i)s"),
            "abc\\xE9 \\\"1\\\" text/plain -"
        );
        assert_eq!(
            line("%({REQUEST_METHOD}e)s %({HTTP_HOST}e)s %({wsgi.version}e)s"),
            "POST example.com -"
        );
        assert_eq!(
            line("%(zz)s %(u)s %(l)s 100%% %(s)d %(s)-5s"),
            "- - - 100% 201 201"
        );
    }

    #[test]
    fn malformed_formats_are_refused_with_the_place() {
        for (format, why) in [
            ("%(h", "no closing ')'"),
            ("%(h)", "add its conversion"),
            ("50% off", "at byte 2 that starts no atom"),
            ("%(h)y", "the conversion 'y'"),
        ] {
            let err = parse(format).unwrap_err();
            assert!(err.contains(why), "{format}: {err}");
        }
    }
}
