//! Readiness probes: a GET of the app's own readiness path, sent to one
//! worker through its private channel (never over the network), as the app
//! would see a request from a load balancer.

use std::time::Duration;

use super::channel::{Channel, First};
use super::protocol;

/// Sends `GET path` to the worker; Ok on a 2xx, else why not.
pub async fn probe(channel: &Channel, path: &str, timeout: Duration) -> Result<(), String> {
    let stream = channel.open(false, timeout);
    let head = request_head(path);
    if !channel.send(protocol::encode_request(stream.id, &head, b"", false)) {
        return Err("the worker's channel is closed".into());
    }
    let (head, body) = match stream.first.await {
        Ok(First::TimedOut) => {
            channel.send(protocol::encode(protocol::CANCEL, stream.id, b""));
            return Err(format!("GET {path} got no answer within {timeout:?}"));
        }
        Err(_) => return Err(format!("the worker died while answering GET {path}")),
        Ok(First::Full(payload)) => {
            protocol::split_full(&payload).ok_or_else(|| "malformed response frame".to_string())?
        }
        Ok(First::Start(head, _)) => {
            // A streamed answer: the status is all we need.
            channel.send(protocol::encode(protocol::CANCEL, stream.id, b""));
            (head, bytes::Bytes::new())
        }
    };
    let head = protocol::parse_response_head(&head)?;
    if (200..300).contains(&head.status) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = text.trim();
    Err(format!(
        "GET {path} answered {} {}{}",
        head.status,
        String::from_utf8_lossy(&head.reason),
        if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    ))
}

/// The environ of a probe request (see `front::environ` for real ones).
fn request_head(path: &str) -> Vec<u8> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let ua = concat!("corral-probe/", env!("CARGO_PKG_VERSION"));
    let pairs: [(&str, &str); 12] = [
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("RAW_URI", path),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "0"),
        ("wsgi.url_scheme", "http"),
        ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", ua),
    ];
    let mut out = Vec::with_capacity(256);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
    }
    out
}
