"""corral, a pre-fork supervisor and HTTP server for Python web apps.

This package only locates the `corral` binary that its wheel installs into
the environment's bin/ folder: `python -m corral ...` runs it.
"""

import os
import sys
import sysconfig

__all__ = ["find_corral_bin"]


def find_corral_bin() -> str:
    """The path of the corral binary installed with this package."""
    name = "corral" + (sysconfig.get_config_var("EXE") or "")
    candidates = [
        os.path.join(sysconfig.get_path("scripts"), name),
        # A --user install puts scripts under the user scheme.
        os.path.join(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user")), name)
        if hasattr(sysconfig, "get_preferred_scheme")
        else None,
        os.path.join(os.path.dirname(sys.executable), name),
    ]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "the corral binary is not where this package installs it (%s)"
        % ", ".join(p for p in candidates if p)
    )
