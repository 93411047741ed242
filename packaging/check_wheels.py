"""Checks release wheels and prints each one's name, size and highest glibc.

Usage: python packaging/check_wheels.py dist/corral-*.whl
(run by packaging/build-wheels.sh, with auditwheel installed).

For each wheel:
- `auditwheel show` finds it consistent with the platform tag its name
  carries (manylinux_2_17 for the glibc wheel, musllinux_1_2 for musl);
- the binary inside references no GLIBC_ symbol version above the one its
  manylinux tag promises (`objdump -T`), and a musllinux binary is static
  (no program interpreter, so it needs no libc at all);
- pip installs it, offline, into a fresh virtualenv (a musllinux wheel with
  `--platform`, into a folder: pip refuses it on a glibc system otherwise),
  and the installed `corral --version` and `corral app:app` serving
  example/app.py with the virtualenv's python work, and SIGTERM stops it
  with exit code 0.

Exits 1 when any check fails, naming the wheel and the check.
"""

import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def version_key(v):
    return tuple(int(p) for p in v.split("."))


def run(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


def platform_tags(wheel):
    """The platform tags in a wheel's file name (the part after the last -)."""
    return wheel.name[: -len(".whl")].split("-")[-1].split(".")


def auditwheel_tag(wheel):
    out = run(sys.executable, "-m", "auditwheel", "show", str(wheel))
    if out.returncode != 0:
        raise Check(f"auditwheel show failed: {out.stdout}{out.stderr}")
    text = " ".join(out.stdout.split())
    m = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    if not m:
        raise Check(f"auditwheel show names no platform tag: {out.stdout}")
    return m.group(1)


def interpreter(binary):
    """The ELF program interpreter (PT_INTERP) of a 64-bit binary, or None."""
    data = binary.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        raise Check(f"{binary.name} is no 64-bit ELF file")
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        p_type = struct.unpack_from("<I", data, at)[0]
        if p_type == 3:
            offset, _, _, size = struct.unpack_from("<QQQQ", data, at + 8)
            return data[offset : offset + size].rstrip(b"\0").decode()
    return None


def max_glibc(binary):
    out = run("objdump", "-T", str(binary))
    if "not a dynamic object" in out.stderr:
        return None
    if out.returncode != 0:
        raise Check(f"objdump -T failed: {out.stderr}")
    versions = set(re.findall(r"GLIBC_([0-9][0-9.]*[0-9])", out.stdout))
    return max(versions, key=version_key) if versions else None


def serve_example(corral, python, scratch):
    """Serves example/app.py with `corral` and asks it for a page."""
    env = dict(
        os.environ,
        NO_COLOR="1",
        RUNTIME_DIRECTORY=str(scratch / "run"),
        STATE_DIRECTORY=str(scratch / "state"),
    )
    env.pop("VIRTUAL_ENV", None)
    log = open(scratch / "corral.log", "w+")
    proc = subprocess.Popen(
        [str(corral), "app:app", "--chdir", str(ROOT / "example"), "-b", "127.0.0.1:0",
         "--python", str(python)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        deadline = time.monotonic() + 30
        port = None
        while time.monotonic() < deadline and proc.poll() is None:
            text = (scratch / "corral.log").read_text()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
            if m and "in service" in text:
                port = int(m.group(1))
                break
            time.sleep(0.1)
        if port is None:
            raise Check(f"corral did not serve example/app.py: {(scratch / 'corral.log').read_text()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as r:
            info = json.load(r)
        if r.status != 200 or info.get("path") != "/info":
            raise Check(f"GET /info answered {r.status} {info}")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        if code != 0:
            raise Check(f"corral exited {code} after SIGTERM: {(scratch / 'corral.log').read_text()}")
        return info["pid"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def install_and_run(wheel, musl, scratch):
    venv = scratch / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    if made.returncode != 0:
        raise Check(f"python -m venv: {made.stderr}")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-index", "--no-deps"]
    if musl:
        where = scratch / "musl"
        pip += ["--target", str(where), "--platform", platform_tags(wheel)[0],
                "--only-binary=:all:"]
    else:
        where = venv
        pip += ["--prefix", str(venv)]
    installed = run(*pip, str(wheel))
    if installed.returncode != 0:
        raise Check(f"pip install: {installed.stdout}{installed.stderr}")
    corral = where / "bin" / "corral"
    version = run(str(corral), "--version")
    expected = "corral " + wheel.name.split("-")[1]
    if version.stdout.strip() != expected:
        raise Check(f"{corral} --version said {version.stdout!r}{version.stderr!r}, not {expected!r}")
    worker = serve_example(corral, venv / "bin" / "python", scratch)
    print(f"{wheel.name}: auditwheel, glibc, pip install, {expected}, example/app.py "
          f"served by worker {worker} and SIGTERM exit 0: ok", flush=True)


class Check(Exception):
    pass


def check(wheel):
    """The highest GLIBC_ version one wheel needs; raises Check when a check fails."""
    tags = platform_tags(wheel)
    musl = tags[0].startswith("musllinux")
    found = auditwheel_tag(wheel)
    if found not in tags:
        raise Check(f"auditwheel finds it consistent with {found}, not with its tags {tags}")
    with tempfile.TemporaryDirectory(prefix="corral-wheel-check.") as scratch:
        scratch = Path(scratch)
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.endswith(".data/scripts/corral")]
            if len(names) != 1:
                raise Check(f"no single .data/scripts/corral in the wheel: {z.namelist()}")
            binary = Path(z.extract(names[0], scratch / "unpacked"))
        glibc = max_glibc(binary)
        if musl:
            if interpreter(binary) is not None or glibc is not None:
                raise Check(f"the musllinux binary is not static: interpreter "
                            f"{interpreter(binary)}, GLIBC_{glibc}")
            shown = "none (static)"
        else:
            promised = next((t for t in tags if t.startswith("manylinux_")), None)
            if promised is None:
                raise Check(f"no manylinux_X_Y tag in {tags}")
            floor = ".".join(promised.split("_")[1:3])
            if glibc is None or version_key(glibc) > version_key(floor):
                raise Check(f"highest GLIBC_ symbol version {glibc} is above {floor}")
            shown = glibc
        install_and_run(wheel, musl, scratch)
    return shown


def main():
    wheels = [Path(a) for a in sys.argv[1:]]
    if not wheels:
        sys.exit("usage: check_wheels.py WHEEL...")
    rows, failed = [], False
    for wheel in wheels:
        try:
            glibc = check(wheel)
        except (Check, subprocess.TimeoutExpired, OSError) as e:
            print(f"FAILED {wheel.name}: {e}", flush=True)
            failed = True
            glibc = "FAILED"
        rows.append((wheel.name, f"{wheel.stat().st_size / 1e6:.1f} MB", glibc))
    width = max(len(r[0]) for r in rows)
    print(f"{'wheel':<{width}}  {'size':>8}  max glibc")
    for name, size, glibc in rows:
        print(f"{name:<{width}}  {size:>8}  {glibc}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
