//! The access log's settings, as the configuration reads them: which log
//! ([`AccessLog`], `--access-log`), the line format ([`Format`]), and
//! gunicorn's `access_log_format` (`--access-logformat`) parsed into
//! [`Piece`]s once at start-up ([`parse`]). Writing the lines is the
//! front's (`front::access` and its `gunicorn` renderer); this module sits
//! below `config` and imports nothing of corral's.

/// Which access log, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    #[default]
    Off,
    Common,
    Combined,
    Json,
}

/// The line format of a running access log.
#[derive(Debug, Clone)]
pub enum Format {
    Common,
    Combined,
    Json,
    /// gunicorn's `access_log_format`.
    Gunicorn(Vec<Piece>),
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
