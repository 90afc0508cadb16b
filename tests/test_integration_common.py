"""What every adapter shares: a missing framework names its extra; an item's outcome."""

from __future__ import annotations

import pytest

from qhealth import Probe
from qhealth.integrations._common import item_ended, require


class Limited(Exception):
    status = 429


def test_a_missing_framework_says_which_extra_installs_it() -> None:
    with pytest.raises(
        ImportError,
        match=r"needs-the-thing requires the no_such_framework package: pip install 'qhealth\[nsf\]'",
    ):
        require("no_such_framework.sub", extra="nsf", who="needs-the-thing")


def test_importing_qhealth_pulls_in_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, qhealth, qhealth.cli.watch, qhealth.sidecar; "
        "print(sorted(m for m in ('redis', 'celery', 'kombu', 'rq', 'arq') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_item_that_raised_a_429_is_a_failure_and_a_rate_limited_call() -> None:
    probe = Probe("q")
    probe.started()
    item_ended(probe, Limited(), count_calls=True)
    assert (probe.processed_total, probe.failed_total, probe.attempts_total, probe.rate_limited_total) == (
        1,
        1,
        1,
        1,
    )


def test_an_item_that_raised_something_else_is_a_failure_only() -> None:
    probe = Probe("q")
    probe.started()
    item_ended(probe, ValueError(), count_calls=True)
    assert (probe.failed_total, probe.attempts_total, probe.rate_limited_total) == (1, 1, 0)
