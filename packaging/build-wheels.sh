#!/usr/bin/env bash
# The release wheels, into dist/, from this checkout, with no Docker:
#   manylinux: x86_64-unknown-linux-gnu linked by zig against glibc 2.17's
#              symbols (tag manylinux2014 / manylinux_2_17): RHEL/CentOS 7
#              and later, Ubuntu 14.04+, Debian 8+, Amazon Linux 2.
#   musllinux: x86_64-unknown-linux-musl, one static binary (tag
#              musllinux_1_2): Alpine 3.13 and later.
# maturin, ziglang and auditwheel come from PyPI into a virtualenv of the
# script's own, target/packaging-venv (packaging/requirements.txt; at a fixed
# path because zig's path is in the compiler's command line, and a new one
# would make cargo rebuild everything); the musl target from rustup. Each wheel is
# then checked by packaging/check_wheels.py (auditwheel's tag, the highest
# GLIBC_ symbol, installed into a fresh virtualenv and serving example/app.py),
# which prints its name, size and highest glibc.
#
# Usage: packaging/build-wheels.sh                 (both)
#        packaging/build-wheels.sh manylinux       (only the glibc wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(manylinux musllinux)

log() { printf 'build-wheels: %s\n' "$*" >&2; }

venv=target/packaging-venv
stamp=$venv/.requirements
if [ ! -x "$venv/bin/maturin" ] || ! cmp -s packaging/requirements.txt "$stamp"; then
    log "maturin and zig into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r packaging/requirements.txt
    cp packaging/requirements.txt "$stamp"
fi
export PATH="$PWD/$venv/bin:$PATH"

work=$(mktemp -d /tmp/corral-wheels.XXXXXX)
trap 'rm -rf "$work"' EXIT

mkdir -p dist
built=()
for kind in "${kinds[@]}"; do
    case "$kind" in
        manylinux) target=x86_64-unknown-linux-gnu compatibility=manylinux2014 ;;
        musllinux) target=x86_64-unknown-linux-musl compatibility=musllinux_1_2 ;;
        *) log "unknown wheel kind '$kind': manylinux or musllinux"; exit 2 ;;
    esac
    if ! rustc --print target-libdir --target "$target" >/dev/null 2>&1 ||
        [ ! -d "$(rustc --print target-libdir --target "$target")" ]; then
        log "rustup target add $target"
        rustup target add "$target" || {
            log "the Rust standard library for $target cannot be installed (no rustup, or no network):"
            log "install it, or build only the other wheel (packaging/build-wheels.sh manylinux)"
            exit 1
        }
    fi
    log "$kind: maturin build --release --zig --compatibility $compatibility --target $target"
    start=$SECONDS
    maturin build --quiet --release --zig --compatibility "$compatibility" \
        --target "$target" -o "$work/$kind"
    log "$kind: built in $((SECONDS - start)) s"
    for wheel in "$work/$kind"/*.whl; do
        mv -f "$wheel" dist/
        built+=("dist/$(basename "$wheel")")
    done
done

python packaging/check_wheels.py "${built[@]}"
