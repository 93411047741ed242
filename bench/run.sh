#!/usr/bin/env bash
# corral benchmark: corral vs gunicorn (sync, gthread) vs granian, WSGI, 2 workers.
# Usage: bench/run.sh            (env vars: see bench/README.md)
#        DURATION=2 bench/run.sh (quick smoke run)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
VENV="${BENCH_VENV:-$BENCH_DIR/.venv}"
PYTHON="${PYTHON:-python3}"
TOTAL_TIMEOUT="${TOTAL_TIMEOUT:-870}"   # hard cap on the measuring phase, seconds
export BENCH_VENV="$VENV"

log() { printf 'bench: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. wrk (Debian package).
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    as_root timeout 300 apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root timeout 300 apt-get install -y -q wrk
fi

# 2. The bench virtualenv with the peer servers (re-done when requirements.txt changes).
stamp="$VENV/.bench-requirements"
if ! [ -x "$VENV/bin/python" ] || ! cmp -s "$BENCH_DIR/requirements.txt" "$stamp"; then
    log "setting up $VENV"
    [ -x "$VENV/bin/python" ] || timeout 120 "$PYTHON" -m venv "$VENV"
    timeout 600 "$VENV/bin/python" -m pip install -q -r "$BENCH_DIR/requirements.txt"
    cp "$BENCH_DIR/requirements.txt" "$stamp"
fi

# 3. corral, release build (waits on cargo's lock if someone else is building).
if [ -z "${CORRAL_BIN:-}" ] && [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && timeout 1800 cargo build --release --quiet)
fi

# 4. Measure. bench.py bounds itself with BUDGET; timeout is the backstop
#    (SIGTERM lets bench.py stop the server it is running and print what it has).
exec timeout --signal=TERM --kill-after=30 "$TOTAL_TIMEOUT" \
    "$VENV/bin/python" "$BENCH_DIR/bench.py"
