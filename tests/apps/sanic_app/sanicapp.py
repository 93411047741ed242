"""A Sanic app in ASGI mode (served by uvicorn or corral, not Sanic's own
server): routes with typed parameters, JSON, forms, uploads, a streamed
response, exceptions, a WebSocket route, and the server listeners that
the ASGI lifespan runs."""

import hashlib
import sys

from sanic import Sanic, response
from sanic.exceptions import NotFound, SanicException

app = Sanic("corral_test_sanic")
LOG = []


def say(line):
    LOG.append(line)
    sys.stderr.write("sanicapp: %s\n" % line)
    sys.stderr.flush()


@app.before_server_start
async def before_start(app_):
    say("before_server_start")


@app.after_server_start
async def after_start(app_):
    say("after_server_start")


@app.before_server_stop
async def before_stop(app_):
    say("before_server_stop")


@app.after_server_stop
async def after_stop(app_):
    say("after_server_stop")


@app.get("/")
async def index(request):
    return response.text("Hello from Sanic")


@app.get("/log")
async def log(request):
    return response.json(LOG)


@app.get("/items/<item_id:int>")
async def item(request, item_id):
    return response.json({"item_id": item_id, "q": request.args.get("q")})


@app.get("/hello/<name:str>")
async def hello(request, name):
    return response.text("hello %s" % name)


@app.post("/json")
async def post_json(request):
    return response.json({"got": request.json})


@app.post("/echo")
async def echo(request):
    data = request.body
    return response.json({"length": len(data), "sha256": hashlib.sha256(data).hexdigest()})


@app.post("/form")
async def form(request):
    return response.json({k: request.form.getlist(k) for k in sorted(request.form)})


@app.post("/upload")
async def upload(request):
    return response.json(
        {
            name: [
                [f.name, f.type, len(f.body), hashlib.sha256(f.body).hexdigest()]
                for f in files
            ]
            for name, files in sorted(request.files.items())
        }
    )


@app.get("/stream")
async def stream(request):
    resp = await request.respond(content_type="text/plain")
    for i in range(5):
        await resp.send("line %d\n" % i)
    await resp.eof()


@app.get("/teapot")
async def teapot(request):
    raise SanicException("short and stout", status_code=418)


@app.get("/missing")
async def missing(request):
    raise NotFound("not here")


@app.get("/boom")
async def boom(request):
    raise RuntimeError("boom in a Sanic handler")


@app.websocket("/ws/<name:str>")
async def ws(request, ws, name):
    await ws.send("hello %s" % name)
    while True:
        msg = await ws.recv()
        if msg is None:
            say("ws ended")
            return
        if msg == "close":
            # Sends nothing in ASGI mode (Sanic 25): the handler's return
            # ends the socket.
            await ws.close(4001, "closed by the app")
            return
        await ws.send("echo: %s" % msg)
