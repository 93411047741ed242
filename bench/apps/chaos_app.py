"""WSGI app for bench/chaos.py (stdlib only). Every answer carries
X-Worker-Pid. A request with an X-Chaos-Id header has its id appended to
$CHAOS_SEEN_DIR/seen-<pid>.txt when the app starts it, so the chaos run can
tell which worker a failed request had reached.

GET /health, /hello     "ok"
GET /sleep?ms=N         "ok" after N ms (at most 5000)
POST /upload            reads the whole body; answers "<length> <sha256 hex>"
GET /big?size=N&mode=M  N bytes of chaos_pattern.block() (at most 64 MiB),
                        mode "gen" (64 KiB pieces) or "list" (one piece)
"""

import hashlib
import os
import threading
import time
from urllib.parse import parse_qs

from chaos_pattern import body_pieces

SEEN_DIR = os.environ.get("CHAOS_SEEN_DIR", "")
_seen = {"pid": None, "fd": None}
_seen_lock = threading.Lock()


def seen(rid):
    if not SEEN_DIR or not rid:
        return
    with _seen_lock:
        if _seen["pid"] != os.getpid():
            _seen["pid"] = os.getpid()
            _seen["fd"] = os.open(os.path.join(SEEN_DIR, f"seen-{os.getpid()}.txt"),
                                  os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_seen["fd"], rid.encode("ascii", "replace")[:64] + b"\n")


def answer(start_response, body, status="200 OK", ctype="text/plain"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                            ("X-Worker-Pid", str(os.getpid()))])
    return [body]


def app(environ, start_response):
    seen(environ.get("HTTP_X_CHAOS_ID"))
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path in ("/health", "/hello"):
        return answer(start_response, b"ok")
    if path == "/sleep":
        time.sleep(min(int(query.get("ms", ["0"])[0]), 5000) / 1000)
        return answer(start_response, b"ok")
    if path == "/upload":
        stream = environ["wsgi.input"]
        left = int(environ.get("CONTENT_LENGTH") or 0)
        digest, n = hashlib.sha256(), 0
        while left > 0:
            piece = stream.read(min(left, 65536))
            if not piece:
                break
            digest.update(piece)
            n += len(piece)
            left -= len(piece)
        return answer(start_response, f"{n} {digest.hexdigest()}".encode())
    if path == "/big":
        size = min(int(query.get("size", ["0"])[0]), 64 << 20)
        headers = [("Content-Type", "application/octet-stream"),
                   ("Content-Length", str(size)), ("X-Worker-Pid", str(os.getpid()))]
        start_response("200 OK", headers)
        if query.get("mode", ["gen"])[0] == "list":
            return [b"".join(body_pieces(size))]
        return body_pieces(size)
    return answer(start_response, b"not found\n", "404 Not Found")
