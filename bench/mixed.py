"""Fast requests beside slow ones: how long a fast request waits, per server.

Every server runs WORKERS single-threaded workers of one WSGI app: `/`
answers at once, `/slow` after SLOW seconds. SLOW_CLIENTS threads ask for
`/slow` back to back (so that many workers are in a slow request at any
time) while wrk sends `/` on CONNS keep-alive connections for DURATION
seconds; the table shows the fast requests only (wrk's latency), and how
many slow ones were answered.

A gunicorn sync worker takes a connection only when it is free, so a fast
request never waits behind a slow one while another worker could run it.
A server that queues requests in each worker (corral's prefetch queue,
granian's per-worker backlog) can make a fast request wait for a slow one
unless it moves it.

Run it with bench/mixed.sh (it builds corral and the bench venv). Rows:
MIXED_SERVERS (default: corral gunicorn-sync gunicorn-gthread granian);
CORRAL_OLD_BIN adds a row for another corral build ("corral-old").
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = float(os.environ.get("DURATION", "10"))
CONNS = int(os.environ.get("CONNS", "8"))
WORKERS = int(os.environ.get("WORKERS", "4"))
SLOW = float(os.environ.get("SLOW", "0.5"))
SLOW_CLIENTS = int(os.environ.get("SLOW_CLIENTS", "2"))
VENV = os.environ.get("BENCH_VENV", os.path.join(ROOT, "bench", ".venv", "bin"))
CORRAL = os.environ.get("CORRAL_BIN", os.path.join(ROOT, "target", "release", "corral"))
CORRAL_OLD = os.environ.get("CORRAL_OLD_BIN", "")
SERVERS = os.environ.get("MIXED_SERVERS", "corral gunicorn-sync gunicorn-gthread granian").split()
BOOT_TIMEOUT = 30.0

APP = """import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(%r)
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ok(port, timeout=BOOT_TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.1)
    return False


def slow_load(port, deadline, done, failed):
    """Asks for /slow back to back until the deadline."""
    while time.time() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/slow" % port,
                                        timeout=SLOW + 30) as r:
                r.read()
                done.append(1)
        except Exception:
            failed.append(1)
            time.sleep(0.05)


def ms(text):
    """wrk's latency ("812.00us", "1.20ms", "2.01s") in milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def run(key, name, argv, workdir):
    port = free_port()
    argv = [a.replace("PORT", str(port)) for a in argv]
    log = open(os.path.join(workdir, key + ".log"), "w")
    proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=log, start_new_session=True)
    try:
        if not wait_ok(port):
            return {"server": name, "error": "did not start"}
        time.sleep(1.5)  # every worker up
        # Warm-up: fast answers, so that a server that sizes its queues by
        # answer time sees a fast app.
        subprocess.run(["wrk", "-t1", "-c%d" % CONNS, "-d2s", "http://127.0.0.1:%d/" % port],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        deadline = time.time() + DURATION + 1
        done, failed = [], []
        slow = [threading.Thread(target=slow_load, args=(port, deadline, done, failed),
                                 daemon=True) for _ in range(SLOW_CLIENTS)]
        for t in slow:
            t.start()
        time.sleep(0.5)
        out = subprocess.run(
            ["wrk", "-t1", "-c%d" % CONNS, "-d%ds" % DURATION, "--latency",
             "http://127.0.0.1:%d/" % port],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=DURATION + 60).stdout
        for t in slow:
            t.join(timeout=SLOW + 35)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    mx = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "server": name,
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": ms(pct.get("50", "")),
        "p90": ms(pct.get("90", "")),
        "p99": ms(pct.get("99", "")),
        "max": ms(mx.group(1)) if mx else float("nan"),
        "errors": (sum(int(x) for x in errs.groups()) if errs else 0)
        + (int(non2xx.group(1)) if non2xx else 0),
        "slow_done": len(done),
        "slow_failed": len(failed),
    }


def main():
    workdir = tempfile.mkdtemp(prefix="corral-mixed-bench-")
    with open(os.path.join(workdir, "app.py"), "w") as f:
        f.write(APP % SLOW)
    py = os.path.join(VENV, "python")
    w = str(WORKERS)

    def corral(binary):
        return [binary, "app:app", "-w", w, "--threads", "1", "-b", "127.0.0.1:PORT",
                "--python", py, "--socket", os.path.join(workdir, "ctl-%s.sock" % free_port())]

    commands = {
        "corral": ("corral -w %s --threads 1" % w, corral(CORRAL)),
        "corral-old": ("corral -w %s --threads 1, %s" % (w, os.environ.get("CORRAL_OLD_NAME",
                                                                          "CORRAL_OLD_BIN")),
                       corral(CORRAL_OLD)),
        "gunicorn-sync": ("gunicorn -w %s -k sync" % w,
                          [os.path.join(VENV, "gunicorn"), "app:app", "-w", w,
                           "-b", "127.0.0.1:PORT"]),
        "gunicorn-gthread": ("gunicorn -w %s -k gthread --threads 1" % w,
                             [os.path.join(VENV, "gunicorn"), "app:app", "-w", w, "-k",
                              "gthread", "--threads", "1", "-b", "127.0.0.1:PORT"]),
        "granian": ("granian --workers %s --blocking-threads 1" % w,
                    [os.path.join(VENV, "granian"), "--interface", "wsgi", "--workers", w,
                     "--blocking-threads", "1", "--port", "PORT", "--log-level", "warning",
                     "app:app"]),
    }
    keys = list(SERVERS)
    if CORRAL_OLD and "corral-old" not in keys:
        keys.insert(1, "corral-old")
    rows = []
    for key in keys:
        label, argv = commands[key]
        print("running %s" % label, file=sys.stderr)
        rows.append(run(key, label, argv, workdir))
    print("date: %s; %d workers of 1 thread each; %d clients asking for /slow (%gs) back to "
          "back; wrk -t1 -c%d on / for %gs (fast requests only in the latency columns)\n"
          % (time.strftime("%Y-%m-%dT%H:%M:%S%z"), WORKERS, SLOW_CLIENTS, SLOW, CONNS, DURATION))
    print("| server | fast req/s | fast p50 ms | fast p90 ms | fast p99 ms | fast max ms "
          "| errors | slow answered | slow failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print("| %s | %s | | | | | | | |" % (r["server"], r["error"]))
            continue
        print("| %s | %.0f | %.2f | %.2f | %.2f | %.0f | %d | %d | %d |" % (
            r["server"], r["rps"], r["p50"], r["p90"], r["p99"], r["max"], r["errors"],
            r["slow_done"], r["slow_failed"]))


if __name__ == "__main__":
    sys.exit(main())
