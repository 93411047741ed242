#!/usr/bin/env python3
"""The WSGI worker's own Python per request, with nothing else running.

Runs corral's WSGI worker (src/worker/python/corral_worker) in this process
on a stand-in channel: each read hands it the same batch of REQUEST frames
(what corral sends for `wrk`'s GET /, or a 16 KiB POST), and its responses
are dropped. What it prints is CPU time per request of the worker's code
and the app alone: no sockets, no ring, no other process on the core. Use
it to compare two versions of the worker's Python quickly and quietly; the
cost in a real run (bench/ab.py's workers column) is higher, since there a
worker also waits, wakes and shares the CPU's caches.

With --cold BYTES, each read first copies BYTES of other memory, as the
supervisor, wrk and the other worker do between two reads of a real
worker on a shared CPU; the copy's own time is measured apart and taken
out, so what is left is the worker's code with its caches cold.

    python3 bench/worker_loop.py [--requests N] [--worker-dir DIR] [--cold BYTES]
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# The environ keys corral sends for a GET / from wrk (src/worker/head/environ.rs).
GET_HEAD = [
    (b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/"), (b"QUERY_STRING", b""),
    (b"RAW_URI", b"/"), (b"REQUEST_URI", b"/"), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    (b"SERVER_NAME", b"127.0.0.1"), (b"SERVER_PORT", b"8000"),
    (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"40000"),
    (b"wsgi.url_scheme", b"http"), (b"HTTP_HOST", b"127.0.0.1:8000"),
]


class Done(Exception):
    pass


class Channel:
    """Stands in for the ring: every read is the same batch of frames,
    after `evict` (which pushes the worker's data out of the caches)."""

    def __init__(self, frames, batches, evict=None):
        self.frames = frames
        self.left = batches
        self.evict = evict

    def recv_into(self, view):
        if self.left == 0:
            raise Done
        self.left -= 1
        if self.evict:
            self.evict()
        view[: len(self.frames)] = self.frames
        return len(self.frames)

    def send_pieces(self, pieces):
        pass

    def readable(self):
        # Only a streaming response or the watch looks without waiting.
        return False


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def request_frame(protocol, sid, body):
    pairs = GET_HEAD
    if body:
        pairs = [(b"REQUEST_METHOD", b"POST")] + GET_HEAD[1:] + [
            (b"CONTENT_TYPE", b"application/octet-stream"),
            (b"CONTENT_LENGTH", str(len(body)).encode())]
    head = b"\0".join(k + b"\0" + v for k, v in pairs)
    payload = protocol.REQUEST_PREFIX.pack(0, len(head)) + head + body
    return protocol.HDR.pack(len(payload), protocol.K_REQUEST, sid) + payload


def evictor(size):
    """A function that copies `size` bytes of memory of its own, or None."""
    if not size:
        return None
    other = memoryview(bytearray(2 * size))

    def evict():
        other[:size] = other[size:]

    return evict


def per_request(wsgi, protocol, app, body, batch, requests, cold=0):
    """CPU µs per request of one worker thread serving `requests` requests
    that come `batch` to a read (with `cold`, after a copy of that many
    bytes before each read, its time taken out)."""
    frames = b"".join(request_frame(protocol, 1 + i, body) for i in range(batch))
    evict = evictor(cold)
    reads = requests // batch
    conn = wsgi.Connection(None, Channel(frames, reads, evict))
    worker = wsgi.Worker(conn, wsgi.WsgiRunner(conn, app, 1, ""), 1)
    t0 = time.process_time()
    try:
        worker.serve_forever(0)
    except Done:
        pass
    spent = time.process_time() - t0
    if evict:
        t0 = time.process_time()
        for _ in range(reads):
            evict()
        spent -= time.process_time() - t0
    return spent / (reads * batch) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--worker-dir", default=os.path.join(HERE, "..", "src", "worker", "python"),
                    help="the directory that holds corral_worker (default: this checkout's)")
    ap.add_argument("--cold", type=int, default=0, metavar="BYTES",
                    help="copy this much other memory before each read (e.g. 2097152)")
    args = ap.parse_args()
    sys.path.insert(0, args.worker_dir)
    from corral_worker import protocol, wsgi

    print("| app | requests per read | worker CPU µs/req (best of 3) |")
    print("|---|---:|---:|")
    # Up to 15 echo requests fit in one read of the worker's 256 KiB buffer.
    for name, app, body, batches in (("hello", hello, b"", (1, 16)),
                                     ("echo", echo, b"x" * 16384, (1, 15))):
        n = args.requests if not body else args.requests // 4
        for batch in batches:
            best = min(per_request(wsgi, protocol, app, body, batch, n, args.cold)
                       for _ in range(3))
            print("| %s | %d | %.2f |" % (name, batch, best))


if __name__ == "__main__":
    main()
