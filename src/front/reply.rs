//! The answers corral gives itself, without a worker: short `text/plain`
//! bodies for bad requests, limits, timeouts and a broken app, with the
//! headers each needs (`Connection: close` where nothing more on the
//! connection can be trusted, `Retry-After` on a 503).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::Body;
use crate::metrics::Metrics;

/// Why the app's response was refused, on corral's 500 for it: the
/// handler logs it with the request and the worker.
#[derive(Clone)]
pub struct BadApp(pub String);

pub fn bad_app(why: &str) -> Response<Body> {
    let mut r = plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n");
    r.extensions_mut().insert(BadApp(why.to_owned()));
    r
}

pub fn too_large(max: u64) -> Response<Body> {
    // gunicorn has no body limit: an upload that served there gets 413
    // here. Said once in the log (a client could make it say it often).
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "a request body over server.max_body_bytes ({max} bytes) got 413; raise it \
             (--max-body-bytes) if the app takes uploads this big (said once)"
        );
    }
    let mut r = plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("Payload Too Large: the limit is {max} bytes\n"),
    );
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A 400 that closes the connection: after a bad head or a broken body,
/// nothing more on it can be trusted.
pub fn bad_request(why: &str) -> Response<Body> {
    let mut r = plain(StatusCode::BAD_REQUEST, &format!("Bad Request: {why}\n"));
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The 405 for CONNECT: corral is no forward proxy.
pub fn not_a_proxy() -> Response<Body> {
    let mut r = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed: CONNECT (this is no proxy)\n",
    );
    r.headers_mut().insert(
        http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A head over one of gunicorn's `limit_request_*`: 414 or 431, and the
/// connection closed, as gunicorn does.
pub fn refused(status: StatusCode, why: &str) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Refused");
    let mut r = plain(status, &format!("{reason}: {why}\n"));
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

pub fn broken_body() -> Response<Body> {
    bad_request("broken body")
}

/// The 408 for a body whose client sent nothing for the body timeout.
pub fn body_timed_out(metrics: &Metrics) -> Response<Body> {
    metrics.body_timed_out();
    let mut r = plain(
        StatusCode::REQUEST_TIMEOUT,
        "Request Timeout: the request body stalled\n",
    );
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

pub fn unavailable(why: &str) -> Response<Body> {
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("Service Unavailable: {why}\n"),
    );
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::copy_from_slice(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
