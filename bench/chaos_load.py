"""The load of bench/chaos.py: a small HTTP/1.1 client and a WebSocket client
written over plain sockets (stdlib only, so that every way a request can end
is seen and told apart), and the loops that drive each kind of client.

Every request ends in exactly one outcome class (see CLASSES) and is recorded
with its wall-clock start and end, the worker pid that answered (the
X-Worker-Pid header of the chaos apps) and what the client saw, so that
chaos.py can hold each failure against the faults it made.
"""

import base64
import collections
import hashlib
import os
import random
import socket
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "apps"))
from chaos_pattern import body_sha256  # noqa: E402  (the bytes /big sends)

# Outcome classes. OK and WS_OK are successes; everything else is a failure
# that chaos.py tries to account for.
OK = "2xx"
WRONG = "2xx, wrong body"
C4XX = "4xx"
C502 = "502"
C503 = "503"
C504 = "504"
OTHER = "other status"
REFUSED = "refused"
RESET = "reset, no answer"
TIMEOUT = "timeout, no answer"
CUT = "cut mid-body"
# Closed before any answer by a server that never started the request (an
# HTTP/1.1 keep-alive connection closed while idle, a stream above an
# HTTP/2 GOAWAY's last id), then sent again, as clients do: a failure
# unless a drain explains it and the app never saw it.
RESENT = "closed unanswered, sent again"
WS_OK = "ws ok"
# An HTTP/2 stream the client itself reset (RST_STREAM CANCEL) on purpose:
# nothing to check but that the connection serves on.
CANCELLED = "reset by the client"
WS_1001 = "ws closed 1001"
WS_1011 = "ws closed 1011"
WS_CLOSED = "ws closed, other code"
WS_RESET = "ws cut, no close frame"
WS_STALL = "ws no echo"
WS_WRONG = "ws wrong echo"
CLASSES = [OK, WS_OK, CANCELLED, WRONG, C4XX, C502, C503, C504, OTHER, REFUSED, RESET, TIMEOUT, CUT, RESENT,
           WS_1001, WS_1011, WS_CLOSED, WS_RESET, WS_STALL, WS_WRONG]
GOOD = {OK, WS_OK, CANCELLED}
# Clients whose every request is kept (few, and each holds megabytes), to
# tell what was in flight when corral's RSS jumped.
TRACED = {"upload", "upload, slow", "slow reader", "h2 slow reader"}

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Recorder:
    """Counts every outcome; keeps the details of the failures only."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()   # (client kind, class) -> n
        self.failures = []
        self.ws_messages = 0
        self.late_echoes = 0                  # echoes that came after a stall, but came
        self.goaways = 0                      # HTTP/2 connections that got a GOAWAY
        self.h2_resent = 0                    # requests sent again, as a GOAWAY allowed
        self.closed = False                   # set on Ctrl-C: what ends after is not counted
        self.trace = []                       # (kind, t0, t1, request, class) of the big ones

    def add(self, kind, cls, t0, t1, rid, **info):
        with self.lock:
            if self.closed:
                return
            self.counts[(kind, cls)] += 1
            if kind in TRACED:
                self.trace.append((kind, t0, t1, info.get("req"), cls))
            if cls not in GOOD:
                self.failures.append(dict(kind=kind, cls=cls, t0=t0, t1=t1, id=rid, **info))

    def total(self):
        with self.lock:
            return sum(self.counts.values()), len(self.failures)


class Settings:
    """What every client needs to know; made by chaos.py."""

    def __init__(self, port, seed, timeout, heartbeat, end, stop, rec, pace, tls=None):
        self.port = port
        # With --tls: the client context (it trusts the run's own CA and
        # checks the name), so a certificate corral serves wrongly fails.
        self.tls = tls
        self.seed = seed
        # corral answers every request within `timeout` on a worker (504) or
        # in its queue (503); twice that plus slack is long enough to wait.
        self.answer_timeout = 2 * timeout + 10
        # A stream stalls while its worker is stopped, until heartbeat_timeout
        # has it replaced (then it is cut).
        self.idle_timeout = heartbeat + timeout + 10
        self.connect_timeout = 10.0
        self.timeout = timeout
        self.end = end            # time.monotonic() after which no request starts
        self.stop = stop          # threading.Event: stop now
        self.rec = rec
        self.pace = pace          # mean pause between two requests of a fast client


# ---------------------------------------------------------------- HTTP/1.1

class Failed(Exception):
    def __init__(self, cls, **info):
        super().__init__(cls)
        self.cls = cls
        self.info = info


class Conn:
    """One client connection with a read buffer."""

    def __init__(self, s, rcvbuf=None):
        self.s = s
        self.sock = None
        self.buf = bytearray()
        self.rcvbuf = rcvbuf
        self.used = 0             # requests sent on it

    def open(self):
        self.sock, self.buf, self.used = connect(self.s, self.rcvbuf), bytearray(), 0

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def recv(self, deadline, n=65536):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(left)
        data = self.sock.recv(n)
        if not data:
            raise EOFError
        return data

    def send(self, data, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(left)
        self.sock.sendall(data)


def connect(s, rcvbuf=None, alpn="http/1.1"):
    """A connected socket to corral (TLS with s.tls, offering `alpn`);
    raises Failed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(s.connect_timeout)
    try:
        sock.connect(("127.0.0.1", s.port))
    except ConnectionRefusedError:
        sock.close()
        raise Failed(REFUSED)
    except socket.timeout:
        sock.close()
        raise Failed(TIMEOUT, where="connect")
    except OSError as e:
        sock.close()
        raise Failed(RESET, where="connect", error=type(e).__name__)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if s.tls is None:
        return sock
    try:
        ctx = s.tls[alpn]
        return ctx.wrap_socket(sock, server_hostname="localhost")
    except socket.timeout:
        sock.close()
        raise Failed(TIMEOUT, where="TLS handshake")
    except OSError as e:  # ssl.SSLError included: a certificate refused
        sock.close()
        raise Failed(RESET, where="TLS handshake", error=f"{type(e).__name__}: {e}"[:200])


def read_head(c, deadline):
    while True:
        end = c.buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(c.buf) > 65536:
            raise Failed(OTHER, why="response head over 64 KiB")
        c.buf += c.recv(deadline)
    raw = bytes(c.buf[:end]).decode("latin-1")
    del c.buf[:end + 4]
    lines = raw.split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        raise Failed(OTHER, why=f"bad status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def read_exact(c, n, idle, sink, pace):
    """n body bytes into sink(bytes); each recv may wait `idle` seconds;
    `pace` (seconds, piece size) reads slowly."""
    got = 0
    while got < n:
        if not c.buf:
            size = pace[1] if pace else 65536
            c.buf += c.recv(time.monotonic() + idle, size)
            if pace:
                time.sleep(pace[0])
        take = min(n - got, len(c.buf))
        sink(bytes(c.buf[:take]))
        del c.buf[:take]
        got += take
    return got


def read_line(c, idle):
    while b"\r\n" not in c.buf:
        c.buf += c.recv(time.monotonic() + idle)
    i = c.buf.find(b"\r\n")
    line = bytes(c.buf[:i])
    del c.buf[:i + 2]
    return line


def read_body(c, headers, idle, sink, pace=None):
    """Reads the whole body; returns its length. Raises on a cut."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size = int(read_line(c, idle).split(b";")[0], 16)
            if size == 0:
                while read_line(c, idle):
                    pass  # trailers
                return total
            total += read_exact(c, size, idle, sink, pace)
            read_line(c, idle)
    if "content-length" in headers:
        return read_exact(c, int(headers["content-length"]), idle, sink, pace)
    total = 0  # until the server closes
    while True:
        if c.buf:
            sink(bytes(c.buf))
            total += len(c.buf)
            c.buf.clear()
        try:
            c.buf += c.recv(time.monotonic() + idle)
        except EOFError:
            return total


def exchange(c, method, path, rid, body=b"", keep=True, pieces=None, pace=None, check=None):
    """One request on c (opened when needed). Returns (class, info).
    pieces: [(bytes, pause)] sends the body slowly instead of at once;
    check(status, headers, digest, length) says whether a 2xx is right."""
    s = c.s
    info = {"req": f"{method} {path}"}
    if c.sock is None:
        try:
            c.open()
        except Failed as f:
            return f.cls, {**info, **f.info}
    info["reused"] = c.used > 0
    c.used += 1
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\nX-Chaos-Id: {rid}\r\n"
            + (f"Content-Length: {len(body)}\r\n" if method == "POST" else "")
            + ("" if keep else "Connection: close\r\n") + "\r\n").encode()
    t_send = time.time()
    send_error = None
    try:
        if pieces is None:
            c.send(head + body, time.monotonic() + s.answer_timeout)
        else:
            c.send(head, time.monotonic() + s.answer_timeout)
            for piece, pause in pieces:
                c.send(piece, time.monotonic() + s.answer_timeout)
                if pause:
                    time.sleep(pause)
    except (socket.timeout, OSError) as e:
        # corral may have answered early (and closed): read what it said.
        send_error = type(e).__name__
    info["t_sent"] = time.time()
    info["sent_s"] = round(info["t_sent"] - t_send, 3)
    if send_error:
        info["send_error"] = send_error
    try:
        status, headers = read_head(c, time.monotonic() + s.answer_timeout)
    except Failed as f:
        c.close()
        return f.cls, {**info, **f.info}
    except socket.timeout:
        c.close()
        return TIMEOUT, {**info, "waited_s": s.answer_timeout}
    except (EOFError, OSError) as e:
        c.close()
        return RESET, {**info, "error": type(e).__name__}
    info["status"] = status
    if "x-worker-pid" in headers:
        info["pid"] = int(headers["x-worker-pid"])
    info["head_s"] = round(time.time() - t_send, 3)
    digest = hashlib.sha256()
    start = bytearray()

    def sink(data):
        digest.update(data)
        if len(start) < 200:
            start.extend(data[:200 - len(start)])

    try:
        length = read_body(c, headers, s.idle_timeout, sink, pace)
    except (socket.timeout, EOFError, OSError, ValueError) as e:
        c.close()
        return CUT, {**info, "error": type(e).__name__,
                     "expected": headers.get("content-length")}
    if not keep or headers.get("connection", "").lower() == "close" or send_error:
        c.close()
    if status >= 300:
        info["body"] = bytes(start).decode("latin-1").strip()
    if 200 <= status < 300:
        if check is not None and not check(status, headers, digest.hexdigest(), length,
                                           bytes(start)):
            return WRONG, {**info, "length": length, "body": bytes(start[:80]).decode("latin-1")}
        return OK, info
    if 400 <= status < 500:
        return C4XX, info
    return {502: C502, 503: C503, 504: C504}.get(status, OTHER), info


# ---------------------------------------------------------------- client loops

class Ids:
    def __init__(self, prefix):
        self.prefix, self.n = prefix, 0

    def next(self):
        self.n += 1
        return f"{self.prefix}-{self.n}"


def running(s):
    return not s.stop.is_set() and time.monotonic() < s.end


def pause(s, seconds):
    if seconds > 0:
        s.stop.wait(seconds)


def ok_body(expect):
    return lambda status, headers, hexdigest, length, start: start == expect


def keepalive_loop(s, i):
    """Requests on one keep-alive connection: mostly GET /hello, some /sleep."""
    rnd, ids, c = random.Random(f"{s.seed}-keepalive-{i}"), Ids(f"ka{i}"), Conn(s)
    while running(s):
        path = "/hello" if rnd.random() < 0.8 else f"/sleep?ms={rnd.randint(10, 300)}"
        t0, rid = time.time(), ids.next()
        cls, info = exchange(c, "GET", path, rid, check=ok_body(b"ok"))
        if cls == RESET and info.get("reused") and "status" not in info:
            # The connection was closed before an answer (the server may
            # close an idle keep-alive connection at any time): recorded,
            # then sent again on a new connection, as HTTP clients do.
            s.rec.add("keep-alive", RESENT, t0, time.time(), rid, **info)
            t0, rid = time.time(), ids.next()
            cls, info = exchange(c, "GET", path, rid, check=ok_body(b"ok"))
            info["retried"] = 1
        s.rec.add("keep-alive", cls, t0, time.time(), rid, **info)
        if cls != OK:
            c.close()
        pause(s, rnd.uniform(0, 2 * s.pace))
    c.close()


def newconn_loop(s, i):
    """One new connection per request (Connection: close)."""
    rnd, ids = random.Random(f"{s.seed}-newconn-{i}"), Ids(f"nc{i}")
    while running(s):
        path = "/hello" if rnd.random() < 0.8 else f"/sleep?ms={rnd.randint(10, 300)}"
        t0, rid, c = time.time(), ids.next(), Conn(s)
        cls, info = exchange(c, "GET", path, rid, keep=False, check=ok_body(b"ok"))
        c.close()
        s.rec.add("new conn", cls, t0, time.time(), rid, **info)
        pause(s, rnd.uniform(0, 2 * s.pace))


def upload_loop(s, i, slow_max):
    """POSTs of 100-600 KB; half of them sent slowly (after the first 80 KB,
    16 KiB pieces spread over 1 s to slow_max seconds), each on a new
    connection. The app answers the length and SHA-256 of what it read."""
    rnd, ids = random.Random(f"{s.seed}-upload-{i}"), Ids(f"up{i}")
    while running(s):
        body = rnd.randbytes(rnd.randint(100_000, 600_000))
        want = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        slow = rnd.random() < 0.5
        pieces = None
        if slow:
            rest = [body[n:n + 16384] for n in range(80_000, len(body), 16384)]
            spread = rnd.uniform(1.0, slow_max)
            pieces = [(body[:80_000], 0)] + [(p, spread / len(rest)) for p in rest]
        kind = "upload, slow" if slow else "upload"
        t0, rid, c = time.time(), ids.next(), Conn(s)
        cls, info = exchange(c, "POST", "/upload", rid, body=body, keep=False, pieces=pieces,
                             check=ok_body(want))
        c.close()
        s.rec.add(kind, cls, t0, time.time(), rid, size=len(body), **info)
        pause(s, rnd.uniform(0, 0.5))


BIG_SIZES = [1 << 20, 2 << 20, 4 << 20, 8 << 20]
BIG_SHA = {}


def big_ok(size):
    if size not in BIG_SHA:
        BIG_SHA[size] = body_sha256(size)
    want = BIG_SHA[size]
    return lambda status, headers, hexdigest, length, start: length == size and hexdigest == want


def slowread_loop(s, i, slow_max, list_share):
    """GET /big (1-8 MiB) read slowly (16 KiB at a time, spread over 1 s to
    slow_max seconds) through a small receive buffer; every byte checked.
    A share of them (list_share) asks the app for its body as one piece
    (a WSGI list) rather than 64 KiB pieces."""
    rnd, ids = random.Random(f"{s.seed}-slowread-{i}"), Ids(f"sr{i}")
    for size in BIG_SIZES:
        big_ok(size)
    while running(s):
        size = rnd.choice(BIG_SIZES)
        mode = "list" if rnd.random() < list_share else "gen"
        spread = rnd.uniform(1.0, slow_max)
        t0, rid, c = time.time(), ids.next(), Conn(s, rcvbuf=65536)
        cls, info = exchange(c, "GET", f"/big?size={size}&mode={mode}", rid, keep=False,
                             pace=(spread / (size / 16384), 16384), check=big_ok(size))
        c.close()
        s.rec.add("slow reader", cls, t0, time.time(), rid, **info)
        pause(s, rnd.uniform(0, 0.5))


# ---------------------------------------------------------------- WebSockets

def ws_frame(opcode, payload=b""):
    """One final, masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


def ws_read(c, deadline):
    """The next data or close frame, (opcode, payload); answers pings.
    Fragmented messages are joined."""
    parts, first = [], None
    while True:
        while len(c.buf) < 2:
            c.buf += c.recv(deadline)
        b0, b1 = c.buf[0], c.buf[1]
        n, at = b1 & 0x7F, 2
        if n >= 126:
            need = 2 if n == 126 else 8
            while len(c.buf) < 2 + need:
                c.buf += c.recv(deadline)
            n = struct.unpack("!H" if need == 2 else "!Q", bytes(c.buf[2:2 + need]))[0]
            at += need
        masked = b1 & 0x80
        total = at + (4 if masked else 0) + n
        while len(c.buf) < total:
            c.buf += c.recv(deadline)
        data = bytes(c.buf[at + (4 if masked else 0):total])
        if masked:
            mask = c.buf[at:at + 4]
            data = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
        del c.buf[:total]
        opcode = b0 & 0x0F
        if opcode == 0x9:
            c.send(ws_frame(0xA, data), deadline)
            continue
        if opcode == 0xA:
            continue
        if opcode == 0x8:
            return opcode, data
        if opcode != 0x0:
            first = opcode
        parts.append(data)
        if b0 & 0x80:
            return first, b"".join(parts)


class WsClosed(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def ws_ask(c, text, wait):
    """Sends text, returns the reply. Raises WsClosed, socket.timeout,
    EOFError or OSError."""
    c.send(ws_frame(0x1, text.encode()), time.monotonic() + wait)
    opcode, data = ws_read(c, time.monotonic() + wait)
    if opcode == 0x8:
        raise WsClosed(struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None)
    return data.decode("utf-8", "replace")


def ws_loop(s, i):
    """WebSocket sessions of 3-20 s: ask the worker's pid, then send text
    messages of 10-2000 characters and check each echo; close with 1000."""
    rnd, ids = random.Random(f"{s.seed}-ws-{i}"), Ids(f"ws{i}")
    while running(s):
        t0, rid = time.time(), ids.next()
        cls, info = ws_session(s, rnd, rid)
        s.rec.add("websocket", cls, t0, time.time(), rid, **info)
        pause(s, rnd.uniform(0, 0.5))


def ws_session(s, rnd, rid):
    c = Conn(s)
    info = {"req": "GET /ws (WebSocket)"}
    try:
        c.open()
    except Failed as f:
        return f.cls, {**info, **f.info}
    try:
        key = base64.b64encode(os.urandom(16))
        c.send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               b"X-Chaos-Id: %s\r\n\r\n" % (s.port, key, rid.encode()),
               time.monotonic() + s.answer_timeout)
        try:
            status, headers = read_head(c, time.monotonic() + s.answer_timeout)
        except Failed as f:
            return f.cls, {**info, **f.info}
        except socket.timeout:
            return TIMEOUT, info
        except (EOFError, OSError) as e:
            return RESET, {**info, "error": type(e).__name__}
        info["status"] = status
        if status != 101:
            body = bytearray()
            try:
                read_body(c, headers, s.idle_timeout, body.extend)
            except (socket.timeout, EOFError, OSError, ValueError):
                pass
            info["body"] = bytes(body[:200]).decode("latin-1").strip()
            if 400 <= status < 500:
                return C4XX, info
            return {502: C502, 503: C503, 504: C504}.get(status, OTHER), info
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            return OTHER, {**info, "why": "wrong Sec-WebSocket-Accept"}
        return ws_talk(s, rnd, c, rid, info)
    finally:
        c.close()


def ws_talk(s, rnd, c, rid, info):
    # An echo may wait while its worker is stopped, until heartbeat_timeout
    # has it replaced (then corral closes the socket with 1011).
    wait = s.idle_timeout
    until = time.monotonic() + rnd.uniform(3, 20)
    n = 0
    try:
        pid = ws_ask(c, "__pid__", wait)
        if not pid.isdigit():
            return WS_WRONG, {**info, "messages": 0, "got": pid[:80]}
        info["pid"] = int(pid)
        while running(s) and time.monotonic() < until:
            n += 1
            text = f"{rid}-{n}-" + "x" * rnd.randint(10, 2000)
            t = time.monotonic()
            reply = ws_ask(c, text, wait)
            if time.monotonic() - t > s.timeout:
                with s.rec.lock:
                    s.rec.late_echoes += 1
            if reply != text:
                return WS_WRONG, {**info, "messages": n, "got": reply[:80]}
            with s.rec.lock:
                s.rec.ws_messages += 1
            pause(s, rnd.uniform(0.05, 0.3))
        c.send(ws_frame(0x8, struct.pack("!H", 1000)), time.monotonic() + 5)
        try:  # the server's close frame; a late echo may come first
            deadline = time.monotonic() + 5
            while ws_read(c, deadline)[0] != 0x8:
                pass
        except (socket.timeout, EOFError, OSError):
            pass
        return WS_OK, {**info, "messages": n}
    except WsClosed as e:
        info.update(messages=n, code=e.code)
        return {1001: WS_1001, 1011: WS_1011}.get(e.code, WS_CLOSED), info
    except socket.timeout:
        return WS_STALL, {**info, "messages": n, "waited_s": wait}
    except (EOFError, OSError, ValueError) as e:
        return WS_RESET, {**info, "messages": n, "error": type(e).__name__}


# ---------------------------------------------------------------- HTTP/2

H2_STREAMS = 4          # streams one client keeps in flight
H2_FRAME_HEAD = 9
H2_GOAWAY = 0x7
H2_NO_GOAWAY = 1 << 31  # above every stream id: no GOAWAY handled yet


class H2Request:
    """One request of an HTTP/2 client, sent again (as `retried`) when a
    GOAWAY said the server never processed it."""

    def __init__(self, kind, method, path, rid, body=b"", check=None, cancel_after=None):
        self.kind, self.method, self.path, self.rid = kind, method, path, rid
        self.body, self.check = body, check
        self.cancel_after = cancel_after  # seconds after which the client resets it
        self.pace = None
        self.retried = 0


class H2Stream:
    """A request in flight on a connection, and what came back so far."""

    def __init__(self, req):
        self.req = req
        self.t0 = time.time()
        self.t_sent = None           # when the last byte of the request went out
        self.pending = memoryview(req.body) if req.body else None
        self.status = None
        self.headers = {}
        self.digest = hashlib.sha256()
        self.length = 0
        self.start = bytearray()
        self.last = self.born = time.monotonic()


def h2_request(rnd, ids):
    roll, rid = rnd.random(), ids.next()
    if roll < 0.7:
        return H2Request("h2", "GET", "/hello", rid, check=ok_body(b"ok"))
    if roll < 0.8:
        return H2Request("h2", "GET", f"/sleep?ms={rnd.randint(10, 300)}", rid,
                         check=ok_body(b"ok"))
    if roll < 0.82:
        return H2Request("h2", "GET", f"/sleep?ms={rnd.randint(200, 2000)}", rid,
                         cancel_after=rnd.uniform(0.01, 0.15))
    if roll < 0.9:
        size = rnd.choice(BIG_SIZES[:2])
        return H2Request("h2", "GET", f"/big?size={size}&mode=gen", rid, check=big_ok(size))
    body = rnd.randbytes(rnd.randint(20_000, 200_000))
    want = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    return H2Request("h2 upload", "POST", "/upload", rid, body=body, check=ok_body(want))


class GoAwaySplitter:
    """Takes the server's GOAWAY frames out of the bytes read, before the
    h2 package sees them: it closes its whole connection on GOAWAY, while
    HTTP/2 (RFC 9113 section 6.8) has the streams at or below the frame's
    last stream id answered as usual. The rest passes through."""

    def __init__(self):
        self.buf = bytearray()
        self.goaway = None           # (last stream id, error code) of the first

    def feed(self, data):
        self.buf += data
        out, pos = bytearray(), 0
        while len(self.buf) - pos >= H2_FRAME_HEAD:
            length = int.from_bytes(self.buf[pos:pos + 3], "big")
            end = pos + H2_FRAME_HEAD + length
            if len(self.buf) < end:
                break
            if self.buf[pos + 3] == H2_GOAWAY and length >= 8:
                body = self.buf[pos + H2_FRAME_HEAD:end]
                last = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
                code = int.from_bytes(body[4:8], "big")
                if self.goaway is None or last < self.goaway[0]:
                    self.goaway = (last, code)
            else:
                out += self.buf[pos:end]
            pos = end
        del self.buf[:pos]
        return bytes(out)


def h2_loop(s, i):
    """An HTTP/2 client (h2c with prior knowledge on a plain bind, ALPN h2
    with --tls): a connection of 5-30 s at a time with up to H2_STREAMS
    streams in flight: GET /hello (most), /sleep, /big (1-2 MiB), POST
    /upload (20-200 KB). Every stream ends in one outcome class; a stream
    reset after its head counts as cut mid-body, before it as reset. A
    request above a GOAWAY's last stream id (never processed) is sent again
    on the next connection, as HTTP/2 clients do."""
    rnd, ids = random.Random(f"{s.seed}-h2-{i}"), Ids(f"h2{i}")
    retry = collections.deque()
    while running(s):
        h2_session(s, rnd, ids, retry)
        pause(s, rnd.uniform(0, 0.2))


def h2_slowread_loop(s, i, slow_max, list_share):
    """The HTTP/2 slow reader: GET /big (1-8 MiB) on a connection of its
    own, the flow-control window given back 16 KiB at a time over 1 s to
    slow_max seconds, so corral holds the worker's answer back under a
    stream window that stays shut most of the time; every byte checked."""
    rnd, ids = random.Random(f"{s.seed}-h2slow-{i}"), Ids(f"h2s{i}")
    for size in BIG_SIZES:
        big_ok(size)
    retry = collections.deque()
    while running(s):
        size = rnd.choice(BIG_SIZES)
        mode = "list" if rnd.random() < list_share else "gen"
        req = retry.popleft() if retry else H2Request(
            "h2 slow reader", "GET", f"/big?size={size}&mode={mode}", ids.next(),
            check=big_ok(size))
        req.pace = rnd.uniform(1.0, slow_max) / (size / 16384)
        h2_session(s, rnd, ids, retry, only=req)
        pause(s, rnd.uniform(0, 0.5))


def h2_session(s, rnd, ids, retry, only=None):
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions

    t_open = time.time()
    kind = only.kind if only is not None else "h2"
    try:
        sock = connect(s, alpn="h2")
    except Failed as f:
        rid = ids.next()
        s.rec.add(kind, f.cls, t_open, time.time(), rid, req="connect", **f.info)
        return
    if s.tls is not None and sock.selected_alpn_protocol() != "h2":
        sock.close()
        s.rec.add(kind, OTHER, t_open, time.time(), ids.next(), req="connect",
                  why=f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        return
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    split = GoAwaySplitter()
    handled_last = H2_NO_GOAWAY
    streams = {}
    until = time.monotonic() + rnd.uniform(5, 30)
    # `only`: this one request (the slow reader's), read at req.pace
    # seconds per 16 KiB.
    pace = only.pace if only is not None else None
    unacked = 0
    authority = f"localhost:{s.port}"
    scheme = "https" if s.tls is not None else "http"

    def finish(sid, cls, **extra):
        st = streams.pop(sid)
        info = {"req": f"{st.req.method} {st.req.path}", "proto": "h2"}
        if st.t_sent:
            info["t_sent"] = st.t_sent
        if st.status is not None:
            info["status"] = st.status
        if "x-worker-pid" in st.headers:
            info["pid"] = int(st.headers["x-worker-pid"])
        if st.req.retried:
            info["retried"] = st.req.retried
        if st.status is not None and st.status >= 300:
            info["body"] = bytes(st.start).decode("latin-1").strip()
        info.update(extra)
        s.rec.add(st.req.kind, cls, st.t0, time.time(), st.req.rid, **info)

    def lose_all(cls, **extra):
        for sid in list(streams):
            st = streams[sid]
            finish(sid, CUT if st.status is not None else cls, **extra)

    def send_out():
        out = conn.data_to_send()
        if out:
            sock.settimeout(s.answer_timeout)
            sock.sendall(out)

    try:
        while True:
            while (split.goaway is None and len(streams) < H2_STREAMS and running(s)
                   and time.monotonic() < until):
                if only is not None:
                    req, until = only, 0
                else:
                    req = retry.popleft() if retry else h2_request(rnd, ids)
                sid = conn.get_next_available_stream_id()
                headers = [(":method", req.method), (":path", req.path),
                           (":scheme", scheme), (":authority", authority),
                           ("x-chaos-id", req.rid)]
                if req.body:
                    headers.append(("content-length", str(len(req.body))))
                st = H2Stream(req)
                streams[sid] = st
                conn.send_headers(sid, headers, end_stream=not req.body)
                if not req.body:
                    st.t_sent = time.time()
            for sid, st in streams.items():
                while st.pending is not None:
                    n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                            len(st.pending))
                    if n <= 0:
                        break
                    last = n == len(st.pending)
                    conn.send_data(sid, bytes(st.pending[:n]), end_stream=last)
                    st.pending = None if last else st.pending[n:]
                    if last:
                        st.t_sent = time.time()
            send_out()
            if not streams:
                return
            now = time.monotonic()
            for sid in list(streams):
                st = streams[sid]
                if st.req.cancel_after is not None and now - st.born > st.req.cancel_after:
                    conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    finish(sid, CANCELLED)
                    continue
                waited = now - st.last
                if st.status is None and waited > s.answer_timeout:
                    conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    finish(sid, TIMEOUT, waited_s=round(waited, 1))
                elif st.status is not None and waited > s.idle_timeout:
                    conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    finish(sid, CUT, error="timeout", waited_s=round(waited, 1))
            sock.settimeout(0.2)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                lose_all(RESET, error="EOF", goaway=split.goaway)
                return
            events = conn.receive_data(split.feed(data))
            for ev in events:
                st = streams.get(getattr(ev, "stream_id", None))
                if isinstance(ev, h2.events.ResponseReceived) and st:
                    st.headers = {k.lower(): v for k, v in ev.headers}
                    st.status = int(st.headers.get(":status", "0"))
                    st.last = time.monotonic()
                elif isinstance(ev, h2.events.DataReceived):
                    if pace is None and ev.flow_controlled_length:
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif ev.flow_controlled_length:
                        unacked += ev.flow_controlled_length
                        while unacked >= 16384 and ev.stream_id in streams:
                            time.sleep(pace)
                            conn.acknowledge_received_data(16384, ev.stream_id)
                            unacked -= 16384
                    if st:
                        st.digest.update(ev.data)
                        st.length += len(ev.data)
                        if len(st.start) < 200:
                            st.start += ev.data[:200 - len(st.start)]
                        st.last = time.monotonic()
                elif isinstance(ev, h2.events.StreamEnded) and st:
                    h2_classify(finish, ev.stream_id, st)
                elif isinstance(ev, h2.events.StreamReset) and st:
                    finish(ev.stream_id, CUT if st.status is not None else RESET,
                           error=f"RST_STREAM {ev.error_code!s}")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    lose_all(RESET, error=f"GOAWAY {ev.error_code!s} (via h2)")
                    return
            # A graceful GOAWAY comes twice (RFC 9113 section 6.8): first
            # with the largest id, then with the last stream the server
            # took; each lower id sends the streams above it again.
            if split.goaway is not None and split.goaway[0] < handled_last:
                last, code = split.goaway
                resent = [sid for sid in streams if sid > last]
                with s.rec.lock:
                    s.rec.goaways += handled_last == H2_NO_GOAWAY
                    s.rec.h2_resent += len(resent)
                handled_last = last
                for sid in resent:
                    req = streams[sid].req
                    finish(sid, RESENT, goaway=f"last stream {last}, code {code}")
                    req.retried += 1
                    req.rid = ids.next()  # the app must never have seen the first
                    retry.append(req)
                if code != 0:
                    lose_all(RESET, error=f"GOAWAY error {code}")
                    return
    except h2.exceptions.ProtocolError as e:
        lose_all(RESET, error=f"h2 protocol error: {e}"[:200])
    except (socket.timeout, OSError) as e:
        lose_all(RESET, error=type(e).__name__)
    finally:
        sock.close()


def h2_classify(finish, sid, st):
    status = st.status
    if status is None:
        finish(sid, OTHER, why="stream ended without a head")
    elif 200 <= status < 300:
        check = st.req.check
        if check is not None and not check(status, st.headers, st.digest.hexdigest(), st.length,
                                           bytes(st.start)):
            finish(sid, WRONG, length=st.length, body=bytes(st.start[:80]).decode("latin-1"))
        else:
            finish(sid, OK)
    elif 400 <= status < 500:
        finish(sid, C4XX)
    else:
        finish(sid, {502: C502, 503: C503, 504: C504}.get(status, OTHER))
