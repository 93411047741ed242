"""corral worker: runs one Python web app behind the corral supervisor.

This script is compiled into the corral binary and run by the configured
interpreter (CPython 3.9+, standard library only). It never parses HTTP:
corral sends pre-parsed requests over a private, inherited Unix socket
(fd CORRAL_WORKER_FD) using the framed protocol described in src/worker/protocol.rs.

Frame: 9-byte header <u32 payload length, u8 kind, u32 stream id> + payload.
WSGI apps: CORRAL_WORKER_THREADS threads take turns reading the socket
(leader/follower): the thread that reads a new request usually runs it
itself, so a request costs no thread hand-off.
ASGI apps: one event loop (uvloop when installed) reads the socket as an
asyncio protocol; every request and WebSocket is a task on it.
"""

import collections
import faulthandler
from io import BytesIO
from time import perf_counter
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback

HDR = struct.Struct("<IBI")
U32 = struct.Struct("<I")
U16 = struct.Struct("<H")
# A RESPONSE frame's header plus its u32 head length.
RESP_HDR = struct.Struct("<IBII")
HDR_SIZE = HDR.size

# corral -> worker
K_REQUEST = 1
K_BODY = 2
K_BODY_END = 3
K_WINDOW = 4
K_CANCEL = 5
# both ways
K_WS_TEXT = 21
K_WS_BINARY = 22
K_WS_CLOSE = 23
# worker -> corral
K_BOOT_OK = 10
K_BOOT_ERROR = 11
K_START = 12
K_DATA = 13
K_END = 14
K_ABORT = 15
K_BODY_WINDOW = 16
K_RESPONSE = 17
K_HEARTBEAT = 18
K_WS_ACCEPT = 20

F_MORE_BODY = 1
F_WEBSOCKET = 2

# Bytes the worker may send on one response before corral grants more, and
# how much request body it consumes before granting corral more.
RESPONSE_WINDOW = 256 * 1024
BODY_GRANT = 64 * 1024
MAX_FRAME = 64 * 1024
# The largest WebSocket message an app may send (the largest corral takes
# from a client too): a message is one frame on the channel.
MAX_WS_MESSAGE = 16 * 1024 * 1024
# Responses are batched only while requests take less than this on average,
# so a held response waits for at most a few fast requests.
HOLD_IF_FASTER_THAN = 0.0005


STACKS = None  # where SIGUSR1 dumps the stacks: an fd, kept open
# The prefix the app is mounted under ([app] root_path), like "/api", or "".
ROOT_PATH = ""


def under_root(path, root):
    """Whether the request path already carries the prefix (at a segment
    boundary: "/api" and "/api/x" do, "/apix" does not)."""
    return path == root or path.startswith(root + "/")


class ClientDisconnected(OSError):
    """Raised in the app's thread when the client went away mid-response."""


class Stream:
    """One request in flight: its body as it arrives and its response credit.

    `body` holds the whole body when it came inside the REQUEST frame;
    otherwise `chunks` collects it as BODY frames arrive.
    """

    __slots__ = ("sid", "head", "body", "chunks", "body_done", "window", "cancelled")

    def __init__(self, sid, head, body, more):
        self.sid = sid
        self.head = head
        self.window = RESPONSE_WINDOW
        self.cancelled = False
        if more:
            self.body = None
            self.chunks = collections.deque((body,)) if body else collections.deque()
            self.body_done = False
        else:
            self.body = body
            self.chunks = None
            self.body_done = True


class Input:
    """wsgi.input: the request body, streamed from corral with back-pressure."""

    def __init__(self, conn, stream):
        self._conn = conn
        self._stream = stream
        self._buf = b""
        self._consumed = 0

    def _fill(self):
        """Append the next chunk to the buffer; False at end of body."""
        s = self._stream
        if not s.chunks and not s.body_done and not s.cancelled:
            self._conn.wait_until(lambda: s.chunks or s.body_done or s.cancelled)
        if s.chunks:
            chunk = s.chunks.popleft()
            self._buf = self._buf + chunk if self._buf else chunk
            self._consumed += len(chunk)
            if self._consumed >= BODY_GRANT and not s.body_done:
                self._conn.send(K_BODY_WINDOW, s.sid, U32.pack(self._consumed))
                self._consumed = 0
            return True
        if s.cancelled:
            raise ClientDisconnected("client disconnected while sending the body")
        return False

    def read(self, size=-1):
        if size is None or size < 0:
            while self._fill():
                pass
            data, self._buf = self._buf, b""
            return data
        while len(self._buf) < size and self._fill():
            pass
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def readline(self, size=-1):
        while True:
            i = self._buf.find(b"\n")
            if i >= 0 and (size is None or size < 0 or i < size):
                data, self._buf = self._buf[: i + 1], self._buf[i + 1 :]
                return data
            if size is not None and 0 <= size <= len(self._buf):
                data, self._buf = self._buf[:size], self._buf[size:]
                return data
            if not self._fill():
                data, self._buf = self._buf, b""
                return data

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def frames(buf):
    """Yields (kind, stream id, payload start, payload end) for every whole
    frame at the front of buf (a bytearray), then removes them from it."""
    n = len(buf)
    pos = 0
    try:
        while n - pos >= HDR_SIZE:
            length, kind, sid = HDR.unpack_from(buf, pos)
            end = pos + HDR_SIZE + length
            if end > n:
                break
            yield kind, sid, pos + HDR_SIZE, end
            pos = end
    finally:
        del buf[:pos]


def request_parts(buf, start, end):
    """A REQUEST payload's flags, head and first body bytes."""
    hlen = U32.unpack_from(buf, start + 1)[0]
    hstart = start + 5
    return buf[start], bytes(buf[hstart : hstart + hlen]), bytes(buf[hstart + hlen : end])


class Connection:
    """The channel to corral, shared by the worker's threads."""

    def __init__(self, sock):
        self.sock = sock
        self.rlock = threading.Lock()  # held by the thread reading the socket
        self.wlock = threading.Lock()
        self.cv = threading.Condition(threading.Lock())
        self.waiters = 0
        self.pending = collections.deque()
        self.streams = {}
        self.rbuf = bytearray()
        self.active = 0
        self.out = []
        # Moving average of request run time (seconds): responses are only
        # held back for batching while requests are fast.
        self.avg_run = 0.0

    # -- reading (leader/follower) --------------------------------------

    def wait_until(self, pred):
        """Block until pred() is true, reading the socket when nobody else is."""
        while not pred():
            if self.out:
                self.flush()
            if self.rlock.acquire(False):
                try:
                    if not pred():
                        self._read()
                finally:
                    self.rlock.release()
                if self.waiters:
                    with self.cv:
                        self.cv.notify_all()
            else:
                with self.cv:
                    if pred() or not self.rlock.locked():
                        continue
                    self.waiters += 1
                    self.cv.wait(1.0)
                    self.waiters -= 1

    def _read(self):
        try:
            data = self.sock.recv(1 << 18)
        except InterruptedError:
            return
        if not data:
            # corral is gone: no one can receive our responses any more.
            os._exit(0)
        buf = self.rbuf
        buf += data
        streams = self.streams
        for kind, sid, start, end in frames(buf):
            if kind == K_REQUEST:
                flags, head, body = request_parts(buf, start, end)
                st = Stream(sid, head, body, flags & F_MORE_BODY)
                streams[sid] = st
                self.pending.append(st)
            elif kind == K_BODY:
                st = streams.get(sid)
                if st is not None and st.chunks is not None:
                    st.chunks.append(bytes(buf[start:end]))
            elif kind == K_BODY_END:
                st = streams.get(sid)
                if st is not None:
                    st.body_done = True
            elif kind == K_WINDOW:
                st = streams.get(sid)
                if st is not None:
                    st.window += U32.unpack_from(buf, start)[0]
            elif kind == K_CANCEL:
                st = streams.get(sid)
                if st is not None:
                    st.cancelled = True

    # -- writing ----------------------------------------------------------

    # Whole responses of fast requests are held back while more requests are
    # already waiting to run, then written together: one syscall for a batch
    # instead of one per response. Everything else is written at once, and
    # the buffer is flushed before any thread blocks.

    def send(self, kind, sid, payload):
        self.send_raw(HDR.pack(len(payload), kind, sid) + payload)

    def send_raw(self, data, hold=False):
        with self.wlock:
            out = self.out
            if hold and len(out) < 16:
                out.append(data)
                return
            if out:
                out.append(data)
                data = b"".join(out)
                out.clear()
            self.sock.sendall(data)

    def send_many(self, frames):
        self.send_raw(b"".join(frames))

    def flush(self):
        with self.wlock:
            if self.out:
                data = b"".join(self.out)
                self.out.clear()
                self.sock.sendall(data)


# Response heads and WS_ACCEPT payloads are fields: u16 header count, one
# u32 length per field, then the fields back to back (the status line or the
# subprotocol, then name and value of each header). A length ends a field,
# never a byte in it; and the fields are checked before they go: header
# names must be RFC 9110 tokens, values and the reason phrase must hold no
# control character but HTAB (as gunicorn refuses them).
FIELD_LENGTHS = {}  # field count -> its struct
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z").match
TOKEN_BYTES = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z").match
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]").search
# Header names already found to be tokens (str for WSGI, bytes for ASGI),
# and WSGI status lines found valid: most responses repeat a few of each, so
# most cost one set lookup.
GOOD_NAMES = set()
GOOD_STATUSES = set()
# A head bigger than this is refused: no client takes one.
MAX_HEAD = 1 << 20


def pack_fields(lengths, data):
    """The header count and field lengths (`lengths`: a list with a slot
    for the count, then one length per field), then the fields' bytes."""
    n = len(lengths)
    packer = FIELD_LENGTHS.get(n)
    if packer is None:
        packer = struct.Struct("<H%dI" % (n - 1))
        if len(FIELD_LENGTHS) < 64:
            FIELD_LENGTHS[n] = packer
    if len(data) > MAX_HEAD:
        raise ValueError("response headers of %d bytes: the limit is %d" % (len(data), MAX_HEAD))
    lengths[0] = (n - 2) >> 1
    return packer.pack(*lengths) + data


def check_text(what, text):
    """Raises unless text (a status line, a subprotocol) is latin-1 with no
    control character but HTAB."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("invalid %s %r: not latin-1" % (what, text)) from None
    if CONTROL(text):
        raise ValueError("invalid %s %r: control characters (CR, LF, NUL...) are not allowed"
                         % (what, text))


def check_fields(fields, kind):
    """Finds what is wrong in fields ([first, name, value, ...], str for
    WSGI, bytes for ASGI) and raises saying which header; else returns them
    (bytes-like ones as bytes) and remembers their names as good."""
    wsgi = kind == "WSGI"
    out = [fields[0]]
    for i in range(1, len(fields), 2):
        name, value = fields[i], fields[i + 1]
        if wsgi and type(name) is str and type(value) is str:
            if not TOKEN(name):
                raise ValueError("invalid WSGI response header name %r: a header name is a "
                                 "token (RFC 9110)" % (name,))
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError("invalid value for WSGI response header %r: %r is not latin-1"
                                 % (name, value)) from None
            text = value
        elif not wsgi and isinstance(name, (bytes, bytearray, memoryview)) and isinstance(
                value, (bytes, bytearray, memoryview)):
            name, value = bytes(name), bytes(value)
            if not TOKEN_BYTES(name):
                raise ValueError("invalid %s response header name %r: a header name is a "
                                 "token (RFC 9110)" % (kind, name))
            text = value.decode("latin-1")
        else:
            raise TypeError("%s response header %r: name and value must be %s, not %s and %s"
                            % (kind, name, "str" if wsgi else "bytes",
                               type(name).__name__, type(value).__name__))
        if CONTROL(text):
            raise ValueError("invalid value for %s response header %r: control characters "
                             "(CR, LF, NUL...) are not allowed: %r" % (kind, name, value))
        if len(GOOD_NAMES) < 1000:
            GOOD_NAMES.add(name)
        out += (name, value)
    return out


def wsgi_head(status, headers):
    """The response head for start_response's status and headers; raises
    ValueError or TypeError naming the status or header that is invalid."""
    fields = [status]
    lengths = [0, len(status)]
    good = GOOD_NAMES
    known = True
    # One pass: the fields, their lengths, and whether every name is known.
    for name, value in headers:
        if type(name) is not str or name not in good:
            known = False
        fields.append(name)
        fields.append(value)
        lengths.append(len(name))
        lengths.append(len(value))
    if status not in GOOD_STATUSES:
        code = status[:3]
        if not (code.isdecimal() and "200" <= code <= "599" and status[3:4] in (" ", "")):
            raise ValueError("invalid status %r: expected e.g. \"200 OK\" (200 to 599)"
                             % (status,))
        check_text("status", status)
        if len(GOOD_STATUSES) < 100:
            GOOD_STATUSES.add(status)
    try:
        text = "".join(fields)
        data = text.encode("latin-1")
    except (TypeError, UnicodeEncodeError):
        known = False
    if not known or not text.isprintable() and CONTROL(text):
        # Latin-1 letters are not all printable: only then the regex runs.
        fields = check_fields(fields, "WSGI")
        data = "".join(fields).encode("latin-1")
    return pack_fields(lengths, data)


def asgi_fields(first, headers, kind):
    """Fields with `first` (bytes) first, then the headers (bytes pairs)."""
    fields = [first]
    lengths = [0, len(first)]
    good = GOOD_NAMES
    known = True
    for name, value in headers:
        if type(name) is not bytes or name not in good:
            known = False
        fields.append(name)
        fields.append(value)
        lengths.append(len(name))
        lengths.append(len(value))
    try:
        data = b"".join(fields)
        text = data.decode("latin-1")
    except TypeError:
        known = False
    if not known or not text.isprintable() and CONTROL(text):
        fields = check_fields(fields, kind)
        data = b"".join(fields)
        lengths[1:] = map(len, fields)
    return pack_fields(lengths, data)


def asgi_head(status, headers):
    """The response head for an ASGI start message's status and headers;
    raises ValueError or TypeError naming the status or header."""
    if not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError("invalid status %r: expected an int from 200 to 599" % (status,))
    return asgi_fields(b"%d" % status, headers, "ASGI")


def clip(text, limit=64 * 1024):
    """A traceback cut to its first and last limit/2 characters."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return "%s\n[... %d characters cut ...]\n%s" % (text[:half], len(text) - limit, text[-half:])


def close_reason(reason):
    """A WebSocket close reason, UTF-8, cut to the 123 bytes a close frame
    holds (at a character boundary)."""
    data = reason.encode("utf-8")
    if len(data) > 123:
        data = data[:123].decode("utf-8", "ignore").encode("utf-8")
    return data


ERROR_BODY = b"Internal Server Error"
ERROR_HEAD = wsgi_head("500 Internal Server Error", [
    ("Content-Type", "text/plain"), ("Content-Length", str(len(ERROR_BODY)))])
# A WebSocket refused before the handshake (websocket.close first).
FORBIDDEN_HEAD = wsgi_head("403 Forbidden", [("Content-Length", "0")])


class WsgiRunner:
    """Runs one WSGI request per call, PEP 3333."""

    def __init__(self, conn, app, threads):
        self.conn = conn
        self.app = app
        from wsgiref.util import FileWrapper

        self.base = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": threads > 1,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            # wsgi.input returns b"" at the end of the body, chunked or not
            # (Werkzeug reads chunked bodies only when this is set).
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SCRIPT_NAME": ROOT_PATH,
        }
        self.root = ROOT_PATH

    def run(self, st):
        conn = self.conn
        sid = st.sid
        environ = self.base.copy()
        it = iter(st.head.decode("latin-1").split("\0"))
        environ.update(zip(it, it))
        root = self.root
        if root:
            # As gunicorn does with SCRIPT_NAME; a path without the prefix
            # (a proxy that strips it) is the app's path as it is.
            path = environ.get("PATH_INFO", "")
            if under_root(path, root):
                environ["PATH_INFO"] = path[len(root):]
        # A body that came whole needs no flow control: C-speed BytesIO.
        environ["wsgi.input"] = BytesIO(st.body) if st.chunks is None else Input(conn, st)
        is_head = environ.get("REQUEST_METHOD") == "HEAD"
        state = [None, None, False]  # status, encoded head, head sent

        def send_data(data):
            if not state[2]:
                conn.send(K_START, sid, state[1])
                state[2] = True
            if is_head or not data:
                return
            view = memoryview(data)
            for off in range(0, len(view), MAX_FRAME):
                if st.window <= 0 and not st.cancelled:
                    conn.wait_until(lambda: st.window > 0 or st.cancelled)
                if st.cancelled:
                    raise ClientDisconnected("client disconnected")
                part = view[off : off + MAX_FRAME]
                st.window -= len(part)
                conn.send_many((HDR.pack(len(part), K_DATA, sid), part))

        def write(data):
            if state[0] is None:
                raise AssertionError("write() called before start_response()")
            if type(data) is not bytes:
                raise TypeError("write() argument must be bytes, not %s" % type(data).__name__)
            send_data(data)

        def start_response(status, headers, exc_info=None):
            if exc_info:
                try:
                    if state[2]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state[0] is not None:
                raise AssertionError("start_response() called twice without exc_info")
            if type(status) is not str:
                raise TypeError("status must be a str, not %s" % type(status).__name__)
            # Checked and encoded now, so a bad header raises here, in the
            # app, where its own error handling can see it.
            state[1] = wsgi_head(status, headers)
            state[0] = status
            return write

        result = None
        try:
            result = self.app(environ, start_response)
            if type(result) is list and not state[2]:
                if state[0] is None:
                    raise AssertionError("app returned without calling start_response()")
                body = b"".join(result) if not is_head else b""
                if len(body) <= RESPONSE_WINDOW:
                    # The whole body is known and small: one frame, one syscall.
                    head = state[1]
                    conn.send_raw(b"".join((
                        RESP_HDR.pack(4 + len(head) + len(body), K_RESPONSE, sid, len(head)),
                        head, body)), conn.pending and conn.avg_run < HOLD_IF_FASTER_THAN)
                else:
                    # A big one streams under the window like any other.
                    send_data(body)
                    conn.send(K_END, sid, b"")
            else:
                for chunk in result:
                    if type(chunk) is not bytes:
                        raise TypeError("app must yield bytes, not %s" % type(chunk).__name__)
                    if chunk or not state[2]:
                        if state[0] is None:
                            raise AssertionError("app yielded before calling start_response()")
                        send_data(chunk)
                if not state[2]:
                    if state[0] is None:
                        raise AssertionError("app returned without calling start_response()")
                    send_data(b"")
                conn.send(K_END, sid, b"")
        except ClientDisconnected:
            # Once the head is out, only an abort tells corral the body is
            # cut short (a client that stalled its upload is still there and
            # must not take a truncated body for a whole one).
            if state[2]:
                conn.send(K_ABORT, sid, b"the request was cancelled")
            else:
                conn.send(K_END, sid, b"")
        except Exception:
            tb = traceback.format_exc()
            sys.stderr.write("Error handling request %s %s\n%s" % (
                environ.get("REQUEST_METHOD"), environ.get("RAW_URI"), tb))
            sys.stderr.flush()
            if not state[2]:
                conn.send(K_RESPONSE, sid, U32.pack(len(ERROR_HEAD)) + ERROR_HEAD + ERROR_BODY)
            else:
                conn.send(K_ABORT, sid, clip(tb).encode("utf-8", "replace"))
        finally:
            if result is not None and hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    traceback.print_exc()
            conn.streams.pop(sid, None)


class Worker:
    def __init__(self, conn, runner, threads):
        self.conn = conn
        self.runner = runner
        self.threads = threads

    def serve_forever(self):
        conn = self.conn
        pending = conn.pending
        while True:
            if not pending:
                conn.wait_until(lambda: pending)
            try:
                st = pending.popleft()
            except IndexError:
                continue
            conn.active += 1
            t0 = perf_counter()
            try:
                self.runner.run(st)
            finally:
                conn.active -= 1
                conn.avg_run = conn.avg_run * 0.875 + (perf_counter() - t0) * 0.125

    def start(self):
        for i in range(self.threads):
            t = threading.Thread(target=self._thread_main, name="corral-%d" % i, daemon=True)
            t.start()

    def _thread_main(self):
        try:
            self.serve_forever()
        except BaseException:
            traceback.print_exc()
            os._exit(70)


def beat(conn, interval):
    """Says "alive" every interval; it needs the GIL, so a wedged
    interpreter (a C call holding the GIL, a deadlock) falls silent."""
    frame = HDR.pack(0, K_HEARTBEAT, 0)
    while True:
        time.sleep(interval)
        conn.send_raw(frame)


class LifespanFailed(Exception):
    """The app's ASGI lifespan startup failed (the app's message follows)."""


ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
LIFESPAN_VERSION = {"version": "3.0", "spec_version": "2.0"}


class Lifespan:
    """The ASGI lifespan protocol (spec 2.0) on the worker's event loop.

    An app that raises before it receives anything does not support
    lifespan, which is fine (as with uvicorn's lifespan "auto").
    """

    def __init__(self, app):
        self.app = app
        self.state = {}
        self.task = None

    async def startup(self):
        """Raises LifespanFailed when the app sends lifespan.startup.failed,
        or raises after it took the startup event."""
        import asyncio

        loop = asyncio.get_running_loop()
        self.inbox = asyncio.Queue()
        self.started = loop.create_future()
        self.stopped = loop.create_future()
        engaged = []

        async def receive():
            engaged.append(True)
            return await self.inbox.get()

        async def send(message):
            kind = message.get("type")
            if kind == "lifespan.startup.complete" and not self.started.done():
                self.started.set_result(None)
            elif kind == "lifespan.startup.failed" and not self.started.done():
                self.started.set_exception(LifespanFailed(message.get("message", "")))
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if not self.stopped.done():
                    self.stopped.set_result(message.get("message", "")
                                            if kind.endswith("failed") else None)

        scope = {"type": "lifespan", "asgi": LIFESPAN_VERSION, "state": self.state}
        task = loop.create_task(self.app(scope, receive, send))
        self.inbox.put_nowait({"type": "lifespan.startup"})
        await asyncio.wait({self.started, task}, return_when=asyncio.FIRST_COMPLETED)
        if self.started.done():
            self.started.result()  # raises LifespanFailed
            self.task = task
            return
        exc = task.exception()
        if exc is not None and engaged:
            raise LifespanFailed("the app raised %s" % type(exc).__name__) from exc
        # Lifespan not supported: carry on without it.

    async def shutdown(self, timeout):
        """Runs the shutdown half, waiting at most timeout seconds."""
        import asyncio

        task = self.task
        if task is None or task.done():
            return
        self.inbox.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait({self.stopped, task}, timeout=max(timeout, 0.1),
                           return_when=asyncio.FIRST_COMPLETED)
        if self.stopped.done():
            if self.stopped.result():
                log("ASGI lifespan shutdown failed: %s" % self.stopped.result())
        elif task.done():
            if task.exception() is not None:
                log("ASGI lifespan shutdown raised:\n" + "".join(traceback.format_exception(
                    type(task.exception()), task.exception(), task.exception().__traceback__)))
        else:
            log("ASGI lifespan shutdown did not finish within the graceful timeout")


def log(text):
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def new_event_loop():
    """uvloop's loop when it is installed, asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


# WebSocket states.
WS_CONNECTING, WS_ACCEPTED, WS_CLOSED, WS_RESPONSE = range(4)


class AsgiStream:
    """One ASGI request or WebSocket in flight.

    The app's receive() and send() wait (both at once, in Starlette's
    streaming responses) on futures in `waiters`; the frame parser wakes them
    all whenever something for the stream arrives, and each checks again.
    """

    __slots__ = ("sid", "body", "chunks", "body_done", "window", "cancelled", "waiters",
                 "task", "done", "ws", "inbox", "consumed")

    def __init__(self, sid, body, more):
        self.sid = sid
        self.window = RESPONSE_WINDOW
        self.cancelled = False
        self.waiters = None
        self.task = None
        self.done = False  # a terminal frame was sent
        self.ws = None  # WebSocket state, None for HTTP
        self.inbox = None
        self.consumed = 0
        if more:
            self.body = None
            self.chunks = collections.deque((body,)) if body else collections.deque()
            self.body_done = False
        else:
            self.body = body
            self.chunks = None
            self.body_done = True

    def wake(self):
        waiters = self.waiters
        if waiters:
            self.waiters = None
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def wait(self, loop):
        w = loop.create_future()
        if self.waiters is None:
            self.waiters = [w]
        else:
            self.waiters.append(w)
        await w


class AsgiWorker:
    """Serves an ASGI 3 app: every request and WebSocket is a task on one
    event loop; frames to corral are written once per loop iteration."""

    def __init__(self, app, loop, lifespan, graceful):
        from urllib.parse import unquote, unquote_to_bytes

        self.app = app
        self.loop = loop
        self.lifespan = lifespan
        self.graceful = graceful
        self.unquote = unquote
        self.unquote_to_bytes = unquote_to_bytes
        self.streams = {}
        self.rbuf = bytearray()
        self.out = []
        self.transport = None
        self.stopping = False
        self.idle = None  # set while stopping: resolved when nothing is in flight

    # -- the channel --------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        os._exit(0)  # corral is gone: no one can receive our responses

    def pause_writing(self):
        pass  # every stream's window bounds what can queue

    def resume_writing(self):
        pass

    def eof_received(self):
        os._exit(0)

    def write(self, frame):
        out = self.out
        out.append(frame)
        if len(out) == 1:
            self.loop.call_soon(self.flush)

    def flush(self):
        if self.out:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            self.out.clear()
            self.transport.write(data)

    def send(self, kind, sid, payload):
        self.write(HDR.pack(len(payload), kind, sid) + payload)

    def data_received(self, data):
        buf = self.rbuf
        buf += data
        streams = self.streams
        for kind, sid, start, end in frames(buf):
            if kind == K_REQUEST:
                flags, head, body = request_parts(buf, start, end)
                st = AsgiStream(sid, body, flags & F_MORE_BODY)
                streams[sid] = st
                run = self.run_ws if flags & F_WEBSOCKET else self.run_http
                st.task = self.loop.create_task(run(st, head))
                continue
            st = streams.get(sid)
            if st is None:
                continue
            if kind == K_BODY:
                if st.chunks is not None:
                    st.chunks.append(bytes(buf[start:end]))
            elif kind == K_BODY_END:
                st.body_done = True
            elif kind == K_WINDOW:
                st.window += U32.unpack_from(buf, start)[0]
            elif kind == K_CANCEL:
                st.cancelled = True
                if st.ws is not None and st.ws != WS_CLOSED:
                    st.ws = WS_CLOSED
                    st.inbox.append(({"type": "websocket.disconnect", "code": 1006,
                                      "reason": ""}, 0))
                if buf[start:end] == b"t" and st.task is not None:
                    st.task.cancel()  # it ran past the timeout: corral answered 504
            elif kind == K_WS_TEXT or kind == K_WS_BINARY:
                # With its size in bytes: the credit corral spent on it.
                data = bytes(buf[start:end])
                st.inbox.append(({"type": "websocket.receive", "text": data.decode("utf-8")}
                                 if kind == K_WS_TEXT else
                                 {"type": "websocket.receive", "bytes": data}, end - start))
            elif kind == K_WS_CLOSE:
                code = U16.unpack_from(buf, start)[0] if end - start >= 2 else 1005
                reason = bytes(buf[start + 2 : end]).decode("utf-8", "replace")
                if st.ws != WS_CLOSED:
                    st.ws = WS_CLOSED
                    st.inbox.append(({"type": "websocket.disconnect", "code": code,
                                      "reason": reason}, 0))
            st.wake()

    # -- HTTP -----------------------------------------------------------------

    def scope(self, kind, head):
        """The scope for corral's head (see src/worker/head/scope.rs)."""
        parts = head.split(b"\0")
        raw_path = parts[2]
        try:
            path = raw_path.decode("ascii")
            if "%" in path:
                path = self.unquote(path)
        except UnicodeDecodeError:
            # UTF-8 sent as it is (corral passes bytes above 0x7F through):
            # decoded as its percent-encoded form would be.
            path = self.unquote_to_bytes(raw_path).decode("utf-8", "replace")
        root = ROOT_PATH
        if root and not under_root(path, root):
            # uvicorn's --root-path: the proxy stripped the prefix, and the
            # ASGI spec wants it in front of path (and raw_path).
            path = root + path
            raw_path = root.encode("ascii") + raw_path
        h = parts[9:]
        scheme = parts[1].decode("latin-1")
        if kind == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        return {
            "type": kind,
            "asgi": ASGI_VERSION,
            "http_version": parts[4].decode("latin-1"),
            "method": parts[0].decode("latin-1"),
            "scheme": scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": parts[3],
            "root_path": root,
            "headers": list(zip(h[::2], h[1::2])),
            "client": (parts[5].decode("latin-1"), int(parts[6])) if parts[5] else None,
            "server": (parts[7].decode("latin-1"), int(parts[8]) if parts[8] else None),
            "state": self.lifespan.state.copy(),
        }

    def grant(self, st, n):
        """The app consumed n bytes of body or messages: give corral credit."""
        st.consumed += n
        if st.consumed >= BODY_GRANT:
            self.send(K_BODY_WINDOW, st.sid, U32.pack(st.consumed))
            st.consumed = 0

    async def run_http(self, st, head):
        loop = self.loop
        sid = st.sid
        scope = self.scope("http", head)
        # [head held back until the first body message, head sent, complete]
        held = [None, False, False]

        async def receive():
            if st.body is not None:
                body, st.body = st.body, None
                st.body_done = True
                return {"type": "http.request", "body": body, "more_body": False}
            chunks = st.chunks
            if chunks is not None:
                while not chunks and not st.body_done and not st.cancelled:
                    await st.wait(loop)
                if chunks:
                    chunk = chunks.popleft()
                    self.grant(st, len(chunk))
                    return {"type": "http.request", "body": chunk,
                            "more_body": bool(chunks) or not st.body_done}
                if st.body_done and not st.cancelled:
                    st.chunks = None
                    return {"type": "http.request", "body": b"", "more_body": False}
            while not st.cancelled and not held[2]:
                await st.wait(loop)
            return {"type": "http.disconnect"}

        async def send(message):
            kind = message["type"]
            if kind == "http.response.start":
                if held[0] is not None or held[1]:
                    raise RuntimeError("http.response.start sent twice")
                held[0] = asgi_head(message["status"], message.get("headers", ()))
                return
            if kind != "http.response.body":
                raise RuntimeError("unexpected ASGI message %r in an HTTP request" % kind)
            if held[2]:
                raise RuntimeError("http.response.body sent after the response completed")
            if held[0] is None and not held[1]:
                raise RuntimeError("http.response.body sent before http.response.start")
            if st.cancelled:
                raise ClientDisconnected("the client disconnected")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not held[1]:
                head = held[0]
                held[0] = None
                held[1] = True
                if not more and len(body) <= RESPONSE_WINDOW:
                    self.write(b"".join((RESP_HDR.pack(4 + len(head) + len(body), K_RESPONSE,
                                                       sid, len(head)), head, body)))
                    held[2] = st.done = True
                    st.wake()
                    return
                self.send(K_START, sid, head)
            if body:
                await self.send_data(st, body)
            if not more:
                self.send(K_END, sid, b"")
                held[2] = st.done = True
                st.wake()

        try:
            await self.app(scope, receive, send)
            if not held[2] and not st.done:
                if held[1]:
                    log("ASGI app returned without completing the response to %s %s"
                        % (scope["method"], scope["path"]))
                    self.send(K_ABORT, sid, b"response not completed")
                elif not st.cancelled:
                    log("ASGI app returned without sending a response to %s %s"
                        % (scope["method"], scope["path"]))
                    self.error_response(sid)
                st.done = True
        except ClientDisconnected:
            if held[1] and not held[2]:
                # The head is out: an abort, so the body is not taken whole.
                self.send(K_ABORT, sid, b"the request was cancelled")
                st.done = True
        except asyncio_cancelled():
            pass
        except Exception:
            tb = traceback.format_exc()
            log("Error handling request %s %s\n%s" % (scope["method"], scope["path"], tb))
            if not held[1]:
                self.error_response(sid)
            elif not held[2]:
                self.send(K_ABORT, sid, clip(tb).encode("utf-8", "replace"))
            st.done = True
        finally:
            if not st.done:
                self.send(K_END, sid, b"")
            self.finished(st)

    async def send_data(self, st, body):
        """Sends body as DATA frames, each when the stream has window."""
        view = memoryview(body)
        for off in range(0, len(view), MAX_FRAME):
            while st.window <= 0 and not st.cancelled:
                await st.wait(self.loop)
            if st.cancelled:
                raise ClientDisconnected("the client disconnected")
            part = view[off : off + MAX_FRAME]
            st.window -= len(part)
            self.write(HDR.pack(len(part), K_DATA, st.sid) + part)

    def error_response(self, sid):
        self.send(K_RESPONSE, sid, U32.pack(len(ERROR_HEAD)) + ERROR_HEAD + ERROR_BODY)

    def finished(self, st):
        self.streams.pop(st.sid, None)
        if self.idle is not None and not self.streams and not self.idle.done():
            self.idle.set_result(None)

    # -- WebSocket ------------------------------------------------------------

    async def run_ws(self, st, head):
        loop = self.loop
        sid = st.sid
        scope = self.scope("websocket", head)
        del scope["method"]
        protocols = [v.decode("latin-1") for k, v in scope["headers"]
                     if k == b"sec-websocket-protocol"]
        scope["subprotocols"] = [p.strip() for v in protocols for p in v.split(",") if p.strip()]
        scope["extensions"] = {"websocket.http.response": {}}
        st.ws = WS_CONNECTING
        # (message, its size in bytes) pairs.
        st.inbox = collections.deque((({"type": "websocket.connect"}, 0),))
        denial = [None, False]  # a denial response: head held back, head sent

        async def receive():
            inbox = st.inbox
            while not inbox:
                await st.wait(loop)
            message, size = inbox.popleft()
            if size:
                self.grant(st, size)
            return message

        async def send(message):
            kind = message["type"]
            if kind == "websocket.send":
                if st.ws == WS_CLOSED:
                    raise ClientDisconnected("the WebSocket is closed")
                if st.ws != WS_ACCEPTED:
                    raise RuntimeError("websocket.send before websocket.accept")
                data = message.get("bytes")
                if data is not None:
                    frame_kind = K_WS_BINARY
                else:
                    frame_kind = K_WS_TEXT
                    data = message["text"].encode("utf-8")
                if len(data) > MAX_WS_MESSAGE:
                    raise ValueError("WebSocket message of %d bytes: the limit is %d"
                                     % (len(data), MAX_WS_MESSAGE))
                while st.window <= 0 and st.ws == WS_ACCEPTED:
                    await st.wait(loop)
                if st.ws != WS_ACCEPTED:
                    raise ClientDisconnected("the WebSocket is closed")
                st.window -= len(data)
                self.send(frame_kind, sid, data)
            elif kind == "websocket.accept":
                if st.ws != WS_CONNECTING:
                    raise RuntimeError("websocket.accept sent twice or too late")
                subprotocol = message.get("subprotocol") or ""
                check_text("subprotocol", subprotocol)
                self.send(K_WS_ACCEPT, sid, asgi_fields(
                    subprotocol.encode("latin-1"), message.get("headers") or (),
                    "websocket.accept"))
                st.ws = WS_ACCEPTED
            elif kind == "websocket.close":
                if st.ws == WS_CONNECTING:
                    # Refused before the handshake: 403, as the spec says.
                    self.send(K_RESPONSE, sid, U32.pack(len(FORBIDDEN_HEAD)) + FORBIDDEN_HEAD)
                    st.done = True
                    st.ws = WS_CLOSED
                elif st.ws == WS_ACCEPTED:
                    code = message.get("code") or 1000
                    # corral checks the code (an invalid one becomes 1011).
                    self.send(K_WS_CLOSE, sid, U16.pack(code)
                              + close_reason(message.get("reason") or ""))
                    st.done = True
                    st.ws = WS_CLOSED
            elif kind == "websocket.http.response.start":
                if st.ws != WS_CONNECTING:
                    raise RuntimeError("websocket.http.response.start after the handshake")
                head = asgi_head(message["status"], message.get("headers", ()))
                st.ws = WS_RESPONSE
                denial[0] = head
            elif kind == "websocket.http.response.body":
                if st.ws != WS_RESPONSE or st.done:
                    raise RuntimeError("websocket.http.response.body out of order")
                body = message.get("body", b"")
                if not denial[1]:
                    self.send(K_START, sid, denial[0])
                    denial[1] = True
                if body:
                    await self.send_data(st, body)
                if not message.get("more_body", False):
                    self.send(K_END, sid, b"")
                    st.done = True
            else:
                raise RuntimeError("unexpected ASGI message %r in a WebSocket" % kind)

        try:
            await self.app(scope, receive, send)
            if st.ws == WS_CONNECTING:
                log("ASGI app returned without accepting or refusing the WebSocket %s"
                    % scope["path"])
                self.error_response(sid)
                st.done = True
            elif st.ws == WS_ACCEPTED:
                self.send(K_WS_CLOSE, sid, U16.pack(1000))
                st.done = True
        except (ClientDisconnected, asyncio_cancelled()):
            pass
        except Exception:
            log("Error in WebSocket %s\n%s" % (scope["path"], traceback.format_exc()))
            if st.ws == WS_CONNECTING or st.ws == WS_RESPONSE and not denial[1]:
                self.error_response(sid)
                st.done = True
            elif st.ws == WS_ACCEPTED:
                self.send(K_WS_CLOSE, sid, U16.pack(1011))
                st.done = True
        finally:
            if not st.done:
                self.send(K_END, sid, b"")
            self.finished(st)

    # -- life cycle -----------------------------------------------------------

    def stop(self):
        """SIGTERM: close WebSockets with 1001, let requests in flight
        finish (up to the graceful timeout), run the lifespan shutdown."""
        if self.stopping:
            return
        self.stopping = True
        for st in list(self.streams.values()):
            if st.ws == WS_ACCEPTED:
                st.ws = WS_CLOSED
                st.inbox.append(({"type": "websocket.disconnect", "code": 1001, "reason": ""}, 0))
                self.send(K_WS_CLOSE, st.sid, U16.pack(1001) + b"server shutting down")
                st.done = True
                st.wake()
        self.loop.create_task(self.finish())

    async def finish(self):
        import asyncio

        deadline = self.loop.time() + self.graceful
        # A request corral sent just before it stopped routing here may still
        # be on its way: idle means no stream for a moment, not for an instant.
        while self.loop.time() < deadline:
            if self.streams:
                self.idle = self.loop.create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(self.idle),
                                           deadline - self.loop.time())
                except asyncio.TimeoutError:
                    break
            await asyncio.sleep(0.05)
            if not self.streams:
                break
        await self.lifespan.shutdown(deadline - self.loop.time())
        import atexit

        atexit._run_exitfuncs()
        self.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def beat(self, interval):
        """Says "alive" every interval from the event loop: a loop blocked
        by a synchronous call falls silent."""
        self.write(HDR.pack(0, K_HEARTBEAT, 0))
        self.loop.call_later(interval, self.beat, interval)

    def watch_parent(self, parent):
        if os.getppid() != parent:
            os._exit(0)  # corral is gone (PR_SET_PDEATHSIG is the first line)
        self.loop.call_later(1.0, self.watch_parent, parent)


def asyncio_cancelled():
    import asyncio

    return asyncio.CancelledError


def serve_asgi(sock, app, lifespan, loop, loop_name, import_ms, heartbeat, graceful):
    """Runs the ASGI worker on `loop` until SIGTERM (then exits)."""
    worker = AsgiWorker(app, loop, lifespan, graceful)
    loop.run_until_complete(loop.create_unix_connection(lambda: worker, sock=sock))
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    if heartbeat > 0:
        worker.beat(heartbeat)
    worker.watch_parent(os.getppid())
    worker.send(K_BOOT_OK, 0, ('{"pid": %d, "import_ms": %.1f, "interface": "asgi", '
                               '"loop": "%s"}' % (os.getpid(), import_ms, loop_name)).encode())
    loop.run_forever()


def is_asgi(app):
    """An ASGI app is a coroutine function, or an object whose __call__ is one."""
    import inspect

    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def app_traceback(exc):
    """The traceback of an import error from the app's first frame on, as
    `python -c "import main"` would show it (without this script's and
    importlib's frames)."""
    tb = exc.__traceback__
    here = os.path.abspath(__file__)

    def internal(frame):
        name = frame.f_code.co_filename
        return (os.path.abspath(name) == here or name.startswith("<frozen importlib")
                or name.endswith(os.path.join("importlib", "__init__.py")))

    while tb is not None and internal(tb.tb_frame):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def parse_call(text):
    """"create_app('prod', debug=False)" -> ("create_app", args, kwargs). The
    arguments must be literals (ast.literal_eval): nothing is evaluated."""
    import ast

    how = ("write a call with literal arguments, like create_app() or "
           "create_app('prod', debug=False)")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError("%r is not a factory call: %s" % (text, how)) from None
    if not isinstance(node, ast.Call):
        raise ValueError("%r is not a factory call: %s" % (text, how))
    names = []
    func = node.func
    while isinstance(func, ast.Attribute):
        names.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ValueError("%r does not call a name: %s" % (text, how))
    names.append(func.id)

    def literal(arg):
        if isinstance(arg, ast.Starred):
            raise ValueError("%r unpacks *args: %s" % (text, how))
        try:
            return ast.literal_eval(arg)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(
                "%r: argument %s is not a literal (strings, numbers, True, False, None, "
                "tuples, lists, dicts, sets): %s" % (text, ast.dump(arg)[:80], how)) from None

    args = [literal(a) for a in node.args]
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("%r unpacks **kwargs: %s" % (text, how))
        kwargs[kw.arg] = literal(kw.value)
    return ".".join(reversed(names)), args, kwargs


def load_app(spec, factory=False):
    """Imports "module:attr" and returns the app. "module:factory(args)", or
    factory=True (--factory), calls the attribute and returns what it gives."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    args, kwargs, call = (), {}, factory
    if "(" in attr:
        attr, args, kwargs = parse_call(attr)
        call = True
    import importlib

    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if call:
        if not callable(obj):
            raise TypeError("%s:%s is not callable (got %s), so it cannot be an app factory"
                            % (module_name, attr, type(obj).__name__))
        obj = obj(*args, **kwargs)
        if not callable(obj):
            raise TypeError("the app factory %s returned %s, not a callable app"
                            % (spec if "(" in spec else spec + "()", type(obj).__name__))
    return obj


def main():
    fd = int(os.environ.pop("CORRAL_WORKER_FD", "3"))
    # The channel stays with this process: a subprocess the app starts
    # (os.system, a shell) must not hold it open after the worker is gone.
    os.set_inheritable(fd, False)
    spec = os.environ.pop("CORRAL_WORKER_APP")
    threads = int(os.environ.pop("CORRAL_WORKER_THREADS", "1"))
    extra_path = os.environ.pop("CORRAL_WORKER_PYTHONPATH", "")
    graceful = float(os.environ.pop("CORRAL_WORKER_GRACEFUL_TIMEOUT", "30"))
    interface = os.environ.pop("CORRAL_WORKER_INTERFACE", "auto")
    heartbeat = float(os.environ.pop("CORRAL_WORKER_HEARTBEAT", "0"))
    factory = bool(os.environ.pop("CORRAL_WORKER_FACTORY", ""))
    global ROOT_PATH
    ROOT_PATH = os.environ.pop("CORRAL_WORKER_ROOT_PATH", "")
    sock = socket.socket(fileno=fd)
    conn = Connection(sock)

    # SIGUSR1 dumps every thread's stack (even with the GIL held) into the
    # file corral handed over as an open fd (it reads, logs and shows them
    # in /status); stderr when there is none.
    stacks_fd = os.environ.pop("CORRAL_WORKER_STACKS_FD", "")
    global STACKS
    if stacks_fd:
        STACKS = int(stacks_fd)
        os.set_inheritable(STACKS, False)
    else:
        STACKS = sys.stderr
    faulthandler.register(signal.SIGUSR1, file=STACKS, all_threads=True)
    signal.signal(signal.SIGQUIT, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    paths = [p for p in extra_path.split(os.pathsep) if p]
    for p in reversed(paths + [os.getcwd()]):
        if p not in sys.path:
            sys.path.insert(0, p)

    t0 = time.monotonic()
    asgi = None
    try:
        app = load_app(spec, factory)
        if not callable(app):
            raise TypeError("%s is not callable (got %s)" % (spec, type(app).__name__))
        if interface == "asgi" or (interface == "auto" and is_asgi(app)):
            # Start-up errors surface now, as boot errors, like an import error.
            loop, loop_name = new_event_loop()
            import asyncio

            asyncio.set_event_loop(loop)
            lifespan = Lifespan(app)
            loop.run_until_complete(lifespan.startup())
            asgi = (lifespan, loop, loop_name)
        elif is_asgi(app):
            raise TypeError("%s is an ASGI app (its __call__ is a coroutine function) but "
                            "interface is \"wsgi\": set interface = \"asgi\" (or \"auto\")"
                            % spec)
    except LifespanFailed as e:
        tb = "ASGI lifespan startup failed: %s\n" % e
        if e.__cause__ is not None:
            tb += app_traceback(e.__cause__)
        conn.send(K_BOOT_ERROR, 0, clip(tb).encode("utf-8", "replace"))
        sys.stderr.flush()
        os._exit(1)
    except BaseException as e:
        tb = app_traceback(e)
        conn.send(K_BOOT_ERROR, 0, clip(tb).encode("utf-8", "replace"))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # not sys.exit: threads the app started must not keep us alive
    import_ms = (time.monotonic() - t0) * 1000.0
    if asgi is not None:
        lifespan, loop, loop_name = asgi
        if stop.is_set():
            os._exit(0)  # told to stop while booting
        serve_asgi(sock, app, lifespan, loop, loop_name, import_ms, heartbeat, graceful)
        os._exit(0)

    worker = Worker(conn, WsgiRunner(conn, app, threads), threads)
    worker.start()
    if heartbeat > 0:
        threading.Thread(target=beat, args=(conn, heartbeat), name="corral-heartbeat",
                         daemon=True).start()
    conn.send(K_BOOT_OK, 0, ('{"pid": %d, "import_ms": %.1f, "interface": "wsgi"}'
                             % (os.getpid(), import_ms)).encode())
    # The main thread only waits for TERM, then lets requests in flight finish.
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            os._exit(0)  # corral is gone (PR_SET_PDEATHSIG is the first line)
    # Drain: finish every request this worker holds, running or queued. A
    # request corral sent just before it stopped routing here may still be
    # on its way: idle means no request for a moment, not for an instant.
    deadline = time.monotonic() + graceful
    while time.monotonic() < deadline:
        if conn.streams:
            time.sleep(0.01)
            continue
        time.sleep(0.05)
        if not conn.streams:
            break
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
