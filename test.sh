#!/usr/bin/env bash
# Runs the whole test suite: makes .venv with requirements-test.txt (the
# frameworks the tests serve for real: Flask, Django, and gunicorn to compare
# against), then runs every Rust test, unit and integration, with
# CORRAL_TEST_PYTHON pointing at that interpreter. Extra args go to cargo test.
set -euo pipefail
cd "$(dirname "$0")"
stamp=.venv/.requirements
if [ ! -x .venv/bin/python ] || ! cmp -s requirements-test.txt "$stamp"; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
    cp requirements-test.txt "$stamp"
fi
export CORRAL_TEST_PYTHON="$PWD/.venv/bin/python"
cargo test --locked --no-fail-fast "$@"
