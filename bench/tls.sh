#!/usr/bin/env bash
# HTTPS and HTTP/2: corral against granian (--http 2, and --http 1) and
# gunicorn (--certfile) on the hello WSGI app, load from h2load (see
# bench/tls.py). Uses the same setup as bench/run.sh: bench/.venv, a release
# build; h2load comes from Debian's nghttp2-client.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
if [ ! -x bench/.venv/bin/granian ] || [ ! -x bench/.venv/bin/gunicorn ]; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install -q -r bench/requirements.txt
fi
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet
exec timeout --signal=TERM --kill-after=30 600 bench/.venv/bin/python bench/tls.py
