"""Counting CPU instructions with valgrind's callgrind, for the benches.

Instruction counts do not move with what else the machine is doing, so they
back up wall-clock figures taken on a shared machine. A bench runs itself as a
child under callgrind (``script --child ARGS``) at two sizes and takes the
difference, so that start-up cancels out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys


def instructions(script: str, *child_args: str) -> int:
    """Instructions the whole run of ``python3 script --child CHILD_ARGS`` took."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            os.path.realpath(sys.executable),
            script,
            "--child",
            *child_args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {result.stderr[-500:]}")
    return int(match.group(1))
