"""Large bodies through an ASGI app, for bench/stream.py.

GET /N streams N MiB in 64 KiB pieces, one `http.response.body` message
with `more_body` each; POST reads the request body with `receive()` and
answers its length in bytes.
"""

PIECE = b"x" * (64 * 1024)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        n = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            n += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"%d" % n
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    size = int(scope["path"].strip("/") or "1") << 20
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", b"%d" % size)]})
    left = size
    while left > 0:
        piece = PIECE if left >= len(PIECE) else PIECE[:left]
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        left -= len(piece)
    await send({"type": "http.response.body", "body": b""})
