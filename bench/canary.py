"""A bad deploy under steady load: how many requests fail, per server.

Every server runs 2 workers of the same WSGI app with five endpoints (/a to
/e) under wrk (CONNS keep-alive connections, DURATION seconds, the five
paths in turn). A quarter of the way in, the code on disk is replaced by a
version that boots and answers its readiness like the old one but raises on
/c (a KeyError: a bug no import check sees), and the server gets SIGHUP. The
table counts the non-2xx answers the clients saw from then to the end: what
one bad deploy costs when nobody rolls back by hand within DURATION * 3/4.

- corral, plain reload: the new generation takes every request at once.
- corral with a canary (`canary_share` 10%, `canary_duration` 60s): the new
  generation gets 10% of the requests until the rule judges it.
- gunicorn (gthread) and uvicorn (`--interface wsgi`): SIGHUP restarts the
  workers on the new code.

Run it with bench/canary.sh (it builds corral and the bench venv).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = float(os.environ.get("DURATION", "20"))
CONNS = int(os.environ.get("CANARY_CONNS", "32"))
VENV = os.environ.get("BENCH_VENV", os.path.join(ROOT, "bench", ".venv", "bin"))
CORRAL = os.environ.get("CORRAL_BIN", os.path.join(ROOT, "target", "release", "corral"))

APP = """# {pad}
def app(environ, start_response):
    if {broken} and environ["PATH_INFO"] == "/c":
        raise KeyError("user_id")
    body = b"{tag}"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

CANARY = """[app]
module = "app:app"
[workers]
count = 2
[deploy]
canary_share = 10
canary_duration = "60s"
"""

LUA = """
local paths = {"/a", "/b", "/c", "/d", "/e"}
local i = 0
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  failed = 0
end
function request()
  i = i + 1
  return wrk.format(nil, paths[(i % 5) + 1])
end
function response(status, headers, body)
  if status >= 300 then failed = failed + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("failed") end
  io.write(string.format("failed %d\\n", total))
end
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ok(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/a" % port, timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.1)
    return False


def write_app(workdir, tag, broken, pad):
    with open(os.path.join(workdir, "app.py"), "w") as f:
        f.write(APP.format(tag=tag, broken=broken, pad="x" * pad))


def run(name, argv, workdir):
    write_app(workdir, "v1", False, 0)
    port = free_port()
    argv = [a.replace("PORT", str(port)) for a in argv]
    log = open(os.path.join(workdir, name + ".log"), "w")
    proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=log, start_new_session=True)
    try:
        if not wait_ok(port):
            return {"server": name, "error": "did not start"}
        time.sleep(1)
        lua = os.path.join(workdir, "paths.lua")
        with open(lua, "w") as f:
            f.write(LUA)
        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c%d" % CONNS, "-d%ds" % DURATION, "-s", lua,
             "http://127.0.0.1:%d/" % port],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(DURATION / 4)
        write_app(workdir, "v2", True, 40)
        os.kill(proc.pid, signal.SIGHUP)
        out, _ = wrk.communicate(timeout=DURATION + 30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    failed = re.search(r"failed (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "server": name,
        "rps": float(rps.group(1)) if rps else 0.0,
        "failed": int(failed.group(1)) if failed else -1,
        "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0,
    }


def main():
    workdir = tempfile.mkdtemp(prefix="corral-canary-bench-")
    with open(os.path.join(workdir, "canary.toml"), "w") as f:
        f.write(CANARY)
    py = os.path.join(VENV, "python")
    corral = [CORRAL, "-b", "127.0.0.1:PORT", "--python", py,
              "--socket", os.path.join(workdir, "ctl.sock")]
    rows = [
        run("corral, plain reload", corral + ["app:app", "-w", "2"], workdir),
        run("corral, canary 10%", corral + ["-c", "canary.toml"], workdir),
        run("gunicorn (gthread)", [os.path.join(VENV, "gunicorn"), "app:app", "-w", "2", "-k",
                                   "gthread", "--threads", "4", "-b", "127.0.0.1:PORT"], workdir),
        run("uvicorn (wsgi)", [os.path.join(VENV, "uvicorn"), "app:app", "--interface", "wsgi",
                               "--workers", "2", "--port", "PORT", "--log-level", "warning"],
            workdir),
    ]
    print("date: %s; %d connections, %gs; SIGHUP with code that raises on /c (1 path of 5) "
          "at 1/4\n" % (time.strftime("%Y-%m-%dT%H:%M:%S%z"), CONNS, DURATION))
    print("| server | req/s | failed requests after the bad deploy | socket errors |")
    print("|---|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print("| %s | %s | | |" % (r["server"], r["error"]))
            continue
        print("| %s | %.0f | %d | %d |" % (r["server"], r["rps"], r["failed"], r["socket_errors"]))


if __name__ == "__main__":
    sys.exit(main())
