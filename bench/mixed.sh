#!/usr/bin/env bash
# Fast requests beside slow ones: how long a fast request waits under
# corral, gunicorn and granian (see bench/mixed.py). Uses the same setup as
# bench/run.sh: wrk, bench/.venv, a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [ ! -x bench/.venv/bin/gunicorn ]; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install -q -r bench/requirements.txt
fi
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet
exec bench/.venv/bin/python bench/mixed.py
