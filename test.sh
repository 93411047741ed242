#!/usr/bin/env bash
# Runs the whole test suite: makes .venv with requirements-test.txt (the
# frameworks the tests serve for real: Flask, Django, and gunicorn to compare
# against), then runs every Rust test, unit and integration, with
# CORRAL_TEST_PYTHON pointing at that interpreter. Extra args go to cargo test.
# Then the end-to-end tests whose apps need only the standard library run
# again on CPython 3.9, 3.13 and 3.14, which tests/pythons.sh builds into .pythons/
# (once: about 6 minutes), or on the interpreters CORRAL_TEST_PYTHONS names
# (colon-separated).
set -euo pipefail
cd "$(dirname "$0")"
stamp=.venv/.requirements
if [ ! -x .venv/bin/python ] || ! cmp -s requirements-test.txt "$stamp"; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
    cp requirements-test.txt "$stamp"
fi
if [ -z "${CORRAL_TEST_PYTHONS:-}" ]; then
    CORRAL_TEST_PYTHONS=$(tests/pythons.sh | paste -sd:)
fi
export CORRAL_TEST_PYTHONS
export CORRAL_TEST_PYTHON="$PWD/.venv/bin/python"
cargo test --locked --no-fail-fast "$@"

# The worker on the other CPythons: the modules whose apps need nothing but
# the standard library, less the few tests among them that serve Flask or
# compare with uvloop, prometheus_client or OpenTelemetry (cargo test's
# filters match parts of a test's name).
stdlib_only=(
    wsgi_conformance:: asgi:: websocket:: streaming:: shared_memory:: workers::
    boot_isolation:: imports:: faults:: hostile_worker:: health:: hooks:: signals::
    reload:: recycling::
)
needs_packages=(
    django_asgi:: frameworks_asgi:: flask_ uvloop the_event_loop_and_the_lifespan
    prometheus opentelemetry
)
skips=()
for name in "${needs_packages[@]}"; do
    skips+=(--skip "$name")
done
IFS=: read -ra others <<<"$CORRAL_TEST_PYTHONS"
for python in "${others[@]}"; do
    echo "== the standard-library tests again, on $python" >&2
    CORRAL_TEST_PYTHON=$python cargo test --locked --no-fail-fast --test e2e -- \
        "${stdlib_only[@]}" "${skips[@]}"
done
