"""A BlackSheep app: routes with typed parameters, JSON bodies, forms and
file uploads, a streamed response, the app's exception handlers, the
request's scheme and client, WebSockets, and on_start/on_stop (the ASGI
lifespan)."""

import asyncio
import hashlib
import sys

from blacksheep import Application, Request, Response, WebSocket, json, text
from blacksheep.contents import StreamedContent
from blacksheep.exceptions import BadRequest, NotFound
from blacksheep.server.websocket import WebSocketDisconnectError

app = Application()
LOG = []


def say(line):
    LOG.append(line)
    sys.stderr.write("bsapp: %s\n" % line)
    sys.stderr.flush()


async def started(application):
    say("on_start")


async def stopped(application):
    say("on_stop")


app.on_start += started
app.on_stop += stopped


class Teapot(Exception):
    pass


async def teapot_handler(app_, request, exc):
    return text("short and stout", status=418)


app.exceptions_handlers[Teapot] = teapot_handler


@app.router.get("/")
async def index():
    return text("Hello from BlackSheep")


@app.router.get("/log")
async def log():
    return json(LOG)


@app.router.get("/items/{item_id}")
async def item(item_id: int, q: str = ""):
    return json({"item_id": item_id, "q": q})


@app.router.get("/hello/{name}")
async def hello(name: str):
    return text("hello %s" % name)


@app.router.post("/json")
async def post_json(request: Request):
    return json({"got": await request.json()})


@app.router.post("/echo")
async def echo(request: Request):
    data = await request.read()
    return json({"length": len(data or b""), "sha256": hashlib.sha256(data or b"").hexdigest()})


@app.router.post("/chunks")
async def chunks(request: Request):
    data = b""
    async for chunk in request.stream():
        data += chunk
    return json({"length": len(data), "sha256": hashlib.sha256(data).hexdigest()})


@app.router.post("/form")
async def form(request: Request):
    return json(await request.form())


@app.router.post("/upload")
async def upload(request: Request):
    files = await request.files()
    return json(
        [
            {
                "name": f.name.decode(),
                "filename": f.file_name.decode(),
                "content_type": f.content_type.decode(),
                "length": len(f.data),
                "sha256": hashlib.sha256(f.data).hexdigest(),
            }
            for f in files
        ]
    )


@app.router.get("/stream")
async def stream():
    async def lines():
        for i in range(5):
            yield ("line %d\n" % i).encode()

    return Response(200, content=StreamedContent(b"text/plain", lines))


@app.router.get("/teapot")
async def teapot():
    raise Teapot()


@app.router.get("/missing")
async def missing():
    raise NotFound()


@app.router.get("/bad")
async def bad():
    raise BadRequest("no good")


@app.router.get("/boom")
async def boom():
    raise RuntimeError("boom in a BlackSheep handler")


@app.router.get("/whereami")
async def whereami(request: Request):
    return json(
        {
            "scheme": request.scheme,
            "host": request.host,
            "client_ip": request.client_ip,
            "url": str(request.url.value, "utf-8"),
        }
    )


@app.router.ws("/ws/{name}")
async def ws(websocket: WebSocket, name: str):
    await websocket.accept()
    await websocket.send_text("hello %s" % name)
    try:
        while True:
            msg = await websocket.receive_text()
            if msg == "close":
                await websocket.close(4001)
                return
            await websocket.send_text("echo: %s" % msg)
    except WebSocketDisconnectError as e:
        say("ws disconnected: %s" % e.code)


@app.router.ws("/ws")
async def greeter(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("hello anonymous")
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnectError as e:
        say("ws disconnected: %s" % e.code)
