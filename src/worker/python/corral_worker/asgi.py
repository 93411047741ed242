"""ASGI apps (ASGI 3, with lifespan and WebSockets): one event loop (uvloop
when installed) reads the channel as an asyncio protocol; every request and
WebSocket is a task on it."""

import collections
import os
import signal
import sys
import traceback

from .protocol import (
    BODY_GRANT, ERROR_BODY, ERROR_HEAD, F_MORE_BODY, F_SMALL_WINDOW, F_WEBSOCKET,
    FORBIDDEN_HEAD, HDR, K_ABORT, K_BODY, K_BODY_END, K_BODY_WINDOW, K_BOOT_OK, K_CANCEL,
    K_DATA, K_END, K_HEARTBEAT, K_REQUEST, K_RESPONSE, K_START, K_WINDOW, K_WS_ACCEPT,
    K_WS_BINARY, K_WS_CLOSE, K_WS_TEXT, MAX_FRAME, MAX_WS_MESSAGE, PIECES_FROM, RESP_HDR,
    RESPONSE_WINDOW, SMALL_WINDOW, U16, U32,
    ClientDisconnected, asgi_fields, asgi_head, check_text, clip, close_reason, frames, log,
    log_error, request_parts, run_exit_handlers, under_root,
)


class LifespanFailed(Exception):
    """The app's ASGI lifespan startup failed (the app's message follows)."""


# Spec 2.3, as uvicorn says: with 2.4 Starlette stops watching receive()
# for the client's leaving and waits for a send() to fail, so an event
# stream that waits between events would wait on after its client left.
# send() after the client left still raises an OSError subclass.
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
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
        # "on" once the startup completed, "unsupported" when the app
        # refused the protocol, "off" when it was not run.
        self.mode = "off"

    async def startup(self, required=False):
        """Raises LifespanFailed when the app sends lifespan.startup.failed,
        or raises after it took the startup event; with `required` ([app]
        asgi_lifespan = "on"), also when the app does not support it."""
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
            self.mode = "on"
            return
        exc = task.exception()
        if exc is not None and engaged:
            raise LifespanFailed("the app raised %s" % type(exc).__name__) from exc
        if required:
            raise LifespanFailed("the app does not support the lifespan protocol, and "
                                 "asgi_lifespan is \"on\" (--asgi-lifespan on): set it to "
                                 "\"auto\" to serve it without") from exc
        # Lifespan not supported: carry on without it, and say so once, as
        # uvicorn does ("ASGI 'lifespan' protocol appears unsupported."),
        # with the app's reason: Django's handler raises ValueError ("Django
        # can only handle ASGI/HTTP connections, not lifespan.").
        self.mode = "unsupported"
        why = ("it raised %s: %s" % (type(exc).__name__, exc) if exc is not None
               else "it returned without completing the startup")
        sys.stderr.write("corral worker: the app does not support the ASGI lifespan protocol "
                         "(%s): serving it without one, as asgi_lifespan \"auto\" allows\n"
                         % " ".join(why.split()))
        sys.stderr.flush()

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



def new_event_loop(choice="auto"):
    """The loop `choice` names ([app] asgi_loop): "auto" is uvloop's when
    it is installed, asyncio's otherwise; "uvloop" without uvloop raises."""
    import asyncio

    if choice == "asyncio":
        return asyncio.new_event_loop(), "asyncio"
    try:
        import uvloop
    except ImportError as e:
        if choice == "uvloop":
            raise ImportError("asgi_loop = \"uvloop\" (--asgi-loop uvloop) needs uvloop in the "
                              "app's environment: pip install uvloop (%s)" % e) from e
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

    def __init__(self, sid, body, more, window=RESPONSE_WINDOW):
        self.sid = sid
        self.window = window
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


class HttpCall:
    """One HTTP request's receive and send, as the app calls them. An object
    per request, not closures: one allocation, and no cells."""

    __slots__ = ("worker", "st", "head", "head_sent", "complete")

    def __init__(self, worker, st):
        self.worker = worker
        self.st = st
        # The head, held back until the first body message; whether it was
        # sent; whether the response is complete.
        self.head = None
        self.head_sent = False
        self.complete = False

    async def receive(self):
        st = self.st
        if st.body is not None:
            body, st.body = st.body, None
            st.body_done = True
            return {"type": "http.request", "body": body, "more_body": False}
        chunks = st.chunks
        if chunks is not None:
            while not chunks and not st.body_done and not st.cancelled:
                await st.wait(self.worker.loop)
            if chunks:
                chunk = chunks.popleft()
                self.worker.grant(st, len(chunk))
                more = bool(chunks) or not st.body_done
                if not more:
                    # The body is over: what follows is the disconnect.
                    st.chunks = None
                return {"type": "http.request", "body": chunk, "more_body": more}
            if st.body_done and not st.cancelled:
                st.chunks = None
                return {"type": "http.request", "body": b"", "more_body": False}
        while not st.cancelled and not self.complete:
            await st.wait(self.worker.loop)
        return {"type": "http.disconnect"}

    async def send(self, message):
        st = self.st
        worker = self.worker
        sid = st.sid
        kind = message["type"]
        if kind == "http.response.start":
            if self.head is not None or self.head_sent:
                raise RuntimeError("http.response.start sent twice")
            self.head = asgi_head(message["status"], message.get("headers", ()))
            # Held for the first body message, to go in one frame with it,
            # but no longer than this turn of the loop: an app that awaits
            # something first (a streaming response's slow first chunk)
            # has its head sent as uvicorn would, and corral's request
            # timer stops at it.
            worker.hold_head(self)
            return
        if kind != "http.response.body":
            raise RuntimeError("unexpected ASGI message %r in an HTTP request" % kind)
        if self.complete:
            raise RuntimeError("http.response.body sent after the response completed")
        if self.head is None and not self.head_sent:
            raise RuntimeError("http.response.body sent before http.response.start")
        if st.cancelled:
            raise ClientDisconnected("the client disconnected")
        body = message.get("body", b"")
        if type(body) is not bytes:
            # Checked before the head goes: the app's error gets a 500.
            if not isinstance(body, (bytearray, memoryview)):
                raise TypeError("http.response.body's body must be bytes, not %s"
                                % type(body).__name__)
            body = bytes(body)
        more = message.get("more_body", False)
        if not self.head_sent:
            head = self.head
            self.head = None
            self.head_sent = True
            if not more and len(body) <= st.window:
                worker.write(b"".join((RESP_HDR.pack(4 + len(head) + len(body), K_RESPONSE,
                                                   sid, len(head)), head, body)))
                self.complete = st.done = True
                st.wake()
                return
            worker.send(K_START, sid, head)
        if body:
            await worker.send_data(st, body)
        if not more:
            worker.send(K_END, sid, b"")
            self.complete = st.done = True
            st.wake()


class AsgiWorker:
    """Serves an ASGI 3 app: every request and WebSocket is a task on one
    event loop; frames to corral are written once per loop iteration, but
    for a body piece or message of PIECES_FROM bytes or more, written when
    the app sends it (send_pieces)."""

    def __init__(self, app, loop, lifespan, graceful, root):
        from urllib.parse import unquote, unquote_to_bytes

        self.app = app
        self.loop = loop
        self.lifespan = lifespan
        self.graceful = graceful
        # The prefix the app is mounted under ([app] root_path), or "".
        self.root = root
        self.unquote = unquote
        self.unquote_to_bytes = unquote_to_bytes
        self.streams = {}
        self.rbuf = bytearray()
        self.out = []
        # Calls whose response head waits for its first body message.
        self.held = []
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

    def send_pieces(self, kind, sid, payload):
        """send(), for a payload of PIECES_FROM bytes or more (bytes, or a
        memoryview of bytes): it goes to the socket now, from where it is,
        behind the frames queued before it (one writev with uvloop). Joined
        to its header and held for the loop's turn, a streamed body was
        copied twice in Python and reached corral a window at a time (four
        64 KiB pieces joined into one 256 KiB bytes at the end of the
        turn): corral started on none of it until the app had used its
        whole window, so the two took turns instead of working side by side
        (bench/stream.py: a 1 GiB body took 2.5 times uvicorn's time, 1.5
        with this)."""
        out = self.out
        pieces = (*out, HDR.pack(len(payload), kind, sid), payload)
        out.clear()
        self.transport.writelines(pieces)

    def hold_head(self, call):
        """`call`'s head waits for its first body message until the loop's
        next turn, then goes alone."""
        held = self.held
        held.append(call)
        if len(held) == 1:
            self.loop.call_soon(self.release_heads)

    def release_heads(self):
        held, self.held = self.held, []
        for call in held:
            head = call.head
            st = call.st
            if head is not None and not st.cancelled and not st.done:
                call.head = None
                call.head_sent = True
                self.send(K_START, st.sid, head)

    def data_received(self, data):
        buf = self.rbuf
        buf += data
        streams = self.streams
        for kind, sid, start, end in frames(buf):
            if kind == K_REQUEST:
                flags, head, body = request_parts(buf, start, end)
                st = AsgiStream(sid, body, flags & F_MORE_BODY,
                                SMALL_WINDOW if flags & F_SMALL_WINDOW else RESPONSE_WINDOW)
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
        root = self.root
        if root and not under_root(path, root):
            # uvicorn's --root-path: the proxy stripped the prefix, and the
            # ASGI spec wants it in front of path (and raw_path).
            path = root + path
            raw_path = root.encode("ascii") + raw_path
        h = parts[13:]
        scheme = parts[1].decode("latin-1")
        if kind == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        extensions = {}
        if parts[9]:
            # The ASGI TLS extension; server_cert is not passed on.
            chain = parts[12].decode("ascii")
            end = "-----END CERTIFICATE-----\n"
            extensions["tls"] = {
                "server_cert": None,
                "client_cert_chain": [c + end for c in chain.split(end) if c],
                "client_cert_name": parts[11].decode("utf-8", "replace") or None,
                "client_cert_error": None,
                "tls_version": int(parts[9]),
                "cipher_suite": int(parts[10]),
            }
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
            "extensions": extensions,
        }

    def grant(self, st, n):
        """The app consumed n bytes of body or messages: give corral credit."""
        st.consumed += n
        if st.consumed >= BODY_GRANT:
            self.send(K_BODY_WINDOW, st.sid, U32.pack(st.consumed))
            st.consumed = 0

    async def run_http(self, st, head):
        sid = st.sid
        scope = self.scope("http", head)
        call = HttpCall(self, st)
        try:
            await self.app(scope, call.receive, call.send)
            if not call.complete and not st.done:
                if call.head_sent and st.cancelled:
                    # The client left mid-body and the app stopped, as it
                    # should (Django's handler returns once its view's task
                    # is cancelled): nothing to report.
                    self.send(K_ABORT, sid, b"the request was cancelled")
                elif call.head_sent:
                    log("ASGI app returned without completing the response to %s %s"
                        % (scope["method"], scope["path"]))
                    self.send(K_ABORT, sid, b"response not completed")
                elif not st.cancelled:
                    log("ASGI app returned without sending a response to %s %s"
                        % (scope["method"], scope["path"]))
                    self.error_response(sid)
                st.done = True
        except ClientDisconnected:
            if call.head_sent and not call.complete:
                # The head is out: an abort, so the body is not taken whole.
                self.send(K_ABORT, sid, b"the request was cancelled")
                st.done = True
        except BaseException as e:
            if st.cancelled and isinstance(e, asyncio_cancelled()):
                return  # corral cancelled it (past its timeout: answered 504)
            # Any other exception is the app's, a BaseException too (a
            # CancelledError of its own, KeyboardInterrupt, SystemExit):
            # this request fails alone, as under uvicorn. Let through, the
            # loop would end the worker and every request on it; taken as
            # corral's cancel, a cut body would end as if whole.
            tb = traceback.format_exc()
            log_error("Error handling request %s %s\n%s" % (scope["method"], scope["path"], tb))
            if not call.head_sent:
                self.error_response(sid)
            elif not call.complete:
                self.send(K_ABORT, sid, clip(tb).encode("utf-8", "replace"))
            st.done = True
        finally:
            if not st.done:
                self.send(K_END, sid, b"")
            self.finished(st)

    async def send_data(self, st, body):
        """Sends body as DATA frames, each when the stream has window."""
        view = memoryview(body)
        off = 0
        while off < len(view):
            while st.window <= 0 and not st.cancelled:
                await st.wait(self.loop)
            if st.cancelled:
                raise ClientDisconnected("the client disconnected")
            # No more than the window: corral holds what it lets us send.
            part = view[off : off + min(MAX_FRAME, st.window)]
            off += len(part)
            st.window -= len(part)
            if len(part) >= PIECES_FROM:
                self.send_pieces(K_DATA, st.sid, part)
            else:
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
        scope["extensions"]["websocket.http.response"] = {}
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

        def closed(code, reason):
            """The app closed the socket (or refused it): its next receive()
            is websocket.disconnect, as the ASGI spec has it and uvicorn
            gives it (with the app's own code, 1006 for a refusal), since an
            app may go on receiving until it gets one (Channels' consumers
            do, and run disconnect() then)."""
            st.ws = WS_CLOSED
            st.inbox.append(({"type": "websocket.disconnect", "code": code, "reason": reason}, 0))
            st.wake()

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
                if len(data) >= PIECES_FROM and type(data) is bytes:
                    self.send_pieces(frame_kind, sid, data)
                else:
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
                    closed(1006, "")
                elif st.ws == WS_ACCEPTED:
                    code = message.get("code") or 1000
                    reason = message.get("reason") or ""
                    # corral checks the code (an invalid one becomes 1011).
                    self.send(K_WS_CLOSE, sid, U16.pack(code) + close_reason(reason))
                    st.done = True
                    closed(code, reason)
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
                    closed(1006, "")
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
        except ClientDisconnected:
            pass
        except BaseException as e:
            if st.cancelled and isinstance(e, asyncio_cancelled()):
                return
            # The app's, a BaseException too (see run_http).
            log_error("Error in WebSocket %s\n%s" % (scope["path"], traceback.format_exc()))
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
        if self.on_exit is not None:
            self.on_exit()
        run_exit_handlers()
        self.flush()
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


def serve_asgi(sock, app, lifespan, loop, loop_name, import_ms, heartbeat, graceful, root,
               on_exit=None):
    """Runs the ASGI worker on `loop` until SIGTERM (then exits, calling
    on_exit after the lifespan shutdown)."""
    worker = AsgiWorker(app, loop, lifespan, graceful, root)
    worker.on_exit = on_exit
    loop.run_until_complete(loop.create_unix_connection(lambda: worker, sock=sock))
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    if heartbeat > 0:
        worker.beat(heartbeat)
    worker.watch_parent(os.getppid())
    worker.send(K_BOOT_OK, 0, ('{"pid": %d, "import_ms": %.1f, "interface": "asgi", '
                               '"loop": "%s", "lifespan": "%s"}'
                               % (os.getpid(), import_ms, loop_name, lifespan.mode)).encode())
    loop.run_forever()


def is_asgi(app):
    """An ASGI app is a coroutine function, or an object whose __call__ is one."""
    import inspect

    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)

