"""A Bottle app: routes with wildcards and filters, request.body, forms,
file uploads, static files (static_file, with its conditional and range
requests), abort() and error handlers, redirects and cookies (plain and
signed)."""

import hashlib
import json
import os

import bottle
from bottle import abort, redirect, request, response, static_file

app = bottle.Bottle()
# Bottle serialises dicts with ujson when it is installed (Sanic brings it)
# and json otherwise: the standard library's, whatever else is installed.
app.uninstall(bottle.JSONPlugin)
app.install(bottle.JSONPlugin(json_dumps=json.dumps))
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
SECRET = "not-a-secret"


def digest(data):
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@app.route("/")
def index():
    return "Hello from Bottle"


@app.route("/items/<item_id:int>")
def item(item_id):
    return {"item_id": item_id, "q": request.query.getunicode("q")}


@app.route("/hello/<name>")
def hello(name):
    return "hello %s" % name


@app.post("/body")
def body():
    return digest(request.body.read())


@app.post("/form")
def form():
    forms = request.forms.decode()
    return {k: forms.getall(k) for k in sorted(forms.keys())}


@app.post("/upload")
def upload():
    out = []
    for name, f in request.files.allitems():
        out.append([name, f.raw_filename, f.content_type, digest(f.file.read())])
    return {"files": out, "fields": sorted(request.forms.decode().allitems())}


@app.route("/static/<path:path>")
def static(path):
    return static_file(path, root=ROOT)


@app.route("/download")
def download():
    return static_file("site.css", root=ROOT, download="styles.css")


@app.route("/teapot")
def teapot():
    abort(418, "short and stout")


@app.route("/forbidden")
def forbidden():
    abort(403)


@app.route("/boom")
def boom():
    raise RuntimeError("boom in a Bottle view")


@app.error(404)
def not_found(err):
    return "nothing at %s" % request.path


@app.route("/set-cookies")
def set_cookies():
    response.set_cookie("plain", "oat", path="/")
    response.set_cookie("signed", {"user": "ada"}, secret=SECRET, path="/")
    redirect("/cookies")


@app.route("/cookies")
def cookies():
    return {
        "plain": request.get_cookie("plain"),
        "signed": request.get_cookie("signed", secret=SECRET),
    }


@app.route("/stream")
def stream():
    response.content_type = "text/plain"
    for i in range(5):
        yield "line %d\n" % i


@app.route("/env")
def env():
    return {
        "url": request.url,
        "remote_addr": request.remote_addr,
        "remote_route": request.remote_route,
        "scheme": request.urlparts.scheme,
        "script_name": request.script_name,
        "path": request.path,
    }
