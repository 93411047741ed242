"""gunicorn's worker hooks, run in corral's workers as gunicorn runs them in
its own: a gunicorn config file ([app] gunicorn_hooks, set when corral
reads a gunicorn.conf.py) is run once more in each worker, before the app's
import, and these functions of it are called at the same points of a
worker's life as under gunicorn:

- post_fork(server, worker): before the app's import (gunicorn calls it
  right after the fork, and without preload_app the app is imported after);
- post_worker_init(worker): after the app's import, before the first
  request (and before an ASGI app's lifespan startup, as under uvicorn's
  gunicorn worker);
- pre_request(worker, req) and post_request(worker, req, environ, resp):
  around each WSGI request, called by wsgi.py's runner, with req and resp
  made from the environ and the runner's answer only as far as a hook
  reads them (gunicorn's uvicorn worker calls neither, nor does corral for
  an ASGI app);
- worker_int(worker): on SIGINT or SIGQUIT, before the worker exits;
- worker_abort(worker): when corral finds the worker past its timeout (a
  request, or its boot), after the worker's stacks are dumped and before
  it is killed, as gunicorn calls it on the SIGABRT of a timeout; it runs
  on the main thread, so a worker whose interpreter is stuck holding the
  GIL never gets to it;
- worker_exit(server, worker): when the worker exits on its own (a stop, a
  recycle, SIGINT/SIGQUIT), never after SIGKILL.

An exception in post_fork or post_worker_init fails the worker's boot with
its traceback (gunicorn's worker exits too); one in pre_request answers
500, as gunicorn does; one in post_request, worker_int, worker_abort or
worker_exit is logged. `server` and `worker` stand in for gunicorn's
Arbiter and Worker with what hooks use of them: pid, ppid, age, log (the
"gunicorn.error" logger) and cfg (the settings the file sets).
"""

import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import traceback

WORKER_HOOKS = ("post_fork", "post_worker_init", "pre_request", "post_request", "worker_int",
                "worker_abort", "worker_exit")


# What corral runs with, under gunicorn's names (JSON, from the
# CORRAL_WORKER_GUNICORN_CFG main.py takes out of the environment).
RUNNING = ""


class Settings:
    """`cfg`, as gunicorn's Config gives settings to hooks: what corral
    runs with (its config file and flags, under gunicorn's names: RUNNING),
    then what the file sets, then gunicorn's
    defaults for the settings hooks commonly read."""

    # gunicorn 27's defaults, for the settings corral does not map.
    DEFAULTS = {
        "loglevel": "info", "preload_app": False, "daemon": False, "reload": False,
        "backlog": 2048, "limit_request_line": 4094, "limit_request_fields": 100,
        "limit_request_field_size": 8190, "umask": 0, "user": os.getuid(),
        "group": os.getgid(), "raw_env": [], "pythonpath": None, "accesslog": None,
        "errorlog": "-", "capture_output": False, "forwarded_allow_ips": "127.0.0.1,::1",
        "proxy_allow_ips": "127.0.0.1,::1", "statsd_host": None, "statsd_prefix": "",
        "certfile": None, "keyfile": None, "is_ssl": False, "sendfile": None,
        "reuse_port": False, "worker_tmp_dir": None, "tmp_upload_dir": None,
    }

    def __init__(self, module):
        self._module = module
        try:
            self._running = json.loads(RUNNING or "{}")
        except ValueError:
            self._running = {}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._running:
            return self._running[name]
        try:
            return getattr(self._module, name)
        except AttributeError:
            pass
        if name in self.DEFAULTS:
            return self.DEFAULTS[name]
        raise AttributeError(
            "%s: not a setting corral knows (it gives hooks what it runs with, what the "
            "config file sets, and gunicorn's defaults of common settings)" % name) from None


class Server:
    """gunicorn's Arbiter as hooks see it: corral's supervisor (the parent
    of a worker and of the arbiter hooks' process)."""

    def __init__(self, cfg, log):
        self.pid = os.getppid()
        self.cfg = cfg
        self.log = log
        # As gunicorn's Arbiter.proc_name: -n/--name, else the instance's.
        self.proc_name = getattr(cfg, "proc_name", None)
        # Kept up to date in the arbiter hooks' process (arbiter.py).
        self.num_workers = 0


class Worker:
    """gunicorn's Worker as hooks see it: this process."""

    def __init__(self, cfg, log):
        self.pid = os.getpid()
        self.ppid = os.getppid()
        # gunicorn counts spawns; corral's slot tells the workers apart.
        self.age = int(os.environ.get("CORRAL_SLOT", "0") or 0)
        self.cfg = cfg
        self.log = log
        self.alive = True
        self.booted = False
        self.wsgi = None
        self.nr = 0


class Request:
    """gunicorn's http.Request as pre_request and post_request read it, each
    attribute made from the request's environ when a hook reads it (a hook
    that reads nothing costs next to nothing)."""

    __slots__ = ("environ",)

    def __init__(self, environ):
        self.environ = environ

    @property
    def method(self):
        return self.environ.get("REQUEST_METHOD", "")

    @property
    def uri(self):
        return self.environ.get("RAW_URI", "")

    @property
    def path(self):
        return self.uri.partition("#")[0].partition("?")[0]

    @property
    def query(self):
        return self.uri.partition("#")[0].partition("?")[2]

    @property
    def fragment(self):
        return self.uri.partition("#")[2]

    @property
    def version(self):
        proto = self.environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            major, _, minor = proto.partition("/")[2].partition(".")
            return (int(major), int(minor or 0))
        except ValueError:
            return (1, 1)

    @property
    def headers(self):
        """(NAME, value) pairs, names in capitals as gunicorn gives them."""
        headers = []
        for key, value in self.environ.items():
            if key.startswith("HTTP_"):
                headers.append((key[5:].replace("_", "-"), value))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                headers.append((key.replace("_", "-"), value))
        return headers

    @property
    def trailers(self):
        return []

    @property
    def scheme(self):
        return self.environ.get("wsgi.url_scheme", "http")

    @property
    def peer_addr(self):
        try:
            port = int(self.environ.get("REMOTE_PORT") or 0)
        except ValueError:
            port = 0
        return (self.environ.get("REMOTE_ADDR", ""), port)

    remote_addr = peer_addr

    @property
    def body(self):
        return self.environ.get("wsgi.input")


class Answer:
    """gunicorn's http.wsgi.Response as post_request reads it, made from the
    worker's own record of the answer (wsgi.py's Response) when a hook reads
    it."""

    __slots__ = ("req", "resp", "result")

    def __init__(self, req, resp, result):
        self.req = req
        self.resp = resp
        self.result = result

    @property
    def status(self):
        return self.resp.status

    @property
    def status_code(self):
        status = self.resp.status
        if type(status) is str:
            try:
                return int(status.split(None, 1)[0])
            except (ValueError, IndexError):
                pass
        return None

    @property
    def headers(self):
        return list(self.resp.headers or ())

    def _whole(self):
        """Whether the runner sent the answer whole, in one frame."""
        return type(self.result) is list and not self.resp.sent

    @property
    def sent(self):
        resp = self.resp
        if self._whole():
            if resp.is_head or resp.status is None:
                return 0
            return sum(len(c) for c in self.result)
        return resp.nbytes

    @property
    def headers_sent(self):
        return self.resp.status is not None if self._whole() else self.resp.sent

    @property
    def response_length(self):
        for name, value in self.headers:
            if type(name) is str and name.lower() == "content-length":
                try:
                    return int(value)
                except (TypeError, ValueError):
                    return None
        return None

    @property
    def version(self):
        return self.req.version


def defined(module, names):
    """The hooks among `names` that the config file's module defines."""
    return {name: fn for name in names if callable(fn := getattr(module, name, None))}


def call_logged(hooks, log, name, *args):
    """Calls hooks[name], if there is one, logging an exception it raises
    (the hooks whose exceptions gunicorn only logs)."""
    fn = hooks.get(name)
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.error("Exception in %s hook\n%s", name, traceback.format_exc().rstrip())


def error_logger():
    """gunicorn's error log as hooks write to it (server.log, worker.log):
    the "gunicorn.error" logger, at INFO to stderr (which corral logs)
    unless the app's logging configuration already says where it goes."""
    log = logging.getLogger("gunicorn.error")
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        log.addHandler(handler)
        log.propagate = False
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
    return log


def load_config(spec):
    """Runs the gunicorn config file as gunicorn does and returns its
    module. spec: CORRAL_WORKER_GUNICORN_HOOKS, {"path": ..., "module":
    ..., "root": ...} as JSON: the file, and the module name it runs under
    (gunicorn's python:MODULE, whose package is imported from root)."""
    given = json.loads(spec)
    path = given["path"]
    name = given.get("module") or "__config__"
    root = given.get("root")
    if "." in name and root and root not in sys.path:
        # The package of a python:MODULE file, for its relative imports.
        sys.path.append(root)
    loader = importlib.machinery.SourceFileLoader(name, path)
    found = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    found.loader.exec_module(module)
    return module


class Hooks:
    """The config file's worker hooks, with the stand-ins they are called with."""

    def __init__(self, spec):
        module = load_config(spec)
        self.hooks = defined(module, WORKER_HOOKS)
        log = error_logger()
        cfg = Settings(module)
        self.server = Server(cfg, log)
        self.worker = Worker(cfg, log)
        self.log = log
        self.exited = False

    def post_fork(self):
        fn = self.hooks.get("post_fork")
        if fn is not None:
            fn(self.server, self.worker)

    def post_worker_init(self, app):
        self.worker.wsgi = app
        fn = self.hooks.get("post_worker_init")
        if fn is not None:
            fn(self.worker)
        self.worker.booted = True

    def _logged(self, hook, *args):
        call_logged(self.hooks, self.log, hook, *args)

    def worker_int(self):
        self.worker.alive = False
        self._logged("worker_int", self.worker)

    def worker_abort(self):
        self.worker.alive = False
        self._logged("worker_abort", self.worker)

    def worker_exit(self):
        if self.exited:
            return
        self.exited = True
        self.worker.alive = False
        self._logged("worker_exit", self.server, self.worker)

    def around_requests(self):
        """Whether the file has pre_request or post_request: then the WSGI
        runner calls request(), pre_request() and post_request()."""
        return "pre_request" in self.hooks or "post_request" in self.hooks

    def request(self, environ):
        """gunicorn's Request for this request's hooks."""
        self.worker.nr += 1
        return Request(environ)

    def pre_request(self, req):
        """Raises what the hook raises: the request then gets a 500."""
        fn = self.hooks.get("pre_request")
        if fn is not None:
            fn(self.worker, req)

    def post_request(self, req, environ, resp, result):
        """After the answer is sent (resp: the runner's Response; result:
        what the app returned)."""
        if "post_request" in self.hooks:
            answer = Answer(req, resp, result)
            self._logged("post_request", self.worker, req, environ, answer)
