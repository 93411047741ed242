"""A tiny WSGI app that needs nothing but the standard library.

Run it with `cargo run --release -- app:app --chdir example` and open
http://127.0.0.1:8000/.
"""

import json
import os


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/info":
        body = json.dumps({"pid": os.getpid(), "path": path,
                           "query": environ["QUERY_STRING"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    body = b"Hello from corral!\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
