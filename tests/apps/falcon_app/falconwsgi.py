"""A Falcon WSGI app (falcon.App): routes with typed parameters, request
bodies read whole, in pieces and through get_media() (JSON, multipart),
responses from resp.stream (a file and a generator) and set_stream(),
Falcon's own 404 and 405, and what the request says of its client
(scheme, remote_addr, access_route, root_path)."""

import hashlib
import io
import os
import sys
import time

import falcon


def digest(data):
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class Items:
    def on_get(self, req, resp, item_id):
        resp.media = {"item_id": item_id, "q": req.get_param("q"), "path": req.path}

    on_head = on_get


class Hello:
    def on_get(self, req, resp, name):
        resp.text = "hello %s" % name
        resp.content_type = falcon.MEDIA_TEXT


class Echo:
    def on_post(self, req, resp):
        resp.media = digest(req.bounded_stream.read())


class Pieces:
    def on_post(self, req, resp):
        sizes = []
        data = b""
        while True:
            piece = req.bounded_stream.read(1000)
            if not piece:
                break
            sizes.append(len(piece))
            data += piece
        resp.media = dict(digest(data), pieces=len(sizes))


class Stream:
    def on_post(self, req, resp):
        # req.stream, the server's own wsgi.input: what a chunked upload,
        # which has no Content-Length, needs.
        resp.media = digest(req.stream.read())


class Media:
    def on_post(self, req, resp):
        resp.media = {"got": req.get_media()}


class Upload:
    def on_post(self, req, resp):
        parts = []
        for part in req.get_media():
            data = part.stream.read()
            parts.append(
                {
                    "name": part.name,
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "digest": digest(data),
                }
            )
        resp.media = parts


class FileStream:
    def on_get(self, req, resp):
        resp.content_type = "application/octet-stream"
        resp.stream = io.BytesIO(bytes(range(256)) * 64)


class GeneratorStream:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = (("line %d\n" % i).encode() for i in range(5))

    on_head = on_get


class RealFile:
    def on_get(self, req, resp):
        # A file on disk, which Falcon hands to wsgi.file_wrapper.
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "falconwsgi.py")
        resp.content_type = falcon.MEDIA_TEXT
        resp.set_stream(open(path, "rb"), os.path.getsize(path))


class Endless:
    def on_get(self, req, resp):
        def ticks():
            try:
                while True:
                    yield b"tick\n"
                    time.sleep(0.05)
            except BaseException as e:
                sys.stderr.write("falconwsgi: endless stream stopped: %s\n" % type(e).__name__)
                sys.stderr.flush()
                raise

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = ticks()


class SetStream:
    def on_get(self, req, resp):
        data = b"set_stream " * 100
        resp.content_type = falcon.MEDIA_TEXT
        resp.set_stream(io.BytesIO(data), len(data))


class WhereAmI:
    def on_get(self, req, resp):
        resp.media = {
            "scheme": req.scheme,
            "host": req.host,
            "remote_addr": req.remote_addr,
            "access_route": req.access_route,
            "root_path": req.root_path,
            "path": req.path,
            "uri": req.uri,
        }


class Cookies:
    def on_get(self, req, resp):
        resp.set_cookie("flavour", "oat", secure=False, path="/")
        resp.media = {"cookies": req.cookies}


class Teapot:
    def on_get(self, req, resp):
        raise falcon.HTTPError(falcon.HTTP_418, title="Teapot", description="short and stout")


class Boom:
    def on_get(self, req, resp):
        raise RuntimeError("boom in a Falcon responder")


app = falcon.App()
app.add_route("/items/{item_id:int}", Items())
app.add_route("/hello/{name}", Hello())
app.add_route("/echo", Echo())
app.add_route("/pieces", Pieces())
app.add_route("/stream", Stream())
app.add_route("/media", Media())
app.add_route("/upload", Upload())
app.add_route("/file", FileStream())
app.add_route("/generator", GeneratorStream())
app.add_route("/set-stream", SetStream())
app.add_route("/endless", Endless())
app.add_route("/real-file", RealFile())
app.add_route("/whereami", WhereAmI())
app.add_route("/api/whereami", WhereAmI())
app.add_route("/cookies", Cookies())
app.add_route("/teapot", Teapot())
app.add_route("/boom", Boom())
