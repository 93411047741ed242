"""gunicorn's arbiter hooks, run in a Python process of their own beside
corral's workers (corral's supervisor runs no Python): the gunicorn config
file ([app] gunicorn_hooks) runs once in it, and these functions of it are
called when corral's supervisor says what happened, one at a time, so that
they share the file's module as they share gunicorn's arbiter:

- on_starting(server): first, before corral starts the workers (it waits,
  at most [deploy] hook_timeout);
- when_ready(server): once, when the first generation is in service;
- on_reload(server): when a reload starts;
- nworkers_changed(server, new_value, old_value): when the number of
  workers is scaled;
- child_exit(server, worker): after each worker exit, a killed one's too;
- on_exit(server): when corral stops (it waits, at most 5 s or
  [deploy] hook_timeout).

What they start lives on in this process (a metrics server that
when_ready starts, say) until corral stops. An exception is logged and the
process goes on. It speaks JSON lines on the channel: first
{"ready": [hooks it has]}, then it reads one event per line.
"""

import json
import sys
import traceback

from .hooks import Server, Settings, call_logged, defined, error_logger, load_config

ARBITER_HOOKS = ("on_starting", "when_ready", "on_reload", "nworkers_changed", "child_exit",
                 "on_exit")


class ExitedWorker:
    """A worker that exited, as child_exit sees it."""

    def __init__(self, event, cfg, log):
        self.pid = event.get("pid")
        self.age = event.get("slot")
        self.exitcode = event.get("code")
        self.cfg = cfg
        self.log = log
        self.alive = False


def serve(sock, spec):
    """Runs the file, says which hooks it has, then calls them as corral's
    events come, until corral closes the channel."""
    out = sock.makefile("wb", buffering=0)
    try:
        module = load_config(spec)
    except BaseException:
        sys.stderr.write("the gunicorn config file failed to run; its arbiter hooks will not "
                         "run:\n" + traceback.format_exc())
        sys.stderr.flush()
        out.write(b'{"ready": []}\n')
        return
    log = error_logger()
    cfg = Settings(module)
    server = Server(cfg, log)
    hooks = defined(module, ARBITER_HOOKS)

    def call(name, *args):
        call_logged(hooks, log, name, *args)
        sys.stdout.flush()
        sys.stderr.flush()

    call("on_starting", server)
    out.write(json.dumps({"ready": sorted(hooks)}).encode() + b"\n")
    if not hooks or set(hooks) == {"on_starting"}:
        return
    for line in sock.makefile("rb"):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        hook = event.get("hook")
        if "workers" in event:
            server.num_workers = event["workers"]
        if hook == "child_exit":
            call(hook, server, ExitedWorker(event, cfg, log))
        elif hook == "nworkers_changed":
            call(hook, server, event.get("new"), event.get("old"))
        elif hook in ("when_ready", "on_reload", "on_exit"):
            call(hook, server)
