#!/usr/bin/env python3
"""A/B of two or more corral builds on one noisy machine (stdlib only).

Every build serves the app at once (an idle one costs nothing), and wrk runs
against each in turn, round after round, the order flipped every round, so
that the other tenants' load falls on all of them alike. Per run: req/s, p99,
the supervisor's CPU per request (utime+stime of the corral process from
/proc/PID/stat over the requests wrk counted), the workers' (its children's),
the supervisor's context switches per request (all its threads), its system
calls per request (`perf stat -e raw_syscalls:sys_enter -p PID` over the
run; "-" where perf cannot count them) and its peak RSS (VmHWM, MiB, as
the point ends: the peak so far of that server, which serves the points
in the order given). The
table gives medians, and the median of the per-round ratios against the first
build, which is steadier than either side's req/s.

    python3 bench/ab.py [-r ROUNDS] [-d SECS] [-c "32 256"] [-a "hello echo"] \
        [--python PYTHON] [--h2c STREAMS] NAME=BINARY[,EXTRA,FLAGS] ...

2 workers of 1 thread each, wrk -t2; apps from bench/apps (echo POSTs the
16 KiB body of post16k.lua). With --h2c, h2load -t1 over h2c (prior
knowledge) with STREAMS streams per connection instead (bench/tls.py's
runner; p99 from its per-request log). Servers are stopped by PID (SIGTERM,
then SIGKILL of their process group).
"""
import argparse, os, re, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

import bench as driver  # bench/bench.py: its perf system-call counter
import tls  # bench/tls.py: its h2load runner and parser

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def ctxsw(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{t}/status"):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children_cpu(pid):
    total = 0.0
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return 0.0
    for k in kids:
        try:
            total += cpu(int(k))
        except OSError:
            pass
    return total


def start(name, path, app, port, log, python):
    path, *extra = path.split(",")
    cmd = [path, *extra, f"{app}:app", "-w", "2", "--threads", "1", "-b", f"127.0.0.1:{port}",
           "--chdir", os.path.join(HERE, "apps"), "--python", python]
    # A process group of its own, in wrk's session: see bench.py's WORKERS.
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, process_group=0)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if app == "hello":
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            else:
                urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{port}/", data=b"x" * 10, method="POST"), timeout=1).read()
            time.sleep(1)
            return p
        except Exception:
            time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    sys.exit(f"{name} did not come up")


def wrk(port, conns, secs, app):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", f"http://127.0.0.1:{port}/"]
    if app == "echo":
        cmd += ["-s", os.path.join(HERE, "post16k.lua")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
    return reqs, rps, p99


def h2c(port, conns, secs, app, streams):
    """h2load over h2c (prior knowledge), `streams` per connection: like wrk()."""
    with tempfile.TemporaryDirectory() as d:
        flags = ["-c", str(conns), "-m", str(streams)]
        if app == "echo":
            body = os.path.join(d, "body")
            with open(body, "wb") as f:
                f.write(b"x" * 16384)
            flags += ["-d", body]
        log_file = os.path.join(d, "log")
        out = tls.h2load(f"http://127.0.0.1:{port}/", flags, secs, log_file)
        rps, p99, ok, failed = tls.parse(out, log_file)
    return ok + failed, rps, f"{p99:.2f}ms"


def ms(latency):
    """wrk's latency text ("987.00us", "20.75ms", "1.02s") in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", latency).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", "--rounds", type=int, default=5)
    ap.add_argument("-d", "--duration", type=int, default=4)
    ap.add_argument("-c", "--conns", default="32 256")
    ap.add_argument("-a", "--apps", default="hello echo")
    ap.add_argument("--python", default="python3", help="the workers' Python")
    ap.add_argument("--logs", default="/tmp", help="folder for the servers' logs")
    ap.add_argument("--h2c", type=int, metavar="STREAMS", default=0,
                    help="load with h2load over h2c (prior knowledge), STREAMS per connection, "
                         "instead of wrk over HTTP/1.1")
    ap.add_argument("bins", nargs="+", metavar="NAME=BINARY[,FLAG,...]")
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bins]
    if any(len(b) != 2 for b in bins):
        sys.exit("ab: each build is NAME=BINARY[,FLAG,...]")
    driver.PERF = driver.perf_usable()
    rows = []
    for app in a.apps.split():
        procs = {}
        try:
            for name, path in bins:
                port = free_port()
                log = open(os.path.join(a.logs, f"corral-ab-{name}-{app}.log"), "w")
                procs[name] = (start(name, path, app, port, log, a.python), port)
            for conns in [int(c) for c in a.conns.split()]:
                # warm-up
                def load(port, secs):
                    if a.h2c:
                        return h2c(port, conns, secs, app, a.h2c)
                    return wrk(port, conns, secs, app)
                for name, _ in bins:
                    load(procs[name][1], 1)
                res = {name: [] for name, _ in bins}
                for r in range(a.rounds):
                    order = bins if r % 2 == 0 else bins[::-1]
                    for name, _ in order:
                        p, port = procs[name]
                        calls = driver.SyscallCounter([p.pid])
                        c0, w0, x0 = cpu(p.pid), children_cpu(p.pid), ctxsw(p.pid)
                        reqs, rps, p99 = load(port, a.duration)
                        c1, w1, x1 = cpu(p.pid), children_cpu(p.pid), ctxsw(p.pid)
                        n = calls.stop()
                        res[name].append((rps, (c1 - c0) * 1e6 / reqs, (w1 - w0) * 1e6 / reqs, p99,
                                          (x1 - x0) / reqs, None if n is None else n / reqs,
                                          peak_rss_mib(p.pid)))
                        sc = res[name][-1][5]
                        print(f"  {app} c{conns} round {r} {name}: {rps:.0f} req/s, "
                              f"sup {res[name][-1][1]:.2f} us/req, workers {res[name][-1][2]:.2f} us/req, p99 {p99}, "
                              f"sup ctxsw/req {res[name][-1][4]:.3f}, "
                              f"sup syscalls/req {'-' if sc is None else f'{sc:.2f}'}, "
                              f"sup peak RSS {res[name][-1][6]:.1f} MiB",
                              file=sys.stderr, flush=True)
                base = bins[0][0]
                for name, _ in bins:
                    rr = res[name]
                    ratio_rps = statistics.median(x[0] / y[0] for x, y in zip(rr, res[base]))
                    ratio_cpu = statistics.median(x[1] / y[1] for x, y in zip(rr, res[base]))
                    calls = [x[5] for x in rr if x[5] is not None]
                    rows.append((app, conns, name, statistics.median(x[0] for x in rr),
                                 statistics.median(x[1] for x in rr), statistics.median(x[2] for x in rr),
                                 ratio_rps, ratio_cpu, statistics.median(x[4] for x in rr),
                                 statistics.median(calls) if calls else None, max(x[6] for x in rr),
                                 statistics.median(ms(x[3]) for x in rr)))
        finally:
            for p, _ in procs.values():
                p.send_signal(signal.SIGTERM)
            for p, _ in procs.values():
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    tool = f"h2load -t1 -m{a.h2c} (h2c)" if a.h2c else "wrk -t2"
    print(f"\n{a.rounds} rounds x {a.duration}s, {tool}, interleaved; medians; ratios vs {bins[0][0]} (median of per-round ratios)")
    print("| app | conns | binary | req/s | p99 ms | supervisor us/req | workers us/req | sup ctxsw/req "
          "| sup syscalls/req | sup peak RSS MiB | req/s ratio | sup us/req ratio |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for app, conns, name, rps, sup, wk, rr, rc, cs, sc, rss, p99 in rows:
        calls = "-" if sc is None else f"{sc:.2f}"
        print(f"| {app} | {conns} | {name} | {rps:.0f} | {p99:.2f} | {sup:.2f} | {wk:.2f} | {cs:.3f} "
              f"| {calls} | {rss:.1f} | {rr:.3f} | {rc:.3f} |")


if __name__ == "__main__":
    main()
