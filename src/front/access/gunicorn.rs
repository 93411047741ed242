//! gunicorn's `access_log_format` (`--access-logformat`): Python
//! `%(atom)s` placeholders, parsed once at start-up ([`crate::access_log::parse`]) and filled
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

use super::{Entry, clf_time, escape};
use crate::access_log::{Atom, Piece};

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
    use crate::access_log::parse;
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
}
