"""A small, real Flask app served by both gunicorn and corral in
tests/frameworks.rs, which compares their responses byte for byte.

Everything it answers is deterministic (no clocks, no randomness), so that
any difference between the two servers is the server's doing.
"""

import hashlib
from datetime import datetime, timezone

from flask import Flask, Response, jsonify, redirect, request, url_for

app = Flask(__name__)

# A fixed expiry: a cookie whose Expires is "now + N" would differ by the
# second between two servers.
COOKIE_EXPIRES = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@app.route("/")
def index():
    return "Hello from Flask\n"


@app.route("/hello/<name>")
def hello(name):
    return "Hello, %s!\n" % name


@app.route("/search")
def search():
    return jsonify(
        args=request.args.to_dict(flat=False),
        query_string=request.query_string.decode("latin-1"),
        full_path=request.full_path,
        url=request.url,
    )


@app.route("/json", methods=["GET", "POST"])
def json_view():
    if request.method == "GET":
        return jsonify(name="corral", tags=["wsgi", "rust"], nested={"n": 1, "ok": True}, text="naïve ✓")
    return jsonify(received=request.get_json(), mimetype=request.mimetype)


@app.route("/form", methods=["POST"])
def form():
    return jsonify(
        form=request.form.to_dict(flat=False),
        content_type=request.content_type,
        content_length=request.content_length,
    )


@app.route("/upload", methods=["POST"])
def upload():
    files = {}
    for field, storage in request.files.items(multi=True):
        data = storage.read()
        files.setdefault(field, []).append(
            {
                "filename": storage.filename,
                "content_type": storage.content_type,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return jsonify(form=request.form.to_dict(flat=False), files=files)


@app.route("/echo", methods=["POST"])
def echo():
    data = request.get_data()
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest(), head=data[:40].decode("latin-1"))


@app.route("/redirect")
def redirect_relative():
    return redirect("/target")


@app.route("/redirect/external")
def redirect_external():
    return redirect(url_for("target", _external=True))


@app.route("/redirect/permanent")
def redirect_permanent():
    return redirect(url_for("search", q="a b", n=1), code=301)


@app.route("/after-post", methods=["POST"])
def after_post():
    # Post/Redirect/Get.
    return redirect(url_for("target", done=request.form.get("name", "")), code=303)


@app.route("/target")
def target():
    return "You have arrived.\n"


@app.route("/cookies/set")
def cookies_set():
    resp = Response("cookies set\n", mimetype="text/plain")
    resp.set_cookie("flavour", "oatmeal raisin", expires=COOKIE_EXPIRES, httponly=True, samesite="Lax")
    resp.set_cookie("visits", "1", path="/")
    return resp


@app.route("/cookies/clear")
def cookies_clear():
    resp = Response("cookie cleared\n", mimetype="text/plain")
    resp.delete_cookie("visits")
    return resp


@app.route("/cookies")
def cookies():
    return jsonify(cookies=request.cookies.to_dict(), raw=request.headers.get("Cookie"))


@app.route("/headers")
def headers():
    env = request.environ
    return jsonify(
        host=request.host,
        url=request.url,
        scheme=request.scheme,
        remote_addr=request.remote_addr,
        custom=request.headers.getlist("X-Custom"),
        user_agent=request.headers.get("User-Agent"),
        # Not SERVER_NAME/SERVER_PORT: the two servers listen on different
        # ports, and gunicorn reports its socket's address there.
        environ={k: env.get(k) for k in ("SERVER_PROTOCOL", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH")},
    )


@app.route("/custom-status")
def custom_status():
    return Response("a custom reason phrase\n", status="299 Custom Reason", mimetype="text/plain")


@app.route("/teapot")
def teapot():
    return "short and stout\n", 418, {"X-Brew": "earl grey"}


@app.route("/stream")
def stream():
    def generate():
        for i in range(5):
            yield "line %d\n" % i

    return Response(generate(), mimetype="text/plain")


@app.route("/boom")
def boom():
    raise RuntimeError("deliberate failure for the 500 test")
