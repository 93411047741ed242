"""ASGI app for bench/chaos.py (plain ASGI 3, stdlib only): the endpoints of
chaos_app.py (see there), answered on the event loop, plus a WebSocket echo
on any path where the text "__pid__" is answered with the worker's pid."""

import asyncio
import hashlib
import os
from urllib.parse import parse_qs

from chaos_app import seen
from chaos_pattern import body_pieces


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def chaos_id(scope):
    for name, value in scope.get("headers", ()):
        if name == b"x-chaos-id":
            return value.decode("latin-1")
    return None


async def answer(send, body, status=200, ctype=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body)),
                            (b"x-worker-pid", b"%d" % os.getpid())]})
    await send({"type": "http.response.body", "body": body})


async def http(scope, receive, send):
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if path in ("/health", "/hello"):
        return await answer(send, b"ok")
    if path == "/sleep":
        await asyncio.sleep(min(int(query.get("ms", ["0"])[0]), 5000) / 1000)
        return await answer(send, b"ok")
    if path == "/upload":
        digest, n = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            digest.update(message.get("body", b""))
            n += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        return await answer(send, f"{n} {digest.hexdigest()}".encode())
    if path == "/big":
        size = min(int(query.get("size", ["0"])[0]), 64 << 20)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", b"%d" % size),
                                (b"x-worker-pid", b"%d" % os.getpid())]})
        if query.get("mode", ["gen"])[0] == "list":
            await send({"type": "http.response.body", "body": b"".join(body_pieces(size))})
            return
        for piece in body_pieces(size):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await answer(send, b"not found\n", 404)


async def websocket(receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            continue
        text = message.get("text")
        if text == "__pid__":
            await send({"type": "websocket.send", "text": str(os.getpid())})
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    seen(chaos_id(scope))
    if scope["type"] == "websocket":
        await websocket(receive, send)
    elif scope["type"] == "http":
        await http(scope, receive, send)
