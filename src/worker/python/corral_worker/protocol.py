"""The framed protocol between corral and this worker, as corral's
src/worker/protocol.rs describes it: frame kinds, the frame reader, and the
encoding of response heads (with the checks gunicorn makes on them).

Frame: 9-byte header <u32 payload length, u8 kind, u32 stream id> + payload.
The K_* numbers are corral's FrameKind; a unit test in protocol.rs reads
them from this file, so the two cannot drift apart.
"""

import io
import os
import re
import select
import struct
import sys
import threading

HDR = struct.Struct("<IBI")
U32 = struct.Struct("<I")
U16 = struct.Struct("<H")
# A RESPONSE frame's header plus its u32 head length.
RESP_HDR = struct.Struct("<IBII")
# A REQUEST payload's u8 flags and u32 head length.
REQUEST_PREFIX = struct.Struct("<BI")
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
K_RETURN = 19
K_WS_ACCEPT = 20

F_MORE_BODY = 1
F_WEBSOCKET = 2
F_STAY = 4
# corral holds its budget of response bytes: this response's window starts
# at SMALL_WINDOW, and a body bigger than that streams under credit.
F_SMALL_WINDOW = 8

# Bytes the worker may send on one response before corral grants more, and
# how much request body it consumes before granting corral more.
RESPONSE_WINDOW = 256 * 1024
SMALL_WINDOW = 16 * 1024
BODY_GRANT = 64 * 1024
MAX_FRAME = 64 * 1024
# A response body this big is written from where it is (into the ring, or
# to the socket), not joined to its frame's header first (a piece costs
# more in Python than a small copy in C).
PIECES_FROM = 4096
# The largest WebSocket message an app may send (the largest corral takes
# from a client too): a message is one frame on the channel.
MAX_WS_MESSAGE = 16 * 1024 * 1024
# Responses are batched only while requests take less than this on average,
# so a held response waits for at most a few fast requests.
HOLD_IF_FASTER_THAN = 0.0005


def under_root(path, root):
    """Whether the request path already carries the prefix (at a segment
    boundary: "/api" and "/api/x" do, "/apix" does not)."""
    return path == root or path.startswith(root + "/")


class ClientDisconnected(OSError):
    """Raised in the app's thread when the client went away mid-response."""



def whole_frames(data, n):
    """Yields (kind, stream id, payload start, payload end) for every whole
    frame in the first n bytes of data (bytes-like); removes nothing."""
    pos = 0
    while n - pos >= HDR_SIZE:
        length, kind, sid = HDR.unpack_from(data, pos)
        end = pos + HDR_SIZE + length
        if end > n:
            return
        yield kind, sid, pos + HDR_SIZE, end
        pos = end


def frames(buf):
    """whole_frames of buf (a bytearray), removed from it as they are read."""
    pos = 0
    try:
        for frame in whole_frames(buf, len(buf)):
            yield frame
            pos = frame[3]
    finally:
        del buf[:pos]


def request_parts(buf, start, end, text=False):
    """A REQUEST payload's flags, head and first body bytes; with text, the
    head as latin-1 text (a WSGI head is), decoded straight from buf."""
    flags, hlen = REQUEST_PREFIX.unpack_from(buf, start)
    hend = start + 5 + hlen
    head = str(buf[start + 5 : hend], "latin-1") if text else bytes(buf[start + 5 : hend])
    return flags, head, bytes(buf[hend:end]) if hend < end else b""



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
# Nor more header fields than corral takes (protocol.rs's
# MAX_RESPONSE_FIELDS): refused here, the app's own error handling runs.
MAX_FIELDS = 10_000


def pack_fields(lengths, data):
    """The header count and field lengths (`lengths`: a list with a slot
    for the count, then one length per field), then the fields' bytes."""
    n = len(lengths)
    if n - 2 > 2 * MAX_FIELDS:
        raise ValueError("%d response header fields: at most %d may go in a response"
                         % ((n - 2) >> 1, MAX_FIELDS))
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


# The last head encoded for each status, WSGI's and ASGI's: its headers and
# its bytes. An app mostly answers a status with the same headers as last
# time, and comparing them costs far less than checking and encoding them
# again. An entry is one tuple, replaced whole, so a thread never sees half
# of one.
LAST_HEADS = {}
LAST_ASGI_HEADS = {}


def remember(last_heads, status, headers, head, frozen):
    """Keeps head as the last one for status (up to 64 statuses, heads up to
    4 KiB) when headers are a list whose every header is frozen(header):
    one that cannot change afterwards."""
    if len(head) <= 4096 and type(headers) is list and all(map(frozen, headers)) and (
            status in last_heads or len(last_heads) < 64):
        last_heads[status] = (headers.copy(), head)


def is_tuple(header):
    """A WSGI header that cannot change: a tuple (of str, checked)."""
    return type(header) is tuple


def is_bytes_pair(header):
    """An ASGI header that cannot change: a tuple of two bytes (a bytearray
    in one could)."""
    return type(header) is tuple and len(header) == 2 and type(header[0]) is bytes and type(
        header[1]) is bytes


def wsgi_head(status, headers):
    """The response head for start_response's status and headers; raises
    ValueError or TypeError naming the status or header that is invalid."""
    last = LAST_HEADS.get(status)
    if last is not None and last[0] == headers:
        return last[1]
    head = encode_wsgi_head(status, headers)
    remember(LAST_HEADS, status, headers, head, is_tuple)
    return head


def encode_wsgi_head(status, headers):
    """wsgi_head without the cache."""
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
    if type(status) is int:
        last = LAST_ASGI_HEADS.get(status)
        if last is not None and last[0] == headers:
            return last[1]
    if not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError("invalid status %r: expected an int from 200 to 599" % (status,))
    head = asgi_fields(b"%d" % status, headers, "ASGI")
    if type(status) is int:
        remember(LAST_ASGI_HEADS, status, headers, head, is_bytes_pair)
    return head


def clip(text, limit=64 * 1024):
    """A traceback cut to its first and last limit/2 characters."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return "%s\n[... %d characters cut ...]\n%s" % (text[:half], len(text) - limit, text[-half:])


_exiting = []


def exiting():
    """Whether run_exit_handlers has begun."""
    return bool(_exiting)


def run_exit_handlers():
    """Runs the atexit handlers, once, then flushes stdout and stderr: the
    worker leaves by os._exit (so that no thread the app started keeps it
    alive), which skips them, where gunicorn's workers leave by sys.exit,
    which runs them. Tracers flush there: OpenTelemetry's batch span
    processor, ddtrace's writer, New Relic's last harvest, sentry-sdk's
    queue. Only the first call runs them."""
    if _exiting:
        return
    _exiting.append(True)
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()


def close_reason(reason):
    """A WebSocket close reason, UTF-8, cut to the 123 bytes a close frame
    holds (at a character boundary)."""
    data = reason.encode("utf-8")
    if len(data) > 123:
        data = data[:123].decode("utf-8", "ignore").encode("utf-8")
    return data


ERROR_BODY = b"Internal Server Error"
# Labelled as uvicorn labels its own 500 (and its refusals of a WebSocket).
ERROR_HEAD = wsgi_head("500 Internal Server Error", [
    ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(ERROR_BODY)))])
# A WebSocket refused before the handshake (websocket.close first).
FORBIDDEN_HEAD = wsgi_head("403 Forbidden", [("Content-Length", "0")])


def log(text):
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


# The mark corral gave this worker for its error reports, out of the
# environment before the app imports: a line the app prints (a client's
# input among it) cannot pass for one.
_MARK = os.environ.pop("CORRAL_LOG_MARK", "")
# What starts a line RecordWriter marks.
_MARK_PREFIX = b"\x1e" + _MARK.encode()


# The longest write kept as one record (corral's MAX_LINE, less room for
# the mark): a longer one goes out as the lines it holds.
MAX_RECORD = 16 * 1024 - 64


class RecordWriter(io.RawIOBase):
    """What sys.stdout and sys.stderr write into (record_streams): fd 1 or
    2, the pipe corral reads line by line. What the app writes in one call
    that holds several lines (a logging record with its traceback, which
    StreamHandler writes at once; print() of a text of several lines), or
    that a logging handler writes for a record at WARNING or above, goes
    out as one line, marked by RS (0x1E), corral's mark and the record's
    level (I, W or E), its line breaks sent as US (0x1F): one record of
    corral's log at that level. Any other line goes out as it is. A write
    that does not end its line waits for the rest (or a flush, or
    MAX_RECORD bytes). Once a line went out without its end (flushed, or
    too long), what follows goes out as it is up to the next line break,
    which ends that line: a mark is only ever at the start of a line."""

    def __init__(self, fd):
        super().__init__()
        self._fd = fd
        self._held = b""
        # The pipe's last line has no end yet (a partial line flushed).
        self._open = False
        # Reentrant: a signal handler that prints (gunicorn's worker_int
        # hook, the exit handlers' flush) runs in the thread it interrupts,
        # which may be inside write().
        self._lock = threading.RLock()

    def writable(self):
        return True

    def fileno(self):
        return self._fd

    def isatty(self):
        return os.isatty(self._fd)

    def write(self, b):
        if type(b) is not bytes:
            # A memoryview or bytearray (sys.stdout.buffer.write).
            b = bytes(b)
        n = len(b)
        if self._open or self._held or b[-1:] != b"\n":
            with self._lock:
                if self._open:
                    # The rest of a line already begun: as it is, to its end.
                    end = b.find(b"\n") + 1
                    if not end:
                        self._write(memoryview(b))
                        return n
                    self._write(memoryview(b)[:end])
                    self._open = False
                    b = b[end:]
                    if not b:
                        return n
                if self._held:
                    b = self._held + b
                    self._held = b""
                if b[-1:] != b"\n":
                    if len(b) <= MAX_RECORD:
                        self._held = b
                    else:
                        # Too long to hold: its lines as they are, the
                        # last one without its end yet.
                        self._write(memoryview(b))
                        self._open = True
                    return n
        # Whole lines (the usual write, which takes no lock).
        if b[-1:] == b"\n" and len(b) <= MAX_RECORD:
            several = b.find(b"\n") != len(b) - 1
            try:
                frame = sys._getframe(1)
            except ValueError:
                # Called from C with no Python frame above: the interpreter
                # printing an uncaught exception as it exits. Raising here
                # lost that traceback ("lost sys.stderr").
                frame = None
            level = record_level(frame) if frame is not None and frame.f_code.co_name == "emit" else b"I"
            if (several or level != b"I") and b"\x1e" not in b and b"\x1f" not in b:
                if several:
                    b = b[:-1].replace(b"\n", b"\x1f") + b"\n"
                b = _MARK_PREFIX + level + b
        try:
            done = os.write(self._fd, b)
        except BlockingIOError:
            done = 0
        if done != len(b):
            self._write(memoryview(b)[done:])
        return n

    def flush(self):
        # After every logging record (StreamHandler flushes): nothing held.
        if not self._held:
            return
        with self._lock:
            held, self._held = self._held, b""
            if held:
                self._write(memoryview(held))
                self._open = True

    def _write(self, view):
        """Writes all of view (a write may take part of it: a full
        non-blocking pipe)."""
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except InterruptedError:
                continue
            except BlockingIOError:
                select.select([], [self._fd], [])


def record_level(frame):
    """b"E" when frame, a logging handler's emit(), writes a record at
    ERROR or above (logging.StreamHandler's, which Flask's, Django's and
    basicConfig's handlers are), b"W" at WARNING, else b"I"."""
    levelno = getattr(frame.f_locals.get("record"), "levelno", 0)
    if not isinstance(levelno, int) or levelno < 30:
        return b"I"
    return b"E" if levelno >= 40 else b"W"


def record_streams():
    """sys.stdout and sys.stderr over RecordWriter, each write passed on as
    it is made (write_through, as under PYTHONUNBUFFERED, which corral
    sets: no line waits for a buffer to fill; and not line_buffering, whose
    flush after every line break would send a piece without its end), in
    the encoding and error handler they had. Before the app imports, so
    that the logging handlers it makes write into them. Not without a mark:
    nobody reads the records (corral check's worker writes to the terminal,
    and with --app-output raw corral passes the lines on as written)."""
    if not _MARK:
        return
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        try:
            if old is None or old.fileno() != fd:
                continue
        except (AttributeError, ValueError, OSError):
            continue
        old.flush()
        # Kept: a stream collected closes its fd (sys.__stdout__ holds
        # Python's own, but not one a sitecustomize put in its place).
        _REPLACED.append(old)
        setattr(sys, name, io.TextIOWrapper(RecordWriter(fd), encoding=old.encoding,
                                            errors=old.errors, write_through=True))


# The streams record_streams replaced.
_REPLACED = []


def log_error(text):
    """An error of the app's that the worker caught (a request's
    traceback): one record at ERROR in corral's log, its line breaks kept,
    as gunicorn logs "Error handling request". One line on stderr, marked
    by a leading RS (0x1E) and corral's mark, its line breaks sent as US
    (0x1F)."""
    if not _MARK:
        # Nobody reads the lines (corral check's worker writes to the
        # terminal): as they are.
        log(text)
        return
    line = text.rstrip("\n").replace("\n", "\x1f")
    sys.stderr.write("\x1e" + _MARK + " " + line + "\n")
    sys.stderr.flush()

