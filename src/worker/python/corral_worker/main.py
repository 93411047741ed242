"""The worker's start: read corral's CORRAL_WORKER_* settings, import the
app (or report why it cannot be imported, with the app's traceback), then
serve it as WSGI or ASGI until SIGTERM."""

import faulthandler
import os
import signal
import socket
import sys
import threading
import time
import traceback

from .asgi import Lifespan, LifespanFailed, is_asgi, new_event_loop, serve_asgi
from .protocol import (K_BOOT_ERROR, K_BOOT_OK, clip, exiting, record_streams,
                       run_exit_handlers)
from .ring import Ring
from .wsgi import Connection, GreenWorker, Worker, WsgiRunner, beat


def takes_two(app):
    """Whether app is called with exactly two positional arguments, as a
    WSGI app is (an ASGI 3 app takes three)."""
    import inspect

    try:
        params = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 2 and not any(p.kind == p.VAR_POSITIONAL for p in params)


def no_threads(exc):
    """The boot error of a worker that imported its app but could not start
    the threads that serve it: its traceback, then what to do (the last
    line, which corral quotes)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if "can't start new thread" not in str(exc):
        return tb
    return tb + ("the worker could not start its threads: its user has reached its limit of "
                 "processes and threads (ulimit -u, RLIMIT_NPROC), or the unit's or "
                 "container's (TasksMax=, --pids-limit); raise it, or run fewer workers or "
                 "[workers] threads\n")


def app_traceback(exc):
    """The traceback of an import error from the app's first frame on, as
    `python -c "import main"` would show it (without the worker's and
    importlib's frames)."""
    tb = exc.__traceback__
    # This package's folder, and the script that imports it beside it.
    here = os.path.dirname(os.path.abspath(__file__))
    launcher = here + ".py"

    def internal(frame):
        name = frame.f_code.co_filename
        path = os.path.abspath(name)
        return (os.path.dirname(path) == here or path == launcher
                or name.startswith("<frozen importlib")
                or name.endswith(os.path.join("importlib", "__init__.py")))

    while tb is not None and internal(tb.tb_frame):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def parse_call(text):
    """"create_app('prod', debug=False)" -> ("create_app", args, kwargs). The
    arguments must be literals (ast.literal_eval): nothing is evaluated."""
    import ast

    how = ("write a call with literal arguments, like create_app() or "
           "create_app('prod', debug=False)")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError("%r is not a factory call: %s" % (text, how)) from None
    if not isinstance(node, ast.Call):
        raise ValueError("%r is not a factory call: %s" % (text, how))
    names = []
    func = node.func
    while isinstance(func, ast.Attribute):
        names.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ValueError("%r does not call a name: %s" % (text, how))
    names.append(func.id)

    def literal(arg):
        if isinstance(arg, ast.Starred):
            raise ValueError("%r unpacks *args: %s" % (text, how))
        try:
            return ast.literal_eval(arg)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(
                "%r: argument %s is not a literal (strings, numbers, True, False, None, "
                "tuples, lists, dicts, sets): %s" % (text, ast.unparse(arg)[:80], how)) from None

    args = [literal(a) for a in node.args]
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("%r unpacks **kwargs: %s" % (text, how))
        kwargs[kw.arg] = literal(kw.value)
    return ".".join(reversed(names)), args, kwargs


def takes_no_arguments(obj):
    """Whether obj can be called with no argument, and takes no positional
    argument beyond those with defaults: an app factory (create_app()),
    not an app (app(environ, start_response), app(scope, receive, send)).
    Not when its signature cannot be read, takes *args (a wrapper that
    passes on whatever it gets), or it is a coroutine function."""
    import inspect

    if is_asgi(obj):
        return False
    try:
        sig = inspect.signature(obj)
        if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
            return False
        sig.bind()
    except (TypeError, ValueError):
        return False
    return True


def load_app(spec, factory=False):
    """Imports "module:attr" and returns the app. "module:factory(args)", or
    factory=True (--factory), calls the attribute and returns what it gives."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    args, kwargs, call = (), {}, factory
    if "(" in attr:
        attr, args, kwargs = parse_call(attr)
        call = True
    import importlib

    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not call and takes_no_arguments(obj):
        # An app takes a request's arguments: one that takes none is an app
        # factory given without its call, which uvicorn calls (with a
        # warning) and gunicorn serves, to answer every request with a 500.
        sys.stderr.write("corral worker: %s:%s takes no arguments, so it is an app factory: "
                         "it is called and what it returns is served, as uvicorn does (write "
                         "\"%s:%s()\" or give --factory to say so)\n"
                         % (module_name, attr, module_name, attr))
        call = True
    if call:
        if not callable(obj):
            raise TypeError("%s:%s is not callable (got %s), so it cannot be an app factory"
                            % (module_name, attr, type(obj).__name__))
        obj = obj(*args, **kwargs)
        if not callable(obj):
            raise TypeError("the app factory %s returned %s, not a callable app"
                            % (spec if "(" in spec else spec + "()", type(obj).__name__))
    return obj


# gunicorn's logging defaults (CONFIG_DEFAULTS in gunicorn/glogging.py): a
# logconfig_dict or logconfig_json is laid over them, one level deep, as
# gunicorn lays it. Without their `loggers`: gunicorn's own two loggers log
# nothing in a worker of corral's, and a dictionary that replaces
# `handlers` without their error_console would fail on them.
LOGGING_DEFAULTS = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}


def configure_logging(spec):
    """Applies the app's logging configuration ([app] logconfig*), given as
    "ini:PATH" (gunicorn's logconfig), "json:PATH" or "dict:JSON" (its
    logconfig_json and logconfig_dict, over its defaults) or "uvicorn:PATH"
    (uvicorn's JSON or YAML, as it is), before the app is imported, as
    gunicorn's workers inherit it. An error says which setting failed."""
    import json
    import logging.config

    kind, _, value = spec.partition(":")
    names = {"ini": "logconfig " + value, "json": "logconfig_json " + value,
             "uvicorn": "logconfig " + value, "dict": "logconfig_dict"}
    try:
        if kind == "ini":
            logging.config.fileConfig(value, defaults={"__file__": value,
                                                       "here": os.path.dirname(value)},
                                      disable_existing_loggers=False)
            return
        if kind == "uvicorn":
            # uvicorn's --log-config: JSON or YAML, applied as it is.
            with open(value, encoding="utf-8") as f:
                if value.lower().endswith(".json"):
                    given = json.load(f)
                else:
                    try:
                        import yaml
                    except ImportError as e:
                        raise ImportError("a YAML logging configuration needs PyYAML in the "
                                          "app's environment, as uvicorn's does: pip install "
                                          "PyYAML (%s)" % e) from e
                    given = yaml.safe_load(f)
            logging.config.dictConfig(given)
            return
        if kind == "json":
            with open(value, encoding="utf-8") as f:
                given = json.load(f)
        else:
            given = json.loads(value)
        if not isinstance(given, dict):
            raise TypeError("a logging configuration is a dictionary, not %s"
                            % type(given).__name__)
        config = dict(LOGGING_DEFAULTS)
        config.update(given)
        logging.config.dictConfig(config)
    except Exception as e:
        raise RuntimeError("the workers' logging configuration (%s) cannot be applied: %s"
                           % (names.get(kind, kind), e)) from e


def load_env_file(path):
    """uvicorn's --env-file: python-dotenv loads the file into os.environ,
    leaving the variables already set as they are."""
    try:
        from dotenv import load_dotenv
    except ImportError as e:
        raise ImportError("--env-file ([app] env_file) needs python-dotenv in the app's "
                          "environment, as uvicorn's does: pip install python-dotenv (%s)" % e
                          ) from e
    load_dotenv(dotenv_path=path)


def prepare(env_file, logging_spec, log_level):
    """What comes before the app's import (and before gunicorn's hooks):
    the dotenv file, then the app's logging configuration, else the
    loggers gunicorn and uvicorn set up for the apps that reuse them."""
    if env_file:
        load_env_file(env_file)
    if logging_spec:
        configure_logging(logging_spec)
    else:
        server_loggers(log_level)


# The loggers apps borrow from the server that runs them, with the format
# each server gives them: gunicorn's error log (Flask's recipe sets
# app.logger's handlers and level from logging.getLogger("gunicorn.error")),
# and uvicorn's (FastAPI apps log through logging.getLogger("uvicorn.error")).
SERVER_LOGGERS = (
    ("gunicorn.error", "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
     "[%Y-%m-%d %H:%M:%S %z]"),
    ("uvicorn", "%(levelprefix)s %(message)s", None),
)


def server_loggers(level):
    """Sets up gunicorn's and uvicorn's loggers as those servers do in
    their workers: to stderr (which corral logs, or passes on as written
    with --app-output raw), at corral's --log-level, not propagated to the
    root logger. A logger the app configured already is left alone."""
    import logging

    class Formatter(logging.Formatter):
        def formatMessage(self, record):
            # uvicorn's "INFO:     message".
            record.levelprefix = record.levelname + ":" + " " * (8 - len(record.levelname))
            return super().formatMessage(record)

    level = getattr(logging, level.upper(), logging.INFO)
    for name, fmt, datefmt in SERVER_LOGGERS:
        log = logging.getLogger(name)
        if log.handlers:
            continue
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(Formatter(fmt, datefmt))
        log.addHandler(handler)
        log.setLevel(level)
        log.propagate = False


def load_paste(uri, global_conf, logging_spec):
    """The app of a PasteDeploy ini file ("config:/path/production.ini#main"),
    as gunicorn's --paste loads it; without a logging configuration of its
    own, the file's [loggers] set up logging first, as gunicorn does."""
    path = uri[len("config:"):].split("#")[0]
    if not logging_spec:
        import configparser

        parser = configparser.ConfigParser()
        parser.read([path])
        if parser.has_section("loggers"):
            configure_logging("ini:" + path)
    try:
        from paste.deploy import loadapp
    except ImportError as e:
        raise ImportError("a Paste app (--paste, [app] paste) needs PasteDeploy in the app's "
                          "environment: pip install PasteDeploy (%s)" % e) from e
    return loadapp(uri, relative_to=os.getcwd(), global_conf=global_conf or None)


def patched_by_app():
    """Whether gevent's monkey-patching of threading has been done (by the
    app, when corral's [workers] gevent did not ask for it)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def patched_by_eventlet():
    """Whether the app did eventlet's monkey-patching of threads."""
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and patcher.is_monkey_patched("thread")


def main(gevent_error=None):
    """gevent_error: why gevent's monkey-patching failed, when
    [workers] gevent asked for it (the script tries it first)."""
    # What the app writes in one call is one record of corral's log (a
    # logging record with its traceback, not one record per line).
    record_streams()
    fd = int(os.environ.pop("CORRAL_WORKER_FD", "3"))
    # The channel stays with this process: a subprocess the app starts
    # (os.system, a shell) must not hold it open after the worker is gone.
    os.set_inheritable(fd, False)
    spec = os.environ.pop("CORRAL_WORKER_APP")
    threads = int(os.environ.pop("CORRAL_WORKER_THREADS", "1"))
    gevent = bool(os.environ.pop("CORRAL_WORKER_GEVENT", ""))
    extra_path = os.environ.pop("CORRAL_WORKER_PYTHONPATH", "")
    graceful = float(os.environ.pop("CORRAL_WORKER_GRACEFUL_TIMEOUT", "30"))
    interface = os.environ.pop("CORRAL_WORKER_INTERFACE", "auto")
    heartbeat = float(os.environ.pop("CORRAL_WORKER_HEARTBEAT", "0"))
    factory = bool(os.environ.pop("CORRAL_WORKER_FACTORY", ""))
    # The prefix the app is mounted under ([app] root_path), like "/api", or "".
    root_path = os.environ.pop("CORRAL_WORKER_ROOT_PATH", "")
    software = os.environ.pop("CORRAL_WORKER_SERVER_SOFTWARE", "corral")
    ring_spec = os.environ.pop("CORRAL_WORKER_RING", "")
    logging_spec = os.environ.pop("CORRAL_WORKER_LOGCONFIG", "")
    log_level = os.environ.pop("CORRAL_WORKER_LOG_LEVEL", "info")
    multiprocess = os.environ.pop("CORRAL_WORKER_MULTIPROCESS", "1") == "1"
    asgi_loop = os.environ.pop("CORRAL_WORKER_ASGI_LOOP", "auto")
    asgi_lifespan = os.environ.pop("CORRAL_WORKER_ASGI_LIFESPAN", "auto")
    env_file = os.environ.pop("CORRAL_WORKER_ENV_FILE", "")
    paste = os.environ.pop("CORRAL_WORKER_PASTE", "")
    paste_global = os.environ.pop("CORRAL_WORKER_PASTE_GLOBAL", "")
    hooks_spec = os.environ.pop("CORRAL_WORKER_GUNICORN_HOOKS", "")
    gunicorn_cfg = os.environ.pop("CORRAL_WORKER_GUNICORN_CFG", "")
    if hooks_spec:
        from . import hooks as hooks_module

        hooks_module.RUNNING = gunicorn_cfg
    # "arbiter": not a worker but the process that runs gunicorn's arbiter
    # hooks (arbiter.py).
    role = os.environ.pop("CORRAL_WORKER_ROLE", "")
    sock = socket.socket(fileno=fd)
    ring = None
    if ring_spec:
        try:
            ring = Ring(ring_spec, sock)
        except (OSError, ValueError) as e:
            # The socket carries everything, as it does where corral
            # offers no ring.
            sys.stderr.write("corral worker: shared-memory rings unusable, using the socket: %s\n"
                             % e)
    conn = Connection(sock, ring)

    # SIGUSR1 dumps every thread's stack (even with the GIL held) into the
    # file corral handed over as an open fd (it reads, logs and shows them
    # in /status); stderr when there is none.
    stacks_fd = os.environ.pop("CORRAL_WORKER_STACKS_FD", "")
    if stacks_fd:
        stacks = int(stacks_fd)
        os.set_inheritable(stacks, False)
    else:
        stacks = sys.stderr
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    # gunicorn's worker hooks, once the config file has run (hooks.py).
    hooks = None

    def quit_now(*_):
        # gunicorn's quick exit: worker_int, then worker_exit, then out
        # through the atexit handlers, as gunicorn's sys.exit(0) goes: a
        # tracer's exporter sends the spans it holds (corral kills the
        # worker quit_grace, 1 s, after the signal). A signal that comes
        # while they run (a graceful exit's, or a first fast stop's) lets
        # them finish.
        if exiting():
            return
        if hooks is not None:
            hooks.worker_int()
            hooks.worker_exit()
        run_exit_handlers()
        os._exit(0)

    signal.signal(signal.SIGQUIT, quit_now)
    signal.signal(signal.SIGINT, quit_now)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    paths = [p for p in extra_path.split(os.pathsep) if p]
    for p in reversed(paths + [os.getcwd()]):
        if p not in sys.path:
            sys.path.insert(0, p)

    if role == "arbiter":
        from .arbiter import serve

        prepare(env_file, logging_spec, log_level)
        serve(sock, hooks_spec)
        run_exit_handlers()
        os._exit(0)

    t0 = time.monotonic()
    asgi = None
    try:
        if gevent and gevent_error is not None:
            raise RuntimeError(
                "workers.gevent is set (gunicorn's -k gevent) but gevent's monkey-patching "
                "failed: %s: %s. Install gevent where the app's interpreter finds it "
                "(pip install gevent)" % (type(gevent_error).__name__, gevent_error))
        prepare(env_file, logging_spec, log_level)
        if hooks_spec:
            from .hooks import Hooks

            hooks = Hooks(hooks_spec)
            if "worker_abort" in hooks.hooks:
                # gunicorn calls it on a timeout's SIGABRT; corral's timeout
                # sends SIGUSR1: the stacks are dumped first (in C), then
                # the hook runs (chain=True calls the Python handler).
                faulthandler.unregister(signal.SIGUSR1)
                signal.signal(signal.SIGUSR1, lambda *_: hooks.worker_abort())
                faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True, chain=True)
            hooks.post_fork()
        if paste:
            import json

            app = load_paste(paste, json.loads(paste_global or "{}"), logging_spec)
        else:
            app = load_app(spec, factory)
        if not callable(app):
            raise TypeError("%s is not callable (got %s)" % (spec, type(app).__name__))
        if patched_by_eventlet():
            # The worker's threads would be eventlet's green threads, waiting
            # on locks made before: the worker would hang until boot_timeout.
            raise RuntimeError(
                "the app did eventlet's monkey-patching when it was imported "
                "(eventlet.monkey_patch()): corral's workers do not run under eventlet, which "
                "is no longer developed. Use gevent in its place (gevent.monkey.patch_all(), "
                "or -k gevent), or leave the patching out")
        if hooks is not None:
            hooks.post_worker_init(app)
        if gevent and is_asgi(app):
            raise TypeError("%s is an ASGI app but workers.gevent is set: gevent runs WSGI "
                            "apps; an ASGI app has its own event loop (leave gevent out)" % spec)
        if interface == "asgi" and not is_asgi(app) and takes_two(app):
            raise TypeError("%s is a WSGI app (it takes environ and start_response) but "
                            "interface is \"asgi\" (-k uvicorn.workers.UvicornWorker): run it "
                            "with -k sync or gthread, or interface = \"wsgi\" (or \"auto\")"
                            % spec)
        if interface == "asgi" or (interface == "auto" and is_asgi(app)):
            # Start-up errors surface now, as boot errors, like an import error.
            loop, loop_name = new_event_loop(asgi_loop)
            import asyncio

            asyncio.set_event_loop(loop)
            lifespan = Lifespan(app)
            if asgi_lifespan != "off":
                loop.run_until_complete(lifespan.startup(required=asgi_lifespan == "on"))
            asgi = (lifespan, loop, loop_name)
        elif is_asgi(app):
            raise TypeError("%s is an ASGI app (its __call__ is a coroutine function) but "
                            "interface is \"wsgi\" (-k sync, -k gthread or --interface wsgi): "
                            "set interface = \"asgi\" (or \"auto\"), or give "
                            "-k uvicorn.workers.UvicornWorker" % spec)
    except LifespanFailed as e:
        tb = "ASGI lifespan startup failed: %s\n" % e
        if e.__cause__ is not None:
            tb += app_traceback(e.__cause__)
        conn.send(K_BOOT_ERROR, 0, clip(tb).encode("utf-8", "replace"))
        sys.stderr.flush()
        os._exit(1)
    except BaseException as e:
        tb = app_traceback(e)
        conn.send(K_BOOT_ERROR, 0, clip(tb).encode("utf-8", "replace"))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # not sys.exit: threads the app started must not keep us alive
    import_ms = (time.monotonic() - t0) * 1000.0
    if asgi is not None:
        lifespan, loop, loop_name = asgi
        if stop.is_set():
            os._exit(0)  # told to stop while booting
        serve_asgi(sock, app, lifespan, loop, loop_name, import_ms, heartbeat, graceful,
                   root_path, hooks.worker_exit if hooks is not None else None)
        os._exit(0)

    if not gevent and patched_by_app():
        # The app did gevent's monkey-patching itself (`monkey.patch_all()`
        # in its wsgi.py, as gevent apps do): threads are greenlets now, and
        # the channel's socket and locks, made before, would block them all.
        # Its requests run in greenlets, as under -k gevent.
        gevent = True
        sys.stderr.write("corral worker: the app did gevent's monkey-patching when it was "
                         "imported: its requests run in gevent's greenlets, as under "
                         "-k gevent ([workers] gevent = true)\n")
        sock = socket.socket(fileno=sock.detach())
        if ring is not None:
            ring.rebind(sock)
        conn.rebind(sock, ring)
        told = stop.is_set()
        stop = threading.Event()  # the SIGTERM handler's, through its closure
        if told:
            stop.set()
    around = hooks if hooks is not None and hooks.around_requests() else None
    if gevent:
        # wsgi.multithread is True, as gunicorn's gevent worker sets it:
        # requests run side by side in the process, greenlets though they
        # are.
        worker = GreenWorker(conn, WsgiRunner(conn, app, 1, root_path, software, around,
                                                 multiprocess, multithread=True))
    else:
        worker = Worker(conn, WsgiRunner(conn, app, threads, root_path, software, around,
                                         multiprocess), threads)
    try:
        if gevent:
            worker.start()
        else:
            worker.start(lambda: stop.is_set())
        if heartbeat > 0:
            threading.Thread(target=beat, args=(conn, heartbeat), name="corral-heartbeat",
                             daemon=True).start()
    except RuntimeError as e:
        # No thread to be had: a boot error with the reason, as an import
        # error is, not an exit corral can say nothing about.
        conn.send(K_BOOT_ERROR, 0, clip(no_threads(e)).encode("utf-8", "replace"))
        sys.stderr.flush()
        os._exit(1)
    conn.send(K_BOOT_OK, 0, ('{"pid": %d, "import_ms": %.1f, "interface": "wsgi", '
                             '"transport": "%s", "green": "%s"}'
                             % (os.getpid(), import_ms, "ring" if ring is not None else "socket",
                                "gevent" if gevent else "")).encode())
    # The main thread only waits for TERM, then lets requests in flight finish.
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            os._exit(0)  # corral is gone (PR_SET_PDEATHSIG is the first line)
    # Drain: finish every request this worker holds, running or queued. A
    # request corral sent just before it stopped routing here may still be
    # on its way: idle means no request for a moment, not for an instant.
    deadline = time.monotonic() + graceful
    while time.monotonic() < deadline:
        if conn.streams:
            time.sleep(0.01)
            continue
        time.sleep(0.05)
        if not conn.streams:
            break
    if hooks is not None:
        hooks.worker_exit()
    run_exit_handlers()
    os._exit(0)

