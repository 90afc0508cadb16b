"""Running code in a fresh interpreter, as a user's program would run, with a
module made unimportable when a test needs an extra to be missing."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def run_python(
    code: str, *args: str, without: str | tuple[str, ...] = (), stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (with ``sys.argv[1:] = args``) from the project's root, where
    the modules ``without`` names cannot be imported."""
    modules = (without,) if isinstance(without, str) else without
    blocked = "".join(f"import sys; sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run(
        [sys.executable, "-c", blocked + code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        input=stdin,
    )
