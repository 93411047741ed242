#!/usr/bin/env python3
"""Chaos run: corral under mixed load while its workers are killed, stopped,
recycled, scaled and reloaded at random (stdlib only).

It starts the corral binary (it builds nothing: `cargo build --release`
first) on loopback with its own status server, control socket and state dir,
serving bench/apps/chaos_app.py (WSGI; with --gevent in gevent workers) or,
with --asgi, asgi_chaos.py (ASGI with WebSockets). For --duration seconds, client threads (chaos_load.py) send
keep-alive and new-connection requests, uploads (some sent slowly), slow
reads of large answers, with --asgi WebSocket messages and with --h2 HTTP/2
streams (--tls puts every connection on TLS); meanwhile it
SIGKILLs and SIGSTOPs workers, scales, reloads and sends HUP/TTIN/TTOU at
seeded random times (with --tls it also replaces the certificate, or breaks
its key, and reloads), and workers recycle after max_requests. It samples
corral's RSS, open fds and workers, lets everything settle, stops corral and
prints: every outcome by class, each failure held against the faults it made
(unaccounted ones with corral's log lines around them), the RSS over time
and its slope, and the pass criteria. Exit status 0 when all pass, 1 when one
fails, 2 when corral could not be started, 130 on Ctrl-C, 3 past the hard
deadline.

    cargo build --release
    python3 bench/chaos.py                       # WSGI, 300 s
    python3 bench/chaos.py --asgi --duration 60 --seed 7
    python3 bench/chaos.py --gevent --duration 120   # the venv needs gevent
    .venv/bin/python bench/chaos.py --tls --h2 4   # HTTP/2 needs the h2 package

See bench/README.md (Chaos) for what is measured and how failures are
attributed. Processes are stopped by PID only, never by name.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import random
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS_DIR = os.path.join(HERE, "apps")
sys.path.insert(0, HERE)
import chaos_load as load  # noqa: E402
import chaos_report as report  # noqa: E402

FAULTS = ("kill", "stop", "scale", "ttin", "reload", "hup", "cert", "reexec")
WEIGHTS = {"kill": 5, "stop": 4, "scale": 2, "ttin": 1, "reload": 2, "hup": 1, "cert": 2,
           "reexec": 1}
# Made unless --faults says otherwise (cert only with --tls; reexec on request).
DEFAULT_FAULTS = ("kill", "stop", "scale", "ttin", "reload", "hup", "cert")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    default_py = os.path.join(ROOT, ".venv", "bin", "python")
    ap.add_argument("--corral", default=os.environ.get("CORRAL_BIN") or os.path.join(
        ROOT, "target", "release", "corral"), help="corral binary (CORRAL_BIN)")
    ap.add_argument("--python", default=default_py if os.path.exists(default_py) else "python3",
                    help="interpreter of the workers (the apps need only the stdlib)")
    ap.add_argument("--asgi", action="store_true",
                    help="serve the ASGI app (with WebSocket clients) instead of the WSGI one")
    ap.add_argument("--gevent", action="store_true",
                    help="run the WSGI app in gevent workers ([workers] gevent)")
    ap.add_argument("--duration", type=float, default=300, help="seconds of load")
    ap.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    ap.add_argument("--workers", type=int, default=3, help="workers.count")
    ap.add_argument("--min-workers", type=int, default=2, help="scale never goes below")
    ap.add_argument("--max-workers", type=int, default=4, help="scale never goes above")
    ap.add_argument("--threads", type=int, default=4, help="threads per WSGI worker")
    ap.add_argument("--timeout", type=float, default=6, help="workers.timeout, seconds")
    ap.add_argument("--heartbeat-timeout", type=float, default=8,
                    help="workers.heartbeat_timeout, seconds")
    ap.add_argument("--graceful-timeout", type=float, default=20,
                    help="workers.graceful_timeout, seconds")
    ap.add_argument("--max-requests", type=int, default=500,
                    help="workers.max_requests (recycling; 0: never)")
    ap.add_argument("--max-requests-jitter", type=int, default=100,
                    help="workers.max_requests_jitter")
    ap.add_argument("--faults", default=",".join(DEFAULT_FAULTS),
                    help="faults to make, of: " + ", ".join(FAULTS) + " ('' for none); "
                    "reexec (USR2: a new corral takes the sockets over) is made at most once a "
                    "minute, and not in the last --warmup + 60 s + --quiet, so that the last "
                    "corral's RSS is measured")
    ap.add_argument("--reexec-at", type=float, default=None,
                    help="also a USR2 re-exec at this many seconds into the load, whatever the "
                    "random faults do (for short runs, like CI's)")
    ap.add_argument("--fault-every", default="2-6",
                    help="seconds between two faults, MIN-MAX (uniform at random)")
    ap.add_argument("--keepalive", type=int, default=4, help="keep-alive clients")
    ap.add_argument("--newconn", type=int, default=2, help="new-connection-per-request clients")
    ap.add_argument("--uploads", type=int, default=2, help="upload clients")
    ap.add_argument("--slow-readers", type=int, default=2, help="slow reader clients")
    ap.add_argument("--websockets", type=int, default=4, help="WebSocket clients (--asgi only)")
    ap.add_argument("--h2", type=int, default=0,
                    help="HTTP/2 clients (h2c, or ALPN h2 with --tls); needs the h2 package: "
                    "run this script with the test venv's Python")
    ap.add_argument("--h2-slow-readers", type=int, default=None,
                    help="HTTP/2 slow readers, like the HTTP/1.1 ones but under a stream "
                    "window given back slowly (default 1 with --h2, else 0)")
    ap.add_argument("--tls", action="store_true",
                    help="serve TLS (a CA and certificates made with openssl); every client "
                    "checks the certificate; adds the cert fault (a new or a broken "
                    "certificate, then a reload)")
    ap.add_argument("--pace", type=float, default=0.005,
                    help="mean pause of a fast client between two requests, seconds")
    ap.add_argument("--slow-max", type=float, default=0,
                    help="longest slow upload or slow read, seconds (default 1.5 x --timeout)")
    ap.add_argument("--list-share", type=float, default=0.25,
                    help="share of slow reads whose answer the app returns as one piece")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the RSS slope is fitted (default min(60, duration/4))")
    ap.add_argument("--quiet", type=float, default=None,
                    help="last seconds of load without faults (default min(15, duration/5))")
    ap.add_argument("--settle", type=float, default=60,
                    help="most seconds to wait after the load for workers and fds to settle")
    ap.add_argument("--fd-slack", type=int, default=2,
                    help="corral's fds at the end may exceed the start by this many")
    ap.add_argument("--kill-window", type=float, default=1.0,
                    help="a request sent this long after a worker died may still get its 502")
    ap.add_argument("--rss-slope-max", type=float, default=1.0,
                    help="pass: supervisor RSS slope under this many MiB per minute")
    ap.add_argument("--sample-every", type=float, default=2.0, help="RSS/fd sampling, seconds")
    ap.add_argument("--out-dir", default=os.path.join(
        "/tmp", "corral-chaos-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")),
        help="corral's log, config and the results")
    a = ap.parse_args()
    a.corral = os.path.abspath(a.corral)  # corral runs in --out-dir
    a.faults = [f for f in a.faults.replace(" ", "").split(",") if f]
    for f in a.faults:
        if f not in FAULTS:
            ap.error(f"unknown fault {f!r}; known: {', '.join(FAULTS)}")
    if not a.tls and "cert" in a.faults:
        a.faults.remove("cert")  # nothing to replace without TLS
    if a.h2_slow_readers is None:
        a.h2_slow_readers = 1 if a.h2 else 0
    if a.h2 or a.h2_slow_readers:
        import importlib.util
        if importlib.util.find_spec("h2") is None:
            ap.error(f"--h2 needs the h2 package, which {sys.executable} does not have: run "
                     "this script with .venv/bin/python (./test.sh installs h2 there)")
    try:
        lo, _, hi = a.fault_every.partition("-")
        a.fault_min, a.fault_max = float(lo), float(hi or lo)
    except ValueError:
        ap.error("--fault-every: MIN-MAX, like 2-6")
    if not 1 <= a.min_workers <= a.workers <= a.max_workers:
        ap.error("need 1 <= --min-workers <= --workers <= --max-workers")
    a.slow_max = a.slow_max or 1.5 * a.timeout
    a.warmup = min(60.0, a.duration / 4) if a.warmup is None else a.warmup
    a.quiet = min(15.0, a.duration / 5) if a.quiet is None else a.quiet
    if a.reexec_at is not None and not 0 < a.reexec_at < a.duration - a.quiet:
        ap.error(f"--reexec-at must fall in the faults' time: between 0 and {a.duration - a.quiet:g}"
                 " (--duration minus --quiet)")
    if not a.asgi:
        a.websockets = 0
    if a.gevent and a.asgi:
        ap.error("--gevent runs the WSGI app: not with --asgi")
    return a


# ---------------------------------------------------------------- /proc

def proc_stat(pid):
    """(state, ppid, start time) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def children(ppid):
    """{pid: (state, start)} of ppid's children."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st[1] == ppid:
                out[int(name)] = (st[0], st[2])
    return out


def cpu_ticks(pid, reaped=False):
    """utime + stime of pid (all threads), plus its reaped children's."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return sum(int(x) for x in rest[11:15 if reaped else 13])


def cpu_snapshot(corral):
    """(machine busy ticks, machine ticks, this script's CPU s, corral tree ticks)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    tree = cpu_ticks(corral.pid, reaped=True) + sum(cpu_ticks(p) for p in corral.workers())
    return (sum(vals[:8]) - idle, sum(vals[:8]),
            me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, tree)


def cpu_shares(before, after):
    """Shares of the machine's CPU over the load: corral's tree, this script, the rest."""
    hz = os.sysconf("SC_CLK_TCK")
    total = (after[1] - before[1]) / hz
    if total <= 0:
        return None
    busy = (after[0] - before[0]) / hz
    mine, tree = after[2] - before[2], (after[3] - before[3]) / hz
    return dict(corral=round(100 * tree / total, 1), chaos=round(100 * mine / total, 1),
                other=round(100 * max(0.0, busy - mine - tree) / total, 1))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fds(pid):
    """{fd: target} of pid's open files."""
    out = {}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                pass
    except OSError:
        pass
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- corral

CONFIG = """# written by bench/chaos.py
[app]
module = "{module}"
interface = "{iface}"
python = "{python}"
chdir = "{apps}"

[app.env]
CHAOS_SEEN_DIR = "{seen}"

[server]
bind = ["127.0.0.1:{port}"]
{tls}
[workers]
count = {workers}
threads = {threads}{gevent}
timeout = "{timeout}ms"
heartbeat_timeout = "{heartbeat}ms"
graceful_timeout = "{graceful}ms"
max_requests = {max_requests}
max_requests_jitter = {jitter}

[health]
status_bind = "127.0.0.1:{status_port}"
ready_path = "/health"

[control]
socket = "{socket}"

[deploy]
state_dir = "{state}"
ready_timeout = "30s"
revision = "none"
"""


class Corral:
    """The corral process this run started, and everything needed to stop it
    and every worker it ever had (by pid, checked against its start time)."""

    def __init__(self, a):
        self.a = a
        self.port, self.status_port = free_port(), free_port()
        self.socket = os.path.join(a.out_dir, "corral.sock")
        self.seen_dir = os.path.join(a.out_dir, "seen")
        self.log_path = os.path.join(a.out_dir, "corral.log")
        self.config = os.path.join(a.out_dir, "corral.toml")
        self.proc = None
        self.cur = None          # the corral serving now (a USR2 re-exec changes it)
        self.corrals = []        # every corral pid of the run, in order
        self.exit_codes = {}
        self.known = {}          # every worker pid seen -> start time
        self.lock = threading.Lock()
        self.cleaned = False
        self.certs = Certs(os.path.join(a.out_dir, "tls")) if a.tls else None

    def write_config(self):
        os.makedirs(self.seen_dir, exist_ok=True)
        a = self.a
        with open(self.config, "w") as f:
            f.write(CONFIG.format(
                module="asgi_chaos:app" if a.asgi else "chaos_app:app",
                iface="asgi" if a.asgi else "wsgi", python=a.python, apps=APPS_DIR,
                seen=self.seen_dir, port=self.port, workers=a.workers,
                # gevent workers take workers.concurrency; threads go unused.
                threads=1 if a.gevent else a.threads,
                gevent="\ngevent = true" if a.gevent else "",
                timeout=int(a.timeout * 1000), heartbeat=int(a.heartbeat_timeout * 1000),
                graceful=int(a.graceful_timeout * 1000), max_requests=a.max_requests,
                jitter=a.max_requests_jitter, status_port=self.status_port, socket=self.socket,
                state=os.path.join(a.out_dir, "state"),
                tls=f'\n[server.tls]\ncertfile = "{self.certs.cert}"\nkeyfile = "{self.certs.key}"\n'
                if self.certs else ""))

    def start(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
                            "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([self.a.corral, "run", "-c", self.config],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, cwd=self.a.out_dir, start_new_session=True)

        self.cur = self.proc.pid
        self.corrals.append(self.cur)

    @property
    def pid(self):
        return self.cur

    def exit_code(self, pid=None):
        """None while corral `pid` (default: the one serving now) runs,
        else its exit code. A re-executed corral is this script's child
        once its parent exits (the script is a subreaper then)."""
        pid = pid or self.cur
        if pid in self.exit_codes:
            return self.exit_codes[pid]
        if pid == self.proc.pid:
            code = self.proc.poll()
        else:
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
                code = os.waitstatus_to_exitcode(status) if got else None
            except ChildProcessError:  # still its parent's child
                st = proc_stat(pid)
                code = None if st and st[0] != "Z" else "?"
        if code is not None:
            self.exit_codes[pid] = code
        return code

    def alive(self):
        return self.cur is not None and self.exit_code() is None

    def is_corral(self, pid):
        try:
            return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(self.a.corral)
        except OSError:
            return False

    def status(self, timeout=3.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=timeout)
        try:
            conn.request("GET", "/status")
            return json.loads(conn.getresponse().read())
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def workers(self):
        """Live (not zombie) children of corral, {pid: start}; remembered."""
        kids = {pid: v for pid, v in children(self.pid).items()
                if pid not in self.corrals and not (v[0] != "Z" and self.is_corral(pid))}
        with self.lock:
            for pid, (_state, start) in kids.items():
                self.known.setdefault(pid, start)
        return {pid: start for pid, (state, start) in kids.items() if state != "Z"}

    def zombies(self):
        return sorted(pid for pid, (state, _s) in children(self.pid).items() if state == "Z")

    def is_worker(self, pid, start=None):
        st = proc_stat(pid)
        return (st is not None and st[1] == self.pid and st[0] != "Z"
                and (start is None or st[2] == start))

    def ctl(self, *args, timeout=60):
        """Runs `corral ARGS --socket S`; (exit code, output)."""
        try:
            done = subprocess.run([self.a.corral, *args, "--socket", self.socket],
                                  capture_output=True, text=True, timeout=timeout)
            return done.returncode, (done.stdout + done.stderr).strip()
        except subprocess.TimeoutExpired:
            return None, f"no answer within {timeout}s"

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return f"corral exited with {self.exit_code()} during start-up"
            st = self.status(1.0)
            if st and settled(st, self.a.workers) and len(self.workers()) == self.a.workers:
                return None
            time.sleep(0.2)
        return f"not all {self.a.workers} workers in service after {timeout:.0f}s"


    def cleanup(self):
        """Ends everything this run started that is still there: corral's
        process group (SIGKILL), then every worker pid ever seen that is still
        the same process. Returns the pids that had to be killed."""
        with self.lock:
            if self.cleaned or self.proc is None:
                return []
            self.cleaned = True
            known = dict(self.known)
        killed = []
        for pid, start in known.items():   # a stopped worker must not stay stopped
            st = proc_stat(pid)
            if st and st[2] == start and st[0] == "T":
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
        for pid in self.corrals:
            if self.exit_code(pid) is None:
                try:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                except OSError:
                    pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                killed.append(pid)
        end = time.monotonic() + 10
        while any(self.exit_code(p) is None for p in self.corrals) and time.monotonic() < end:
            time.sleep(0.05)
        def left():
            out = []
            for pid, start in known.items():
                st = proc_stat(pid)
                if st and st[2] == start and st[0] != "Z":
                    out.append(pid)
            return out

        end = time.monotonic() + 3          # workers exit when their channel closes
        while left() and time.monotonic() < end:
            time.sleep(0.1)
        for pid in left():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        return killed


class Certs:
    """With --tls: a CA made for this run and the server certificate corral
    serves (for "localhost", signed by the CA), which the cert fault
    replaces. Clients trust the CA only, so they check what corral serves."""

    def __init__(self, folder):
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        self.ca, self.ca_key = os.path.join(folder, "ca.pem"), os.path.join(folder, "ca.key")
        self.cert, self.key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        self.serial = 0
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                     "-subj", "/CN=corral chaos CA")
        self.issue()
        self.installed = self.fingerprint(self.cert)

    def openssl(self, *args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    def issue(self):
        """A new certificate and key for localhost, written in place by
        rename (each file whole); returns its fingerprint."""
        self.serial += 1
        key, csr, cert = (os.path.join(self.dir, f"new.{x}") for x in ("key", "csr", "pem"))
        ext = os.path.join(self.dir, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n")
        self.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", key, "-out", csr, "-subj", f"/CN=localhost/O=chaos {self.serial}")
        self.openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                     "-set_serial", str(1000 + self.serial), "-days", "2", "-extfile", ext,
                     "-out", cert)
        os.replace(key, self.key)
        os.replace(cert, self.cert)
        return self.fingerprint(self.cert)

    def break_key(self):
        """A key that does not match the certificate (kept aside to put back)."""
        self.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", os.path.join(self.dir, "other.key"))
        os.replace(self.key, self.key + ".good")
        os.replace(os.path.join(self.dir, "other.key"), self.key)

    def mend_key(self):
        os.replace(self.key + ".good", self.key)

    @staticmethod
    def fingerprint(path):
        with open(path) as f:
            return der_fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))

    def contexts(self):
        out = {}
        for alpn in ("http/1.1", "h2"):
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.set_alpn_protocols([alpn])
            out[alpn] = ctx
        return out

    def served(self, port):
        """The fingerprint of the certificate a new connection gets."""
        ctx = ssl.create_default_context(cafile=self.ca)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return der_fingerprint(tls.getpeercert(binary_form=True))


def der_fingerprint(der):
    """A certificate's short name in the fault log: its SHA-256, 16 digits."""
    return hashlib.sha256(der).hexdigest()[:16]


def settled(st, count):
    """/status shows `count` slots, all in service, and no reload under way."""
    slots = st.get("slots") or []
    return (st.get("workers", {}).get("configured") == count and len(slots) == count
            and all((s.get("worker") or {}).get("state") == "in_service" for s in slots)
            and not st.get("reloading"))


# ---------------------------------------------------------------- sampling

class Sampler(threading.Thread):
    """Every few seconds: corral's RSS, fd count, live workers and zombies."""

    def __init__(self, corral, every, t0, rec):
        super().__init__(daemon=True)
        self.corral, self.every, self.t0, self.rec = corral, every, t0, rec
        self.samples = []        # (seconds since start, RSS KiB, fds, workers, zombies)
        self.halt = threading.Event()
        self.faults = None

    def sample(self):
        c = self.corral
        if not c.alive():
            return
        rss = rss_kib(c.pid)
        if rss is None:
            return
        self.samples.append((time.time() - self.t0, rss, len(fds(c.pid)), len(c.workers()),
                             len(c.zombies()), c.pid))

    def run(self):
        last_note = 0.0
        while not self.halt.is_set():
            self.sample()
            now = time.time() - self.t0
            if self.samples and now - last_note >= 15:
                last_note = now
                n, bad = self.rec.total()
                _t, rss, nfd, nw, *_ = self.samples[-1]
                made = len(self.faults.log) if self.faults else 0
                note(f"{now:5.0f}s: {n} outcomes ({bad} failures), {made} faults, "
                     f"RSS {rss / 1024:.1f} MiB, {nfd} fds, {nw} workers")
            self.halt.wait(self.every)


# ---------------------------------------------------------------- faults

class Faults(threading.Thread):
    """Makes one random fault every MIN-MAX seconds until `until` (wall
    clock); logs each with its time and the pids it touched."""

    def __init__(self, a, corral, t0, until, halt):
        super().__init__(daemon=True)
        self.a, self.c, self.t0, self.until, self.halt = a, corral, t0, until, halt
        self.rnd = random.Random(f"{a.seed}-faults")
        self.log = []            # dicts: t, kind, pid, ...
        self.stopped = {}        # pid -> dict(start, t, cont_at or None, plan)
        self.problems = []       # what corral did wrong that a fault revealed
        self.target = a.workers  # the worker count we asked for last
        self.reexec_until = t0 + a.duration - a.quiet - a.warmup - 60
        self.last_reexec = 0.0

    def record(self, kind, **info):
        entry = dict(t=time.time(), kind=kind, **info)
        self.log.append(entry)
        pid = f" pid {info['pid']}" if "pid" in info else ""
        extra = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("pid",))
        note(f"{entry['t'] - self.t0:7.2f}s fault: {kind}{pid}" + (f" ({extra})" if extra else ""))
        return entry

    def pick_worker(self):
        """An in-service worker of corral's, confirmed its child just now;
        None when that would leave no worker untouched."""
        st = self.c.status()
        if not st:
            return None, None
        live = [(s["slot"], s["worker"]["pid"]) for s in st.get("slots", [])
                if (s.get("worker") or {}).get("state") == "in_service"
                and s["worker"]["pid"] not in self.stopped]
        if len(live) < 2:
            return None, None
        slot, pid = self.rnd.choice(live)
        st = proc_stat(pid)
        if not st or st[1] != self.c.pid or st[0] in "ZTX":
            return None, None
        return slot, (pid, st[2])

    def signal_worker(self, pid, start, sig):
        if not self.c.is_worker(pid, start):
            return False
        try:
            os.kill(pid, sig)
            return True
        except OSError:
            return False

    def kill(self):
        slot, who = self.pick_worker()
        if who and self.signal_worker(*who, signal.SIGKILL):
            self.record("kill", pid=who[0], slot=slot)

    def stop(self):
        slot, who = self.pick_worker()
        if not who:
            return
        plan = self.rnd.choice(["short", "long", "leave"])
        hold = {"short": self.rnd.uniform(0.5, 0.6 * self.a.timeout),
                "long": self.rnd.uniform(self.a.timeout + 1, self.a.heartbeat_timeout + 2),
                "leave": None}[plan]
        if self.signal_worker(*who, signal.SIGSTOP):
            e = self.record("stop", pid=who[0], slot=slot,
                            plan=f"SIGCONT after {hold:.1f}s" if hold else "left stopped")
            self.stopped[who[0]] = dict(start=who[1], t=e["t"], plan=plan,
                                        cont_at=e["t"] + hold if hold else None, cont=None)

    def scale(self):
        choices = [n for n in range(self.a.min_workers, self.a.max_workers + 1)
                   if n != self.target]
        if not choices:
            return
        n = self.rnd.choice(choices)
        rc, out = self.c.ctl("scale", str(n), timeout=15)
        self.target = n if rc == 0 else self.target
        self.record("scale", to=n, rc=rc, **({"out": out[:200]} if rc != 0 else {}))
        if rc != 0:
            self.problems.append(f"`corral scale {n}` exited {rc}: {out[:300]}")

    def ttin(self):
        up = self.target < self.a.max_workers and (self.target == self.a.min_workers
                                                    or self.rnd.random() < 0.5)
        if not up and self.target <= self.a.min_workers:
            return
        os.kill(self.c.pid, signal.SIGTTIN if up else signal.SIGTTOU)
        self.target += 1 if up else -1
        self.record("SIGTTIN" if up else "SIGTTOU", to=self.target)

    def reload(self):
        st = self.c.status()
        if not st or st.get("reloading"):
            return
        gen = st.get("generation")
        t = time.time()
        rc, out = self.c.ctl("reload", "--wait", "--timeout", "30s", timeout=45)
        self.record("reload", generation_before=gen, rc=rc, took=f"{time.time() - t:.1f}s",
                    **({"out": out[:200]} if rc != 0 else {}))
        if rc != 0 and not any(s["cont"] is None and not s.get("gone")
                               for s in self.stopped.values()):
            self.problems.append(f"`corral reload --wait` exited {rc} with no worker stopped: "
                                 f"{out[:300]}")

    def cert(self):
        """A new certificate, or (one time in four) a key that does not
        match it, then `corral reload --wait`: a good one must be served to
        the next connection; a broken one must fail the reload (exit 1)
        and leave the one in force serving. The good key is put back
        after."""
        certs = self.c.certs
        st = self.c.status()
        if not st or st.get("reloading") or any(
                s["cont"] is None and not s.get("gone") for s in self.stopped.values()):
            return  # a stopped worker can fail the code reload for its own reasons
        broken = self.rnd.random() < 0.25
        before = certs.installed
        if broken:
            certs.break_key()
        else:
            new = certs.issue()
        rc, out = self.c.ctl("reload", "--wait", "--timeout", "30s", timeout=45)
        try:
            served = certs.served(self.c.port)
        except OSError as e:
            served = f"no TLS connection: {e}"
        if broken:
            certs.mend_key()
            self.record("cert", broken="key does not match", rc=rc, served=served)
            if rc != 1 or "TLS" not in out:
                self.problems.append(f"a reload with a broken key exited {rc}, not 1 with the "
                                     f"TLS error: {out[:300]}")
            if served != before:
                self.problems.append(f"after a reload with a broken key corral serves {served}, "
                                     f"not the certificate in force {before}")
        else:
            certs.installed = new
            self.record("cert", fingerprint=new, rc=rc, served=served)
            if rc != 0:
                self.problems.append(f"a reload with a new certificate exited {rc}: {out[:300]}")
            if served != new:
                self.problems.append(f"after a reload with a new certificate {new} corral "
                                     f"serves {served}")

    def reexec(self, forced=False):
        """USR2: corral starts its binary again, which takes the listen
        sockets over and, once its workers are in service, has the old one
        drain and exit. Connections must not be refused, requests must not
        be lost; an HTTP/2 client gets GOAWAY and an idle keep-alive
        connection is closed (both may send again what the old corral never
        started). At most once a minute, none late in the run."""
        now = time.time()
        if not forced and (now > self.reexec_until or now - self.last_reexec < 60):
            return False
        st = self.c.status()
        if not st or st.get("reloading") or any(
                s["cont"] is None and not s.get("gone") for s in self.stopped.values()):
            return False
        old = self.c.pid
        os.kill(old, signal.SIGUSR2)
        self.last_reexec = now
        new, deadline = None, time.monotonic() + 10
        while new is None and time.monotonic() < deadline:
            new = next((p for p, (state, _s) in children(old).items()
                        if state != "Z" and self.c.is_corral(p)), None)
            time.sleep(0.02)
        if new is None:
            self.problems.append(f"USR2 to corral {old}: no new corral started within 10s")
            self.record("reexec", old=old, new=None)
            return True
        # From here on the new one is "corral": the old one exits when
        # the new one is in service.
        with self.c.lock:
            self.c.corrals.append(new)
            self.c.cur = new
        e = self.record("reexec", old=old, new=new)
        limit = time.monotonic() + 30 + self.a.graceful_timeout + 15
        while self.c.exit_code(old) is None and time.monotonic() < limit:
            if self.c.exit_code(new) is not None:
                break
            time.sleep(0.05)
        e["old_exit"] = time.time() if self.c.exit_code(old) is not None else None
        e["old_code"] = self.c.exit_code(old)
        e["took"] = f"{time.time() - e['t']:.1f}s"
        note(f"{time.time() - self.t0:7.2f}s reexec: corral {old} exited {e['old_code']} after "
             f"{e['took']}; corral {new} serves")
        if self.c.exit_code(new) is not None:
            self.problems.append(f"the new corral {new} exited {self.c.exit_code(new)}")
        elif e["old_code"] != 0:
            self.problems.append(f"after USR2 the old corral {old} exited {e['old_code']}, "
                                 "not 0")
        return True

    def hup(self):
        st = self.c.status()
        if not st or st.get("reloading"):
            return
        os.kill(self.c.pid, signal.SIGHUP)
        self.record("SIGHUP", generation_before=st.get("generation"))

    def tend(self):
        """SIGCONT stopped workers whose time has come; note the ones corral
        replaced; a worker left stopped that corral never replaces is a
        problem (it gets SIGCONT after a generous wait)."""
        now = time.time()
        limit = self.a.heartbeat_timeout + self.a.timeout + 15
        for pid, s in list(self.stopped.items()):
            if s["cont"] is not None or s.get("gone"):
                continue
            if not self.c.is_worker(pid, s["start"]):
                s["gone"] = now
                continue
            due = s["cont_at"] if s["cont_at"] else s["t"] + limit
            if now >= due:
                if s["cont_at"] is None:
                    self.problems.append(
                        f"worker pid {pid} stopped at {s['t'] - self.t0:.1f}s was still there "
                        f"{limit:.0f}s later (heartbeat_timeout {self.a.heartbeat_timeout:g}s): "
                        "corral never replaced it")
                if self.signal_worker(pid, s["start"], signal.SIGCONT):
                    s["cont"] = time.time()
                    self.record("cont", pid=pid, after=f"{s['cont'] - s['t']:.1f}s")

    def run(self):
        kinds = [k for k in FAULTS if k in self.a.faults]
        next_at = time.time() + 3
        reexec_at = None if self.a.reexec_at is None else self.t0 + self.a.reexec_at
        while not self.halt.is_set() and time.time() < self.until:
            self.tend()
            if reexec_at is not None and time.time() >= reexec_at and self.reexec(forced=True):
                reexec_at = None
            if kinds and time.time() >= next_at:
                kind = self.rnd.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
                try:
                    getattr(self, kind)()
                except OSError as e:
                    self.problems.append(f"fault {kind} failed: {e}")
                next_at = time.time() + self.rnd.uniform(self.a.fault_min, self.a.fault_max)
            self.halt.wait(0.2)
        if not self.halt.is_set():  # halted early: interrupted, nothing more to do
            self.quiet()

    def quiet(self):
        """The end of the faults: every stopped worker gets SIGCONT, the
        worker count goes back to --workers."""
        for pid, s in self.stopped.items():
            if s["cont"] is None and not s.get("gone") and self.signal_worker(
                    pid, s["start"], signal.SIGCONT):
                s["cont"] = time.time()
                self.record("cont", pid=pid, after=f"{s['cont'] - s['t']:.1f}s")
        st = self.c.status()
        if self.target != self.a.workers or (st and st.get("workers", {}).get(
                "configured") != self.a.workers):
            rc, out = self.c.ctl("scale", str(self.a.workers), timeout=15)
            self.target = self.a.workers
            self.record("scale", to=self.a.workers, rc=rc, why="back to --workers for the end")


# ---------------------------------------------------------------- the run

def note(msg):
    print(f"chaos: {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def become_subreaper():
    """Orphans of this script's descendants (a re-executed corral, once its
    parent exits) become its children, so their exit status can be read."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER


def start_clients(a, s):
    plan = ([("h2", load.h2_loop, ())] * a.h2
            + [("h2 slow reader", load.h2_slowread_loop, (a.slow_max, a.list_share))]
            * a.h2_slow_readers
            + [("keep-alive", load.keepalive_loop, ())] * a.keepalive
            + [("new conn", load.newconn_loop, ())] * a.newconn
            + [("upload", load.upload_loop, (a.slow_max,))] * a.uploads
            + [("slow reader", load.slowread_loop, (a.slow_max, a.list_share))] * a.slow_readers
            + [("websocket", load.ws_loop, ())] * a.websockets)
    threads, seen = [], {}
    for name, fn, extra in plan:
        i = seen.get(name, 0)
        seen[name] = i + 1
        t = threading.Thread(target=fn, args=(s, i, *extra), name=f"{name}-{i}", daemon=True)
        t.start()
        threads.append(t)
    return threads


def git_rev():
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml"],
                           capture_output=True, text=True).stdout.strip()
    return rev + (" (src/ modified)" if dirty else "")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        # Judge an earlier run again from its raw record.
        return 0 if judge(os.path.join(sys.argv[2], "raw.json")) else 1
    a = parse_args()
    if not os.access(a.corral, os.X_OK):
        sys.exit(f"chaos: no corral binary at {a.corral}: run `cargo build --release` "
                 "or pass --corral")
    os.makedirs(a.out_dir, exist_ok=True)
    c = Corral(a)
    c.write_config()
    boot_timeout = 60.0
    # start-up, load, the clients' last answers, a last reload, settling, the stop
    client_tail = 2 * a.timeout + 10 + a.heartbeat_timeout + a.timeout + 10 + a.slow_max + 5
    hard = boot_timeout + a.duration + client_tail + 60 + a.settle + a.graceful_timeout + 60
    t_start = time.monotonic()
    if ("reexec" in a.faults or a.reexec_at is not None) and not become_subreaper():
        sys.exit("chaos: reexec needs prctl(PR_SET_CHILD_SUBREAPER), which failed: without it "
                 "the re-executed corral's exit status cannot be read")

    def watchdog():
        time.sleep(hard)
        note(f"hard deadline of {hard:.0f}s reached: stopping everything")
        c.cleanup()
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    rec = load.Recorder()
    run = dict(rev=git_rev(), corral_version="?", start_error=None, cpus=os.cpu_count(),
               command=" ".join(["bench/chaos.py", *sys.argv[1:]]),
               interrupted=None, corral_died=None, log=c.log_path, out_dir=a.out_dir,
               port=c.port, hard_deadline=hard)
    halt = threading.Event()
    faults = sampler = None
    threads = []
    try:
        run["corral_version"] = subprocess.run([a.corral, "--version"], capture_output=True,
                                               text=True, timeout=10).stdout.strip()
        note(f"{run['corral_version']} (git {run['rev']}), {'ASGI' if a.asgi else 'WSGI in gevent workers' if a.gevent else 'WSGI'}, "
             f"{a.workers} workers, {a.duration:g}s, seed {a.seed}; hard deadline {hard:.0f}s; "
             f"out {a.out_dir}")
        c.start()
        err = c.wait_ready(boot_timeout)
        if err:
            run["start_error"] = err
            raise Interrupted("start-up")
        time.sleep(1.0)  # let the status connections of the start-up close
        t0 = time.time()
        run["t0"] = t0
        run["start"] = dict(fds=fds(c.pid), workers=sorted(c.workers()), rss=rss_kib(c.pid),
                            zombies=c.zombies())
        note(f"corral pid {c.pid} ready on 127.0.0.1:{c.port}, status 127.0.0.1:{c.status_port}"
             f": {len(run['start']['workers'])} workers, {len(run['start']['fds'])} fds, "
             f"RSS {run['start']['rss'] / 1024:.1f} MiB")
        load_end = time.monotonic() + a.duration
        s = load.Settings(c.port, a.seed, a.timeout, a.heartbeat_timeout, load_end, halt, rec,
                          a.pace, tls=c.certs.contexts() if c.certs else None)
        sampler = Sampler(c, a.sample_every, t0, rec)
        sampler.sample()
        faults = Faults(a, c, t0, t0 + a.duration - a.quiet, halt)
        sampler.faults = faults
        sampler.start()
        cpu_before = cpu_snapshot(c)
        threads = start_clients(a, s)
        faults.start()
        while time.monotonic() < load_end:
            if not c.alive():
                run["corral_died"] = f"corral exited with {c.exit_code()} during the run"
                note(run["corral_died"])
                break
            time.sleep(0.5)
        if c.alive():
            run["cpu"] = cpu_shares(cpu_before, cpu_snapshot(c))
        note("load done; waiting for the clients to finish their last request")
        join_by = time.monotonic() + s.answer_timeout + s.idle_timeout + a.slow_max + 5
        for t in threads:
            t.join(max(0.1, join_by - time.monotonic()))
        run["stuck_clients"] = [t.name for t in threads if t.is_alive()]
        halt.set()
        faults.join(60)
        run["settle"] = settle(a, c, run) if c.alive() else None
        sampler.halt.set()
        sampler.join(5)
        if c.alive():
            run["stop"] = graceful_stop(a, c, s, faults, run)
    except (Interrupted, KeyboardInterrupt) as e:
        with rec.lock:
            rec.closed = True  # the clients' outcomes from now on are the stop's doing
        if not run["start_error"]:
            run["interrupted"] = str(e) or "Ctrl-C"
            note(f"interrupted ({run['interrupted']}): stopping everything")
    finally:
        halt.set()
        if sampler:
            sampler.halt.set()
        run["killed_at_cleanup"] = c.cleanup()
    run["elapsed"] = time.monotonic() - t_start
    if run["start_error"]:
        note(f"corral did not start: {run['start_error']}; its log: {c.log_path}")
        print(open(c.log_path, errors="replace").read()[-3000:], file=sys.stderr)
        return 2
    raw = dict(args=vars(a), run=run, log_path=c.log_path, seen_dir=c.seen_dir,
               counts=[[k, cls, n] for (k, cls), n in rec.counts.items()],
               failures=rec.failures, trace=rec.trace, ws_messages=rec.ws_messages,
               late_echoes=rec.late_echoes, goaways=rec.goaways, h2_resent=rec.h2_resent,
               faults=faults.log if faults else [], stopped=faults.stopped if faults else {},
               problems=faults.problems if faults else [],
               samples=sampler.samples if sampler else [])
    with open(os.path.join(a.out_dir, "raw.json"), "w") as f:
        json.dump(raw, f, default=str)
    passed = judge(os.path.join(a.out_dir, "raw.json"))
    if run["interrupted"]:
        return 130
    return 0 if passed else 1


def judge(raw_path):
    """Analyses a run's raw.json, prints the report and writes it beside."""
    out_dir = os.path.dirname(raw_path)
    result = report.analyse(report.load_raw(raw_path))
    text = report.render(result)
    print(text)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    report.save(out_dir, result)
    note(f"report.md, failures.json, summary.json, samples.csv and corral.log in {out_dir}")
    return result["passed"]


def graceful_stop(a, c, s, faults, run):
    """The last fault: SIGTERM corral while requests are in flight (GET
    /sleep?ms=3000, two per worker), then (with the kill fault) SIGKILL one
    of its workers during the drain. corral must answer them (502 for the
    killed worker's), start no worker, and exit 0. Watches corral's children
    until it is gone."""
    s.end = time.monotonic() + 60
    busy = [threading.Thread(target=stop_request, args=(s, i), daemon=True)
            for i in range(2 * a.workers)]
    for t in busy:
        t.start()
    time.sleep(0.5)
    before = c.workers()
    run["t_term"] = time.time()
    t_term = time.monotonic()
    os.kill(c.pid, signal.SIGTERM)
    note(f"{time.time() - run['t0']:7.2f}s SIGTERM to corral with {2 * a.workers} requests "
         "in flight")
    time.sleep(0.3)
    victim = None
    if faults and "kill" in a.faults:
        victim = next((p for p in sorted(before) if c.is_worker(p, before[p])), None)
        if victim and faults.signal_worker(victim, before[victim], signal.SIGKILL):
            faults.record("kill", pid=victim, during="graceful stop")
    started, deadline = {}, t_term + a.graceful_timeout + 20
    while c.alive() and time.monotonic() < deadline:
        for pid, start in c.workers().items():
            if pid not in before and pid not in started:
                started[pid] = round(time.time() - run["t0"], 2)
        time.sleep(0.05)
    code = c.exit_code()
    for t in busy:
        t.join(max(0.1, deadline - time.monotonic()))
    return dict(code=code, seconds=round(time.monotonic() - t_term, 2),
                started=started, victim=victim)


def stop_request(s, i):
    t0, rid, conn = time.time(), f"stop{i}", load.Conn(s)
    cls, info = load.exchange(conn, "GET", "/sleep?ms=3000", rid, keep=False,
                              check=load.ok_body(b"ok"))
    conn.close()
    s.rec.add("during stop", cls, t0, time.time(), rid, **info)


def settle(a, c, run):
    """After the load: waits (at most --settle s) until corral shows --workers
    workers all in service, has that many live children and no zombie, and its
    fd count is back within --fd-slack of the start. Returns what it saw last."""
    start_fds = len(run["start"]["fds"])
    deadline = time.monotonic() + a.settle
    t = time.monotonic()
    while True:
        table = fds(c.pid)  # before the status request adds a connection
        st = c.status()
        workers = c.workers()
        seen = dict(status_ok=bool(st and settled(st, a.workers)),
                    configured=(st or {}).get("workers", {}).get("configured"),
                    slots=[((s.get("worker") or {}).get("state"), (s.get("worker") or {}).get(
                        "pid")) for s in (st or {}).get("slots", [])],
                    workers=sorted(workers), zombies=c.zombies(), fds=table,
                    seconds=round(time.monotonic() - t, 1))
        if (seen["status_ok"] and len(workers) == a.workers and not seen["zombies"]
                and len(table) <= start_fds + a.fd_slack) or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
