"""A small, real Starlette app (plain Starlette routing, no FastAPI) served
by both uvicorn and corral in tests/frameworks_asgi.rs, which compares their
answers. Everything it answers is deterministic.
"""

import hashlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect


async def home(request):
    return PlainTextResponse("Hello from Starlette\n")


async def user(request):
    return JSONResponse({
        "user_id": request.path_params["user_id"],
        "query": sorted(request.query_params.multi_items()),
    })


async def go_home(request):
    # An absolute URL built from the scope (scheme, Host header, path).
    return RedirectResponse(request.url_for("home"), status_code=303)


async def cookies(request):
    response = PlainTextResponse("cookies set\n")
    response.set_cookie("flavour", "oatmeal raisin")
    response.set_cookie("session", "abc", path="/private", httponly=True, samesite="strict")
    return response


async def download(request):
    """A body several times corral's response window, sent in one message."""
    size = request.path_params["size"]
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    return Response(data, media_type="application/octet-stream")


async def upload(request):
    """Reads the body as it streams in: its size and SHA-256, never the
    chunk count (each server cuts the body where its reads fall)."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({
        "size": size,
        "sha256": digest.hexdigest(),
        "content_type": request.headers.get("content-type"),
    })


async def echo(request):
    body = await request.body()
    return PlainTextResponse(body, headers={"X-Body-Length": str(len(body))})


async def ws_room(websocket):
    if websocket.query_params.get("token") != "secret":
        # The ASGI "websocket.http.response" extension: a real HTTP answer
        # instead of the handshake.
        await websocket.send_denial_response(PlainTextResponse("token required\n", status_code=401))
        return
    offered = websocket.scope["subprotocols"]
    await websocket.accept(
        subprotocol="chat.v2" if "chat.v2" in offered else None,
        headers=[(b"x-room", websocket.path_params["room"].encode())],
    )
    await websocket.send_json({
        "path": websocket.url.path,
        "room": websocket.path_params["room"],
        "subprotocols": offered,
    })
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                data = message["bytes"]
                await websocket.send_text("%d bytes, sha256 %s" % (len(data), hashlib.sha256(data).hexdigest()))
            elif message["text"] == "close":
                await websocket.close(code=4001, reason="closed by the room")
                return
            else:
                await websocket.send_text("echo: " + message["text"])
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[
    Route("/", home, name="home"),
    Route("/users/{user_id:int}", user),
    Route("/go-home", go_home),
    Route("/cookies", cookies),
    Route("/download/{size:int}", download),
    Route("/upload", upload, methods=["POST"]),
    Route("/echo", echo, methods=["POST"]),
    WebSocketRoute("/ws/{room}", ws_room),
])
