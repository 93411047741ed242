import logging, os, runpy, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
log = logging.getLogger("gunicorn.error")
where = sys.argv[1]
module = where[len("python:"):] if where.startswith("python:") else None
conf = runpy.run_module(module, run_name=module) if module else runpy.run_path(where, run_name="__config__")
Stub = type("Stub", (), {})
server, worker = Stub(), Stub()
server.pid, server.log = os.getppid(), log
worker.pid, worker.age, worker.log = int(os.environ["CORRAL_WORKER_PID"]), int(os.environ.get("CORRAL_SLOT") or 0), log
conf["child_exit"](server, worker)
