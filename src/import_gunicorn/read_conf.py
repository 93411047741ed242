# Run by `corral import-gunicorn` with the app's Python: executes a gunicorn
# config file in a fresh namespace, as gunicorn does, and prints the names
# it defines as one JSON object on the real stdout (the file's own prints go
# to stderr). Values JSON cannot hold are given as their repr; callables
# (server hooks) as {"callable": true}. No gunicorn import is needed.
import sys

# Python run with -c looks for modules in the current folder first (''):
# a json.py there would run in place of the standard one, as root when
# corral is. Nothing is imported from it until corral says it may be.
sys.path[:] = [p for p in sys.path if p != ""]

import json
import os
import traceback
import types

# The file's path (for __file__ and tracebacks); its bytes come on stdin,
# read by corral, which checked who may change them. The second argument
# is "1" when the file may import from the current folder (as gunicorn's
# does: corral is not root, or only root can change that folder), "0"
# otherwise. A third is the module name of gunicorn's --config
# python:MODULE, which gunicorn imports: the file runs under that name, in
# its package.
path = sys.argv[1]
if sys.argv[2] == "1":
    sys.path.insert(0, "")
module = sys.argv[3] if len(sys.argv) > 3 else None
source = sys.stdin.buffer.read()
# The real stdout is kept on a descriptor of its own that no program the
# file starts inherits (Python's are close-on-exec), and fd 1 becomes
# stderr: a helper the file starts in the background holds stderr, not the
# pipe corral reads the settings from.
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
package = None
if module is not None:
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
namespace = {
    "__builtins__": __builtins__,
    "__name__": module or "__config__",
    "__file__": os.path.abspath(path),
    "__doc__": None,
    "__package__": package or None,
}
try:
    exec(compile(source, path, "exec"), namespace)
except SystemExit:
    raise
except BaseException as e:
    # The traceback starts in the file, without this reader's frame (whose
    # source line Python 3.13+ would show, since it shows -c scripts').
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    sys.exit(1)
settings = {}
for name, value in namespace.items():
    if name.startswith("__") or isinstance(value, types.ModuleType):
        continue
    if callable(value):
        settings[name] = {"callable": True}
        continue
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)
    try:
        json.dumps(value)
        settings[name] = {"value": value}
        # JSON readers hold an int past 64 bits as a float: its digits too.
        if type(value) is int and not -(2**63) <= value < 2**64:
            settings[name]["int"] = str(value)
    except (TypeError, ValueError):
        settings[name] = {"repr": repr(value)}
out.write(json.dumps(settings))
out.close()
