"""A Falcon ASGI app (falcon.asgi.App): routes with typed parameters,
request bodies read whole, in pieces and through get_media(), responses
from resp.stream (a file-like object and an async generator) and
set_stream(), server-sent events (resp.sse), Falcon's own 404 and 405,
the request's scheme, client and root_path, WebSocket responders
(on_websocket) and the lifespan (process_startup/process_shutdown
middleware)."""

import asyncio
import hashlib
import io
import os
import sys

import falcon
import falcon.asgi

LOG = []


def say(line):
    LOG.append(line)
    sys.stderr.write("falconasgi: %s\n" % line)
    sys.stderr.flush()


def digest(data):
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class Lifespan:
    async def process_startup(self, scope, event):
        say("process_startup")

    async def process_shutdown(self, scope, event):
        say("process_shutdown")


class Log:
    async def on_get(self, req, resp):
        resp.media = LOG


class Items:
    async def on_get(self, req, resp, item_id):
        resp.media = {"item_id": item_id, "q": req.get_param("q"), "path": req.path}

    on_head = on_get


class Hello:
    async def on_get(self, req, resp, name):
        resp.text = "hello %s" % name
        resp.content_type = falcon.MEDIA_TEXT


class Echo:
    async def on_post(self, req, resp):
        resp.media = digest(await req.bounded_stream.read())


class Pieces:
    async def on_post(self, req, resp):
        data = b""
        async for piece in req.stream:
            data += piece
        resp.media = digest(data)


class Sized:
    async def on_post(self, req, resp):
        data = b""
        while True:
            piece = await req.stream.read(1000)
            if not piece:
                break
            data += piece
        resp.media = digest(data)


class Media:
    async def on_post(self, req, resp):
        resp.media = {"got": await req.get_media()}


class Upload:
    async def on_post(self, req, resp):
        parts = []
        form = await req.get_media()
        async for part in form:
            data = await part.stream.read()
            parts.append(
                {
                    "name": part.name,
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "digest": digest(data),
                }
            )
        resp.media = parts


class AsyncBytes:
    """A file-like object with an async read(), as resp.stream takes."""

    def __init__(self, data):
        self._f = io.BytesIO(data)

    async def read(self, size=-1):
        return self._f.read(size)


class FileStream:
    async def on_get(self, req, resp):
        resp.content_type = "application/octet-stream"
        resp.stream = AsyncBytes(bytes(range(256)) * 64)


class GeneratorStream:
    async def on_get(self, req, resp):
        async def lines():
            for i in range(5):
                yield ("line %d\n" % i).encode()

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = lines()

    on_head = on_get


class Endless:
    async def on_get(self, req, resp):
        async def ticks():
            try:
                while True:
                    yield b"tick\n"
                    await asyncio.sleep(0.05)
            except BaseException as e:
                say("endless stream stopped: %s" % type(e).__name__)
                raise

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = ticks()


class AsyncFile:
    """A file on disk read in a thread, as resp.stream takes it."""

    def __init__(self, path):
        self._f = open(path, "rb")

    async def read(self, size=-1):
        return await asyncio.to_thread(self._f.read, size)

    async def close(self):
        self._f.close()


class RealFile:
    async def on_get(self, req, resp):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "falconasgi.py")
        resp.content_type = falcon.MEDIA_TEXT
        resp.set_stream(AsyncFile(path), os.path.getsize(path))


class SetStream:
    async def on_get(self, req, resp):
        data = b"set_stream " * 100
        resp.content_type = falcon.MEDIA_TEXT
        resp.set_stream(AsyncBytes(data), len(data))


class Events:
    async def on_get(self, req, resp):
        async def events():
            for i in range(3):
                yield falcon.asgi.SSEvent(data=("event %d" % i).encode(), event_id=str(i))

        resp.sse = events()


class WhereAmI:
    async def on_get(self, req, resp):
        resp.media = {
            "scheme": req.scheme,
            "host": req.host,
            "remote_addr": req.remote_addr,
            "access_route": req.access_route,
            "root_path": req.root_path,
            "path": req.path,
            "uri": req.uri,
        }


class Teapot:
    async def on_get(self, req, resp):
        raise falcon.HTTPError(falcon.HTTP_418, title="Teapot", description="short and stout")


class Boom:
    async def on_get(self, req, resp):
        raise RuntimeError("boom in a Falcon responder")


class Chat:
    async def on_websocket(self, req, ws, name):
        await ws.accept()
        await ws.send_text("hello %s" % name)
        try:
            while True:
                msg = await ws.receive_text()
                if msg == "close":
                    await ws.close(4001)
                    return
                await ws.send_text("echo: %s" % msg)
        except falcon.WebSocketDisconnected as e:
            say("ws disconnected: %s" % e.code)


class Bytes:
    async def on_websocket(self, req, ws):
        await ws.accept()
        data = await ws.receive_data()
        await ws.send_data(data[::-1])
        await ws.send_media({"scheme": req.scheme, "remote_addr": req.remote_addr})
        await ws.close()


class Refuse:
    async def on_websocket(self, req, ws):
        raise falcon.HTTPForbidden(title="no", description="not you")


class Greeter:
    async def on_websocket(self, req, ws):
        await ws.accept()
        await ws.send_text("hello anonymous")
        try:
            while True:
                await ws.receive_text()
        except falcon.WebSocketDisconnected as e:
            say("ws disconnected: %s" % e.code)


app = falcon.asgi.App(middleware=[Lifespan()])
app.add_route("/log", Log())
app.add_route("/items/{item_id:int}", Items())
app.add_route("/hello/{name}", Hello())
app.add_route("/echo", Echo())
app.add_route("/pieces", Pieces())
app.add_route("/sized", Sized())
app.add_route("/media", Media())
app.add_route("/upload", Upload())
app.add_route("/file", FileStream())
app.add_route("/generator", GeneratorStream())
app.add_route("/endless", Endless())
app.add_route("/set-stream", SetStream())
app.add_route("/real-file", RealFile())
app.add_route("/events", Events())
app.add_route("/whereami", WhereAmI())
app.add_route("/api/whereami", WhereAmI())
app.add_route("/teapot", Teapot())
app.add_route("/boom", Boom())
app.add_route("/ws/{name}", Chat())
app.add_route("/ws-bytes", Bytes())
# The same under --root-path /api, which comes before the path.
app.add_route("/api/ws-bytes", Bytes())
app.add_route("/ws-refuse", Refuse())
app.add_route("/ws", Greeter())
