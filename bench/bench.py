#!/usr/bin/env python3
"""corral benchmark driver (stdlib only). Started by bench/run.sh, which installs
wrk, the bench virtualenv and the corral release binary first.

For every (app, connections, server) case: start the server on a free loopback
port in its own session, wait until it answers correctly with all its workers
up, warm up with wrk, then run wrk while sampling the RSS of the server's whole
process tree, and read each worker's CPU time before and after. Stop the server
by PID (SIGTERM, then SIGKILL), make sure every process of its tree is gone,
and print one markdown table per interface at the end.

BENCH_SUITE=wsgi (the default) runs the WSGI apps and servers, asgi the ASGI
ones, all both in one run; a server runs only the apps of its own interface.
BENCH_SUITE=gevent runs gevent workers (corral's and gunicorn's) beside
threads on `hello` and on `wait` (10 ms of waiting per request).

Settings come from environment variables, see bench/README.md.
"""

import datetime
import http.client
import json
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS_DIR = os.path.join(HERE, "apps")
LUA = os.path.join(HERE, "post16k.lua")
VENV = os.environ.get("BENCH_VENV", os.path.join(HERE, ".venv"))
VBIN = os.path.join(VENV, "bin")
CORRAL = os.environ.get("CORRAL_BIN", os.path.join(ROOT, "target", "release", "corral"))


def env_num(name, default, kind=float):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        sys.exit(f"bench: {name}={raw!r} is not a number")


def env_list(name, default):
    raw = os.environ.get(name, "").strip() or default
    return [x for x in raw.replace(",", " ").split() if x]


# Which table(s): wsgi (the default), asgi, or all (both, one run).
SUITES = {"wsgi": ["wsgi"], "asgi": ["asgi"], "all": ["wsgi", "asgi"], "gevent": ["gevent"]}
SUITE = os.environ.get("BENCH_SUITE", "").strip() or "wsgi"
if SUITE not in SUITES:
    sys.exit(f"bench: BENCH_SUITE={SUITE!r}; known: {', '.join(SUITES)}")
DEFAULT_APPS = {"wsgi": "hello echo", "asgi": "asgi_hello asgi_fastapi", "gevent": "hello wait"}
DEFAULT_SERVERS = {"wsgi": "corral corral-t4 gunicorn-sync gunicorn-gthread granian",
                   "asgi": "corral-asgi uvicorn gunicorn-uvicorn granian-asgi",
                   "gevent": "corral-gevent gunicorn-gevent corral-t4 gunicorn-gthread"}

DURATION = env_num("DURATION", 10, int)
WARMUP = env_num("WARMUP", 2.0)
CONNS = [int(c) for c in env_list("CONNS", "32 256")]
APPS = env_list("APPS", " ".join(DEFAULT_APPS[i] for i in SUITES[SUITE]))
SERVER_KEYS = env_list("SERVERS", " ".join(DEFAULT_SERVERS[i] for i in SUITES[SUITE]))
# Extra arguments for the corral ASGI row, e.g. "--concurrency 512".
CORRAL_ASGI_ARGS = shlex.split(os.environ.get("CORRAL_ASGI_ARGS", ""))
WRK_THREADS = env_num("WRK_THREADS", 2, int)
BODY_BYTES = env_num("BODY_BYTES", 16384, int)
REPEAT = max(1, env_num("REPEAT", 1, int))
BUDGET = env_num("BUDGET", 780.0)  # seconds for the whole measuring phase
BOOT_TIMEOUT = env_num("BOOT_TIMEOUT", 30.0)
STOP_TIMEOUT = env_num("STOP_TIMEOUT", 10.0)
SAMPLE_INTERVAL = env_num("SAMPLE_INTERVAL", 0.25)
OUT_DIR = os.environ.get("OUT_DIR") or os.path.join(
    "/tmp", "corral-bench-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
WORKERS = 2
# Servers start in a process group of their own (stopped with killpg) but in
# this script's session, beside wrk. Not a session of their own: Linux's
# autogroup schedules each session as one group, so a server in its own
# session and wrk in another get half the CPUs each, and once the server
# keeps both CPUs busy wrk reads its responses up to tens of milliseconds
# late. A capture on lo showed every response of such a run on the wire
# within 3 ms of its request while wrk's p99 said 2-16 ms (bench/README.md,
# "The front in shards").
PAGE_TICKS = os.sysconf("SC_CLK_TCK")
# System calls are counted with perf when it can attach (BENCH_PERF=0: never),
# else from /proc/PID/io, which misses socket calls (marked "io" in the table).
PERF = None  # set in main()


# ---------------------------------------------------------------- apps

# name -> interface, method, path (what wrk requests), expected answer, wrk script.
# The expected answer is bytes (the exact body) or a dict (the JSON body).
ECHO_MARK = object()  # the echo app answers with the body it was sent
APP_SPECS = {
    "hello": ("wsgi", "GET", "/", b"Hello, World!", None),
    "echo": ("wsgi", "POST", "/", ECHO_MARK, LUA),
    "wait": ("wsgi", "GET", "/", b"Hello, World!", None),
    "asgi_hello": ("asgi", "GET", "/", b"Hello, World!", None),
    "asgi_fastapi": ("asgi", "GET", "/json?name=bench",
                     {"message": "Hello, bench!", "name": "bench", "length": 5,
                      "tags": ["bench", "fastapi"]}, None),
    # WebSocket echo for ws_idle.py; plain HTTP gets Hello, World!
    "asgi_ws": ("asgi", "GET", "/", b"Hello, World!", None),
}


def app_iface(app):
    spec = APP_SPECS.get(app)
    return spec[0] if spec else ("asgi" if app.startswith("asgi") else "wsgi")


# ---------------------------------------------------------------- servers

def corral_cmd(threads):
    def build(module, port):
        return [CORRAL, f"{module}:app", "-w", str(WORKERS), "--threads", str(threads),
                "-b", f"127.0.0.1:{port}", "--chdir", APPS_DIR,
                "--python", os.path.join(VBIN, "python")]
    return build


def corral_gevent_cmd(module, port):
    return [CORRAL, f"{module}:app", "-w", str(WORKERS), "-k", "gevent",
            "-b", f"127.0.0.1:{port}", "--chdir", APPS_DIR,
            "--python", os.path.join(VBIN, "python")]


def gunicorn_cmd(*extra):
    def build(module, port):
        return [os.path.join(VBIN, "gunicorn"), "-w", str(WORKERS), *extra,
                "-b", f"127.0.0.1:{port}", "--chdir", APPS_DIR, f"{module}:app"]
    return build


def granian_cmd(module, port):
    return [os.path.join(VBIN, "granian"), "--interface", "wsgi",
            "--workers", str(WORKERS), "--blocking-threads", "1",
            "--host", "127.0.0.1", "--port", str(port), "--working-dir", APPS_DIR,
            "--no-ws", "--log-level", "warning", f"{module}:app"]


def corral_asgi_cmd(module, port, extra=()):
    return [CORRAL, f"{module}:app", "--interface", "asgi", "-w", str(WORKERS),
            "-b", f"127.0.0.1:{port}", "--chdir", APPS_DIR,
            "--python", os.path.join(VBIN, "python"), *CORRAL_ASGI_ARGS, *extra]


def uvicorn_cmd(module, port, extra=()):
    return [os.path.join(VBIN, "uvicorn"), f"{module}:app", "--workers", str(WORKERS),
            "--http", "httptools", "--loop", "uvloop", "--no-access-log",
            "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
            "--app-dir", APPS_DIR, *extra]


def gunicorn_uvicorn_cmd(module, port, extra=()):
    # The worker class picks httptools and uvloop itself when they are installed.
    return gunicorn_cmd("-k", "uvicorn.workers.UvicornWorker", *extra)(module, port)


def granian_asgi_cmd(module, port, extra=()):
    # --ws stays on (the default) so that the same row also serves ws_idle.py;
    # it costs nothing for plain HTTP requests.
    return [os.path.join(VBIN, "granian"), "--interface", "asgi",
            "--workers", str(WORKERS), "--loop", "uvloop", "--no-access-log",
            "--host", "127.0.0.1", "--port", str(port), "--working-dir", APPS_DIR,
            "--log-level", "warning", *extra, f"{module}:app"]


# key -> (label in the table, argv builder, regex the log must show before ready, interface)
READY_CORRAL = r"all 2 workers in service"
SERVERS = {
    "corral": ("corral -w 2 --threads 1", corral_cmd(1), READY_CORRAL, "wsgi"),
    "corral-t4": ("corral -w 2 --threads 4", corral_cmd(4), READY_CORRAL, "wsgi"),
    "gunicorn-sync": ("gunicorn -w 2 -k sync", gunicorn_cmd("-k", "sync"), None, "wsgi"),
    "gunicorn-gthread": ("gunicorn -w 2 -k gthread --threads 4",
                         gunicorn_cmd("-k", "gthread", "--threads", "4"), None, "wsgi"),
    "granian": ("granian wsgi --workers 2 --blocking-threads 1", granian_cmd, None, "wsgi"),
    "corral-gevent": ("corral -w 2 -k gevent", corral_gevent_cmd, READY_CORRAL, "wsgi"),
    "gunicorn-gevent": ("gunicorn -w 2 -k gevent", gunicorn_cmd("-k", "gevent"), None, "wsgi"),
    "corral-asgi": ("corral asgi -w 2", corral_asgi_cmd, READY_CORRAL, "asgi"),
    "uvicorn": ("uvicorn --workers 2 (httptools, uvloop)", uvicorn_cmd, None, "asgi"),
    "gunicorn-uvicorn": ("gunicorn -w 2 -k uvicorn.workers.UvicornWorker",
                         gunicorn_uvicorn_cmd, None, "asgi"),
    "granian-asgi": ("granian asgi --workers 2 (uvloop)", granian_asgi_cmd, None, "asgi"),
}


# ---------------------------------------------------------------- /proc

class ProcStat:
    __slots__ = ("pid", "state", "ppid", "pgrp", "cpu_ticks", "start")

    def __init__(self, pid):
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
        rest = raw[raw.rindex(")") + 2:].split()
        self.pid = pid
        self.state = rest[0]
        self.ppid = int(rest[1])
        self.pgrp = int(rest[2])
        self.cpu_ticks = int(rest[11]) + int(rest[12])  # utime + stime, all threads
        self.start = int(rest[19])


def stat(pid):
    try:
        return ProcStat(pid)
    except (OSError, ValueError, IndexError):
        return None


def all_stats():
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(int(name))
            if st is not None:
                out.append(st)
    return out


def tree(root):
    """The root and all its descendants, as {pid: ProcStat}."""
    stats = all_stats()
    kids = {}
    for st in stats:
        kids.setdefault(st.ppid, []).append(st)
    found = {}
    root_st = stat(root)
    if root_st is None:
        return found
    todo = [root_st]
    while todo:
        st = todo.pop()
        if st.pid in found:
            continue
        found[st.pid] = st
        todo.extend(kids.get(st.pid, []))
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def workers_of(root):
    """Worker processes: direct children of the server's main process, minus
    multiprocessing's helper processes."""
    out = {}
    for pid, st in tree(root).items():
        if st.ppid == root and st.state != "Z" and "resource_tracker" not in cmdline(pid):
            out[pid] = st
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, zombie or kernel thread


def host_cpu():
    """(busy ticks over all CPUs, total ticks) from /proc/stat; busy includes steal."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already inside user
    return total - idle, total


def own_cpu_s():
    """CPU seconds of this script plus its reaped children (wrk)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def tree_cpu_ticks(procs):
    return {pid: (st.start, st.cpu_ticks) for pid, st in procs.items()}


def alive(st):
    now = stat(st.pid)
    return now is not None and now.start == st.start and now.state != "Z"


def ctx_switches(pid):
    """Context switches of all the process's threads, voluntary and not."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def io_syscalls(pid):
    """syscr + syscw from /proc/PID/io (all threads): read/write-family calls
    only; socket calls such as recvfrom and sendto are not counted there."""
    n = 0
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith(("syscr:", "syscw:")):
                    n += int(line.split()[1])
    except OSError:
        pass
    return n


def perf_usable():
    """Whether `perf stat` can count system calls here (root, or a
    perf_event_paranoid that lets us, and the raw_syscalls tracepoint)."""
    try:
        out = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter",
                              "--", "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "raw_syscalls:sys_enter" in out.stderr \
        and "<not" not in out.stderr


class SyscallCounter:
    """Counts the system calls of a set of processes (all their threads)
    while it runs: `perf stat -e raw_syscalls:sys_enter -p PIDS`, so every
    call is counted, socket calls included. None when perf cannot."""

    def __init__(self, pids):
        self.proc = None
        if not pids or not PERF:
            return
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter",
             "-p", ",".join(str(p) for p in pids)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)

    def stop(self):
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None
        for line in err.splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2] == "raw_syscalls:sys_enter":
                if parts[0] == "<not counted>":
                    return 0  # the processes never ran while perf watched
                try:
                    return int(parts[0])
                except ValueError:
                    return None
        return None


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of the whole tree and of the root process."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root = root
        self.stop_evt = threading.Event()
        self.max_tree = 0
        self.max_root = 0
        self.max_procs = 0
        self.samples = 0

    def sample(self):
        pids = tree(self.root)
        total = sum(rss_kib(p) for p in pids)
        self.max_tree = max(self.max_tree, total)
        self.max_root = max(self.max_root, rss_kib(self.root))
        self.max_procs = max(self.max_procs, len(pids))
        self.samples += 1

    def run(self):
        while not self.stop_evt.is_set():
            self.sample()
            self.stop_evt.wait(SAMPLE_INTERVAL)

    def stop(self):
        self.stop_evt.set()
        self.join(5)


# ---------------------------------------------------------------- helpers

class CaseError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ECHO_PAYLOAD = os.urandom(BODY_BYTES // 2).hex().encode()[:BODY_BYTES]


def check(port, app, timeout=2.0):
    """One request; True when the app answered correctly."""
    _iface, method, path, expect, _lua = APP_SPECS[app]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if expect is ECHO_MARK:
            conn.request(method, path, body=ECHO_PAYLOAD,
                         headers={"Content-Type": "application/octet-stream"})
            expect = ECHO_PAYLOAD
        else:
            conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return False
        if isinstance(expect, dict):
            try:
                return json.loads(body) == expect
            except ValueError:
                return False
        return body == expect
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def log_tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# corral logs this when a worker failed to boot twice in a row with the same error
# (say, an app this corral cannot serve): no point in waiting for BOOT_TIMEOUT.
CORRAL_BOOT_FAILED = r"failed to boot again with the same error: (.*)"


def wait_ready(proc, port, app, ready_re, log_path):
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CaseError(f"server exited with {proc.returncode} during start-up:\n"
                            + log_tail(log_path))
        logged = True
        if ready_re:
            try:
                with open(log_path, errors="replace") as f:
                    text = f.read()
            except OSError:
                text = ""
            logged = re.search(ready_re, text) is not None
            failed = re.search(CORRAL_BOOT_FAILED, text) if ready_re == READY_CORRAL else None
            if failed and not logged:
                raise CaseError(f"workers fail to boot: {failed.group(1)[:300]}")
        if logged and len(workers_of(proc.pid)) >= WORKERS and check(port, app, 1.0):
            return
        time.sleep(0.1)
    raise CaseError(f"not ready after {BOOT_TIMEOUT:.0f}s:\n" + log_tail(log_path))


UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out):
    def grab(pattern, cast=int, default=None):
        m = re.search(pattern, out, re.M)
        return cast(m.group(1)) if m else default

    res = {"rps": grab(r"^Requests/sec:\s+([\d.]+)", float),
           "requests": grab(r"^\s*(\d+) requests in"),
           "non2xx": grab(r"Non-2xx or 3xx responses:\s+(\d+)", default=0)}
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        res[f"p{pct}_ms"] = float(m.group(1)) * UNIT_MS[m.group(2)] if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["sock"] = dict(zip(("connect", "read", "write", "timeout"),
                           (int(x) for x in m.groups()))) if m else {}
    res["errors"] = sum(res["sock"].values()) + res["non2xx"]
    if res["rps"] is None:
        raise CaseError("could not parse wrk output:\n" + out[-2000:])
    return res


def run_wrk(port, app, conns, seconds):
    _iface, _method, path, _expect, lua = APP_SPECS[app]
    cmd = ["wrk", "-t", str(min(WRK_THREADS, conns)), "-c", str(conns),
           "-d", f"{seconds}s", "--latency"]
    if lua:
        cmd += ["-s", lua]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    env = dict(os.environ, BODY_BYTES=str(BODY_BYTES))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise CaseError(f"wrk did not finish within {seconds + 30}s")
    if done.returncode != 0:
        raise CaseError(f"wrk exited {done.returncode}: {done.stderr[-1000:]}")
    return done.stdout


def stop_server(proc):
    """SIGTERM the main process, SIGKILL after STOP_TIMEOUT, then make sure
    every process of its tree (and of its process group) is gone.
    Returns a list of problems (empty when the stop was clean)."""
    problems = []
    known = tree(proc.pid) if proc.poll() is None else {}
    t0 = time.monotonic()
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"main process ignored SIGTERM for {STOP_TIMEOUT:.0f}s, SIGKILLed")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Children may outlive the main process by a little; give them the rest of the timeout.
    deadline = t0 + STOP_TIMEOUT
    while time.monotonic() < deadline and any(alive(st) for st in known.values()):
        time.sleep(0.05)
    left = [st for st in known.values() if alive(st)]
    # Anything else still in the server's own process group (pgid == its pid).
    left += [st for st in all_stats()
             if st.pgrp == proc.pid and st.state != "Z" and st.pid not in known]
    if left:
        problems.append("left running after stop, SIGKILLed: "
                        + ", ".join(f"{st.pid} ({cmdline(st.pid)[:60]})" for st in left))
        for st in left:
            try:
                os.kill(st.pid, signal.SIGKILL)
            except OSError:
                pass
        end = time.monotonic() + 5
        while time.monotonic() < end and any(alive(st) for st in left):
            time.sleep(0.05)
        still = [st.pid for st in left if alive(st)]
        if still:
            problems.append(f"still alive after SIGKILL: {still}")
    return problems, time.monotonic() - t0


# ---------------------------------------------------------------- one case

CURRENT = {"proc": None}


def run_case(key, app, conns, rep):
    label, build, ready_re, _iface = SERVERS[key]
    port = free_port()
    argv = build(app, port)
    log_path = os.path.join(OUT_DIR, f"{key}-{app}-c{conns}-r{rep}.log")
    env = dict(os.environ, PATH=VBIN + os.pathsep + os.environ.get("PATH", ""),
               VIRTUAL_ENV=VENV, PYTHONUNBUFFERED="1")
    res = {"server": key, "label": label, "app": app, "iface": app_iface(app),
           "conns": conns, "rep": rep, "argv": argv, "log": log_path, "notes": []}
    with open(log_path, "wb") as log:
        t_start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, cwd=APPS_DIR, process_group=0)
    CURRENT["proc"] = proc
    try:
        wait_ready(proc, port, app, ready_re, log_path)
        res["boot_s"] = round(time.monotonic() - t_start, 2)
        if WARMUP > 0:
            run_wrk(port, app, conns, max(1, round(WARMUP)))
        if proc.poll() is not None:
            raise CaseError(f"server exited with {proc.returncode} during warm-up:\n"
                            + log_tail(log_path))
        before = workers_of(proc.pid)
        root_before = stat(proc.pid)
        tree_before = tree_cpu_ticks(tree(proc.pid))
        sampler = RssSampler(proc.pid)
        sampler.sample()
        # Cost counters of the main process and of its workers, apart.
        worker_pids = sorted(before)
        ctx_before = {p: ctx_switches(p) for p in [proc.pid, *worker_pids]}
        io_before = {p: io_syscalls(p) for p in [proc.pid, *worker_pids]}
        counters = (SyscallCounter([proc.pid]), SyscallCounter(worker_pids))
        host_before, own_before, wall_before = host_cpu(), own_cpu_s(), time.monotonic()
        sampler.start()
        try:
            out = run_wrk(port, app, conns, DURATION)
        finally:
            sampler.stop()
            perf_counts = [c.stop() for c in counters]
        host_after, own_after, wall = host_cpu(), own_cpu_s(), time.monotonic() - wall_before
        after = workers_of(proc.pid)
        root_after = stat(proc.pid)
        tree_after = tree_cpu_ticks(tree(proc.pid))
        # Where the machine's CPU went during the run: the server's tree, wrk plus
        # this script, and everything else (other tenants: the noise).
        server_s = sum(t - tree_before[p][1] for p, (start, t) in tree_after.items()
                       if p in tree_before and tree_before[p][0] == start) / PAGE_TICKS
        host_busy_s = (host_after[0] - host_before[0]) / PAGE_TICKS
        capacity_s = (host_after[1] - host_before[1]) / PAGE_TICKS
        bench_s = own_after - own_before
        res["cpu"] = {"server_s": round(server_s, 2), "wrk_and_driver_s": round(bench_s, 2),
                      "host_busy_s": round(host_busy_s, 2), "capacity_s": round(capacity_s, 2),
                      "wall_s": round(wall, 2)}
        res["other_cpu_pct"] = (max(0.0, host_busy_s - server_s - bench_s) / capacity_s * 100
                                if capacity_s > 0 else None)
        res["wrk_output"] = out
        res.update(parse_wrk(out))
        res["tree_rss_mib"] = sampler.max_tree / 1024
        res["root_rss_mib"] = sampler.max_root / 1024
        res["max_procs"] = sampler.max_procs
        res["rss_samples"] = sampler.samples
        # CPU spread over the workers that lived through the whole run.
        deltas = {}
        for pid, st in before.items():
            st2 = after.get(pid)
            if st2 is not None and st2.start == st.start:
                deltas[pid] = (st2.cpu_ticks - st.cpu_ticks) / PAGE_TICKS
        gone = sorted(set(before) - set(deltas))
        new = sorted(set(after) - set(before))
        if gone or new:
            res["notes"].append(f"worker set changed during the run: gone {gone}, new {new}")
        res["worker_cpu_s"] = {str(p): round(v, 2) for p, v in deltas.items()}
        # Context switches and system calls of the main process and of the
        # workers that lived through the run.
        lived = [p for p in worker_pids if p in deltas]
        res["ctxsw"] = {"main": ctx_switches(proc.pid) - ctx_before[proc.pid],
                        "workers": sum(ctx_switches(p) - ctx_before[p] for p in lived)}
        if None not in perf_counts and PERF:
            res["syscalls"] = {"main": perf_counts[0], "workers": perf_counts[1],
                               "source": "perf"}
        else:
            res["syscalls"] = {"main": io_syscalls(proc.pid) - io_before[proc.pid],
                               "workers": sum(io_syscalls(p) - io_before[p] for p in lived),
                               "source": "io"}
        total = sum(deltas.values())
        res["busiest_share"] = max(deltas.values()) / total if total > 0 else None
        if root_before and root_after:
            res["main_cpu_s"] = round((root_after.cpu_ticks - root_before.cpu_ticks)
                                      / PAGE_TICKS, 2)
        if proc.poll() is not None:
            res["notes"].append(f"server exited with {proc.returncode} during the run")
        elif not check(port, app, 5.0):
            res["notes"].append("server did not answer correctly right after the run")
    except CaseError as exc:
        res["error"] = str(exc)
    finally:
        problems, stop_s = stop_server(proc)
        CURRENT["proc"] = None
        res["stop_s"] = round(stop_s, 2)
        res["notes"].extend(problems)
        if proc.returncode not in (0, -signal.SIGTERM, None) and "error" not in res:
            res["notes"].append(f"exit status after SIGTERM: {proc.returncode}")
    # Flag suspicious lines in the server's log.
    bad = [ln.strip() for ln in log_tail(log_path, 10_000).splitlines()
           if re.search(r"\b(ERROR|WARN|WARNING|CRITICAL|panicked|Traceback)\b", ln)]
    if bad:
        res["notes"].append(f"{len(bad)} error/warning log lines, first: {bad[0][:200]}")
    return res


# ---------------------------------------------------------------- report

def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def table(rows):
    best = {}
    for r in rows:
        if r.get("rps"):
            k = (r["app"], r["conns"])
            best[k] = max(best.get(k, 0), r["rps"])
    head = ["server", "app", "conns", "req/s", "vs best", "p50 ms", "p99 ms", "errors",
            "tree RSS MiB", "supervisor RSS MiB", "busiest worker share",
            "CPU µs/req", "syscalls/req", "ctx switches/req", "other load"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        if "rps" not in r:
            reason = (r.get("error") or "skipped").splitlines()[0][:80]
            lines.append(f"| {r['label']} | {r['app']} | {r['conns']} | FAILED: {reason} |"
                         + " |" * (len(head) - 4))
            continue
        errs = str(r["errors"])
        if r["errors"]:
            sock = ", ".join(f"{k} {v}" for k, v in r["sock"].items() if v)
            errs += " (" + "; ".join(x for x in (sock, f"non-2xx {r['non2xx']}"
                                                 if r["non2xx"] else "") if x) + ")"
        share = r.get("busiest_share")
        cells = [r["label"], r["app"], str(r["conns"]), f"{r['rps']:.0f}",
                 f"{r['rps'] / best[(r['app'], r['conns'])]:.2f}",
                 fmt(r.get("p50_ms"), ".2f"), fmt(r.get("p99_ms"), ".2f"), errs,
                 f"{r['tree_rss_mib']:.1f}",
                 f"{r['root_rss_mib']:.1f}" if r["server"].startswith("corral") else "—",
                 "—" if share is None else f"{share * 100:.0f}%",
                 cpu_per_req(r), per_req(r, "syscalls", ".1f"), per_req(r, "ctxsw", ".2f"),
                 "—" if r.get("other_cpu_pct") is None else f"{r['other_cpu_pct']:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_per_req(r):
    """Server CPU time per request (whole tree); for corral also its two
    parts: the supervisor and the workers."""
    n = r.get("requests")
    if not n or "cpu" not in r:
        return "—"
    total = r["cpu"]["server_s"] / n * 1e6
    text = f"{total:.1f}"
    if r["server"].startswith("corral") and r.get("main_cpu_s") is not None:
        sup = r["main_cpu_s"] / n * 1e6
        text += f" ({sup:.1f} + {total - sup:.1f})"
    return text


def per_req(r, key, spec):
    """A count per request (main process and workers summed); for corral
    also the supervisor's and the workers' parts. System calls counted
    from /proc/PID/io (no perf) are marked "io": they miss socket calls."""
    n, c = r.get("requests"), r.get(key)
    if not n or not c:
        return "—"
    main, workers = c["main"] / n, c["workers"] / n
    text = format(main + workers, spec)
    if r["server"].startswith("corral"):
        text += f" ({format(main, spec)} + {format(workers, spec)})"
    if c.get("source") == "io":
        text += " io"
    return text


def pick(runs):
    """Of the repeats of one case, the run with the median req/s."""
    ok = [r for r in runs if r.get("rps") is not None]
    if not ok:
        return runs[-1]
    ok.sort(key=lambda r: r["rps"])
    return ok[(len(ok) - 1) // 2]


def version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


PKG_VERSIONS = """
import importlib.metadata as m, sys
out = []
for name in sys.argv[1:]:
    try:
        out.append(name + " " + m.version(name))
    except m.PackageNotFoundError:
        out.append(name + " -")
print(", ".join(out))
"""


def pkg_versions(names):
    try:
        out = subprocess.run([os.path.join(VBIN, "python"), "-c", PKG_VERSIONS, *names],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def header(ifaces=("wsgi",)):
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml"],
                           capture_output=True, text=True).stdout.strip()
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: {os.cpu_count()} CPUs ({platform_cpu()}), wrk on the same cores",
        f"corral: {version([CORRAL, '--version'])} (git {rev}{', src/ modified' if dirty else ''})",
        f"python: {version([os.path.join(VBIN, 'python'), '--version'])}; "
        f"gunicorn: {version([os.path.join(VBIN, 'gunicorn'), '--version'])}; "
        f"granian: {version([os.path.join(VBIN, 'granian'), '--version'])}; "
        f"wrk: {version(['wrk', '--version'])}",
        *([f"asgi: {pkg_versions(['uvicorn', 'uvloop', 'httptools', 'websockets', 'fastapi', 'starlette', 'pydantic'])}"]
          if "asgi" in ifaces else []),
        f"wrk: {WRK_THREADS} threads, {DURATION}s per run after {WARMUP:g}s warm-up, keep-alive; "
        f"echo body {BODY_BYTES} bytes; repeats {REPEAT} (median req/s run shown)",
        "cost per request: CPU from /proc/PID/stat, context switches from "
        "/proc/PID/task/*/status, system calls "
        + ("with perf stat -e raw_syscalls:sys_enter" if PERF else
           "from /proc/PID/io syscr+syscw (no perf: socket calls not counted)")
        + "; corral's as total (supervisor + workers)",
    ]


def platform_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def report(results, lines):
    grouped = {}
    for r in results:
        grouped.setdefault((r["app"], r["conns"], r["server"]), []).append(r)
    apps = list(dict.fromkeys(r["app"] for r in results))
    conns = sorted(set(r["conns"] for r in results))
    keys = list(SERVERS)
    rows = [pick(grouped[k]) for k in sorted(
        grouped, key=lambda k: (apps.index(k[0]), conns.index(k[1]),
                                keys.index(k[2]) if k[2] in keys else len(keys)))]
    text = "\n".join(lines) + "\n"
    for iface in ("wsgi", "asgi"):
        part = [r for r in rows if r.get("iface", app_iface(r["app"])) == iface]
        if part:
            text += f"\n### {iface.upper()}\n\n" + table(part) + "\n"
    notes = [f"- {r['label']} {r['app']} c={r['conns']} rep={r['rep']}: {n}"
             for r in results for n in r.get("notes", [])]
    if notes:
        text += "\nnotes:\n" + "\n".join(notes) + "\n"
    return text


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        # Re-print the table of an earlier run from its results.json.
        with open(sys.argv[2]) as f:
            data = json.load(f)
        print(report(data["results"], data["header"]), end="")
        return 0
    for key in SERVER_KEYS:
        if key not in SERVERS:
            sys.exit(f"bench: unknown server {key!r}; known: {', '.join(SERVERS)}")
    for app in APPS:
        if app not in APP_SPECS or not os.path.exists(os.path.join(APPS_DIR, app + ".py")):
            sys.exit(f"bench: no app {app!r}; known: {', '.join(APP_SPECS)} (bench/apps/)")
    # A server runs the apps of its own interface (WSGI or ASGI) only.
    pairs = [(app, key) for app in APPS for key in SERVER_KEYS
             if SERVERS[key][3] == app_iface(app)]
    if not pairs:
        sys.exit("bench: no server in SERVERS speaks the interface of any app in APPS")
    for key in SERVER_KEYS:
        if not any(k == key for _a, k in pairs):
            print(f"bench: {key} has no {SERVERS[key][3].upper()} app in APPS, not run",
                  file=sys.stderr)
    os.makedirs(OUT_DIR, exist_ok=True)
    global PERF
    PERF = os.environ.get("BENCH_PERF", "1") != "0" and perf_usable()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    cases = [(rep, app, conns, key) for rep in range(REPEAT) for app in APPS
             for conns in CONNS for key in SERVER_KEYS if (app, key) in pairs]
    per_case = WARMUP + DURATION + 8
    print(f"bench: {len(cases)} runs, about {len(cases) * per_case / 60:.1f} min "
          f"(budget {BUDGET:.0f}s); logs in {OUT_DIR}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    results = []
    interrupted = False
    try:
        for i, (rep, app, conns, key) in enumerate(cases, 1):
            if time.monotonic() - t0 + per_case > BUDGET:
                results.append({"server": key, "label": SERVERS[key][0], "app": app,
                                "iface": app_iface(app), "conns": conns, "rep": rep, "notes": [],
                                "error": "skipped: time budget (BUDGET) used up"})
                continue
            r = run_case(key, app, conns, rep)
            results.append(r)
            if "rps" in r:
                msg = (f"{r['rps']:.0f} req/s, p99 {fmt(r.get('p99_ms'), '.2f')} ms, "
                       f"errors {r['errors']}, tree RSS {r['tree_rss_mib']:.0f} MiB, "
                       f"busiest {fmt(r.get('busiest_share'), '.2f')}, cpu {r.get('cpu')}")
            else:
                msg = "FAILED: " + r.get("error", "").splitlines()[0]
            print(f"[{i}/{len(cases)}] {key} {app} c={conns} rep={rep}: {msg}"
                  + "".join(f"\n    note: {n}" for n in r["notes"]), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        proc = CURRENT["proc"]
        if proc is not None:
            stop_server(proc)
        print("bench: interrupted, reporting what was measured", file=sys.stderr)

    lines = header(sorted(set(app_iface(a) for a in APPS)))
    text = report(results, lines)
    print(text)
    with open(os.path.join(OUT_DIR, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(OUT_DIR, "results.json"), "w") as f:
        json.dump({"header": lines, "results": results}, f, indent=1)
    print(f"bench: results in {OUT_DIR} (table.md, results.json, server logs); "
          f"measuring took {time.monotonic() - t0:.0f}s", file=sys.stderr)
    failed = [r for r in results if "rps" not in r]
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
