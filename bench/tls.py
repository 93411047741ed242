"""HTTPS and HTTP/2 side by side, in one run on this machine (bench/tls.sh).

The hello WSGI app (bench/apps/hello.py), 2 workers each, TLS with a
certificate this script makes (openssl), load from h2load (nghttp2-client):

- HTTP/2 over TLS (ALPN h2): corral against granian --http 2;
- h2c (HTTP/2 with prior knowledge, no TLS): corral against granian --http 2;
- HTTPS/1.1 (h2load --h1): corral against granian --http 1 and gunicorn
  (gthread workers, --certfile/--keyfile).

Each point: WARMUP seconds of load, then DURATION seconds measured. Reported:
req/s (h2load), p99 latency (from h2load's per-request log), and CPU per
request (utime + stime from /proc, over the measured run): of the server's
main process (corral's supervisor, which terminates TLS and HTTP; granian's
and gunicorn's main process, whose workers do that) and of its whole tree.
Stdlib only. Env: DURATION (5), WARMUP (1), H2_CLIENTS (16), H2_STREAMS (8),
H1_CLIENTS (32), CORRAL_BIN, BENCH_VENV.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
APPS = os.path.join(BENCH, "apps")
VBIN = os.path.join(os.environ.get("BENCH_VENV", os.path.join(BENCH, ".venv")), "bin")
CORRAL = os.environ.get("CORRAL_BIN", os.path.join(ROOT, "target", "release", "corral"))
DURATION = int(os.environ.get("DURATION", "5"))
WARMUP = int(os.environ.get("WARMUP", "1"))
H2_CLIENTS = int(os.environ.get("H2_CLIENTS", "16"))
H2_STREAMS = int(os.environ.get("H2_STREAMS", "8"))
H1_CLIENTS = int(os.environ.get("H1_CLIENTS", "32"))
HZ = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"tls bench: {msg}", file=sys.stderr, flush=True)


def certs(d):
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem) in d."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
         "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=d, check=True, capture_output=True)
    return os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(cert, key):
    """name -> (description, argv builder(port, tls, http)) ."""
    def corral(port, tls, http):
        argv = [CORRAL, "hello:app", "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", APPS,
                "--python", os.path.join(VBIN, "python")]
        return argv + (["--certfile", cert, "--keyfile", key] if tls else [])

    def granian(port, tls, http):
        argv = [os.path.join(VBIN, "granian"), "--interface", "wsgi", "--workers", "2",
                "--blocking-threads", "1", "--http", http, "--host", "127.0.0.1",
                "--port", str(port), "--working-dir", APPS, "--no-ws", "--log-level", "warning"]
        if tls:
            argv += ["--ssl-certificate", cert, "--ssl-keyfile", key]
        return argv + ["hello:app"]

    def gunicorn(port, tls, http):
        # gthread: sync workers close every connection, which h2load's
        # keep-alive HTTP/1.1 clients do not survive.
        return [os.path.join(VBIN, "gunicorn"), "-w", "2", "-k", "gthread", "--threads", "4",
                "-b",
                f"127.0.0.1:{port}", "--chdir", APPS, "--certfile", cert, "--keyfile", key,
                "hello:app"]

    return {"corral": ("corral -w 2", corral),
            "granian": ("granian wsgi --workers 2 --blocking-threads 1", granian),
            "gunicorn": ("gunicorn -w 2 -k gthread --threads 4", gunicorn)}


# (protocol label, TLS, granian's --http, h2load flags, servers)
CASES = [
    ("HTTP/2 (TLS, ALPN h2)", True, "2", ["-c", str(H2_CLIENTS), "-m", str(H2_STREAMS)],
     ["corral", "granian"]),
    ("h2c (prior knowledge)", False, "2", ["-c", str(H2_CLIENTS), "-m", str(H2_STREAMS)],
     ["corral", "granian"]),
    ("HTTPS/1.1", True, "1", ["--h1", "-c", str(H1_CLIENTS), "-m", "1"],
     ["corral", "granian", "gunicorn"]),
]


def tree(pid):
    """pid and its descendants."""
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu(pid):
    """utime + stime of pid, seconds (0 once gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_ready(url, tls, http, deadline):
    scheme_flags = ["-k"] if tls else (["--http2-prior-knowledge"] if http == "2" else [])
    while time.time() < deadline:
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "--max-time", "2", *scheme_flags, url],
                           capture_output=True, text=True)
        if r.stdout == "200":
            return True
        time.sleep(0.2)
    return False


def h2load(url, flags, seconds, log_file=None):
    argv = ["h2load", "-t", "1", "-D", str(seconds), "-N", "5", *flags, url]
    if log_file:
        argv.insert(1, f"--log-file={log_file}")
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        log(f"h2load did not finish: {' '.join(argv)}")
        return ""
    return r.stdout


def parse(out, log_file):
    reqs = 0.0
    ok = failed = 0
    for line in out.splitlines():
        if line.startswith("finished in"):
            reqs = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            failed = int(parts[parts.index("failed") - 1])
            ok = int(parts[parts.index("succeeded") - 1])
    times = []
    with open(log_file) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                times.append(int(cols[2]))
    times.sort()
    p99 = times[int(len(times) * 0.99) - 1] / 1000 if times else float("nan")
    return reqs, p99, ok, failed


def measure(name, argv_of, label, tls, http, flags, workdir):
    port = free_port()
    argv = argv_of(port, tls, http)
    scheme = "https" if tls else "http"
    url = f"{scheme}://127.0.0.1:{port}/"
    # A process group of its own, in h2load's session: see bench.py's WORKERS.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            process_group=0)
    try:
        if not wait_ready(url, tls, http, time.time() + 30):
            log(f"{name} never answered on {url}")
            return None
        time.sleep(1)  # every worker up
        h2load(url, flags, WARMUP)
        pids = tree(proc.pid)
        before = {p: cpu(p) for p in pids}
        log_file = os.path.join(workdir, f"{name}-{port}.log")
        out = h2load(url, flags, DURATION, log_file)
        main_cpu = cpu(proc.pid) - before[proc.pid]
        tree_cpu = sum(cpu(p) - before[p] for p in pids)
        if not out:
            return None
        reqs, p99, ok, failed = parse(out, log_file)
        total = max(ok, 1)
        return {"label": label, "server": name, "rps": reqs, "p99": p99, "ok": ok,
                "failed": failed, "main_us": main_cpu / total * 1e6,
                "tree_us": tree_cpu / total * 1e6}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return "?"


def main():
    workdir = tempfile.mkdtemp(prefix="corral-tls-bench-")
    cert, key = certs(workdir)
    table = servers(cert, key)
    rows = []
    for label, tls, http, flags, names in CASES:
        for name in names:
            desc, argv_of = table[name]
            log(f"{label}: {desc}")
            r = measure(name, argv_of, label, tls, http, flags, workdir)
            if r:
                r["desc"] = desc
                rows.append(r)
    print(f"{os.cpu_count()} CPUs; {DURATION}s per point after {WARMUP}s warm-up; "
          f"h2load -t 1, HTTP/2: -c {H2_CLIENTS} -m {H2_STREAMS}, HTTP/1.1: --h1 -c {H1_CLIENTS}; "
          f"{version([CORRAL, '--version'])}; granian {version([os.path.join(VBIN, 'granian'), '--version'])}; "
          f"gunicorn {version([os.path.join(VBIN, 'gunicorn'), '--version'])}\n")
    print("| protocol | server | req/s | p99 ms | failed | main process CPU µs/req | tree CPU µs/req |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['label']} | {r['desc']} | {r['rps']:.0f} | {r['p99']:.2f} | {r['failed']} "
              f"| {r['main_us']:.0f} | {r['tree_us']:.0f} |")


if __name__ == "__main__":
    main()
