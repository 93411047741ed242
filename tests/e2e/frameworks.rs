//! Real Flask and Django apps answer through corral exactly as they do
//! through gunicorn.
//!
//! Each test starts both servers on the same copy of the same app (corral
//! with the test harness, gunicorn from the interpreter's own venv), sends
//! both the same requests, one browser-like client per server (each keeps its
//! own cookies), and compares the answers: status line, body bytes and
//! headers, except the ones that describe the server or the connection
//! rather than the app (see [`IGNORED_HEADERS`]). Header names compare
//! case-insensitively: hyper writes them in lower case.
//!
//! The apps live in `tests/apps/`. They need Flask, Django and gunicorn in
//! the interpreter the tests use: `./test.sh` installs them into `.venv`.
//! Without them every test here fails and says so.

use crate::common::compare::*;
use crate::common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Longest wait for gunicorn to accept connections, or for the framework
/// probe to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------ apps

#[derive(Clone, Copy)]
enum Framework {
    Flask,
    Django,
}

const FLASK_FILES: &[(&str, &str)] =
    &[("flaskapp.py", include_str!("../apps/flask_app/flaskapp.py"))];

const DJANGO_FILES: &[(&str, &str)] = &[
    (
        "djsite/__init__.py",
        include_str!("../apps/django_site/djsite/__init__.py"),
    ),
    (
        "djsite/settings.py",
        include_str!("../apps/django_site/djsite/settings.py"),
    ),
    (
        "djsite/urls.py",
        include_str!("../apps/django_site/djsite/urls.py"),
    ),
    (
        "djsite/views.py",
        include_str!("../apps/django_site/djsite/views.py"),
    ),
    (
        "djsite/wsgi.py",
        include_str!("../apps/django_site/djsite/wsgi.py"),
    ),
];

impl Framework {
    fn name(self) -> &'static str {
        match self {
            Framework::Flask => "Flask",
            Framework::Django => "Django",
        }
    }

    fn app(self) -> &'static str {
        match self {
            Framework::Flask => "flaskapp:app",
            Framework::Django => "djsite.wsgi:application",
        }
    }

    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Framework::Flask => FLASK_FILES,
            Framework::Django => DJANGO_FILES,
        }
    }
}

// ------------------------------------------------ the Python environment

/// What the interpreter under test offers.
struct PyEnv {
    gunicorn: PathBuf,
    /// gunicorn >= 25.1 opens a control socket at a fixed path in $HOME
    /// unless told not to; two gunicorns at once would fight over it.
    no_control_socket: bool,
}

const PROBE: &str = r#"
import sys
missing = []
for name in ("flask", "django", "gunicorn"):
    try:
        __import__(name)
    except Exception as e:
        missing.append("%s (%s: %s)" % (name, type(e).__name__, e))
if missing:
    print("cannot import " + ", ".join(missing))
    sys.exit(1)
import gunicorn.config
print("no-control-socket" if hasattr(gunicorn.config, "ControlSocketDisable") else "")
"#;

/// Checks once that `python()` can import Flask, Django and gunicorn, and
/// finds the gunicorn next to it. Panics with what to do when it cannot.
fn py_env() -> &'static PyEnv {
    static ENV: OnceLock<Result<PyEnv, String>> = OnceLock::new();
    match ENV.get_or_init(find_gunicorn) {
        Ok(env) => env,
        Err(why) => panic!(
            "{why}\nThese tests serve real Flask and Django apps and compare corral with gunicorn. \
             Run ./test.sh (it makes .venv from requirements-test.txt and runs the tests with it), \
             or set CORRAL_TEST_PYTHON to an interpreter that has flask, django and gunicorn."
        ),
    }
}

fn find_gunicorn() -> Result<PyEnv, String> {
    let out = probe_python(PROBE, START_TIMEOUT)?;
    let py = python();
    let gunicorn = Path::new(&py).with_file_name("gunicorn");
    if !gunicorn.is_file() {
        return Err(format!(
            "no gunicorn next to the test interpreter {py} (looked for {})",
            gunicorn.display()
        ));
    }
    Ok(PyEnv {
        gunicorn,
        no_control_socket: out.contains("no-control-socket"),
    })
}

// -------------------------------------------------------------- gunicorn

/// `gunicorn APP -w 2 -b 127.0.0.1:PORT --chdir DIR`, accepting connections.
fn gunicorn(dir: &Path, app: &str) -> Reference {
    gunicorn_with(dir, app, &[])
}

/// [`gunicorn`], with `args` added to its command line.
pub(crate) fn gunicorn_with(dir: &Path, app: &str, args: &[&str]) -> Reference {
    let env = py_env();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(&env.gunicorn);
    cmd.args([app, "-w", "2", "-b", &addr, "--chdir"])
        .arg(dir)
        .current_dir(dir);
    if env.no_control_socket {
        cmd.arg("--no-control-socket");
    }
    cmd.args(args);
    Reference::start("gunicorn", cmd, addr, START_TIMEOUT)
}

/// Both servers on one copy of `fw`'s app.
fn start_servers(fw: Framework) -> Servers {
    py_env();
    // gunicorn's workers import the app while corral starts.
    Servers::start(
        fw.name(),
        fw.files(),
        |dir| gunicorn(dir, fw.app()),
        &[fw.app(), "-w", "2"],
        2,
    )
}

// -------------------------------------------------------------- requests

/// Stands for the CSRF token the client last saw in a form, in request
/// bodies and header values.
const CSRF: &str = "{csrf}";

/// A browser-like client of one server: keeps the cookies it is given and
/// the last CSRF token it saw in a form.
pub(crate) struct Client {
    addr: String,
    jar: Vec<(String, String)>,
    csrf_token: Option<String>,
    /// Values the app makes random on purpose, with the placeholder each
    /// stands for in the comparison.
    secrets: Vec<(String, &'static str)>,
}

impl Client {
    pub(crate) fn new(addr: &str) -> Client {
        Client {
            addr: addr.to_string(),
            jar: Vec::new(),
            csrf_token: None,
            secrets: Vec::new(),
        }
    }

    pub(crate) fn send(&mut self, req: &Req) -> Outcome {
        let token = self.csrf_token.clone().unwrap_or_default();
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.replace(CSRF, &token)))
            .collect();
        if req.cookies && !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            headers.push(("Cookie".into(), cookie.join("; ")));
        }
        let body = replace_bytes(&req.body, CSRF.as_bytes(), token.as_bytes());
        let mut resp = exchange(&self.addr, req.method, &req.path, &headers, &body)?;
        self.learn(&resp);
        self.normalise(&mut resp);
        Ok(resp)
    }

    /// Takes cookies and the CSRF token from a response.
    fn learn(&mut self, resp: &Response) {
        for (name, value) in &resp.headers {
            if name != "set-cookie" {
                continue;
            }
            let pair = value.split(';').next().unwrap_or("");
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            let expired = value
                .split(';')
                .any(|attr| attr.trim().eq_ignore_ascii_case("max-age=0"));
            self.jar.retain(|(name, _)| *name != k);
            if !expired {
                if k == "csrftoken" {
                    self.secrets.push((v.clone(), "<csrf cookie secret>"));
                }
                self.jar.push((k, v));
            }
        }
        let text = String::from_utf8_lossy(&resp.body);
        let marker = r#"name="csrfmiddlewaretoken" value=""#;
        if let Some(i) = text.find(marker) {
            let rest = &text[i + marker.len()..];
            let token = rest[..rest.find('"').unwrap_or(rest.len())].to_string();
            self.secrets.push((token.clone(), "<csrf form token>"));
            self.csrf_token = Some(token);
        }
    }

    /// Removes what legitimately differs between two servers running the
    /// same app, so that everything else can compare byte for byte.
    fn normalise(&self, resp: &mut Response) {
        // Django makes the CSRF secret (csrftoken cookie) random per client,
        // and masks the form token with fresh randomness on every response:
        // each server hands out its own. Stand them in by placeholders.
        for (secret, placeholder) in &self.secrets {
            resp.body = replace_bytes(&resp.body, secret.as_bytes(), placeholder.as_bytes());
            for (_, value) in &mut resp.headers {
                *value = value.replace(secret.as_str(), placeholder);
            }
        }
        // A header sent twice reaches the app joined by ", " under corral
        // (RFC 9110's list form, as corral documents) and by "," under
        // gunicorn; the tests' repeated header is X-Custom: one / two.
        let before = resp.body.len();
        resp.body = replace_bytes(&resp.body, b"one, two", b"one,two");
        if resp.body.len() != before {
            for (name, value) in &mut resp.headers {
                if name == "content-length" {
                    *value = resp.body.len().to_string();
                }
            }
        }
        // Werkzeug builds a 405's Allow from a set of method names, whose
        // order follows Python's per-process string hashing: two worker
        // processes of the same server may list them in different orders.
        sort_allow(resp);
    }
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

// ------------------------------------------------------------ comparison

/// Starts both servers on `fw`'s app, sends `reqs` in order to each through
/// its own browser-like client, and fails with a readable diff of every
/// request they answered differently.
fn same_answers(fw: Framework, reqs: &[Req]) {
    let servers = start_servers(fw);
    let mut reference = Client::new(&servers.reference.addr);
    let mut tested = Client::new(&servers.corral.addr);
    assert_same_answers(&servers, reqs, |req| {
        [reference.send(req), tested.send(req)]
    });
}

// ---------------------------------------------------------- request data

pub(crate) const FORM_TYPE: &str = "application/x-www-form-urlencoded";
const BOUNDARY: &str = "----corral-test-boundary-7MA4YWxkTrZu0gW";

/// A urlencoded form with repeated keys, `+` for space, percent-encoded
/// UTF-8, an escaped `&` and an empty value.
const FORM_BODY: &str = "name=Ada+Lovelace&lang=fr&lang=en&note=caf%C3%A9+%26+cr%C3%A8me&empty=";

const JSON_BODY: &str =
    r#"{"numbers": [1, 2, 3], "text": "naïve ✓", "nested": {"a": null, "b": [true, false]}}"#;

pub(crate) enum Part<'a> {
    Field(&'a str, &'a str),
    File(&'a str, &'a str, &'a str, &'a [u8]),
}

pub(crate) fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Field(name, value) => {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                out.extend_from_slice(value.as_bytes());
            }
            Part::File(name, filename, content_type, data) => {
                out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(data);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// A multipart upload to `path`: a non-ASCII text field, a small text
/// file and a file of `big` bytes of [`binary`](crate::common::compare::binary),
/// which the apps answer with 200 and the files' names.
pub(crate) fn file_uploads(label: &'static str, path: &str, big: usize) -> Req {
    let body = multipart(&[
        Part::Field("title", "Résumé ✓"),
        Part::File("doc", "notes.txt", "text/plain", b"first\nsecond\n"),
        Part::File(
            "doc",
            "big.bin",
            "application/octet-stream",
            &crate::common::compare::binary(big),
        ),
    ]);
    Req::post(label, path, &multipart_type(), body).expect(200, "big.bin")
}

pub(crate) fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// Deterministic bytes covering every byte value, CR/LF pairs and runs of
/// dashes (which a multipart parser must not mistake for a boundary).
fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|i| match i % 997 {
            0 => b'\r',
            1 => b'\n',
            2..=5 => b'-',
            _ => {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            }
        })
        .collect()
}

/// The form, JSON and upload requests; `slash` ends each path ("" for Flask's
/// routes, "/" suffix for Django's).
fn upload_requests(slash: &str) -> Vec<Req> {
    let small = binary(3000);
    let large = binary((1 << 20) + 123);
    let text_file = "first line\nsecond line, naïve ✓\n".as_bytes();
    vec![
        Req::post(
            "form post, urlencoded",
            &format!("/form{slash}"),
            FORM_TYPE,
            FORM_BODY,
        )
        .expect(200, "Ada Lovelace"),
        Req::post(
            "form post with a charset in the content type",
            &format!("/form{slash}"),
            "application/x-www-form-urlencoded; charset=utf-8",
            "a=1&b=%E2%9C%93",
        )
        .expect(200, "\"b\""),
        Req::post(
            "multipart: fields and two files in one field",
            &format!("/upload{slash}"),
            &multipart_type(),
            multipart(&[
                Part::Field("title", "Résumé ✓"),
                Part::File("doc", "notes.txt", "text/plain", text_file),
                Part::File("doc", "data.bin", "application/octet-stream", &small),
                Part::Field("tags", "a"),
                Part::Field("tags", "b"),
            ]),
        )
        .expect(200, "notes.txt"),
        Req::post(
            "multipart: a 1 MiB file (the body streams past the inline part)",
            &format!("/upload{slash}"),
            &multipart_type(),
            multipart(&[
                Part::Field("title", "big"),
                Part::File("doc", "big.bin", "application/octet-stream", &large),
            ]),
        )
        .expect(200, "1048699"),
        Req::post(
            "multipart: an empty file",
            &format!("/upload{slash}"),
            &multipart_type(),
            multipart(&[Part::File("doc", "empty.txt", "text/plain", b"")]),
        )
        .expect(200, "empty.txt"),
        Req::post("JSON body", &format!("/json{slash}"), JSON_TYPE, JSON_BODY)
            .expect(200, "numbers"),
        Req::post(
            "post/redirect/get",
            &format!("/after-post{slash}"),
            FORM_TYPE,
            "name=Ada",
        )
        .expect(303, ""),
    ]
}

// ----------------------------------------------------------------- Flask

#[test]
fn flask_routes_query_strings_and_json() {
    same_answers(
        Framework::Flask,
        &[
            Req::get("index", "/").expect(200, "Hello from Flask"),
            Req::new("HEAD of the index", "HEAD", "/").expect(200, ""),
            Req::get(
                "percent-encoded UTF-8 in the path",
                "/hello/caf%C3%A9%20au%20lait",
            )
            .expect(200, "café au lait"),
            Req::get(
                "query string: repeated keys, UTF-8, plus, empty value",
                "/search?q=caf%C3%A9&tag=a&tag=b&plus=1+2&empty=&flag",
            )
            .expect(200, r#""tag":["a","b"]"#),
            Req::get("no query string", "/search").expect(200, "query_string"),
            Req::get("JSON", "/json").expect(200, r#""name":"corral""#),
            Req::get("the app's own reason phrase", "/custom-status").expect(299, "custom reason"),
            Req::get("status 418 with an extra header", "/teapot").expect(418, "short and stout"),
            Req::get("streamed body of unknown length", "/stream").expect(200, "line 4\n"),
        ],
    );
}

#[test]
fn flask_form_posts_json_and_file_uploads() {
    same_answers(Framework::Flask, &upload_requests(""));
}

#[test]
fn flask_redirects_and_cookies() {
    same_answers(
        Framework::Flask,
        &[
            Req::get("redirect to a path", "/redirect").expect(302, "/target"),
            Req::get(
                "redirect to an absolute URL built from Host",
                "/redirect/external",
            )
            .header("Host", "example.test:8080")
            .expect(302, "http://example.test:8080/target"),
            Req::get("permanent redirect with a query", "/redirect/permanent")
                .expect(301, "/search?"),
            Req::get("set two cookies", "/cookies/set").expect(200, "cookies set"),
            Req::get("the cookies come back", "/cookies").expect(200, "oatmeal raisin"),
            Req::get("delete a cookie", "/cookies/clear").expect(200, "cookie cleared"),
            Req::get("the deleted cookie is gone", "/cookies").expect(200, "flavour"),
            Req::get("a cookie the client made up", "/cookies")
                .without_cookies()
                .header("Cookie", "a=1; b=\"two words\"; c=%E2%9C%93")
                .expect(200, "two words"),
        ],
    );
}

#[test]
fn flask_error_pages() {
    same_answers(
        Framework::Flask,
        &[
            Req::get("404 page", "/no/such/page").expect(404, "Not Found"),
            Req::get("500 page: the view raises", "/boom").expect(500, "Internal Server Error"),
            Req::get("405 page with Allow", "/form").expect(405, "Method Not Allowed"),
            Req::post("405 page for a POST", "/", FORM_TYPE, "a=1")
                .expect(405, "Method Not Allowed"),
            Req::get("the app still serves after a 500", "/").expect(200, "Hello from Flask"),
        ],
    );
}

/// Request headers reach the app as gunicorn hands them over.
#[test]
fn flask_sees_request_headers_as_under_gunicorn() {
    same_answers(
        Framework::Flask,
        &[
            Req::get("Host, User-Agent and a custom header", "/headers?x=1")
                .header("Host", "example.test:8080")
                .header("User-Agent", "corral-tests/1.0")
                .header("X-Custom", "one")
                .expect(200, "example.test:8080"),
            Req::get("a repeated header", "/headers")
                .header("X-Custom", "one")
                .header("X-Custom", "two")
                .expect(200, "two"),
        ],
    );
}

/// A request body sent in chunks (no Content-Length) reaches the app.
#[test]
fn flask_reads_chunked_request_bodies() {
    let big = binary(200_000);
    same_answers(
        Framework::Flask,
        &[
            Req::post(
                "chunked raw body",
                "/echo",
                "application/octet-stream",
                chunked(b"hello, chunked world", 7),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(200, "\"size\":20"),
            Req::post(
                "chunked 200 kB body",
                "/echo",
                "application/octet-stream",
                chunked(&big, 16384),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(200, "\"size\":200000"),
            Req::post(
                "chunked form post",
                "/form",
                FORM_TYPE,
                chunked(FORM_BODY.as_bytes(), 10),
            )
            .header("Transfer-Encoding", "chunked")
            .expect(200, "Ada Lovelace"),
        ],
    );
}

// ---------------------------------------------------------------- Django

#[test]
fn django_routes_query_strings_and_json() {
    same_answers(
        Framework::Django,
        &[
            Req::get("index", "/").expect(200, "Hello from Django"),
            Req::new("HEAD of the index", "HEAD", "/").expect(200, ""),
            Req::get(
                "percent-encoded UTF-8 in the path",
                "/hello/caf%C3%A9%20au%20lait/",
            )
            .expect(200, "café au lait"),
            Req::get(
                "query string: repeated keys, UTF-8, plus, empty value",
                "/search/?q=caf%C3%A9&tag=a&tag=b&plus=1+2&empty=&flag",
            )
            .expect(200, r#""tag": ["a", "b"]"#),
            Req::get("no query string", "/search/").expect(200, "query_string"),
            Req::get("JSON", "/json/").expect(200, r#""name": "corral""#),
            Req::get("the app's own reason phrase", "/custom-status/").expect(299, "custom reason"),
            Req::get("streamed body of unknown length", "/stream/").expect(200, "line 4\n"),
        ],
    );
}

#[test]
fn django_form_posts_json_and_file_uploads() {
    same_answers(Framework::Django, &upload_requests("/"));
}

#[test]
fn django_csrf_protected_form() {
    same_answers(
        Framework::Django,
        &[
            Req::get("a form with a CSRF token and cookie", "/csrf-form/")
                .expect(200, "csrfmiddlewaretoken"),
            Req::post(
                "post with the cookie and the form token",
                "/csrf-form/",
                FORM_TYPE,
                format!("csrfmiddlewaretoken={CSRF}&name=Ada"),
            )
            .expect(200, "Thanks, Ada!"),
            Req::post(
                "post with the token in X-CSRFToken",
                "/csrf-form/",
                FORM_TYPE,
                "name=Grace",
            )
            .header("X-CSRFToken", CSRF)
            .expect(200, "Thanks, Grace!"),
            Req::post(
                "post without the token",
                "/csrf-form/",
                FORM_TYPE,
                "name=Mallory",
            )
            .expect(403, "Forbidden"),
            Req::post(
                "post with the token but without the cookie",
                "/csrf-form/",
                FORM_TYPE,
                format!("csrfmiddlewaretoken={CSRF}&name=Eve"),
            )
            .without_cookies()
            .expect(403, "Forbidden"),
        ],
    );
}

#[test]
fn django_redirects_and_cookies() {
    same_answers(
        Framework::Django,
        &[
            Req::get("redirect to a path", "/redirect/").expect(302, ""),
            Req::get(
                "redirect to an absolute URL built from Host",
                "/redirect/external/",
            )
            .header("Host", "example.test:8080")
            .expect(302, ""),
            Req::get("permanent redirect with a query", "/redirect/permanent/").expect(301, ""),
            Req::get("APPEND_SLASH redirect", "/target?x=1").expect(301, ""),
            Req::get("set two cookies", "/cookies/set/").expect(200, "cookies set"),
            Req::get("the cookies come back", "/cookies/").expect(200, "oatmeal raisin"),
            Req::get("delete a cookie", "/cookies/clear/").expect(200, "cookie cleared"),
            Req::get("the deleted cookie is gone", "/cookies/").expect(200, "flavour"),
            Req::get("a cookie the client made up", "/cookies/")
                .without_cookies()
                .header("Cookie", "a=1; b=\"two words\"; c=%E2%9C%93")
                .expect(200, "two words"),
        ],
    );
}

#[test]
fn django_error_pages() {
    same_answers(
        Framework::Django,
        &[
            Req::get("404 page", "/no/such/page/").expect(404, "Not Found"),
            Req::get("500 page: the view raises", "/boom/").expect(500, "Server Error (500)"),
            Req::get("405 with Allow", "/form/").expect(405, ""),
            Req::get("the app still serves after a 500", "/").expect(200, "Hello from Django"),
        ],
    );
}

#[test]
fn django_sees_request_headers_as_under_gunicorn() {
    same_answers(
        Framework::Django,
        &[
            Req::get("Host, User-Agent and a custom header", "/headers/?x=1")
                .header("Host", "example.test:8080")
                .header("User-Agent", "corral-tests/1.0")
                .header("X-Custom", "one")
                .expect(200, "example.test:8080"),
            Req::get("a repeated header", "/headers/")
                .header("X-Custom", "one")
                .header("X-Custom", "two")
                .expect(200, "two"),
        ],
    );
}

/// Django reads only CONTENT_LENGTH bytes of a WSGI body, so a chunked body
/// reaches it empty under any WSGI server; corral must match that too.
#[test]
fn django_chunked_request_bodies_as_under_gunicorn() {
    same_answers(
        Framework::Django,
        &[Req::post(
            "chunked raw body",
            "/echo/",
            "application/octet-stream",
            chunked(b"hello, chunked world", 7),
        )
        .header("Transfer-Encoding", "chunked")
        .expect(200, "\"size\"")],
    );
}
