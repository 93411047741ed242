//! WebSockets on ASGI apps, seen from a real WebSocket client: the
//! handshake (scope, subprotocols, refusals), messages both ways, close
//! codes both ways, many sockets on two workers, a worker that dies, and
//! corral stopping or reloading with sockets open.

use crate::common::*;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as Handshake;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One app for every test; the first path segment picks the behaviour.
/// What the app saw when a socket ended goes to `events/<tag>`, `tag`
/// coming from the query string.
const APP: &str = r#"
import json, os
from urllib.parse import parse_qs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOM = []  # the send callables of this worker's open /chat sockets


def record(scope, text):
    tag = parse_qs(scope["query_string"].decode()).get("tag", [None])[0]
    if tag is None:
        return
    os.makedirs(os.path.join(HERE, "events"), exist_ok=True)
    path = os.path.join(HERE, "events", tag)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def hello(scope):
    return json.dumps({
        "pid": os.getpid(),
        "type": scope["type"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "subprotocols": scope["subprotocols"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    })


async def echo(scope, receive, send):
    chosen = "chat.v2" if "chat.v2" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": chosen,
                "headers": [(b"x-accepted-by", b"echo"), (b"set-cookie", b"seen=1")]})
    await send({"type": "websocket.send", "text": hello(scope)})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            record(scope, "%d %s" % (m["code"], m.get("reason") or ""))
            return
        text = m.get("text")
        if text == "die":
            os._exit(1)
        if text == "interrupt":
            raise KeyboardInterrupt("raised by the app")
        if text == "close":
            await send({"type": "websocket.close", "code": 4001, "reason": "au revoir ✓"})
            return
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def chat(scope, receive, send):
    await send({"type": "websocket.accept"})
    ROOM.append(send)
    try:
        await send({"type": "websocket.send", "text": json.dumps({"pid": os.getpid()})})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            for member in list(ROOM):
                try:
                    await member({"type": "websocket.send", "text": m["text"]})
                except Exception:
                    pass  # that member left meanwhile
    finally:
        ROOM.remove(send)


async def forbid(scope, receive, send):
    await send({"type": "websocket.close"})


async def deny(scope, receive, send):
    await send({"type": "websocket.http.response.start", "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
    await send({"type": "websocket.http.response.body", "body": b"no token", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b", no socket"})


async def flood(scope, receive, send):
    # Sends N messages while it receives N: both directions full at once.
    import asyncio
    n = int(scope["query_string"].decode())
    await send({"type": "websocket.accept"})
    async def out():
        for _ in range(n):
            await send({"type": "websocket.send", "bytes": b"o" * 65536})
    sender = asyncio.ensure_future(out())
    got = 0
    while got < n * 65536:
        m = await receive()
        assert m["type"] == "websocket.receive", m
        got += len(m["bytes"])
    await sender
    await send({"type": "websocket.send", "text": "got %d" % got})


async def ext(scope, receive, send):
    # Claims an extension corral does not speak.
    await send({"type": "websocket.accept",
                "headers": [(b"sec-websocket-extensions", b"permessage-deflate")]})
    await send({"type": "websocket.send", "text": "plain"})


ROUTES = {"echo": echo, "chat": chat, "forbid": forbid, "deny": deny, "flood": flood,
          "ext": ext}


async def app(scope, receive, send):
    if scope["type"] == "http":
        body = b"plain http from %d" % os.getpid()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] != "websocket":
        return  # lifespan: not used
    assert (await receive())["type"] == "websocket.connect"
    await ROUTES[scope["path"].split("/")[1]](scope, receive, send)
"#;

/// The longest any single step may take.
const STEP: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Awaits `fut` for at most [`STEP`]; a test never hangs.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn start(workers: usize, extra: &[&str]) -> (AppDir, Corral) {
    let dir = AppDir::new(&[("app.py", APP)]);
    let n = workers.to_string();
    let mut args = vec!["app:app", "-w", &n];
    args.extend_from_slice(extra);
    let c = Corral::start(dir.path(), &args, workers);
    (dir, c)
}

/// Opens a WebSocket to `path` with extra request headers.
async fn handshake(
    c: &Corral,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, Handshake), WsError> {
    let mut req = format!("ws://{}{path}", c.addr)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    within(
        &format!("handshake for {path}"),
        tokio_tungstenite::connect_async(req),
    )
    .await
}

/// Opens a WebSocket to `path`, which must be accepted.
async fn connect(c: &Corral, path: &str) -> Ws {
    match handshake(c, path, &[]).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!("handshake for {path} failed: {e}; log:\n{}", c.log.text()),
    }
}

/// The HTTP response that refused a handshake for `path`.
async fn refused(c: &Corral, path: &str) -> Handshake {
    match handshake(c, path, &[]).await {
        Err(WsError::Http(resp)) => *resp,
        Err(e) => panic!("handshake for {path}: expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("handshake for {path} was accepted"),
    }
}

/// The next data or close message (tungstenite answers pings itself).
async fn next(ws: &mut Ws) -> Message {
    loop {
        match within("the next message", ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return m,
            Some(Err(e)) => panic!("reading a message failed: {e}"),
            None => panic!("the socket ended without a close frame"),
        }
    }
}

async fn send(ws: &mut Ws, msg: Message) {
    within("sending a message", ws.send(msg))
        .await
        .expect("send");
}

async fn expect_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Message::Text(t) => t.to_string(),
        m => panic!("expected a text message, got {m:?}"),
    }
}

async fn expect_binary(ws: &mut Ws) -> Vec<u8> {
    match next(ws).await {
        Message::Binary(b) => b.to_vec(),
        m => panic!("expected a binary message, got {m:?}"),
    }
}

/// The code and reason of the server's close frame.
async fn expect_close(ws: &mut Ws) -> (u16, String) {
    match next(ws).await {
        Message::Close(Some(f)) => (u16::from(f.code), f.reason.to_string()),
        m => panic!("expected a close frame with a code, got {m:?}"),
    }
}

/// The app's first message on /echo and /chat: its pid and the scope.
async fn hello(ws: &mut Ws) -> serde_json::Value {
    serde_json::from_str(&expect_text(ws).await).expect("hello is JSON")
}

fn pid_of(hello: &serde_json::Value) -> u32 {
    let pid = hello["pid"].as_u64().expect("hello has a pid");
    u32::try_from(pid).unwrap()
}

/// What the app recorded at `events/<tag>` when that socket ended.
async fn event(dir: &AppDir, tag: &str) -> String {
    let path = dir.path().join("events").join(tag);
    within(&format!("the app to record {tag}"), async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The request headers of a WebSocket handshake for version `version`.
fn raw_handshake(version: &str) -> [(&'static str, &str); 4] {
    [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", version),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_text_and_binary_with_the_scope_the_app_sees() {
    let (_dir, c) = start(2, &[]);
    let (mut ws, _) = handshake(
        &c,
        "/echo/caf%C3%A9?tag=scope&x=%20y",
        &[("X-Test", "hello there")],
    )
    .await
    .expect("accepted");
    let h = hello(&mut ws).await;
    assert_eq!(h["type"], "websocket");
    assert_eq!(h["scheme"], "ws");
    assert_eq!(h["path"], "/echo/café");
    assert_eq!(h["raw_path"], "/echo/caf%C3%A9");
    assert_eq!(h["query_string"], "tag=scope&x=%20y");
    assert_eq!(h["subprotocols"], serde_json::json!([]));
    let headers = h["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["x-test", "hello there"])),
        "scope headers: {headers:?}"
    );
    assert!(headers.contains(&serde_json::json!(["upgrade", "websocket"])));

    for text in ["héllo", "{\"json\": true}", &"long ".repeat(20_000)] {
        send(&mut ws, Message::text(text)).await;
        assert_eq!(expect_text(&mut ws).await, text);
    }
    let small = vec![0u8, 1, 2, 255];
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    for data in [small, big] {
        send(&mut ws, Message::binary(data.clone())).await;
        let back = expect_binary(&mut ws).await;
        assert!(back == data, "{} bytes came back wrong", data.len());
    }
    send(&mut ws, Message::Ping("are you there".into())).await;
    let pong = within("a pong", ws.next()).await;
    assert!(
        matches!(&pong, Some(Ok(Message::Pong(p))) if p == "are you there"),
        "expected the pong, got {pong:?}"
    );
    send(&mut ws, Message::Close(None)).await;
    assert_eq!(next(&mut ws).await, Message::Close(None));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_megabyte_of_non_ascii_text_keeps_flowing() {
    let (_dir, c) = start(1, &[]);
    let mut ws = connect(&c, "/echo").await;
    hello(&mut ws).await;
    // 32 KiB of UTF-8 each, 16 Ki characters: credit must count bytes.
    let text = "é".repeat(16 * 1024);
    for i in 0..32 {
        send(&mut ws, Message::text(text.as_str())).await;
        let back = tokio::time::timeout(Duration::from_secs(5), next(&mut ws))
            .await
            .unwrap_or_else(|_| panic!("message {i} of 32 KiB never came back"));
        assert!(matches!(back, Message::Text(t) if t == text.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_picks_a_subprotocol_and_adds_headers_to_the_101() {
    let (_dir, c) = start(2, &[]);
    let (mut ws, resp) = handshake(
        &c,
        "/echo",
        &[("Sec-WebSocket-Protocol", "chat.v1, chat.v2")],
    )
    .await
    .expect("accepted");
    assert_eq!(resp.status(), 101);
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap());
    assert_eq!(header("sec-websocket-protocol"), Some("chat.v2"));
    assert_eq!(header("x-accepted-by"), Some("echo"));
    assert_eq!(header("set-cookie"), Some("seen=1"));
    let h = hello(&mut ws).await;
    assert_eq!(h["subprotocols"], serde_json::json!(["chat.v1", "chat.v2"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_refuses_with_403_or_its_own_denial_response() {
    let (_dir, c) = start(2, &[]);
    let resp = refused(&c, "/forbid").await;
    assert_eq!(resp.status(), 403);

    let resp = refused(&c, "/deny").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    // The whole body, read by a plain HTTP client (tungstenite keeps only
    // what came with the head).
    let r = request(&c.addr, "GET", "/deny", &raw_handshake("13"), b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.text(), "no token, no socket");
}

#[tokio::test(flavor = "multi_thread")]
async fn close_codes_and_reasons_reach_the_other_side() {
    let (dir, c) = start(2, &[]);
    let mut ws = connect(&c, "/echo").await;
    hello(&mut ws).await;
    send(&mut ws, Message::text("close")).await;
    assert_eq!(expect_close(&mut ws).await, (4001, "au revoir ✓".into()));

    let mut ws = connect(&c, "/echo?tag=client-closed").await;
    hello(&mut ws).await;
    let frame = CloseFrame {
        code: CloseCode::from(4002),
        reason: "client done ✓".into(),
    };
    send(&mut ws, Message::Close(Some(frame))).await;
    // corral answers the close (echoing the code, as RFC 6455 suggests).
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 4002);
    assert_eq!(event(&dir, "client-closed").await, "4002 client done ✓");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_vanishes_without_a_close_frame_disconnects_the_app() {
    let (dir, c) = start(2, &[]);
    let mut ws = connect(&c, "/echo?tag=vanished").await;
    hello(&mut ws).await;
    drop(ws); // closes the TCP connection, no close frame
    assert_eq!(event(&dir, "vanished").await, "1006 ");
    // The worker's place is free again: a new socket works.
    let mut ws = connect(&c, "/echo").await;
    hello(&mut ws).await;
}

/// One chat client: sends `rounds` numbered messages, then reads until it
/// has every message of every member of its worker's room.
async fn chat_member(
    mut ws: Ws,
    me: usize,
    room: HashSet<usize>,
    rounds: usize,
) -> Result<(), String> {
    for seq in 0..rounds {
        send(&mut ws, Message::text(format!("{me} {seq}"))).await;
    }
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for _ in 0..room.len() * rounds {
        let text = expect_text(&mut ws).await;
        let (from, seq) = text.split_once(' ').unwrap();
        let (from, seq): (usize, usize) = (from.parse().unwrap(), seq.parse().unwrap());
        if !room.contains(&from) {
            return Err(format!("socket {me} got {text:?} from another room"));
        }
        let expected = seen.entry(from).or_default();
        if seq != *expected {
            return Err(format!("socket {me} got {text:?}, expected seq {expected}"));
        }
        *expected += 1;
    }
    send(&mut ws, Message::Close(None)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_rooms_with_200_sockets_on_two_workers() {
    const SOCKETS: usize = 200;
    const ROUNDS: usize = 4;
    let (_dir, c) = start(2, &[]);
    let joined = futures_util::future::join_all((0..SOCKETS).map(|_| async {
        let mut ws = connect(&c, "/chat").await;
        let pid = pid_of(&hello(&mut ws).await);
        (ws, pid)
    }))
    .await;
    // Everyone is in a room before anyone speaks.
    let mut rooms: BTreeMap<u32, HashSet<usize>> = BTreeMap::new();
    for (i, (_, pid)) in joined.iter().enumerate() {
        rooms.entry(*pid).or_default().insert(i);
    }
    assert_eq!(rooms.len(), 2, "both workers hold sockets: {rooms:?}");
    let tasks: Vec<_> = joined
        .into_iter()
        .enumerate()
        .map(|(i, (ws, pid))| tokio::spawn(chat_member(ws, i, rooms[&pid].clone(), ROUNDS)))
        .collect();
    for t in tasks {
        within("a chat member", t).await.unwrap().unwrap();
    }
}

/// WebSockets opened one at a time, as users arrive, spread over the
/// workers: each holds its worker for its life, so one worker holding
/// them all would do all their work while the other idles. (They all went
/// to one: the front shard that accepted each counted it only until the
/// upgrade, so every new one found the shards even and stayed where it
/// was accepted, with that shard's worker.)
#[tokio::test(flavor = "multi_thread")]
async fn websockets_opened_one_at_a_time_spread_over_the_workers() {
    const SOCKETS: usize = 20;
    for workers in [2, 4] {
        let (_dir, c) = start(workers, &[]);
        let mut open = Vec::new();
        let mut per_worker: BTreeMap<u32, usize> = BTreeMap::new();
        for _ in 0..SOCKETS {
            let mut ws = connect(&c, "/chat").await;
            *per_worker.entry(pid_of(&hello(&mut ws).await)).or_default() += 1;
            open.push(ws);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        // Even, within one: the shards' counts differ by two at most,
        // and each shard's workers share its sockets.
        let even = SOCKETS / workers;
        assert!(
            per_worker.len() == workers && per_worker.values().all(|&n| n + 1 >= even),
            "{workers} workers: {per_worker:?}"
        );
        for mut ws in open {
            send(&mut ws, Message::Close(None)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_raising_keyboard_interrupt_closes_its_socket_with_1011_and_the_worker_serves_on() {
    // Any exception of the app's, one that is no Exception too, closes
    // its socket alone with its traceback logged; KeyboardInterrupt ended
    // the worker and every socket on it.
    let (_dir, c) = start(1, &[]);
    let mut ws = connect(&c, "/echo").await;
    let pid = pid_of(&hello(&mut ws).await);
    let mut beside = connect(&c, "/echo").await;
    hello(&mut beside).await;
    send(&mut ws, Message::text("interrupt")).await;
    assert_eq!(expect_close(&mut ws).await.0, 1011);
    let logged = c.log.wait_for("KeyboardInterrupt: raised by the app", STEP);
    assert!(logged.is_some(), "{}", c.log.text());
    send(&mut beside, Message::text("still here")).await;
    assert_eq!(expect_text(&mut beside).await, "still here");
    let mut again = connect(&c, "/echo").await;
    assert_eq!(pid_of(&hello(&mut again).await), pid, "the same worker");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_dies_closes_its_sockets_with_1011_and_is_replaced() {
    let (_dir, c) = start(1, &[]);
    let mut ws = connect(&c, "/echo").await;
    let dead = pid_of(&hello(&mut ws).await);
    send(&mut ws, Message::text("die")).await;
    assert_eq!(expect_close(&mut ws).await.0, 1011);

    let deadline = Instant::now() + STEP;
    let pid = loop {
        // 503 until the replacement is in service.
        if let Ok((mut ws, _)) = handshake(&c, "/echo", &[]).await {
            let pid = pid_of(&hello(&mut ws).await);
            send(&mut ws, Message::text("still here")).await;
            assert_eq!(expect_text(&mut ws).await, "still here");
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no new worker; log:\n{}",
            c.log.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(pid, dead, "a new worker serves the new socket");
}

/// Opens `n` sockets on /echo tagged `<prefix>-<i>`; returns them and the
/// pid of the worker that holds each.
async fn open_echoes(c: &Corral, prefix: &str, n: usize) -> (Vec<Ws>, Vec<u32>) {
    let mut sockets = Vec::new();
    let mut pids = Vec::new();
    for i in 0..n {
        let mut ws = connect(c, &format!("/echo?tag={prefix}-{i}")).await;
        pids.push(pid_of(&hello(&mut ws).await));
        sockets.push(ws);
    }
    (sockets, pids)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_sockets_with_1001_and_corral_exits_0() {
    let (dir, mut c) = start(2, &["--graceful-timeout", "10s"]);
    let (mut sockets, _) = open_echoes(&c, "term", 4).await;
    let stopped = Instant::now();
    c.signal(libc::SIGTERM);
    for ws in &mut sockets {
        assert_eq!(expect_close(ws).await.0, 1001);
    }
    let status = c
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("corral still runs; log:\n{}", c.log.text()));
    assert_eq!(status.code(), Some(0), "log:\n{}", c.log.text());
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}, past the graceful timeout"
    );
    for i in 0..sockets.len() {
        let seen = event(&dir, &format!("term-{i}")).await;
        assert!(seen.starts_with("1001"), "the app saw {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_closes_the_old_generations_sockets_with_1001_and_new_ones_work() {
    let (dir, c) = start(2, &["--graceful-timeout", "10s"]);
    let (mut old, old_pids) = open_echoes(&c, "old", 4).await;
    c.signal(libc::SIGHUP);
    assert!(
        c.log
            .wait_for("reload done: generation 2 is in service", STEP)
            .is_some(),
        "no reload; log:\n{}",
        c.log.text()
    );
    for (i, ws) in old.iter_mut().enumerate() {
        assert_eq!(expect_close(ws).await.0, 1001);
        let seen = event(&dir, &format!("old-{i}")).await;
        assert!(seen.starts_with("1001"), "the app saw {seen:?}");
    }
    assert!(wait_gone(&old_pids, STEP), "the old generation drained");
    let mut ws = connect(&c, "/echo").await;
    let pid = pid_of(&hello(&mut ws).await);
    assert!(!old_pids.contains(&pid), "the new generation serves it");
    send(&mut ws, Message::text("after reload")).await;
    assert_eq!(expect_text(&mut ws).await, "after reload");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_works_beside_sockets_and_bad_versions_get_426() {
    let (_dir, c) = start(2, &[]);
    let mut ws = connect(&c, "/echo").await;
    hello(&mut ws).await;
    let r = c.get("/echo");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("plain http from "), "{}", r.text());
    send(&mut ws, Message::text("still open")).await;
    assert_eq!(expect_text(&mut ws).await, "still open");

    let r = request(&c.addr, "GET", "/echo", &raw_handshake("8"), b"");
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_writes_before_it_reads_does_not_wedge_the_socket() {
    let (_dir, c) = start(1, &[]);
    // 32 MiB each way, more than the kernel buffers on the way hold: corral
    // must keep reading the client while the client is not reading yet.
    const N: usize = 512;
    let mut ws = connect(&c, &format!("/flood?{N}")).await;
    for _ in 0..N {
        send(&mut ws, Message::Binary(vec![b'i'; 65536].into())).await;
    }
    for _ in 0..N {
        assert_eq!(expect_binary(&mut ws).await.len(), 65536);
    }
    assert_eq!(expect_text(&mut ws).await, format!("got {}", N * 65536));
}

/// Opens /echo with client limits above corral's, so only corral's own
/// 16 MiB limit can show.
async fn connect_big(c: &Corral, path: &str) -> Ws {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) = within(
        "handshake",
        tokio_tungstenite::connect_async_with_config(
            format!("ws://{}{path}", c.addr),
            Some(config),
            false,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("handshake for {path} failed: {e}"));
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_up_to_16_mib_pass_and_a_bigger_one_closes_with_1009() {
    let (dir, c) = start(1, &[]);
    let mut ws = connect_big(&c, "/echo?tag=big").await;
    hello(&mut ws).await;
    // Exactly 16 MiB each way, bytes and text.
    let bytes: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    send(&mut ws, Message::binary(bytes.clone())).await;
    assert!(expect_binary(&mut ws).await == bytes, "16 MiB of bytes");
    let text = "é".repeat(8 << 20);
    send(&mut ws, Message::text(text.as_str())).await;
    assert!(expect_text(&mut ws).await == text, "16 MiB of text");
    // One byte more: corral closes with 1009, and the app is told so. The
    // last byte comes in a continuation frame, so the client has written
    // everything when corral closes (a close while a big frame is still
    // coming in would reset the connection before the client reads 1009).
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let first = Frame::message(bytes, OpCode::Data(Data::Binary), false);
    send(&mut ws, Message::Frame(first)).await;
    let last = Frame::message(vec![0u8], OpCode::Data(Data::Continue), true);
    send(&mut ws, Message::Frame(last)).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    let seen = event(&dir, "big").await;
    assert!(seen.starts_with("1009"), "the app saw {seen:?}");
}

/// A stop by `how` closes every open socket with 1001 and corral exits 0.
async fn a_stop_closes_sockets_with_1001(how: &str) {
    let (dir, mut c) = start(2, &["--graceful-timeout", "10s"]);
    let (mut sockets, _) = open_echoes(&c, how, 3).await;
    match how {
        "int" => c.signal(libc::SIGINT),
        "quit" => c.signal(libc::SIGQUIT),
        _ => {
            let out = std::process::Command::new(corral_bin())
                .arg("stop")
                .arg("--socket")
                .arg(&c.socket)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }
    for ws in &mut sockets {
        assert_eq!(expect_close(ws).await.0, 1001, "{how}");
    }
    let status = c
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("corral still runs; log:\n{}", c.log.text()));
    assert_eq!(status.code(), Some(0), "log:\n{}", c.log.text());
    if how == "stop" {
        // A graceful stop lets the app see the close (INT and QUIT stop
        // the workers at once).
        for i in 0..sockets.len() {
            let seen = event(&dir, &format!("{how}-{i}")).await;
            assert!(seen.starts_with("1001"), "the app saw {seen:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_closes_sockets_with_1001() {
    a_stop_closes_sockets_with_1001("int").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigquit_closes_sockets_with_1001() {
    a_stop_closes_sockets_with_1001("quit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn corral_stop_closes_sockets_with_1001() {
    a_stop_closes_sockets_with_1001("stop").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_socket_is_pinged_every_ws_ping_interval_and_stays_open() {
    let (_dir, c) = start(1, &["--ws-ping-interval", "500ms"]);
    let mut ws = connect(&c, "/echo").await;
    hello(&mut ws).await;
    // Reading answers each ping with a pong (tungstenite does), so the
    // socket lives on past the ping timeout.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(2300) {
        match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("an idle socket got {other:?}"),
        }
    }
    assert!((3..=5).contains(&pings), "{pings} pings in 2.3 s");
    send(&mut ws, Message::text("still here")).await;
    assert_eq!(expect_text(&mut ws).await, "still here");
}

/// A WebSocket client that reads frames but never answers one: a raw
/// handshake on a TCP socket, then bytes read and split into frames.
struct Mute {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Mute {
    async fn connect(c: &Corral, path: &str) -> Mute {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = within("connect", TcpStream::connect(c.addr.as_str()))
            .await
            .expect("connect");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", c.addr);
        for (k, v) in raw_handshake("13") {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = within("the 101", async {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return end + 4;
                }
                let mut chunk = [0u8; 4096];
                let n = tcp.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before the 101");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        Mute { tcp, buf }
    }

    /// The next frame from corral (unmasked): its opcode and payload.
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        within("the next frame", async {
            loop {
                if let Some((opcode, len, start)) = header(&self.buf)
                    && self.buf.len() >= start + len
                {
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return (opcode, payload);
                }
                let mut chunk = [0u8; 4096];
                let n = self.tcp.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the connection ended without a close frame");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
    }
}

/// A frame header's opcode, payload length and header length.
fn header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let opcode = b0 & 0x0f;
    match b1 & 0x7f {
        126 => {
            let len = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]);
            Some((opcode, len as usize, 4))
        }
        127 => panic!("a frame over 64 KiB"),
        len => Some((opcode, len as usize, 2)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_answers_no_ping_is_closed_with_1011_and_its_place_freed() {
    // One socket per worker: the next one only opens once the first is gone.
    let (dir, c) = start(
        1,
        &[
            "--ws-ping-interval",
            "1s",
            "--ws-ping-timeout",
            "1s",
            "--concurrency",
            "1",
        ],
    );
    let mut mute = Mute::connect(&c, "/echo?tag=mute").await;
    let opened = Instant::now();
    let (opcode, _) = mute.frame().await;
    assert_eq!(opcode, 0x1, "the app's hello");
    let (opcode, _) = mute.frame().await;
    assert_eq!(opcode, 0x9, "a ping");
    let pinged = opened.elapsed();
    let (opcode, payload) = mute.frame().await;
    let waited = opened.elapsed();
    assert_eq!(opcode, 0x8, "a close frame");
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    assert_eq!(code, 1011, "{:?}", String::from_utf8_lossy(&payload[2..]));
    // Pinged after ws_ping_interval, closed ws_ping_timeout later.
    assert!(
        pinged >= Duration::from_millis(900),
        "pinged after {pinged:?}"
    );
    assert!(
        (Duration::from_millis(1900)..Duration::from_millis(3500)).contains(&waited),
        "closed after {waited:?}"
    );
    let seen = event(&dir, "mute").await;
    assert!(seen.starts_with("1011"), "the app saw {seen:?}");
    // The worker's only place is free again.
    let mut ws = connect(&c, "/echo").await;
    hello(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_max_message_is_the_largest_client_message_and_one_byte_more_gets_1009() {
    let (dir, c) = start(1, &["--ws-max-message", "1KiB"]);
    let mut ws = connect(&c, "/echo?tag=small").await;
    hello(&mut ws).await;
    send(&mut ws, Message::binary(vec![7u8; 1024])).await;
    assert_eq!(expect_binary(&mut ws).await, vec![7u8; 1024]);
    send(&mut ws, Message::binary(vec![7u8; 1025])).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    let seen = event(&dir, "small").await;
    assert!(seen.starts_with("1009"), "the app saw {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_extension_is_negotiated_even_when_the_app_names_one() {
    let (_dir, c) = start(1, &[]);
    let offer = [("Sec-WebSocket-Extensions", "permessage-deflate")];
    let (mut ws, resp) = handshake(&c, "/ext", &offer)
        .await
        .unwrap_or_else(|e| panic!("handshake failed: {e}"));
    assert!(
        !resp.headers().contains_key("sec-websocket-extensions"),
        "{:?}",
        resp.headers()
    );
    assert_eq!(expect_text(&mut ws).await, "plain");
}

/// A socket holds nothing of a large message once it is through, either
/// way. Before, tungstenite kept a read buffer and a write buffer the size
/// of the largest frame for as long as the socket lived: 12 idle sockets
/// that had each echoed 8 MiB held 208 MiB of corral.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_that_passed_a_large_message_hold_none_of_it_while_they_idle() {
    let (_dir, c) = start(1, &[]);
    let before = rss_kib(c.pid());
    let bytes: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut open = Vec::new();
    for _ in 0..12 {
        let mut ws = connect_big(&c, "/echo").await;
        hello(&mut ws).await;
        send(&mut ws, Message::binary(bytes.clone())).await;
        assert!(expect_binary(&mut ws).await == bytes);
        open.push(ws);
    }
    let grown = rss_kib(c.pid()).saturating_sub(before);
    assert!(
        grown < 48 * 1024,
        "12 idle sockets that each echoed 8 MiB hold {grown} KiB"
    );
    for mut ws in open {
        send(&mut ws, Message::text("still here")).await;
        assert_eq!(expect_text(&mut ws).await, "still here");
    }
}
