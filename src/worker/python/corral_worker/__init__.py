"""corral worker: runs one Python web app behind the corral supervisor.

This package is compiled into the corral binary, written with the script
that imports it (corral_worker.py) into a private folder, and run by the
configured interpreter (CPython 3.9+, standard library only). It never
parses HTTP: corral sends pre-parsed requests over a private, inherited
Unix socket (fd CORRAL_WORKER_FD) in the framed protocol described in
corral's src/worker/protocol.rs.

- protocol: frame kinds, the frame reader, response head encoding.
- wsgi: WSGI apps on threads.
- asgi: ASGI apps on one event loop (lifespan, HTTP, WebSockets).
- main: settings, the app's import, boot report, serving until SIGTERM.
"""
