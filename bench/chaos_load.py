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
WS_OK = "ws ok"
WS_1001 = "ws closed 1001"
WS_1011 = "ws closed 1011"
WS_CLOSED = "ws closed, other code"
WS_RESET = "ws cut, no close frame"
WS_STALL = "ws no echo"
WS_WRONG = "ws wrong echo"
CLASSES = [OK, WS_OK, WRONG, C4XX, C502, C503, C504, OTHER, REFUSED, RESET, TIMEOUT, CUT,
           WS_1001, WS_1011, WS_CLOSED, WS_RESET, WS_STALL, WS_WRONG]
GOOD = {OK, WS_OK}
# Clients whose every request is kept (few, and each holds megabytes), to
# tell what was in flight when corral's RSS jumped.
TRACED = {"upload", "upload, slow", "slow reader"}

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Recorder:
    """Counts every outcome; keeps the details of the failures only."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()   # (client kind, class) -> n
        self.failures = []
        self.ws_messages = 0
        self.late_echoes = 0                  # echoes that came after a stall, but came
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

    def __init__(self, port, seed, timeout, heartbeat, end, stop, rec, pace):
        self.port = port
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
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(self.s.connect_timeout)
        try:
            sock.connect(("127.0.0.1", self.s.port))
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
        self.sock, self.buf, self.used = sock, bytearray(), 0

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
