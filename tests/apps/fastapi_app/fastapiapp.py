"""A small, real FastAPI app served by both uvicorn and corral in
tests/frameworks_asgi.rs, which compares their answers.

Everything it answers is deterministic (no clocks, no randomness, no client
ports), so that any difference between the two servers is the server's
doing. The tests run it in one worker process: background tasks, gates and
the WebSocket log live in this process's memory.
"""

import asyncio
from collections import defaultdict
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import (
    BackgroundTasks,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

# Gates hold a background task or a streamed body until the test opens them
# (POST /gates/NAME), so that the test can see what a server sends before.
GATES = defaultdict(asyncio.Event)
# What background tasks did, in order.
DONE = []
# How WebSockets ended, as the app saw it.
WS_LOG = []
# How endless streams ended.
STREAM_LOG = []


@asynccontextmanager
async def lifespan(app):
    app.state.boots = getattr(app.state, "boots", 0) + 1
    # Yielded state reaches every request as request.state (ASGI scope "state").
    yield {"greeting": "hello from the lifespan"}


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def index():
    return {"hello": "FastAPI"}


@app.get("/lifespan")
async def lifespan_state(request: Request):
    return {"greeting": request.state.greeting, "boots": request.app.state.boots}


@app.get("/items/{item_id}")
async def read_item(
    item_id: int,
    q: str | None = None,
    limit: int = 10,
    tags: Annotated[list[str], Query()] = [],
):
    return {"item_id": item_id, "q": q, "limit": limit, "tags": tags}


@app.get("/hello/{name}")
def hello(name: str):
    # A plain def: FastAPI runs it in a thread pool.
    return PlainTextResponse("Hello, %s!\n" % name, headers={"X-Greeted": "yes"})


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"created": item, "total": round(item.price * 1.2, 2)}


def current_user(x_token: Annotated[str | None, Header()] = None):
    if x_token is None or not x_token.startswith("user-"):
        raise HTTPException(401, "missing or bad X-Token", headers={"WWW-Authenticate": "Token"})
    return x_token.removeprefix("user-")


@app.get("/users/me")
async def me(user: Annotated[str, Depends(current_user)]):
    return {"user": user}


@app.get("/scope")
async def scope(request: Request):
    s = request.scope
    return {
        "http_version": s["http_version"],
        "method": s["method"],
        "scheme": s["scheme"],
        "path": s["path"],
        "raw_path": s["raw_path"].decode("latin-1"),
        "query_string": s["query_string"].decode("latin-1"),
        "root_path": s["root_path"],
        # The ASGI spec keeps the order of a repeated header's values, but
        # not the order between names (corral groups a repeated header at
        # its first place, as hyper's HeaderMap does): sort by name, stably.
        "headers": sorted(
            ([k.decode("latin-1"), v.decode("latin-1")] for k, v in s["headers"]),
            key=lambda kv: kv[0],
        ),
        "client_host": s["client"][0],
        "url": str(request.url),
    }


@app.post("/gates/{name}")
async def open_gate(name: str):
    GATES[name].set()
    return {"opened": name}


async def record(name: str):
    await GATES["task-" + name].wait()
    DONE.append(name)


@app.post("/tasks/{name}", status_code=202)
async def start_task(name: str, background: BackgroundTasks):
    background.add_task(record, name)
    return {"queued": name}


@app.get("/tasks")
async def tasks():
    return {"done": DONE}


@app.get("/stream/{n}")
async def stream(n: int):
    async def lines():
        for i in range(n):
            yield "line %d\n" % i
            await asyncio.sleep(0.01)

    return StreamingResponse(lines(), media_type="text/plain", headers={"X-Lines": str(n)})


@app.get("/stream-gated")
async def stream_gated():
    async def parts():
        yield "before the gate\n"
        await GATES["stream"].wait()
        yield "after the gate\n"

    return StreamingResponse(parts(), media_type="text/plain")


@app.get("/stream-endless")
async def stream_endless():
    async def ticks():
        try:
            while True:
                yield "tick\n"
                await asyncio.sleep(0.02)
        finally:
            STREAM_LOG.append("stopped")

    return StreamingResponse(ticks(), media_type="text/plain")


@app.get("/stream-log")
async def stream_log():
    return {"log": STREAM_LOG}


@app.get("/boom")
async def boom():
    raise RuntimeError("the view raised on purpose")


@app.websocket("/ws/echo")
async def ws_echo(websocket: WebSocket, name: str = "anon"):
    if name == "mallory":
        # Refused before the handshake completes: the client gets a 403.
        await websocket.close(code=1008)
        return
    await websocket.accept()
    await websocket.send_text("hello %s" % name)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"][::-1])
            elif message["text"] == "bye":
                await websocket.close(code=4000, reason="bye %s" % name)
                WS_LOG.append("%s: server closed 4000" % name)
                return
            else:
                await websocket.send_text(message["text"].upper())
    except WebSocketDisconnect as e:
        WS_LOG.append("%s: client closed %s %s" % (name, e.code, e.reason or ""))


@app.get("/ws/log")
async def ws_log():
    return {"log": WS_LOG}
