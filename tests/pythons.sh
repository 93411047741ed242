#!/usr/bin/env bash
# Builds the CPythons that tests/e2e/pythons.rs runs corral's workers on,
# besides the one .venv is made from: the oldest the README promises (3.9)
# and newer ones (3.13, Debian 13's; 3.14, the newest). Each comes from Debian's source
# package of it (the upstream tarball as Debian's archive holds it,
# checked against the SHA-256 below), is built with no optimisation
# flags and no pip (the worker needs nothing but the standard library),
# and is run from its build folder: .pythons/3.9/python, .pythons/3.13/python,
# .pythons/3.14/python.
# A version already built is not built again. About 2 minutes each on 2
# cores; gcc, make, curl and xz are all it needs. DEBIAN_ARCHIVE names
# another Debian mirror.
#
# Prints the interpreters, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."

# version, tarball in Debian's archive, its SHA-256.
PYTHONS=(
    "3.9 python3.9/python3.9_3.9.2.orig.tar.xz 3c2034c54f811448f516668dce09d24008a0716c3a794dd8639b5388cbde247d"
    "3.13 python3.13/python3.13_3.13.5.orig.tar.xz 93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"
    "3.14 python3.14/python3.14_3.14.6.orig.tar.xz 143b1dddefaec3bd2e21e3b839b34a2b7fb9842272883c576420d605e9f30c63"
)
ARCHIVE=${DEBIAN_ARCHIVE:-http://deb.debian.org/debian}/pool/main/p

mkdir -p .pythons
for entry in "${PYTHONS[@]}"; do
    read -r version file sum <<<"$entry"
    dir=.pythons/$version
    if [ ! -x "$dir/python" ]; then
        echo "building CPython $version in $dir (about 2 minutes)" >&2
        work=$(mktemp -d .pythons/.build-XXXXXX)
        # A build that fails or is interrupted leaves nothing behind.
        trap 'rm -rf "$work"' EXIT
        tarball=$work/${file##*/}
        if ! curl -fsSL --retry 3 -o "$tarball" "$ARCHIVE/$file"; then
            echo "could not download $ARCHIVE/$file: set DEBIAN_ARCHIVE to a Debian" \
                "mirror that has it, or give interpreters of your own:" \
                "CORRAL_TEST_PYTHONS=/path/python3.9:/path/python3.13 ./test.sh" >&2
            exit 1
        fi
        if ! echo "$sum  $tarball" | sha256sum -c --quiet -; then
            echo "$ARCHIVE/$file is not the tarball this script knows (SHA-256 differs)" >&2
            exit 1
        fi
        # Files of the user running this, not the tarball's owner: a
        # corral run as root refuses an interpreter others can change.
        tar -xJf "$tarball" --no-same-owner -C "$work"
        rm "$tarball"
        src=$(echo "$work"/Python-*)
        (
            cd "$src"
            ./configure --without-ensurepip >configure.log 2>&1 ||
                { tail -20 configure.log >&2; exit 1; }
            make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
        )
        chmod -R go-w "$src"
        rm -rf "$dir"
        mv "$src" "$dir"
        rm -rf "$work"
    fi
    echo "$PWD/$dir/python"
done
