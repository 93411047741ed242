#!/usr/bin/env python3
"""Idle WebSocket connections: how much memory a server needs to hold N of them.

For each server (2 workers, the WebSocket echo app bench/apps/asgi_ws.py):
start it on a free loopback port with a raised open-files limit, wait until it
answers, note the RSS of its main process and of its whole process tree, then
open N WebSocket connections (the HTTP upgrade is written by hand on a plain
socket, stdlib only), check that a few of them echo a message, hold them all
idle for a while (answering the server's pings) and note the RSS again; then
ask every connection which worker serves it (the text "__pid__"), close them
all, and stop the server by PID.

Run with bench/.venv/bin/python (the servers come from bench/.venv), after
bench/run.sh has set things up, or as part of `BENCH_SUITE=asgi bench/run.sh`:

    bench/.venv/bin/python bench/ws_idle.py                     # corral and uvicorn, 10000
    bench/.venv/bin/python bench/ws_idle.py --conns 2000 --servers uvicorn

Settings: command-line flags, or the environment variables named in --help.
Every wait is bounded; processes are stopped by PID only (see bench.py).
"""

import argparse
import asyncio
import base64
import collections
import datetime
import hashlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the driver's server commands and /proc helpers)

APP = "asgi_ws"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Servers this test knows, as keys of bench.SERVERS; extra flags for each.
KNOWN = ("corral-asgi", "uvicorn", "gunicorn-uvicorn", "granian-asgi")


def env(name, default):
    return os.environ.get(name, "").strip() or default


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=int(env("WS_CONNS", "10000")),
                    help="WebSocket connections to hold (WS_CONNS, default 10000)")
    ap.add_argument("--servers", default=env("WS_SERVERS", "corral-asgi uvicorn"),
                    help="servers, space or comma separated, of: " + ", ".join(KNOWN)
                    + " (WS_SERVERS, default 'corral-asgi uvicorn')")
    ap.add_argument("--hold", type=float, default=float(env("WS_HOLD", "30")),
                    help="seconds to hold the connections idle once all are open (WS_HOLD, 30)")
    ap.add_argument("--parallel", type=int, default=int(env("WS_PARALLEL", "256")),
                    help="handshakes in flight while opening (WS_PARALLEL, 256)")
    ap.add_argument("--open-timeout", type=float, default=float(env("WS_OPEN_TIMEOUT", "180")),
                    help="seconds for opening all connections (WS_OPEN_TIMEOUT, 180)")
    ap.add_argument("--handshake-timeout", type=float,
                    default=float(env("WS_HANDSHAKE_TIMEOUT", "30")),
                    help="seconds for one connect + upgrade (WS_HANDSHAKE_TIMEOUT, 30)")
    ap.add_argument("--echo-checks", type=int, default=int(env("WS_ECHO_CHECKS", "20")),
                    help="connections, spread over all, that must echo a message (WS_ECHO_CHECKS, 20)")
    ap.add_argument("--concurrency", type=int, default=int(env("WS_CORRAL_CONCURRENCY", "0")),
                    help="corral's --concurrency (requests/WebSockets in flight per worker); "
                    "default: --conns (WS_CORRAL_CONCURRENCY)")
    ap.add_argument("--out-dir", default=env("OUT_DIR", os.path.join(
        "/tmp", "corral-ws-idle-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))),
        help="server logs and results.json (OUT_DIR)")
    args = ap.parse_args()
    args.servers = [s for s in args.servers.replace(",", " ").split() if s]
    for s in args.servers:
        if s not in KNOWN:
            ap.error(f"unknown server {s!r}; known: {', '.join(KNOWN)}")
    if args.conns < 1:
        ap.error("--conns must be at least 1")
    if not args.concurrency:
        args.concurrency = args.conns
    return args


# ---------------------------------------------------------------- limits

def nofile_target(conns):
    """Open-files limit wanted by the client and the servers: every connection
    is one descriptor on each side, plus room for everything else."""
    return 2 * conns + 4096


def raise_nofile(want):
    """Raise this process's RLIMIT_NOFILE: the hard limit too when allowed (root),
    the soft limit to the hard one. Returns the resulting soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            soft, hard = want, want
        except (ValueError, OSError):
            pass  # not allowed: make do with the hard limit
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- WebSocket client

def frame(opcode, payload=b""):
    """One final client frame (clients must mask)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


class Conn:
    __slots__ = ("reader", "writer", "waiter", "closed", "task", "unexpected")

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.waiter = None      # future of the reply we wait for, if any
        self.closed = None      # why it closed, None while open
        self.task = None
        self.unexpected = 0     # messages nobody waited for

    async def read_loop(self):
        r = self.reader
        try:
            while True:
                b0, b1 = await r.readexactly(2)
                opcode, n = b0 & 0x0F, b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await r.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await r.readexactly(8))[0]
                mask = await r.readexactly(4) if b1 & 0x80 else None
                data = await r.readexactly(n) if n else b""
                if mask:
                    data = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
                if opcode == 0x9:                      # ping: answer, as any client must
                    self.writer.write(frame(0xA, data))
                elif opcode == 0x8:                    # close from the server
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                    self.closed = f"server sent close {code}"
                    try:
                        self.writer.write(frame(0x8, data[:2]))
                    except (OSError, RuntimeError):
                        pass
                    break
                elif opcode in (0x0, 0x1, 0x2):
                    if self.waiter is not None and not self.waiter.done():
                        self.waiter.set_result(data)
                    else:
                        self.unexpected += 1
        except asyncio.IncompleteReadError:
            self.closed = self.closed or "server closed the connection"
        except (ConnectionError, OSError) as exc:
            self.closed = self.closed or f"{type(exc).__name__}"
        finally:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError(self.closed or "closed"))

    async def ask(self, text, timeout):
        """Send a text message; its reply (bytes), or raise on timeout/close."""
        if self.closed:
            raise ConnectionError(self.closed)
        self.waiter = asyncio.get_running_loop().create_future()
        self.writer.write(frame(0x1, text.encode()))
        try:
            return await asyncio.wait_for(self.waiter, timeout)
        finally:
            self.waiter = None


async def open_one(port, sem, timeout):
    async with sem:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout)
            key = base64.b64encode(os.urandom(16))
            writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n" % (port, key))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            lines = head.decode("latin-1").split("\r\n")
            status = lines[0].split(" ", 2)
            if len(status) < 2 or status[1] != "101":
                raise ValueError(f"status {lines[0][:40]!r}")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (ln.partition(":") for ln in lines[1:] if ln)}
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
            if headers.get("sec-websocket-accept") != accept:
                raise ValueError("bad Sec-WebSocket-Accept")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as exc:
            if writer is not None:
                writer.close()
            reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            return None, reason
        conn = Conn(reader, writer)
        conn.task = asyncio.get_running_loop().create_task(conn.read_loop())
        return conn, None


# ---------------------------------------------------------------- memory

def memory(root):
    """RSS (KiB) of the main process, of the whole tree, and of each worker."""
    procs = bench.tree(root)
    workers = bench.workers_of(root)
    return {"main": bench.rss_kib(root),
            "tree": sum(bench.rss_kib(p) for p in procs),
            "workers": {str(p): bench.rss_kib(p) for p in sorted(workers)}}


def mib(kib):
    return kib / 1024


# ---------------------------------------------------------------- one server

async def exercise(args, port, root, res):
    n = args.conns
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(args.parallel)
    t0 = time.monotonic()
    tasks = [loop.create_task(open_one(port, sem, args.handshake_timeout)) for _ in range(n)]
    done, pending = await asyncio.wait(tasks, timeout=args.open_timeout)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
    res["open_s"] = round(time.monotonic() - t0, 2)
    conns, failures = [], collections.Counter()
    for t in tasks:
        if t in done and not t.cancelled() and t.exception() is None:
            conn, why = t.result()
            if conn is not None:
                conns.append(conn)
            else:
                failures[why] += 1
        else:
            failures["not opened within --open-timeout"] += 1
    res["opened"] = len(conns)
    res["open_failures"] = dict(failures)
    print(f"ws_idle: {res['server']}: {len(conns)}/{n} open in {res['open_s']}s"
          + (f", failures {dict(failures)}" if failures else ""), file=sys.stderr, flush=True)
    try:
        # A few connections, spread over all, must echo a message.
        k = min(args.echo_checks, len(conns))
        picks = [conns[i * len(conns) // k] for i in range(k)] if k else []

        async def echo(c, i):
            msg = f"echo {i} {os.urandom(6).hex()}"
            try:
                return (await c.ask(msg, 5.0)) == msg.encode()
            except (ConnectionError, asyncio.TimeoutError, OSError, RuntimeError):
                return False
        oks = await asyncio.gather(*(echo(c, i) for i, c in enumerate(picks)))
        res["echo_ok"] = f"{sum(oks)}/{len(picks)}"

        # Hold them idle, sampling memory (the read loops answer pings meanwhile).
        peak = {"main": 0, "tree": 0}
        end = time.monotonic() + args.hold
        last = memory(root)
        while True:
            last = memory(root)
            for key in peak:
                peak[key] = max(peak[key], last[key])
            if time.monotonic() >= end:
                break
            await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))
        res["held"] = {"main_kib": last["main"], "tree_kib": last["tree"],
                       "workers_kib": last["workers"], "peak_main_kib": peak["main"],
                       "peak_tree_kib": peak["tree"]}
        still = [c for c in conns if c.closed is None]
        res["open_after_hold"] = len(still)
        closed_why = collections.Counter(c.closed for c in conns if c.closed is not None)
        if closed_why:
            res["closed_during_hold"] = dict(closed_why)

        # Which worker serves each connection: one message on every connection.
        async def whose(c):
            try:
                return (await c.ask("__pid__", 30.0)).decode()
            except (ConnectionError, asyncio.TimeoutError, OSError, RuntimeError):
                return None
        t1 = time.monotonic()
        pids = await asyncio.gather(*(whose(c) for c in still))
        res["ask_all_s"] = round(time.monotonic() - t1, 2)
        spread = collections.Counter(p for p in pids if p is not None)
        res["spread"] = dict(spread.most_common())
        res["no_pid_answer"] = sum(1 for p in pids if p is None)
        res["after_one_message_each"] = memory(root)
    finally:
        # Close: a close frame, then the socket; then give the read loops a moment.
        for c in conns:
            try:
                c.writer.write(frame(0x8, struct.pack("!H", 1000)))
                c.writer.close()
            except (OSError, RuntimeError):
                pass
        waits = [c.writer.wait_closed() for c in conns]
        if waits:
            await asyncio.wait([loop.create_task(w) for w in waits], timeout=15)
        readers = [c.task for c in conns if c.task is not None]
        for t in readers:
            t.cancel()
        if readers:
            await asyncio.wait(readers, timeout=10)
    await asyncio.sleep(1.0)
    res["after_close"] = memory(root)


def run_server(key, args, want_nofile):
    label, build, ready_re, _iface = bench.SERVERS[key]
    port = bench.free_port()
    extra = ("--concurrency", str(args.concurrency)) if key == "corral-asgi" else ()
    argv = build(APP, port, extra)
    if key == "corral-asgi":
        label += f" --concurrency {args.concurrency}"
    log_path = os.path.join(args.out_dir, f"{key}-ws-idle.log")
    res = {"server": key, "label": label, "argv": argv, "log": log_path,
           "conns": args.conns, "notes": []}
    env = dict(os.environ, PATH=bench.VBIN + os.pathsep + os.environ.get("PATH", ""),
               VIRTUAL_ENV=bench.VENV, PYTHONUNBUFFERED="1")

    def limits():  # in the child, before exec: the server may hold every connection
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = max(want_nofile, soft)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, cwd=bench.APPS_DIR, start_new_session=True,
                                preexec_fn=limits)
    bench.CURRENT["proc"] = proc
    try:
        bench.wait_ready(proc, port, APP, ready_re, log_path)
        time.sleep(1.0)  # let start-up settle before the baseline
        with open(f"/proc/{proc.pid}/limits") as f:
            res["server_nofile"] = next((ln.split()[3] for ln in f
                                         if ln.startswith("Max open files")), "?")
        res["idle"] = memory(proc.pid)
        asyncio.run(asyncio.wait_for(exercise(args, port, proc.pid, res),
                                     args.open_timeout + args.hold + 180))
        if proc.poll() is not None:
            res["notes"].append(f"server exited with {proc.returncode} during the test")
    except bench.CaseError as exc:
        res["error"] = str(exc)
    except asyncio.TimeoutError:
        res["error"] = "the test did not finish in time"
    finally:
        problems, stop_s = bench.stop_server(proc)
        bench.CURRENT["proc"] = None
        res["stop_s"] = round(stop_s, 2)
        res["notes"].extend(problems)
    bad = [ln.strip() for ln in bench.log_tail(log_path, 10_000).splitlines()
           if "Traceback" in ln or "panicked" in ln or " ERROR " in ln or "[ERROR]" in ln]
    if bad:
        res["notes"].append(f"{len(bad)} error lines in the server log, first: {bad[0][:200]}")
    return res


# ---------------------------------------------------------------- report

def ok(r):
    """All connections opened, echoed and stayed open."""
    good, _, asked = r.get("echo_ok", "0/0").partition("/")
    return ("error" not in r and r.get("opened") == r["conns"]
            and r.get("open_after_hold") == r["conns"] and good == asked != "0")


def table(results):
    head = ["server", "open / asked", "open s", "echo", "open after hold",
            "main process RSS MiB idle → held", "worker RSS MiB held",
            "tree RSS MiB idle → held", "KiB per conn (tree)",
            "tree RSS MiB after 1 msg each", "tree RSS MiB after close",
            "connections per worker"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in results:
        if "held" not in r:
            why = (r.get("error") or "failed").splitlines()[0][:80]
            extra = f" ({r['opened']}/{r['conns']} open)" if "opened" in r else ""
            lines.append(f"| {r['label']} | FAILED: {why}{extra} |" + " |" * (len(head) - 2))
            continue
        idle, held = r["idle"], r["held"]
        per_conn = ((held["tree_kib"] - idle["tree"]) / r["opened"]) if r["opened"] else None
        fails = r.get("open_failures") or {}
        opened = f"{r['opened']}/{r['conns']}" + (
            " (" + ", ".join(f"{k}: {v}" for k, v in fails.items()) + ")" if fails else "")
        spread = " / ".join(str(v) for v in r.get("spread", {}).values()) or "—"
        if r.get("no_pid_answer"):
            spread += f" ({r['no_pid_answer']} no answer)"
        def held_mib(key):  # the last sample of the hold, and its peak when higher
            text = f"{mib(held[key + '_kib']):.1f}"
            if held[f"peak_{key}_kib"] - held[key + "_kib"] >= 512:
                text += f" (peak {mib(held[f'peak_{key}_kib']):.1f})"
            return text
        lines.append("| " + " | ".join([
            r["label"], opened, f"{r['open_s']:.1f}", r.get("echo_ok", "—"),
            str(r.get("open_after_hold", "—")),
            f"{mib(idle['main']):.1f} → {held_mib('main')}",
            " / ".join(f"{mib(v):.1f}" for v in held["workers_kib"].values()) or "—",
            f"{mib(idle['tree']):.1f} → {held_mib('tree')}",
            "—" if per_conn is None else f"{per_conn:.1f}",
            f"{mib(r['after_one_message_each']['tree']):.1f}" if "after_one_message_each" in r else "—",
            f"{mib(r['after_close']['tree']):.1f}" if "after_close" in r else "—",
            spread]) + " |")
    return "\n".join(lines)


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    args = parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    want = nofile_target(args.conns)
    have = raise_nofile(want)
    if have < args.conns + 256:
        sys.exit(f"ws_idle: open-files limit {have} is too low for {args.conns} connections "
                 f"(raise the hard limit: ulimit -Hn {want})")
    bench.STOP_TIMEOUT = max(bench.STOP_TIMEOUT, 30.0)
    print(f"ws_idle: {args.conns} connections per server, servers {' '.join(args.servers)}, "
          f"hold {args.hold:g}s, open-files limit {have}; logs in {args.out_dir}",
          file=sys.stderr, flush=True)
    results = []
    interrupted = False
    try:
        for key in args.servers:
            r = run_server(key, args, want)
            results.append(r)
            msg = r.get("error") or (f"held {r.get('open_after_hold')}/{r['conns']}, "
                                     f"main RSS {mib(r['held']['main_kib']):.1f} MiB, "
                                     f"tree RSS {mib(r['held']['tree_kib']):.1f} MiB")
            print(f"ws_idle: {key}: {msg}" + "".join(f"\n    note: {n}" for n in r["notes"]),
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        proc = bench.CURRENT["proc"]
        if proc is not None:
            bench.stop_server(proc)
        print("ws_idle: interrupted, reporting what was measured", file=sys.stderr)
    lines = [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: {os.cpu_count()} CPUs ({bench.platform_cpu()}), client on the same cores",
        f"corral: {bench.version([bench.CORRAL, '--version'])}; "
        f"{bench.pkg_versions(['uvicorn', 'uvloop', 'httptools', 'websockets', 'granian', 'gunicorn'])}",
        f"ws idle: {args.conns} WebSocket connections, app {APP}, 2 workers, held "
        f"{args.hold:g}s; RSS = VmRSS, 'held' sampled at the end of the hold",
    ]
    text = "\n".join(lines) + "\n\n" + table(results) + "\n"
    notes = [f"- {r['label']}: {n}" for r in results for n in r["notes"]]
    notes += [f"- {r['label']}: closed during the hold: {r['closed_during_hold']}"
              for r in results if r.get("closed_during_hold")]
    if notes:
        text += "\nnotes:\n" + "\n".join(notes) + "\n"
    print(text)
    with open(os.path.join(args.out_dir, "ws_idle.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out_dir, "ws_idle.json"), "w") as f:
        json.dump({"header": lines, "results": results}, f, indent=1)
    if interrupted:
        return 130
    return 0 if results and all(ok(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
