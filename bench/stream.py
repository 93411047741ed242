#!/usr/bin/env python3
"""Large bodies through an ASGI app: corral builds beside uvicorn, one run.

Every server serves bench/apps/asgi_stream.py at once with one worker and
the same interpreter: each corral build given (`NAME=BINARY[,EXTRA,FLAGS]`,
default `corral=target/release/corral`) and uvicorn (`PYTHON -m uvicorn`,
its defaults: uvloop and httptools when installed, as corral's
`asgi_loop = "auto"`). Round after round, the order flipped every round so
that the machine's other load falls on all of them alike, curl downloads
each size (GET /N: N MiB streamed in 64 KiB `http.response.body`
messages) and uploads each upload size (a POST the app reads with
`receive()`) from every server in turn. Each transfer is checked: the
whole body arrived, or the app counted every byte sent.

The table gives, per direction, size and server, the median seconds and
MiB/s, the median of the per-round ratios of the server's time to
uvicorn's (below 1: faster than uvicorn), and the median CPU seconds
(utime + stime from /proc, at a 10 ms tick) of corral's supervisor and of
the worker (corral's children; uvicorn's one process) over a transfer.
Compare ratios within one run, not across runs: the machine is shared.

    python3 bench/stream.py [-r ROUNDS] [--sizes "16 128 512"] \
        [--uploads "64 256"] [--python PYTHON] [NAME=BINARY[,FLAGS] ...]

(N MiB of upload are kept in a temporary file while it runs.)

Stdlib only, plus curl; builds nothing (`cargo build --release` first).
Servers run on free loopback ports, each in a process group of its own,
and are stopped by PID (SIGTERM, then SIGKILL of the group).
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = "asgi_stream:app"


TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    """utime + stime of pid, seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / TICK


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(k) for k in f.read().split()]
    except OSError:
        return []


def cpu_split(name, p):
    """(supervisor, workers) CPU seconds so far: corral and its children;
    uvicorn is one process, its worker."""
    if name == "uvicorn":
        return 0.0, cpu(p.pid)
    return cpu(p.pid), sum(cpu(k) for k in children(p.pid))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tail(log):
    log.flush()
    with open(log.name) as f:
        return "".join(f.readlines()[-20:])


def start(name, cmd, port, log):
    """Starts cmd in a process group of its own; waits (30 s at most) until
    it answers on port."""
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, process_group=0,
                         cwd=os.path.join(HERE, "apps"))
    deadline = time.time() + 30
    while time.time() < deadline:
        if p.poll() is not None:
            sys.exit(f"{name} exited with {p.returncode}:\n{tail(log)}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/0", timeout=1).read()
            return p
        except OSError:
            time.sleep(0.2)
    stop(p)
    sys.exit(f"{name} did not come up within 30 s:\n{tail(log)}")


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def curl(args, timeout):
    """curl's `time_total size_download` and the body it printed, if any."""
    out = subprocess.run(["curl", "-sS", "--fail", "-w", "\n%{time_total} %{size_download}",
                          *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)}: {out.stderr.strip()}")
    body, _, stats = out.stdout.rpartition("\n")
    seconds, size = stats.split()
    return float(seconds), int(size), body


def download(port, mib):
    seconds, size, _ = curl(["-o", "/dev/null", f"http://127.0.0.1:{port}/{mib}"], 120)
    if size != mib << 20:
        raise RuntimeError(f"GET /{mib} on port {port}: {size} bytes, not {mib << 20}")
    return seconds


def upload(port, path, mib):
    seconds, _, body = curl(["--data-binary", f"@{path}", "-H",
                             "content-type: application/octet-stream",
                             f"http://127.0.0.1:{port}/"], 120)
    if body != str(mib << 20):
        raise RuntimeError(f"POST of {mib} MiB on port {port}: the app counted {body!r}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", "--rounds", type=int, default=5)
    ap.add_argument("--sizes", default="16 128 512", help="download sizes, MiB")
    ap.add_argument("--uploads", default="64 256", help="upload sizes, MiB (\"\": none)")
    ap.add_argument("--python", default="python3",
                    help="the workers' and uvicorn's interpreter (with uvicorn installed)")
    ap.add_argument("builds", nargs="*", metavar="NAME=BINARY[,FLAGS]",
                    help="corral builds (default corral=target/release/corral)")
    args = ap.parse_args()
    builds = args.builds or [f"corral={os.path.join(ROOT, 'target', 'release', 'corral')}"]
    sizes = [int(s) for s in args.sizes.split()]
    uploads = [int(s) for s in args.uploads.split()]

    servers = []  # (name, port, Popen)
    work = tempfile.TemporaryDirectory(prefix="corral-stream-")
    try:
        for spec in builds:
            name, _, path = spec.partition("=")
            binary, *extra = path.split(",")
            port = free_port()
            cmd = [binary, *extra, APP, "-w", "1", "-b", f"127.0.0.1:{port}",
                   "--python", args.python, "--max-body-bytes",
                   str(max(uploads, default=1) << 21)]
            log = open(os.path.join(work.name, f"{name}.log"), "w")
            servers.append((name, port, start(name, cmd, port, log)))
        port = free_port()
        cmd = [args.python, "-m", "uvicorn", APP, "--port", str(port), "--log-level",
               "warning", "--no-access-log"]
        log = open(os.path.join(work.name, "uvicorn.log"), "w")
        servers.append(("uvicorn", port, start("uvicorn", cmd, port, log)))

        files = {}
        for mib in uploads:
            files[mib] = os.path.join(work.name, f"{mib}.bin")
            with open(files[mib], "wb") as f:
                f.write(os.urandom(1 << 20) * mib)

        cases = [("GET", mib) for mib in sizes] + [("POST", mib) for mib in uploads]
        times = {}  # (direction, mib, name) -> [seconds per round]
        cpus = {}  # (direction, mib, name) -> [(supervisor, worker) CPU s per round]
        for r in range(args.rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for direction, mib in cases:
                for name, port, p in order:
                    before = cpu_split(name, p)
                    if direction == "GET":
                        seconds = download(port, mib)
                    else:
                        seconds = upload(port, files[mib], mib)
                    after = cpu_split(name, p)
                    times.setdefault((direction, mib, name), []).append(seconds)
                    cpus.setdefault((direction, mib, name), []).append(
                        (after[0] - before[0], after[1] - before[1]))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

        print(f"{args.rounds} rounds, 1 worker each, {args.python}")
        print()
        print("| direction | MiB | server | median s | MiB/s | time ratio to uvicorn "
              "| supervisor CPU s | worker CPU s |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for direction, mib in cases:
            base = times[(direction, mib, "uvicorn")]
            for name, _, _ in servers:
                t = times[(direction, mib, name)]
                med = statistics.median(t)
                ratio = statistics.median(a / b for a, b in zip(t, base))
                sup = statistics.median(c[0] for c in cpus[(direction, mib, name)])
                wrk = statistics.median(c[1] for c in cpus[(direction, mib, name)])
                print(f"| {'download' if direction == 'GET' else 'upload'} | {mib} | {name} "
                      f"| {med:.3f} | {mib / med:.0f} | {ratio:.2f} "
                      f"| {'-' if name == 'uvicorn' else f'{sup:.2f}'} | {wrk:.2f} |")
    finally:
        for _, _, p in servers:
            stop(p)
        work.cleanup()


if __name__ == "__main__":
    main()
