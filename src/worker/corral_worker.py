"""corral worker: runs one Python web app behind the corral supervisor.

This script is compiled into the corral binary and run by the configured
interpreter (CPython 3.9+, standard library only). It never parses HTTP:
corral sends pre-parsed requests over a private, inherited Unix socket
(fd CORRAL_FD) using the framed protocol described in src/worker/protocol.rs.

Frame: 9-byte header <u32 payload length, u8 kind, u32 stream id> + payload.
Concurrency: CORRAL_THREADS threads take turns reading the socket
(leader/follower): the thread that reads a new request usually runs it
itself, so a request costs no thread hand-off.
"""

import collections
import faulthandler
from io import BytesIO
from time import perf_counter
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback

HDR = struct.Struct("<IBI")
U32 = struct.Struct("<I")
# A RESPONSE frame's header plus its u32 head length.
RESP_HDR = struct.Struct("<IBII")
HDR_SIZE = HDR.size

# corral -> worker
K_REQUEST = 1
K_BODY = 2
K_BODY_END = 3
K_WINDOW = 4
K_CANCEL = 5
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

F_MORE_BODY = 1

# Bytes the worker may send on one response before corral grants more, and
# how much request body it consumes before granting corral more.
RESPONSE_WINDOW = 256 * 1024
BODY_GRANT = 64 * 1024
MAX_FRAME = 64 * 1024
# Responses are batched only while requests take less than this on average,
# so a held response waits for at most a few fast requests.
HOLD_IF_FASTER_THAN = 0.0005


STACKS = None  # where SIGUSR1 dumps the stacks (kept open)


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
        n = len(buf)
        pos = 0
        streams = self.streams
        while n - pos >= HDR_SIZE:
            length, kind, sid = HDR.unpack_from(buf, pos)
            end = pos + HDR_SIZE + length
            if end > n:
                break
            start = pos + HDR_SIZE
            pos = end
            if kind == K_REQUEST:
                flags = buf[start]
                hlen = U32.unpack_from(buf, start + 1)[0]
                hstart = start + 5
                head = bytes(buf[hstart : hstart + hlen])
                body = bytes(buf[hstart + hlen : end])
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
        del buf[:pos]

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


def encode_head(status, headers):
    parts = [status]
    for name, value in headers:
        parts.append(name)
        parts.append(value)
    return "\0".join(parts).encode("latin-1")


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
            "SCRIPT_NAME": "",
        }

    def run(self, st):
        conn = self.conn
        sid = st.sid
        environ = self.base.copy()
        it = iter(st.head.decode("latin-1").split("\0"))
        environ.update(zip(it, it))
        # A body that came whole needs no flow control: C-speed BytesIO.
        environ["wsgi.input"] = BytesIO(st.body) if st.chunks is None else Input(conn, st)
        is_head = environ.get("REQUEST_METHOD") == "HEAD"
        state = [None, None, False]  # status, headers, head sent

        def send_data(data):
            if not state[2]:
                conn.send(K_START, sid, encode_head(state[0], state[1]))
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
            state[0] = status
            state[1] = headers
            return write

        result = None
        try:
            result = self.app(environ, start_response)
            if type(result) is list and not state[2]:
                # The whole body is known: one frame, one syscall.
                if state[0] is None:
                    raise AssertionError("app returned without calling start_response()")
                body = b"".join(result) if not is_head else b""
                head = encode_head(state[0], state[1])
                conn.send_raw(b"".join((
                    RESP_HDR.pack(4 + len(head) + len(body), K_RESPONSE, sid, len(head)),
                    head, body)), conn.pending and conn.avg_run < HOLD_IF_FASTER_THAN)
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
            conn.send(K_END, sid, b"")
        except Exception:
            tb = traceback.format_exc()
            sys.stderr.write("Error handling request %s %s\n%s" % (
                environ.get("REQUEST_METHOD"), environ.get("RAW_URI"), tb))
            sys.stderr.flush()
            if not state[2]:
                body = b"Internal Server Error"
                head = encode_head("500 Internal Server Error", [
                    ("Content-Type", "text/plain"),
                    ("Content-Length", str(len(body))),
                ])
                conn.send(K_RESPONSE, sid, U32.pack(len(head)) + head + body)
            else:
                conn.send(K_ABORT, sid, tb.encode("utf-8", "replace"))
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


def lifespan_startup(app):
    """Runs the ASGI lifespan startup (spec 2.0) on a fresh event loop.

    Raises LifespanFailed when the app sends lifespan.startup.failed, or
    raises after it took the startup event. An app that raises before it
    receives anything does not support lifespan, which is fine (as with
    uvicorn's lifespan "auto"). Returns the loop, the lifespan task and the
    scope's state for the app's requests.
    """
    import asyncio

    loop = asyncio.new_event_loop()
    state = {}
    engaged = []

    async def run():
        inbox = asyncio.Queue()
        started = loop.create_future()

        async def receive():
            engaged.append(True)
            return await inbox.get()

        async def send(message):
            kind = message.get("type")
            if started.done():
                return
            if kind == "lifespan.startup.complete":
                started.set_result(None)
            elif kind == "lifespan.startup.failed":
                started.set_exception(LifespanFailed(message.get("message", "")))

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": state}
        task = loop.create_task(app(scope, receive, send))
        await inbox.put({"type": "lifespan.startup"})
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            started.result()  # raises LifespanFailed
            return task
        exc = task.exception()
        if exc is not None and engaged:
            raise LifespanFailed("the app raised %s" % type(exc).__name__) from exc
        return None  # lifespan not supported: carry on without it

    task = loop.run_until_complete(run())
    return loop, task, state


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


def load_app(spec):
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    import importlib

    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main():
    fd = int(os.environ.pop("CORRAL_FD", "3"))
    spec = os.environ.pop("CORRAL_APP")
    threads = int(os.environ.pop("CORRAL_THREADS", "1"))
    extra_path = os.environ.pop("CORRAL_PYTHONPATH", "")
    graceful = float(os.environ.pop("CORRAL_GRACEFUL_TIMEOUT", "30"))
    interface = os.environ.pop("CORRAL_INTERFACE", "auto")
    heartbeat = float(os.environ.pop("CORRAL_HEARTBEAT", "0"))
    sock = socket.socket(fileno=fd)
    conn = Connection(sock)

    # SIGUSR1 dumps every thread's stack (even with the GIL held) into a file
    # corral reads, logs and shows in /status; stderr when there is none.
    stacks_dir = os.environ.pop("CORRAL_STACKS_DIR", "")
    global STACKS
    STACKS = (open(os.path.join(stacks_dir, "stacks-%d.txt" % os.getpid()), "w")
              if stacks_dir else sys.stderr)
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
    try:
        app = load_app(spec)
        if not callable(app):
            raise TypeError("%s is not callable (got %s)" % (spec, type(app).__name__))
        if interface == "asgi" or (interface == "auto" and is_asgi(app)):
            # Start-up errors surface now, as boot errors, like an import error.
            lifespan_startup(app)
            raise RuntimeError(
                "%s is an ASGI app and its lifespan startup succeeded, but this corral "
                "serves WSGI apps only so far (ASGI support is on the way)" % spec)
    except LifespanFailed as e:
        tb = "ASGI lifespan startup failed: %s\n" % e
        if e.__cause__ is not None:
            tb += app_traceback(e.__cause__)
        conn.send(K_BOOT_ERROR, 0, tb.encode("utf-8", "replace"))
        sys.stderr.flush()
        os._exit(1)
    except BaseException as e:
        tb = app_traceback(e)
        conn.send(K_BOOT_ERROR, 0, tb.encode("utf-8", "replace"))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # not sys.exit: threads the app started must not keep us alive
    import_ms = (time.monotonic() - t0) * 1000.0

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
    deadline = time.monotonic() + graceful
    while conn.active and time.monotonic() < deadline:
        time.sleep(0.01)
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
