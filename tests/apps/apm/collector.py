"""A stand-in for the services APM clients send to, on loopback: an
OpenTelemetry collector's OTLP/HTTP receiver (POST /v1/traces, protobuf),
the Datadog agent's trace intake (/info, PUT or POST /v0.4/traces and
/v0.5/traces, msgpack) and Sentry's envelope endpoint (POST
/api/PROJECT/envelope/). Each request the clients send is decoded and
written as one JSON line to the file named by argv[1]; the port it listens
on is written to argv[2] once it listens (argv[3], when given, is the
port to take, else one the kernel picks). It exits when its parent (the
test) is gone, or after 5 minutes."""

import gzip
import json
import os
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = open(sys.argv[1], "a")
LOCK = threading.Lock()


def otlp(body):
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = []
    for rs in req.resource_spans:
        resource = {a.key: value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append({
                    "name": s.name,
                    "kind": s.kind,
                    "trace_id": s.trace_id.hex(),
                    "attributes": {a.key: value(a.value) for a in s.attributes},
                    "resource": resource,
                })
    return spans


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def datadog(path, body):
    """The spans of a /v0.4 or /v0.5 payload, as dicts."""
    import msgpack

    payload = msgpack.unpackb(body, raw=False, strict_map_key=False)
    spans = []
    if path.startswith("/v0.5/"):
        strings, traces = payload
        s = lambda i: strings[i]
        for trace in traces:
            for (service, name, resource, trace_id, span_id, parent_id, start, duration,
                 error, meta, metrics, typ) in trace:
                spans.append({
                    "service": s(service), "name": s(name), "resource": s(resource),
                    "trace_id": trace_id, "span_id": span_id, "parent_id": parent_id,
                    "error": error, "type": s(typ),
                    "meta": {s(k): s(v) for k, v in meta.items()},
                    "metrics": {s(k): v for k, v in metrics.items()},
                })
    else:
        for trace in payload:
            spans.extend(trace)
    return spans


def envelope(body):
    """A Sentry envelope: its header, then each item's header and payload."""
    lines = body.split(b"\n")
    out = {"header": json.loads(lines[0]), "items": []}
    i = 1
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        header = json.loads(lines[i])
        payload = lines[i + 1] if i + 1 < len(lines) else b""
        i += 2
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = payload.decode("utf-8", "replace")
        out["items"].append({"header": header, "payload": payload})
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/info"):
            self.reply(200, b'{"endpoints": ["/v0.4/traces", "/v0.5/traces"]}')
        else:
            self.reply(404, b"{}")

    def do_PUT(self):
        self.do_POST()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        rec = {"path": self.path}
        try:
            if self.path == "/v1/traces":
                rec["spans"] = otlp(body)
            elif self.path.endswith("/traces"):
                rec["spans"] = datadog(self.path, body)
            elif self.path.endswith("/envelope/"):
                rec["envelope"] = envelope(body)
            else:
                rec["bytes"] = len(body)
        except Exception as e:  # what the test shows, never a crash here
            rec["error"] = "%s: %s" % (type(e).__name__, e)
        with LOCK:
            OUT.write(json.dumps(rec, default=repr) + "\n")
            OUT.flush()
        if self.path.endswith("/traces") and self.path != "/v1/traces":
            self.reply(200, b'{"rate_by_service": {}}')
        else:
            self.reply(200, b"{}")

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    parent = os.getppid()
    deadline = time.monotonic() + 300
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.2)


main()
