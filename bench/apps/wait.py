"""Hello world after a 10 ms wait, as for a call to another service: what
gevent workers are for. Under gevent's monkey-patching `time.sleep` lets
the worker run other requests meanwhile; in a thread it holds the thread."""

import time

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    time.sleep(0.01)
    start_response("200 OK", HEADERS)
    return [BODY]
