"""corral worker: the script the interpreter runs. It imports the
corral_worker package beside it (see corral_worker/__init__.py) and starts
the worker."""

import os
import sys

# Older interpreters stop here, with the reason as their boot error (a
# BOOT_ERROR frame on the channel, as main.py sends one), rather than at
# whatever newer syntax or library call the package below reaches first.
# This much parses and runs on any Python, 2.7 included.
if sys.version_info < (3, 9):
    import struct

    TOO_OLD = (
        "corral's worker needs CPython 3.9 or newer, and %s is Python %s: give corral a "
        "newer interpreter (--python, [app] python, or the python of a virtualenv made "
        "with one)" % (sys.executable, sys.version.split()[0])).encode("utf-8")
    try:
        os.write(int(os.environ.get("CORRAL_WORKER_FD", "3")),
                 struct.pack("<IBI", len(TOO_OLD), 11, 0) + TOO_OLD)
    except (OSError, ValueError):
        sys.stderr.write(TOO_OLD.decode("utf-8") + "\n")
    os._exit(1)

# corral names the worker after the script ("[NAME] worker 0 generation 1")
# for `ps` to show; the app sees only the script, as before.
del sys.argv[1:]

# [workers] gevent: gevent's monkey-patching comes first, before anything
# (corral's own modules included) takes a lock or a socket, as gevent asks.
# The process that runs gunicorn's arbiter hooks stays unpatched, as
# gunicorn's arbiter is. A failure is reported as the worker's boot error.
GEVENT_ERROR = None
if os.environ.get("CORRAL_WORKER_GEVENT") and os.environ.get("CORRAL_WORKER_ROLE") != "arbiter":
    # Where main() puts the app's folders (gevent may be installed there).
    for p in reversed(os.environ.get("CORRAL_WORKER_PYTHONPATH", "").split(os.pathsep)
                      + [os.getcwd()]):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    try:
        from gevent import monkey

        monkey.patch_all()
    except Exception as e:
        GEVENT_ERROR = e

HERE = os.path.dirname(os.path.abspath(__file__))
# The script's folder is on the path already, unless PYTHONSAFEPATH (-P)
# keeps it off: then it is put there for this one import.
ADDED = HERE not in sys.path
if ADDED:
    sys.path.insert(0, HERE)
# Nothing is written into the folder (no __pycache__): it is corral's, and
# the workers only read it. The app's own imports write bytecode as usual.
WRITE_BYTECODE = sys.dont_write_bytecode
sys.dont_write_bytecode = True
try:
    from corral_worker.main import main
finally:
    sys.dont_write_bytecode = WRITE_BYTECODE
    if ADDED:
        sys.path.remove(HERE)

main(GEVENT_ERROR)
