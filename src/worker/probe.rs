//! Readiness probes: a GET of the app's own readiness path, sent to one
//! worker through its private channel (never over the network), as the app
//! would see a request from a load balancer.

use std::time::Duration;

use super::channel::{Channel, First};
use super::head::{ConnInfo, environ, scope};
use super::protocol;

/// The `Host` a probe is sent with (and its `SERVER_NAME`).
const PROBE_HOST: &str = "localhost";

/// Sends `GET path` to the worker; Ok on a 2xx, else why not.
pub async fn probe(channel: &Channel, path: &str, timeout: Duration) -> Result<(), String> {
    let head = request_head(channel, path)?;
    let stream = channel.open(
        false,
        std::time::Instant::now() + timeout,
        protocol::RESPONSE_WINDOW,
    );
    // A probe asks after this worker: it is never given back to be run
    // by another.
    let flags = protocol::FLAG_STAY;
    if !channel.send(protocol::encode_request(stream.id, &head, b"", flags)) {
        return Err("the worker's channel is closed".into());
    }
    let (head, body) = match stream.first.await {
        Ok(First::TimedOut) => {
            channel.send(protocol::encode(
                protocol::FrameKind::Cancel,
                stream.id,
                b"",
            ));
            return Err(format!("GET {path} got no answer within {timeout:?}"));
        }
        Err(_) => return Err(format!("the worker died while answering GET {path}")),
        Ok(First::Returned) => {
            return Err(format!(
                "the worker gave GET {path} back, which it must not"
            ));
        }
        Ok(First::Full(payload)) => {
            protocol::split_full(&payload).ok_or_else(|| "malformed response frame".to_string())?
        }
        Ok(First::Start(head, _) | First::Accept(head, _)) => {
            // A streamed answer: the status is all we need.
            channel.send(protocol::encode(
                protocol::FrameKind::Cancel,
                stream.id,
                b"",
            ));
            (head, bytes::Bytes::new())
        }
    };
    let head = protocol::parse_response_head(&head)
        .map_err(|e| format!("GET {path} got an invalid response: {e}"))?;
    if head.status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = text.trim();
    // Django answers a Host its ALLOWED_HOSTS does not list with a bare
    // 400 (its CommonMiddleware checks every request's), which says
    // nothing of the Host to the operator reading why no worker serves.
    // An app that sends plain http to https (Django's SECURE_SSL_REDIRECT)
    // redirects the probe, which comes over no proxy: say where to, and
    // how to exempt the path.
    let hint = if head.status == http::StatusCode::BAD_REQUEST {
        format!(
            " (the probe is sent with \"Host: {PROBE_HOST}\": an app that checks the Host, \
             as Django does with ALLOWED_HOSTS, must allow {PROBE_HOST:?})"
        )
    } else if head.status.is_redirection() {
        let location = head
            .headers
            .iter()
            .find(|(k, _)| k == http::header::LOCATION)
            // The app's bytes: shown as text, and no longer than the body's 200.
            .map(|(_, v)| {
                format!(
                    "{:?}",
                    String::from_utf8_lossy(&v.as_bytes()[..v.len().min(200)])
                )
            });
        format!(
            " to {} (the probe is a plain http request from no proxy: an app that redirects \
             those to https, as Django does with SECURE_SSL_REDIRECT, must exempt the path, \
             in Django's SECURE_REDIRECT_EXEMPT)",
            location.as_deref().unwrap_or("nowhere (no Location)")
        )
    } else {
        String::new()
    };
    Err(format!(
        "GET {path} answered {}{}{hint}{}",
        head.status.as_u16(),
        head.reason.map_or_else(String::new, |r| format!(
            " {}",
            String::from_utf8_lossy(r.as_bytes())
        )),
        if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    ))
}

/// The head of a probe request, built like a real request's.
fn request_head(channel: &Channel, path: &str) -> Result<Vec<u8>, String> {
    let ua = concat!("corral-probe/", env!("CARGO_PKG_VERSION"));
    let (parts, ()) = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, PROBE_HOST)
        .header(http::header::USER_AGENT, ua)
        .body(())
        .map_err(|e| format!("invalid readiness path {path:?}: {e}"))?
        .into_parts();
    let conn = ConnInfo {
        tls: None,
        proxy: None,
        remote_addr: "127.0.0.1".into(),
        remote_port: "0".into(),
        server_name: PROBE_HOST.into(),
        server_port: "80".into(),
        scheme: "http",
        trusted: false,
    };
    if channel.is_asgi() {
        Ok(scope::encode(&parts, &conn))
    } else {
        environ::encode(&parts, &conn).map_err(|_| format!("invalid readiness path {path:?}"))
    }
}
