"""`python -m corral ARGS`: runs the corral binary in this process's place
(exec, not a child), so signals, the exit code and systemd's view of the
main process are the binary's own."""

import os
import sys

from corral import find_corral_bin


def main() -> None:
    binary = find_corral_bin()
    # The interpreter that ran this is the workers' when nothing else names
    # one (--python, [app] python), as `python -m gunicorn` runs the app
    # with the interpreter it ran under.
    if sys.executable:
        os.environ["CORRAL_LAUNCHER_PYTHON"] = sys.executable
    os.execv(binary, [binary, *sys.argv[1:]])


if __name__ == "__main__":
    main()
