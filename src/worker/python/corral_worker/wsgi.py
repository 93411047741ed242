"""WSGI apps (PEP 3333): CORRAL_WORKER_THREADS threads take turns reading
the channel (leader/follower): the thread that reads a new request usually
runs it itself, so a request costs no thread hand-off. Under gevent
([workers] gevent) one greenlet reads the channel and runner greenlets take
the requests it read (GreenWorker)."""

import collections
from io import BytesIO
import os
import select
import sys
import threading
import time
from time import perf_counter
import traceback

from .protocol import (
    BODY_GRANT, ERROR_BODY, ERROR_HEAD, F_MORE_BODY, F_SMALL_WINDOW, F_STAY, HDR,
    HOLD_IF_FASTER_THAN, K_ABORT, K_BODY, K_BODY_END, K_BODY_WINDOW, K_CANCEL, K_DATA, K_END,
    K_HEARTBEAT, K_REQUEST, K_RESPONSE, K_RETURN, K_START, K_WINDOW, MAX_FRAME, PIECES_FROM,
    RESP_HDR, RESPONSE_WINDOW, SMALL_WINDOW, U32,
    ClientDisconnected, clip, log_error, request_parts, under_root, whole_frames, wsgi_head,
)

# How often at most a streaming response looks for a CANCEL from corral
# between its pieces (Connection.look): a look on the socket is a poll.
LOOK_EVERY = 0.05
# A request queued in the worker while every thread runs one that has taken
# STALL_AFTER seconds, or STALL_RUNS times the mean run time if longer, goes
# back to corral for another worker (Connection.give_back); the watch looks
# every WATCH_BUSY seconds while a thread is in a request, else every
# WATCH_IDLE.
STALL_AFTER = 0.01
STALL_RUNS = 8
WATCH_BUSY = 0.01
WATCH_IDLE = 0.02


def NOT_YET():
    """A condition that never holds: read whatever there is."""
    return False


class Stream:
    """One request in flight: its body as it arrives and its response credit.

    `head` is the environ's keys and values (text, NUL between them).
    `body` holds the whole body when it came inside the REQUEST frame;
    otherwise `chunks` collects it as BODY frames arrive. `flags` are the
    REQUEST frame's.
    """

    __slots__ = ("sid", "head", "body", "chunks", "body_done", "window", "cancelled", "flags")

    def __init__(self, sid, head, body, flags):
        self.sid = sid
        self.head = head
        self.window = SMALL_WINDOW if flags & F_SMALL_WINDOW else RESPONSE_WINDOW
        self.cancelled = False
        self.flags = flags
        if flags & F_MORE_BODY:
            self.body = None
            self.chunks = collections.deque((body,)) if body else collections.deque()
            self.body_done = False
        else:
            self.body = body
            self.chunks = None
            self.body_done = True


class Input:
    """wsgi.input: the request body, streamed from corral with back-pressure.

    What has arrived and is not read yet is the unread end of one chunk
    (`_buf` from `_pos`); a read that needs more gathers chunks in a list
    and joins them once, so reading a body of any size, whole or in
    pieces, costs time linear in its size.
    """

    def __init__(self, conn, stream):
        self._conn = conn
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self._consumed = 0

    def _next(self):
        """The next chunk of the body, waiting for it; b"" at its end."""
        s = self._stream
        if not s.chunks and not s.body_done and not s.cancelled:
            self._conn.wait_until(lambda: s.chunks or s.body_done or s.cancelled)
        if s.chunks:
            chunk = s.chunks.popleft()
            self._consumed += len(chunk)
            if self._consumed >= BODY_GRANT and not s.body_done:
                self._conn.send(K_BODY_WINDOW, s.sid, U32.pack(self._consumed))
                self._consumed = 0
            return chunk
        if s.cancelled:
            raise ClientDisconnected("client disconnected while sending the body")
        return b""

    def _take(self, n):
        """The next n buffered bytes (n at most what is buffered)."""
        buf, pos = self._buf, self._pos
        end = pos + n
        if end >= len(buf):
            self._buf, self._pos = b"", 0
            return buf[pos:] if pos else buf
        self._pos = end
        return buf[pos:end]

    def _gather(self, size, line):
        """Up to `size` bytes (all that come when negative or None); with
        `line`, no further than the first newline, which is kept."""
        if size is None or size < 0:
            size = -1
        parts, have = [], 0
        while have != size:
            if self._pos == len(self._buf):
                chunk = self._next()
                if not chunk:
                    break
                self._buf, self._pos = chunk, 0
            end = len(self._buf)
            if line:
                i = self._buf.find(b"\n", self._pos)
                if i >= 0:
                    end = i + 1
            n = end - self._pos
            if size >= 0:
                n = min(n, size - have)
            part = self._take(n)
            parts.append(part)
            have += n
            if line and part.endswith(b"\n"):
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, size=-1):
        return self._gather(size, False)

    def readline(self, size=-1):
        return self._gather(size, True)

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

    def __init__(self, sock, ring=None):
        self.rebind(sock, ring)
        self.waiters = 0
        self.pending = collections.deque()
        self.streams = {}
        self.rbuf = bytearray()
        # What one recv takes, read into the same memory every time: a
        # fresh 256 KiB bytes per recv costs an mmap, page faults and an
        # munmap (glibc serves that size from mmap), more than the request.
        self.recv_view = memoryview(bytearray(1 << 18))
        # Pieces of frames held back for one write, and how many frames.
        self.out = []
        self.held = 0
        # Whether they include a big body's pieces (send_raw's tuples).
        self.big = False
        # Moving average of request run time (seconds): responses are only
        # held back for batching while requests are fast, and Worker.watch
        # gives requests back past a multiple of it. A thread worker's
        # sample counts for at most 4 times the average (serve_forever), so
        # that a few slow requests among fast ones leave it a fast app's
        # (the watch would otherwise wait for half a second after each); a
        # uniformly slow app gets there within a few dozen requests.
        self.avg_run = 0.0
        # Called with a stream's id when corral cancels it past the timeout
        # (GreenWorker's); threads cannot be stopped, so None for them.
        self.on_timeout = None
        # When a streaming response last looked for corral's frames.
        self.looked = 0.0

    def rebind(self, sock, ring):
        """The channel's socket and locks; made anew after gevent's
        monkey-patching that the app did when it was imported (the socket
        gevent's now), so that waiting on them lets the other greenlets run."""
        self.sock = sock
        # Where frames go and come from: the shared-memory rings when corral
        # offered them (ring.py), else the socket.
        self.chan = ring if ring is not None else sock
        # Writes a list of frame pieces: the ring copies each straight from
        # where it is (a response body is never joined to its head); the
        # socket gets them joined, one sendall.
        self.write_pieces = ring.send_pieces if ring is not None else self._sock_pieces
        # Whether corral sent something, without waiting: the ring's tail,
        # or a poll of the socket.
        if ring is not None:
            self.readable = ring.readable
        else:
            self.readable = lambda: bool(select.select((sock,), (), (), 0)[0])
        self.rlock = threading.Lock()  # held by the thread reading the socket
        self.wlock = threading.Lock()
        self.cv = threading.Condition(threading.Lock())

    # -- reading (leader/follower) --------------------------------------

    def wait_until(self, pred):
        """Block until pred() is true, reading the socket when nobody else is."""
        while not pred():
            if self.out:
                self.flush()
            if not self._lead(pred):
                with self.cv:
                    if pred() or not self.rlock.locked():
                        continue
                    self.waiters += 1
                    try:
                        self.cv.wait(1.0)
                    finally:
                        self.waiters -= 1

    def look(self):
        """Reads what corral sent, if anything, when no other thread
        reads: a streaming response calls it between its pieces (at most
        every LOOK_EVERY seconds), so that it learns its client left (a
        CANCEL) even when every thread is busy in the app, as gunicorn's
        next write to a closed socket fails."""
        now = perf_counter()
        if now - self.looked < LOOK_EVERY:
            return
        self.looked = now
        self._take_in()

    def _take_in(self):
        """Reads what corral sent, if anything waits, when no other thread
        reads."""
        if self.readable():
            self._lead(NOT_YET)

    def _lead(self, pred):
        """Reads once, unless pred() already holds, if no other thread
        reads, then wakes the threads that wait; False if another reads."""
        if not self.rlock.acquire(False):
            return False
        try:
            if not pred():
                self._read()
        finally:
            self.rlock.release()
        if self.waiters:
            with self.cv:
                self.cv.notify_all()
        return True

    def _read(self):
        # Only the thread that holds rlock reads, so recv_view is its own.
        view = self.recv_view
        try:
            n = self.chan.recv_into(view)
        except InterruptedError:
            return
        if not n:
            # corral is gone: no one can receive our responses any more.
            os._exit(0)
        buf = self.rbuf
        if buf:
            buf += view[:n]
            data, n = buf, len(buf)
        else:
            # Mostly a read ends at a frame's end: the frames are read where
            # they landed, and only a partial frame's bytes are kept.
            data = view
        pos = 0
        streams = self.streams
        for kind, sid, start, end in whole_frames(data, n):
            pos = end
            if kind == K_REQUEST:
                flags, head, body = request_parts(data, start, end, text=True)
                st = Stream(sid, head, body, flags)
                streams[sid] = st
                self.pending.append(st)
            elif kind == K_BODY:
                st = streams.get(sid)
                if st is not None and st.chunks is not None:
                    st.chunks.append(bytes(data[start:end]))
            elif kind == K_BODY_END:
                st = streams.get(sid)
                if st is not None:
                    st.body_done = True
            elif kind == K_WINDOW:
                st = streams.get(sid)
                if st is not None:
                    st.window += U32.unpack_from(data, start)[0]
            elif kind == K_CANCEL:
                st = streams.get(sid)
                if st is not None:
                    st.cancelled = True
                    if self.on_timeout is not None and data[start:end] == b"t":
                        self.on_timeout(sid)
        if data is buf:
            del buf[:pos]
        elif pos < n:
            buf += view[pos:n]

    def give_back(self):
        """Gives corral back the requests queued here that no thread has
        started, when every thread is held by a long request (see watch):
        corral sends them to another worker, or keeps them until one is
        free, as gunicorn's listen queue does. Only those whose body came
        whole, and not a readiness probe (F_STAY). A request is taken from
        `pending` once, by a thread or by this, so none runs twice. Writes
        the answers held back for batching too."""
        self._take_in()
        pending = self.pending
        frames = []
        for st in list(pending):
            if st.chunks is not None or st.cancelled or st.flags & F_STAY:
                continue
            try:
                pending.remove(st)
            except ValueError:
                continue  # a thread took it meanwhile
            self.streams.pop(st.sid, None)
            frames.append(HDR.pack(0, K_RETURN, st.sid))
        if frames:
            self.send_raw(b"".join(frames))
        elif self.out:
            # Answers held back for one write with the next (send_raw's
            # hold) would wait for the long request otherwise.
            self.flush()

    # -- writing ----------------------------------------------------------

    # Whole responses of fast requests are held back while more requests are
    # already waiting to run, then written together: one syscall for a batch
    # instead of one per response. Everything else is written at once, and
    # the buffer is flushed before any thread blocks.

    def send(self, kind, sid, payload):
        self.send_raw(HDR.pack(len(payload), kind, sid) + payload)

    def send_raw(self, frame, hold=False):
        """Writes a frame: bytes, or a tuple of its bytes-like pieces, the
        body last (held until written, so they must not change); a body of
        PIECES_FROM bytes or more is written from where it is, a smaller
        one joined to the rest. With hold, the frame may wait with up to 15
        others for one write."""
        with self.wlock:
            out = self.out
            if type(frame) is not tuple:
                out.append(frame)
            elif len(frame[-1]) >= PIECES_FROM:
                out += frame
                self.big = True
            else:
                out.append(b"".join(frame))
            if hold and self.held < 16:
                self.held += 1
                return
            self._write_out()

    def flush(self):
        with self.wlock:
            if self.out:
                self._write_out()

    def _write_out(self):
        # Called with wlock held. Small frames are joined (one copy in C
        # costs less than a piece in Python); a big body's pieces are not.
        out = self.out
        try:
            if self.big or len(out) == 1:
                self.write_pieces(out)
            else:
                self.write_pieces((b"".join(out),))
        finally:
            out.clear()
            self.held = 0
            self.big = False

    def _sock_pieces(self, pieces):
        self.sock.sendall(b"".join(pieces))



class WsgiRunner:
    """Runs one WSGI request per call, PEP 3333."""

    def __init__(self, conn, app, threads, root, software="corral", hooks=None,
                 multiprocess=True, multithread=None):
        """threads: how many requests may run at once (wsgi.multithread,
        unless multithread says otherwise: gevent's greenlets);
        multiprocess: more than one worker is configured (gunicorn's
        wsgi.multiprocess)."""
        self.conn = conn
        self.app = app
        # gunicorn's pre_request and post_request (hooks.py), when the
        # config file has them; None keeps them off the request path.
        self.hooks = hooks
        from wsgiref.util import FileWrapper

        self.base = {
            # As gunicorn's "gunicorn/27.0.1" (CGI's SERVER_SOFTWARE).
            "SERVER_SOFTWARE": software,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": threads > 1 if multithread is None else multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            # wsgi.input returns b"" at the end of the body, chunked or not
            # (Werkzeug reads chunked bodies only when this is set).
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SCRIPT_NAME": root,
        }
        # The prefix the app is mounted under ([app] root_path), or "".
        self.root = root

    def run(self, st):
        conn = self.conn
        sid = st.sid
        if st.cancelled:
            # The client left while the request waited here: the app never
            # sees it, and corral gets its place back.
            conn.streams.pop(sid, None)
            conn.send(K_END, sid, b"")
            return
        environ = self.base.copy()
        it = iter(st.head.split("\0"))
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
        resp = Response(conn, st, environ.get("REQUEST_METHOD") == "HEAD")
        result = req = None
        try:
            if self.hooks is not None:
                req = self.hooks.request(environ)
                self.hooks.pre_request(req)
            result = self.app(environ, resp.start_response)
            if type(result) is list and not resp.sent:
                if resp.status is None:
                    raise AssertionError("app returned without calling start_response()")
                body = b"".join(result) if not resp.is_head else b""
                if len(body) <= st.window:
                    # The whole body is known and small: one frame, one syscall.
                    head = resp.head
                    conn.send_raw((
                        RESP_HDR.pack(4 + len(head) + len(body), K_RESPONSE, sid, len(head)),
                        head, body), conn.pending and conn.avg_run < HOLD_IF_FASTER_THAN)
                else:
                    # A big one streams under the window like any other.
                    resp.send_data(body)
                    conn.send(K_END, sid, b"")
            else:
                for chunk in result:
                    if type(chunk) is not bytes:
                        raise TypeError("app must yield bytes, not %s" % type(chunk).__name__)
                    if chunk or not resp.sent:
                        if resp.status is None:
                            raise AssertionError("app yielded before calling start_response()")
                        resp.send_data(chunk)
                if not resp.sent:
                    if resp.status is None:
                        raise AssertionError("app returned without calling start_response()")
                    resp.send_data(b"")
                conn.send(K_END, sid, b"")
        except ClientDisconnected:
            # Once the head is out, only an abort tells corral the body is
            # cut short (a client that stalled its upload is still there and
            # must not take a truncated body for a whole one).
            if resp.sent:
                conn.send(K_ABORT, sid, b"the request was cancelled")
            else:
                conn.send(K_END, sid, b"")
        except Exception:
            tb = traceback.format_exc()
            log_error("Error handling request %s %s\n%s" % (
                environ.get("REQUEST_METHOD"), environ.get("RAW_URI"), tb))
            if not resp.sent:
                conn.send(K_RESPONSE, sid, U32.pack(len(ERROR_HEAD)) + ERROR_HEAD + ERROR_BODY)
            else:
                conn.send(K_ABORT, sid, clip(tb).encode("utf-8", "replace"))
        finally:
            if result is not None and hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    traceback.print_exc()
            if req is not None:
                self.hooks.post_request(req, environ, resp, result)
            conn.streams.pop(sid, None)


class Response:
    """One request's answer as the app gives it: start_response, write()
    and the frames they send. An object per request, not closures: one
    allocation, and the runner reads its fields without cells."""

    __slots__ = ("conn", "st", "is_head", "status", "head", "sent", "headers", "nbytes")

    def __init__(self, conn, st, is_head):
        self.conn = conn
        self.st = st
        self.is_head = is_head
        self.status = None
        # The encoded head, and whether it was sent (then the status is
        # final: a later start_response must re-raise its exc_info).
        self.head = None
        self.sent = False
        # The app's headers and the body bytes sent as DATA frames, for
        # post_request.
        self.headers = None
        self.nbytes = 0

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        if type(status) is not str:
            raise TypeError("status must be a str, not %s" % type(status).__name__)
        # Checked and encoded now, so a bad header raises here, in the
        # app, where its own error handling can see it.
        self.head = wsgi_head(status, headers)
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data):
        if self.status is None:
            raise AssertionError("write() called before start_response()")
        if type(data) is not bytes:
            raise TypeError("write() argument must be bytes, not %s" % type(data).__name__)
        self.send_data(data)

    def send_data(self, data):
        conn = self.conn
        st = self.st
        sid = st.sid
        if not self.sent:
            conn.send(K_START, sid, self.head)
            self.sent = True
        if self.is_head or not data:
            return
        self.nbytes += len(data)
        conn.look()
        view = memoryview(data)
        off = 0
        while off < len(view):
            if st.window <= 0 and not st.cancelled:
                conn.wait_until(lambda: st.window > 0 or st.cancelled)
            if st.cancelled:
                raise ClientDisconnected("client disconnected")
            # No more than the window: corral holds what it lets us send.
            part = view[off : off + min(MAX_FRAME, st.window)]
            off += len(part)
            st.window -= len(part)
            conn.send_raw((HDR.pack(len(part), K_DATA, sid), part))


class Worker:
    def __init__(self, conn, runner, threads):
        self.conn = conn
        self.runner = runner
        self.threads = threads
        # When each thread began the request it runs (0.0: none), for watch.
        self.starts = [0.0] * threads

    def serve_forever(self, i):
        conn = self.conn
        pending = conn.pending
        starts = self.starts
        while True:
            if not pending:
                conn.wait_until(lambda: pending)
            try:
                st = pending.popleft()
            except IndexError:
                continue
            t0 = starts[i] = perf_counter()
            try:
                self.runner.run(st)
            finally:
                starts[i] = 0.0
                avg = conn.avg_run
                run = perf_counter() - t0
                if run > avg * 4.0 and avg:  # clipped: see Connection.avg_run
                    run = avg * 4.0
                conn.avg_run = avg * 0.875 + run * 0.125

    def start(self, stopping):
        for i in range(self.threads):
            t = threading.Thread(target=self._thread_main, args=(i,), name="corral-%d" % i,
                                 daemon=True)
            t.start()
        threading.Thread(target=self.watch, args=(stopping,), name="corral-watch",
                         daemon=True).start()

    def _thread_main(self, i):
        try:
            self.serve_forever(i)
        except BaseException:
            traceback.print_exc()
            os._exit(70)

    def watch(self, stopping):
        """While every thread is held by a request that has run long (for
        STALL_AFTER seconds, or STALL_RUNS times the mean run time if
        longer), gives corral back the requests queued behind them, as a
        gunicorn worker takes a request only when it is free. Not once the
        worker drains (stopping()): it finishes what it holds."""
        conn = self.conn
        starts = self.starts
        while True:
            time.sleep(WATCH_BUSY if any(starts) else WATCH_IDLE)
            if 0.0 in starts or stopping():
                continue
            # Since the latest start, every thread has been in a request.
            if perf_counter() - max(starts) >= max(STALL_AFTER, STALL_RUNS * conn.avg_run):
                conn.give_back()


class GreenWorker:
    """Under gevent: one greenlet reads the channel (it holds the read lock
    for good, so a request waiting for more of its body or for credit in
    Connection.wait_until waits to be notified), and runner greenlets take
    the requests it read, as threads do: a runner that finds the queue
    empty parks until the reader wakes it. A runner is made only when every
    one is busy (an app waiting on I/O), and kept: making a greenlet costs
    more than a fast request. corral sends no more than [workers]
    concurrency requests at once."""

    def __init__(self, conn, runner):
        import gevent
        from gevent._waiter import Waiter

        self.conn = conn
        self.runner = runner
        self.spawn = gevent.spawn
        self.getcurrent = gevent.getcurrent
        self.Waiter = Waiter
        self.GreenletExit = gevent.GreenletExit
        self.run_callback = gevent.get_hub().loop.run_callback
        # Parked runners' waiters, and the runner running each request.
        self.idle = []
        self.running = {}
        conn.on_timeout = self.timed_out
        # Who writes a frame now (see timed_out).
        conn.wlock = OwnedLock(conn.wlock, self.getcurrent)

    def start(self):
        self.spawn(self._guard, self.read_forever)

    def _guard(self, main):
        try:
            main()
        except BaseException:
            traceback.print_exc()
            os._exit(70)

    def read_forever(self):
        conn = self.conn
        pending = conn.pending
        idle = self.idle
        conn.rlock.acquire()
        while True:
            if conn.out:
                conn.flush()
            conn._read()
            # One runner per request read, parked ones first.
            for _ in range(len(pending)):
                if idle:
                    self.run_callback(idle.pop().switch, None)
                else:
                    self.spawn(self.run_forever)
            if conn.waiters:
                with conn.cv:
                    conn.cv.notify_all()

    def run_forever(self):
        """A runner: requests while there are any, then park. A
        GreenletExit (timed_out) ends it."""
        conn = self.conn
        pending = conn.pending
        running = self.running
        me = self.getcurrent()
        run = self.runner.run
        killed = self.GreenletExit
        while True:
            while pending:
                st = pending.popleft()
                running[st.sid] = me
                t0 = perf_counter()
                try:
                    run(st)
                except killed:
                    return
                except BaseException:
                    traceback.print_exc()
                    os._exit(70)
                finally:
                    running.pop(st.sid, None)
                conn.avg_run = conn.avg_run * 0.875 + (perf_counter() - t0) * 0.125
            if conn.out:
                conn.flush()
            waiter = self.Waiter()
            self.idle.append(waiter)
            waiter.get()

    def timed_out(self, sid):
        """corral answered 504 for this request: its runner is killed
        (GreenletExit where it waits), from the hub, where the runner is
        switched to, and only if it still runs that request and is not
        writing a frame, which must go out whole (then its next write finds
        the request cancelled)."""
        g = self.running.get(sid)
        if g is not None:
            self.run_callback(self._kill, sid, g)

    def _kill(self, sid, g):
        if self.running.get(sid) is g and g is not self.conn.wlock.owner:
            g.throw(self.GreenletExit)


class OwnedLock:
    """A lock that knows which greenlet holds it."""

    __slots__ = ("lock", "owner", "current")

    def __init__(self, lock, current):
        self.lock = lock
        self.owner = None
        self.current = current

    def __enter__(self):
        self.lock.acquire()
        self.owner = self.current()

    def __exit__(self, *exc):
        self.owner = None
        self.lock.release()


def beat(conn, interval):
    """Says "alive" every interval; it needs the GIL, so a wedged
    interpreter (a C call holding the GIL, a deadlock) falls silent."""
    frame = HDR.pack(0, K_HEARTBEAT, 0)
    while True:
        time.sleep(interval)
        conn.send_raw(frame)

