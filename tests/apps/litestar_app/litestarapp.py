"""A Litestar app: routes, a lifespan context manager and on_startup /
on_shutdown hooks, a streamed response, a WebSocket handler, Stream and
File responses and exception handlers."""

import asyncio
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, Request, Response, get, post, websocket
from litestar.connection import WebSocket
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import File, Stream

LOG = []


def say(line):
    LOG.append(line)
    sys.stderr.write("litestarapp: %s\n" % line)
    sys.stderr.flush()


@asynccontextmanager
async def lifespan(app):
    app.state.greeting = "hello from the lifespan"
    say("lifespan enter")
    try:
        yield
    finally:
        say("lifespan exit")


def on_startup(app):
    say("on_startup")


def on_shutdown(app):
    say("on_shutdown")


class TeapotError(Exception):
    pass


def teapot_handler(request: Request, exc: TeapotError) -> Response:
    return Response({"error": "teapot", "detail": str(exc)}, status_code=418,
                    headers={"X-Handled-By": "teapot_handler"})


def not_found_handler(request: Request, exc: NotFoundException) -> Response:
    return Response("nothing at %s\n" % request.url.path, status_code=404,
                    media_type="text/plain")


@get("/")
async def index() -> str:
    return "Hello from Litestar"


@get("/greeting")
async def greeting(request: Request) -> dict:
    return {"greeting": request.app.state.greeting, "log": LOG}


@get("/items/{item_id:int}")
async def item(item_id: int, q: str = "none") -> dict:
    return {"item_id": item_id, "q": q}


@post("/items")
async def create(data: dict) -> dict:
    return {"created": data}


@get("/stream")
async def stream() -> Stream:
    async def lines():
        for i in range(5):
            yield "line %d\n" % i
            await asyncio.sleep(0.01)

    return Stream(lines(), media_type="text/plain")


@get("/endless")
async def endless() -> Stream:
    async def ticks():
        try:
            while True:
                yield "tick\n"
                await asyncio.sleep(0.01)
        except BaseException as e:
            say("endless stream stopped: %s" % type(e).__name__)
            raise

    return Stream(ticks(), media_type="text/plain")


@get("/file")
async def file() -> File:
    return File(path=Path(__file__), filename="litestarapp.py")


@get("/teapot")
async def teapot() -> str:
    raise TeapotError("short and stout")


@get("/forbidden")
async def forbidden() -> str:
    raise HTTPException(status_code=403, detail="not for you")


@get("/boom")
async def boom() -> str:
    raise RuntimeError("boom in a Litestar handler")


@get("/log")
async def log() -> list:
    return LOG


@websocket("/ws")
async def ws(socket: WebSocket) -> None:
    await socket.accept()
    await socket.send_text("hello %s" % socket.query_params.get("name", "anonymous"))
    while True:
        message = await socket.receive_data(mode="text")
        if message == "close":
            await socket.close(code=4001, reason="closed by the app")
            return
        if message == "boom":
            raise RuntimeError("boom in a Litestar websocket")
        await socket.send_text("echo: %s" % message)


app = Litestar(
    route_handlers=[index, greeting, item, create, stream, endless, file, teapot, forbidden, boom, log, ws],
    lifespan=[lifespan],
    on_startup=[on_startup],
    on_shutdown=[on_shutdown],
    exception_handlers={TeapotError: teapot_handler, NotFoundException: not_found_handler},
)
