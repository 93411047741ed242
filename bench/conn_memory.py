#!/usr/bin/env python3
"""What an open, idle keep-alive connection costs corral's supervisor in
memory: it starts corral (one WSGI worker, --keepalive 120s), opens N
connections that each make one request (a GET, or a POST of 16 KiB) and
then stay idle, and prints corral's VmRSS before and after, per
connection, on plain HTTP/1.1 and over TLS (a certificate it makes with
openssl). Stdlib only; builds nothing (`cargo build --release` first).

    python3 bench/conn_memory.py            # 2000 connections per case
    python3 bench/conn_memory.py -n 5000    # needs an open-file limit above 2 x N

Each case runs its own corral; processes are stopped by PID.
"""

import argparse
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

APP = '''def app(environ, start_response):
    body = b"%d" % len(environ["wsgi.input"].read())
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"corral exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("corral did not listen within 30 s")


def one_request(port, ctx, body):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ctx is not None:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    if body:
        s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    else:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before an answer")
        got += chunk
    head, _, rest = got.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += s.recv(65536)
    return s


def case(a, workdir, tls, body):
    port = free_port()
    args = [a.corral, "app:app", "-w", "1", "-b", f"127.0.0.1:{port}", "--keepalive", "120s",
            "--chdir", workdir, "--python", a.python]
    ctx = None
    if tls:
        args += ["--certfile", os.path.join(workdir, "cert.pem"),
                 "--keyfile", os.path.join(workdir, "key.pem")]
        ctx = ssl.create_default_context(cafile=os.path.join(workdir, "cert.pem"))
        ctx.set_alpn_protocols(["http/1.1"])
    log = open(os.path.join(workdir, "corral.log"), "ab")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    conns = []
    try:
        wait_port(port, proc)
        one_request(port, ctx, body).close()  # the first request warms the worker
        time.sleep(0.5)
        before = rss_kib(proc.pid)
        for _ in range(a.n):
            conns.append(one_request(port, ctx, body))
        time.sleep(1.0)
        after = rss_kib(proc.pid)
    finally:
        for s in conns:
            s.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return before, after


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    default_py = os.path.join(ROOT, ".venv", "bin", "python")
    ap.add_argument("--corral", default=os.environ.get("CORRAL_BIN") or os.path.join(
        ROOT, "target", "release", "corral"), help="corral binary (CORRAL_BIN)")
    ap.add_argument("--python", default=default_py if os.path.exists(default_py) else "python3",
                    help="interpreter of the worker")
    ap.add_argument("-n", type=int, default=2000, help="idle connections per case")
    a = ap.parse_args()
    if not os.access(a.corral, os.X_OK):
        sys.exit(f"conn_memory: no corral binary at {a.corral}: run `cargo build --release`")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < a.n + 100:
        sys.exit(f"conn_memory: the open-file limit ({hard}) is below -n {a.n} + 100")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="corral-connmem-") as workdir:
        with open(os.path.join(workdir, "app.py"), "w") as f:
            f.write(APP)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                        os.path.join(workdir, "key.pem"), "-out", os.path.join(workdir, "cert.pem"),
                        "-days", "1", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        print(f"{a.n} idle keep-alive connections, each after one request; corral's VmRSS\n")
        print("| transport | request | RSS before MiB | RSS after MiB | KiB per connection |")
        print("|---|---|---:|---:|---:|")
        for tls in (False, True):
            for body in (b"", os.urandom(16384)):
                before, after = case(a, workdir, tls, body)
                print(f"| {'TLS 1.3' if tls else 'plain'} | {'POST 16 KiB' if body else 'GET'} "
                      f"| {before / 1024:.1f} | {after / 1024:.1f} | {(after - before) / a.n:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
