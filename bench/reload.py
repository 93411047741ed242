"""Reloads under load: corral vs gunicorn, same app, same machine, one run.

For each server: 2 workers serve a small WSGI app under wrk (64 keep-alive
connections, DURATION seconds). A third of the way in, the code on disk is
replaced by a good new version and the server gets SIGHUP; two thirds in, by
a version that fails to import, and SIGHUP again. The table shows what the
clients saw: requests/s, socket errors, non-2xx answers, and which versions
answered. Run it with bench/reload.sh (it builds corral and the bench venv).
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
DURATION = float(os.environ.get("DURATION", "12"))
CONNS = int(os.environ.get("RELOAD_CONNS", "64"))
VENV = os.path.join(ROOT, "bench", ".venv", "bin")
CORRAL = os.environ.get("CORRAL_BIN", os.path.join(ROOT, "target", "release", "corral"))

APP = """# {pad}
def app(environ, start_response):
    body = b"{tag}"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""
BROKEN = "import this_module_does_not_exist  # a broken deploy\n"

LUA = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  counts = {}
end
function response(status, headers, body)
  counts[body] = (counts[body] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("body %s %d\\n", k, v)) end
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
            with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.1)
    return False


def run(name, argv, workdir):
    port = free_port()
    argv = [a.replace("PORT", str(port)) for a in argv]
    log = open(os.path.join(workdir, name + ".log"), "w")
    proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=log, start_new_session=True)
    try:
        if not wait_ok(port):
            return {"server": name, "error": "did not start"}
        time.sleep(1)
        lua = os.path.join(workdir, "count.lua")
        with open(lua, "w") as f:
            f.write(LUA)
        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c%d" % CONNS, "-d%ds" % DURATION, "-s", lua,
             "http://127.0.0.1:%d/" % port],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(DURATION / 3)
        with open(os.path.join(workdir, "app.py"), "w") as f:
            f.write(APP.format(tag="v2", pad="x" * 40))
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(DURATION / 3)
        with open(os.path.join(workdir, "app.py"), "w") as f:
            f.write(BROKEN)
        os.kill(proc.pid, signal.SIGHUP)
        out, _ = wrk.communicate(timeout=DURATION + 30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with open(os.path.join(workdir, "app.py"), "w") as f:
            f.write(APP.format(tag="v1", pad=""))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bodies = dict((b, int(n)) for b, n in re.findall(r"body (\S+) (\d+)", out))
    return {
        "server": name,
        "rps": float(rps.group(1)) if rps else 0.0,
        "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "bodies": bodies,
    }


def main():
    workdir = tempfile.mkdtemp(prefix="corral-reload-bench-")
    with open(os.path.join(workdir, "app.py"), "w") as f:
        f.write(APP.format(tag="v1", pad=""))
    py = os.path.join(VENV, "python")
    rows = [
        run("corral", [CORRAL, "app:app", "-w", "2", "-b", "127.0.0.1:PORT", "--python", py,
                       "--socket", os.path.join(workdir, "ctl.sock")], workdir),
        run("gunicorn-gthread", [os.path.join(VENV, "gunicorn"), "app:app", "-w", "2", "-k", "gthread",
                                 "--threads", "4", "-b", "127.0.0.1:PORT"], workdir),
    ]
    print("date: %s; %d connections, %gs; SIGHUP with good code at 1/3, with code that fails to import at 2/3\n"
          % (time.strftime("%Y-%m-%dT%H:%M:%S%z"), CONNS, DURATION))
    print("| server | req/s | socket errors | non-2xx | answers by version |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print("| %s | %s | | | |" % (r["server"], r["error"]))
            continue
        bodies = ", ".join("%s: %d" % kv for kv in sorted(r["bodies"].items()))
        print("| %s | %.0f | %d | %d | %s |" % (r["server"], r["rps"], r["socket_errors"], r["non2xx"], bodies))


if __name__ == "__main__":
    sys.exit(main())
