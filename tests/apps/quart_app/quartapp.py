"""A Quart app (Flask's API on asyncio): routes, a streamed response from
an async generator, a WebSocket route, before_serving/after_serving (the
ASGI lifespan), a background task that finishes at shutdown, a body
limit (MAX_CONTENT_LENGTH) and the request's scheme and client address."""

import asyncio
import sys

from quart import Quart, abort, jsonify, request, websocket

app = Quart(__name__)
app.config["MAX_CONTENT_LENGTH"] = 1000

LOG = []


def say(line):
    LOG.append(line)
    sys.stderr.write("quartapp: %s\n" % line)
    sys.stderr.flush()


@app.before_serving
async def startup():
    app.greeting = "hello from before_serving"
    say("before_serving")


@app.after_serving
async def shutdown():
    say("after_serving")


@app.route("/")
async def index():
    return "Hello from Quart"


@app.route("/greeting")
async def greeting():
    return jsonify(greeting=app.greeting)


@app.route("/items/<int:item_id>")
async def item(item_id):
    return jsonify(item_id=item_id, q=request.args.get("q"))


@app.route("/echo", methods=["POST"])
async def echo():
    body = await request.get_data()
    return body, 200, {"Content-Type": "application/octet-stream", "X-Length": str(len(body))}


@app.route("/form", methods=["POST"])
async def form():
    data = await request.form
    return jsonify(sorted(data.items()))


@app.route("/stream")
async def stream():
    async def lines():
        for i in range(5):
            yield ("line %d\n" % i).encode()
            await asyncio.sleep(0.01)

    return lines(), 200, {"Content-Type": "text/plain"}


@app.route("/endless")
async def endless():
    async def ticks():
        try:
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.01)
        except BaseException as e:
            say("endless stream stopped: %s" % type(e).__name__)
            raise

    return ticks(), 200, {"Content-Type": "text/plain"}


@app.route("/whereami")
async def whereami():
    return jsonify(scheme=request.scheme, remote_addr=request.remote_addr,
                   url=request.url, host=request.host)


@app.route("/background")
async def background():
    async def task():
        await asyncio.sleep(float(request_delay))
        say("background task finished")

    request_delay = request.args.get("delay", "0.1")
    app.add_background_task(task)
    return "queued"


@app.route("/log")
async def log():
    return jsonify(LOG)


@app.route("/teapot")
async def teapot():
    abort(418)


@app.route("/boom")
async def boom():
    raise RuntimeError("boom in a Quart view")


@app.websocket("/ws")
async def ws():
    await websocket.accept()
    await websocket.send("hello %s" % websocket.args.get("name", "anonymous"))
    try:
        while True:
            message = await websocket.receive()
            if message == "close":
                await websocket.close(4001, "closed by the app")
                return
            if message == "boom":
                raise RuntimeError("boom in a Quart websocket")
            if isinstance(message, bytes):
                await websocket.send(message[::-1])
            else:
                await websocket.send("echo: %s" % message)
    except asyncio.CancelledError:
        say("ws cancelled")
        raise


@app.websocket("/ws/refuse")
async def ws_refuse():
    abort(401)


@app.websocket("/ws/whereami")
async def ws_whereami():
    await websocket.accept()
    await websocket.send_json({"scheme": websocket.scheme, "remote_addr": websocket.remote_addr,
                               "url": websocket.url})
