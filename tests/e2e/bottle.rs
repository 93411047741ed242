//! A Bottle app answers through corral as through gunicorn: routes with
//! filters, `request.body`, forms, file uploads, `static_file` (with its
//! conditional and range requests, and as a download), `abort()` and the
//! app's error handler, a generator's body, redirects and cookies (plain
//! and signed).
//!
//! Both servers run one copy of the app, two worker processes each; each
//! is asked through its own browser-like client (which keeps its cookies),
//! as `frameworks` does. The app lives in `tests/apps/bottle_app/`; it
//! needs Bottle and gunicorn in the interpreter the tests use (`./test.sh`
//! installs them into `.venv`).

use crate::common::compare::*;
use crate::frameworks::{Client, FORM_TYPE, file_uploads};

const SPEC: &str = "bottleapp:app";

const FILES: &[(&str, &str)] = &[
    (
        "bottleapp.py",
        include_str!("../apps/bottle_app/bottleapp.py"),
    ),
    (
        "static/site.css",
        include_str!("../apps/bottle_app/static/site.css"),
    ),
];

/// Both servers on one copy of the app, gunicorn with `gunicorn_args` and
/// corral with `corral_args` added.
fn start_servers(gunicorn_args: &[&str], corral_args: &[&str]) -> Servers {
    require_modules("bottle, gunicorn", "a real Bottle app");
    let mut args = vec![SPEC, "-w", "2"];
    args.extend_from_slice(corral_args);
    Servers::start(
        "Bottle",
        FILES,
        |dir| crate::frameworks::gunicorn_with(dir, SPEC, gunicorn_args),
        &args,
        2,
    )
}

/// Asks both servers `reqs` in order, each through its own client.
fn same_answers(servers: &Servers, reqs: &[Req]) {
    let mut reference = Client::new(&servers.reference.addr);
    let mut tested = Client::new(&servers.corral.addr);
    assert_same_answers(servers, reqs, |req| [reference.send(req), tested.send(req)]);
}

/// Routes, bodies, forms, uploads, static files, errors, a generator's
/// body, redirects and cookies: the same answers from corral as from
/// gunicorn.
#[test]
fn bottle_routes_uploads_static_files_and_cookies_as_under_gunicorn() {
    let servers = start_servers(&[], &[]);
    let octets = "application/octet-stream";
    let lines: String = (0..5).map(|i| format!("line {i}\n")).collect();
    same_answers(
        &servers,
        &[
            Req::get("index", "/").expect(200, "Hello from Bottle"),
            Req::new("HEAD of the index", "HEAD", "/").expect(200, ""),
            Req::get("int filter and query", "/items/4?q=caf%C3%A9").expect(200, r#""item_id": 4"#),
            Req::get("a path the filter refuses", "/items/x").expect(404, "nothing at /items/x"),
            Req::get("a non-ASCII path", "/hello/caf%C3%A9").expect(200, "hello caf"),
            Req::post("a method the route lacks", "/hello/x", octets, "x").expect(405, ""),
            Req::post("request.body", "/body", octets, binary(300_000))
                .expect(200, r#""length": 300000"#),
            // Bottle undoes the chunked framing itself, which the server has
            // undone already: 400 under both.
            Req::post(
                "request.body, chunked",
                "/body",
                octets,
                chunked(&binary(200_000), 7000),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(400, "Error: 400 Bad Request"),
            Req::post(
                "a form",
                "/form",
                FORM_TYPE,
                "name=Ada+Lovelace&lang=fr&lang=en&note=caf%C3%A9",
            )
            .expect(200, r#""lang": ["fr", "en"]"#),
            file_uploads("file uploads", "/upload", 400_000),
            Req::get("a static file", "/static/site.css").expect(200, "naïve ✓"),
            Req::get("a static file, if modified since", "/static/site.css")
                .header("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")
                .expect(304, ""),
            Req::get("a static file, a range", "/static/site.css")
                .header("Range", "bytes=0-3")
                .expect(206, "body"),
            Req::get("a static file that is not there", "/static/none.css").expect(404, ""),
            Req::get(
                "a static path that leaves the root",
                "/static/..%2Fbottleapp.py",
            )
            .expect(403, ""),
            Req::get("a download", "/download").expect(200, "naïve"),
            Req::get("abort(418)", "/teapot").expect(418, "short and stout"),
            Req::get("abort(403)", "/forbidden").expect(403, ""),
            Req::get("a view that raises", "/boom").expect(500, "Internal Server Error"),
            Req::get("a generator's body", "/stream").expect(200, &lines),
            Req::get("a redirect that sets cookies", "/set-cookies").expect(303, ""),
            Req::get("the cookies sent back", "/cookies")
                .expect(200, r#""signed": {"user": "ada"}"#),
            Req::get("the app's 404 handler", "/nowhere").expect(404, "nothing at /nowhere"),
        ],
    );
}

/// `request.url`, `remote_addr` and `remote_route` behind a trusted
/// proxy.
#[test]
fn bottle_request_url_and_client_behind_forwarded_allow_ips() {
    let servers = start_servers(
        &["--forwarded-allow-ips", "127.0.0.1"],
        &["--forwarded-allow-ips", "127.0.0.1"],
    );
    same_answers(
        &servers,
        &[
            Req::get("no proxy headers", "/env").expect(200, r#""scheme": "http""#),
            Req::get("from a trusted proxy", "/env")
                .header("Host", "app.example.com")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
                .expect(200, r#""scheme": "https""#),
        ],
    );
}
