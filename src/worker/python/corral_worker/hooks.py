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
  around each WSGI request (gunicorn's uvicorn worker calls neither, nor
  does corral for an ASGI app);
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


class Settings:
    """`cfg`: the settings the config file sets, by name, as gunicorn's
    cfg gives them (gunicorn's defaults for the rest are not known here)."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return getattr(self._module, name)
        except AttributeError:
            raise AttributeError(
                "%s: corral's workers know the settings the config file sets, and it does not "
                "set this one" % name) from None


class Server:
    """gunicorn's Arbiter as a worker's hooks see it: corral's supervisor."""

    def __init__(self, cfg, log):
        self.pid = os.getppid()
        self.cfg = cfg
        self.log = log


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
    """gunicorn's http.Request as pre_request and post_request read it,
    made from the request's environ."""

    __slots__ = ("method", "uri", "path", "query", "fragment", "version", "headers", "trailers",
                 "scheme", "peer_addr", "remote_addr", "body")

    def __init__(self, environ):
        self.method = environ.get("REQUEST_METHOD", "")
        uri = environ.get("RAW_URI", "")
        self.uri = uri
        rest, _, self.fragment = uri.partition("#")
        self.path, _, self.query = rest.partition("?")
        proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            major, _, minor = proto.partition("/")[2].partition(".")
            self.version = (int(major), int(minor or 0))
        except ValueError:
            self.version = (1, 1)
        headers = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers.append((key[5:].replace("_", "-"), value))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                headers.append((key.replace("_", "-"), value))
        self.headers = headers
        self.trailers = []
        self.scheme = environ.get("wsgi.url_scheme", "http")
        try:
            port = int(environ.get("REMOTE_PORT") or 0)
        except ValueError:
            port = 0
        self.peer_addr = self.remote_addr = (environ.get("REMOTE_ADDR", ""), port)
        self.body = environ.get("wsgi.input")


class Answer:
    """gunicorn's http.wsgi.Response as post_request reads it."""

    __slots__ = ("status", "status_code", "headers", "headers_sent", "sent", "response_length",
                 "version")

    def __init__(self, version):
        self.status = None
        self.status_code = None
        self.headers = []
        self.headers_sent = False
        self.sent = 0
        self.response_length = None
        self.version = version

    def started(self, status, headers):
        self.status = status
        try:
            self.status_code = int(status.split(None, 1)[0])
        except (ValueError, IndexError):
            self.status_code = None
        self.headers = list(headers)
        for name, value in self.headers:
            if type(name) is str and name.lower() == "content-length":
                try:
                    self.response_length = int(value)
                except (TypeError, ValueError):
                    pass


class Body:
    """The app's response iterable, counted as it is sent; closing it runs
    post_request, as gunicorn runs it once the response is written."""

    def __init__(self, result, answer, done):
        self._it = iter(result)
        self._result = result
        self._answer = answer
        self._done = done

    def __iter__(self):
        return self

    def __next__(self):
        chunk = next(self._it)
        answer = self._answer
        answer.headers_sent = True
        answer.sent += len(chunk)
        return chunk

    def close(self):
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._done()


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
        self.module = module
        self.path = module.__file__
        self.hooks = {}
        for hook in WORKER_HOOKS:
            fn = getattr(module, hook, None)
            if callable(fn):
                self.hooks[hook] = fn
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
        """Calls a hook whose exception gunicorn only logs, and logs it."""
        fn = self.hooks.get(hook)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            self.log.error("Exception in %s hook of %s\n%s", hook, self.path,
                           traceback.format_exc().rstrip())

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

    def wrap(self, app):
        """The WSGI app with pre_request and post_request around each
        request; the app itself when the file defines neither."""
        pre = self.hooks.get("pre_request")
        post = self.hooks.get("post_request")
        if pre is None and post is None:
            return app
        worker = self.worker
        logged = self._logged

        def hooked(environ, start_response):
            worker.nr += 1
            req = Request(environ)
            if post is None:
                pre(worker, req)
                return app(environ, start_response)
            answer = Answer(req.version)

            def start(status, headers, exc_info=None):
                write = start_response(status, headers, exc_info)
                answer.started(status, headers)

                def counted(data):
                    answer.headers_sent = True
                    answer.sent += len(data)
                    return write(data)

                return counted

            try:
                if pre is not None:
                    pre(worker, req)
                result = app(environ, start)
            except BaseException:
                logged("post_request", worker, req, environ, answer)
                raise
            return Body(result, answer,
                        lambda: logged("post_request", worker, req, environ, answer))

        return hooked
