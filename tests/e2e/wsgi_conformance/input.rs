//! `wsgi.input`: reading the request body every way an app does.

use super::*;

// ------------------------------------------------------------------ wsgi.input

const INPUT_APP: &str = r#"
import json

def run(mode, inp):
    if mode == "read":
        return [inp.read()]
    if mode == "read_n":
        out = []
        while True:
            c = inp.read(5)
            if not c:
                return out
            out.append(c)
    if mode == "readline":
        out = []
        while True:
            line = inp.readline()
            if not line:
                return out
            out.append(line)
    if mode == "readline_limit":
        out = []
        while True:
            line = inp.readline(4)
            if not line:
                return out
            out.append(line)
    if mode == "readlines":
        return inp.readlines()
    if mode == "iter":
        return [line for line in inp]
    if mode == "mixed":
        out = [inp.read(3), inp.readline(), inp.readline(2), inp.read(4)]
        out += inp.readlines()
        out += [inp.read(), inp.readline(), inp.read(10), inp.read()]
        return out
    raise ValueError(mode)

def app(environ, start_response):
    parts = run(environ["PATH_INFO"].strip("/"), environ["wsgi.input"])
    assert all(type(p) is bytes for p in parts), parts
    data = json.dumps({
        "parts": [p.decode("latin-1") for p in parts],
        "content_length": environ.get("CONTENT_LENGTH"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
"#;

const LINES: &[u8] = b"line one\nline two\n\nlast-no-newline";

/// What each mode of INPUT_APP returns for LINES, as io.BytesIO does.
fn input_expectations() -> Vec<(&'static str, Vec<String>)> {
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let body = std::str::from_utf8(LINES).unwrap();
    let lines = v(&["line one\n", "line two\n", "\n", "last-no-newline"]);
    vec![
        ("read", vec![body.to_string()]),
        (
            "read_n",
            LINES
                .chunks(5)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect(),
        ),
        ("readline", lines.clone()),
        (
            "readline_limit",
            v(&[
                "line", " one", "\n", "line", " two", "\n", "\n", "last", "-no-", "newl", "ine",
            ]),
        ),
        ("readlines", lines.clone()),
        ("iter", lines),
        (
            "mixed",
            v(&[
                "lin",
                "e one\n",
                "li",
                "ne t",
                "wo\n",
                "\n",
                "last-no-newline",
                "",
                "",
                "",
                "",
            ]),
        ),
    ]
}

#[test]
fn wsgi_input_reads_a_content_length_body_every_way() {
    let s = Server::start(INPUT_APP, &[]);
    for (mode, want) in input_expectations() {
        let r = request(s.addr(), "POST", &format!("/{mode}"), &[], LINES);
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let got = r.json();
        assert_eq!(strings(&got["parts"]), want, "wsgi.input {mode}");
        assert_eq!(got["content_length"], Value::from(LINES.len().to_string()));
    }
}

#[test]
fn wsgi_input_reads_a_chunked_body_dechunked_every_way() {
    let s = Server::start(INPUT_APP, &[]);
    for (mode, want) in input_expectations() {
        let mut req = format!(
            "POST /{mode} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&chunked(LINES, 3));
        let r = s.raw(&req, false);
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let got = r.json();
        assert_eq!(strings(&got["parts"]), want, "chunked wsgi.input {mode}");
        assert!(
            got["content_length"].is_null() || got["content_length"] == "",
            "a chunked request has no CONTENT_LENGTH: {:?}",
            got["content_length"]
        );
    }
}

#[test]
fn wsgi_input_readline_waits_for_slowly_arriving_chunks() {
    let s = Server::start(INPUT_APP, &[]);
    let mut r = s.connect();
    r.get_mut()
        .write_all(
            b"POST /readline HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    for piece in LINES.chunks(4) {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(piece);
        c.extend_from_slice(b"\r\n");
        r.get_mut().write_all(&c).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    r.get_mut().write_all(b"0\r\n\r\n").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        strings(&resp.json()["parts"]),
        ["line one\n", "line two\n", "\n", "last-no-newline"]
    );
}

#[test]
fn a_5_mib_body_is_echoed_intact_with_content_length_and_chunked() {
    let s = Server::start(ECHO_APP, &[]);
    let body = big_body(5 * 1024 * 1024);
    for path in ["/read", "/pieces"] {
        let r = request(s.addr(), "POST", path, &[], &body);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body.len(), body.len(), "{path}: echoed length");
        assert!(
            r.body == body,
            "{path}: the echoed body differs from the one sent"
        );
        if path == "/pieces" {
            let reads: usize = r.header("x-reads").unwrap().parse().unwrap();
            assert!(
                reads >= 80,
                "read(65536) returned more than asked? {reads} reads"
            );
        }
    }
    // The same body, chunked in 100000-byte chunks.
    for path in ["/read", "/pieces"] {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&chunked(&body, 100_000));
        let r = s.raw(&req, false);
        assert_eq!(r.status, 200, "chunked {path}");
        assert_eq!(r.body.len(), body.len(), "chunked {path}: echoed length");
        assert!(r.body == body, "chunked {path}: the echoed body differs");
    }
}

#[test]
fn expect_100_continue_gets_the_interim_response_before_the_body_is_sent() {
    let s = Server::start(INPUT_APP, &[]);
    let mut r = s.connect();
    r.get_mut()
        .write_all(
            format!(
                "POST /read HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
                 Expect: 100-continue\r\n\r\n",
                LINES.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let interim = read_response(&mut r, false).expect("an interim response before the body");
    assert_eq!(interim.status, 100, "{interim:?}");
    assert_eq!(interim.version, "HTTP/1.1");
    r.get_mut().write_all(LINES).unwrap();
    let fin = read_response(&mut r, false).expect("the final response");
    assert_eq!(fin.status, 200, "{}", fin.text());
    assert_eq!(
        strings(&fin.json()["parts"]),
        [std::str::from_utf8(LINES).unwrap()]
    );
}

/// Reads its body with a seeded mix of read(n), readline(n), read(),
/// readline() and readlines() (`/mix?SEED`), then does the same on
/// io.BytesIO of what it read; answers what it read and whether every
/// piece was the one BytesIO gives. `/whole` reads the body with one
/// read() and one readline() of a second copy's worth (it has no newline),
/// and answers their lengths.
const MIX_APP: &str = r#"
import io, random

OPS = ("read", "readline")

def pieces(inp, seed):
    r = random.Random(seed)
    out = []
    while True:
        op = r.choice(OPS + ("readlines",) if r.random() < 0.02 else OPS)
        n = r.choice((-1, 0, 1, 7, 4096, 65535, 65536, 65537, 200000))
        got = getattr(inp, op)() if op == "readlines" else getattr(inp, op)(n)
        out.append((op, n, got))
        if not got and n != 0:
            return out

def app(environ, start_response):
    inp = environ["wsgi.input"]
    if environ["PATH_INFO"] == "/whole":
        a = inp.read()
        b = inp.readline()
        body = ("%d %d" % (len(a), len(b))).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    steps = pieces(inp, int(environ["QUERY_STRING"]))
    data = b"".join(b"".join(g) if op == "readlines" else g for op, n, g in steps)
    ref = io.BytesIO(data)
    same = all(
        (ref.readlines() if op == "readlines" else getattr(ref, op)(n)) == g
        for op, n, g in steps
    )
    start_response("200 OK", [("X-Same", str(same)), ("X-Steps", str(len(steps))),
                              ("Content-Length", str(len(data)))])
    return [data]
"#;

#[test]
fn a_streamed_body_reads_every_way_as_bytesio_does() {
    let s = Server::start(MIX_APP, &[]);
    // Lines of every length, some longer than a 64 KiB chunk.
    let mut body = big_body(3 * 1024 * 1024);
    for (i, b) in body.iter_mut().enumerate() {
        if i % 9973 == 0 || (i / 70_000) % 5 == 2 && i % 997 == 0 {
            *b = b'\n';
        }
    }
    for seed in 1..=6 {
        let path = format!("/mix?{seed}");
        let r = request(s.addr(), "POST", &path, &[], &body);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(r.body == body, "{path}: the pieces do not make the body");
        assert_eq!(
            r.header("x-same"),
            Some("True"),
            "{path}: a piece differs from io.BytesIO's ({} steps)",
            r.header("x-steps").unwrap_or("?")
        );
    }
}

/// A body read whole (Django's request.body, Flask's get_data()) costs
/// time in proportion to its size: an 80 MiB upload is served well inside
/// a 15 s timeout (it was quadratic: 40 MB took 8 s, 90 MB hit the 30 s
/// timeout and the worker was killed).
#[test]
fn an_80_mib_body_read_whole_is_served_inside_the_timeout() {
    let s = Server::start(MIX_APP, &["--timeout", "15"]);
    let body = vec![b'x'; 80 << 20];
    let r = request(s.addr(), "POST", "/whole", &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), format!("{} 0", body.len()));
}
