#!/usr/bin/env bash
# corral benchmark, 2 workers each, all on this machine in one run:
#   WSGI: corral vs gunicorn (sync, gthread) vs granian;
#   ASGI: corral vs uvicorn vs gunicorn + UvicornWorker vs granian, then 10,000
#         idle WebSockets (bench/ws_idle.py) on corral and uvicorn.
# Usage: bench/run.sh                      (WSGI table; env vars: see bench/README.md)
#        BENCH_SUITE=asgi bench/run.sh     (ASGI table + idle WebSockets)
#        BENCH_SUITE=all bench/run.sh      (both tables in one run + idle WebSockets)
#        BENCH_SUITE=gevent bench/run.sh   (gevent workers, corral's and gunicorn's, and threads)
#        DURATION=2 bench/run.sh           (quick smoke run)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
VENV="${BENCH_VENV:-$BENCH_DIR/.venv}"
PYTHON="${PYTHON:-python3}"
BENCH_SUITE="${BENCH_SUITE:-wsgi}"       # wsgi | asgi | all
case "$BENCH_SUITE" in
    wsgi|asgi|gevent) ;;
    all) export BUDGET="${BUDGET:-1500}"; TOTAL_TIMEOUT="${TOTAL_TIMEOUT:-1590}" ;;
    *) printf 'bench: BENCH_SUITE=%s; known: wsgi, asgi, all, gevent\n' "$BENCH_SUITE" >&2; exit 2 ;;
esac
TOTAL_TIMEOUT="${TOTAL_TIMEOUT:-870}"   # hard cap on the table's measuring phase, seconds
WS_IDLE="${WS_IDLE:-1}"                 # 0: no idle WebSocket test (asgi, all)
WS_TIMEOUT="${WS_TIMEOUT:-900}"         # hard cap on the idle WebSocket test, seconds
export BENCH_VENV="$VENV" BENCH_SUITE
export OUT_DIR="${OUT_DIR:-/tmp/corral-bench-$(date +%Y%m%d-%H%M%S)}"

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
rc=0
timeout --signal=TERM --kill-after=30 "$TOTAL_TIMEOUT" \
    "$VENV/bin/python" "$BENCH_DIR/bench.py" || rc=$?

# 5. ASGI: 10,000 idle WebSockets on corral and uvicorn (same bounds and stop rules).
#    Not after an interrupted table (bench.py exits 130 on Ctrl-C).
if [ "$BENCH_SUITE" != wsgi ] && [ "$BENCH_SUITE" != gevent ] && [ "$WS_IDLE" != 0 ] && [ "$rc" -ne 130 ]; then
    log "idle WebSockets (bench/ws_idle.py)"
    timeout --signal=TERM --kill-after=30 "$WS_TIMEOUT" \
        "$VENV/bin/python" "$BENCH_DIR/ws_idle.py" || { ws_rc=$?; [ "$rc" -ne 0 ] || rc=$ws_rc; }
fi
exit "$rc"
