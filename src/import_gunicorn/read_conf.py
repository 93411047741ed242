# Run by `corral import-gunicorn` with the app's Python: executes a gunicorn
# config file in a fresh namespace, as gunicorn does, and prints the names
# it defines as one JSON object on the real stdout (the file's own prints go
# to stderr). Values JSON cannot hold are given as their repr; callables
# (server hooks) as {"callable": true}. No gunicorn import is needed.
import json
import os
import sys
import types

# The file's path (for __file__ and tracebacks); its bytes come on stdin,
# read by corral, which checked who may change them. A second argument is
# the module name of gunicorn's --config python:MODULE, which gunicorn
# imports: the file runs under that name, in its package.
path = sys.argv[1]
module = sys.argv[2] if len(sys.argv) > 2 else None
source = sys.stdin.buffer.read()
out = sys.stdout
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
exec(compile(source, path, "exec"), namespace)
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
out.flush()
