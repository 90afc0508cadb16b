"""``qhealth demo``: the problem and the fix, side by side, on one machine.

Two pools process the same bursty workload against a simulated API with a
real rate limit, both instrumented by qhealth:

* the **naive** pool of the original symptom (:mod:`._naive`): workers that
  poll on a fixed interval in step, no limiter, immediate retries of 429s;
* the **reference** pool, ``src_pool``: blocking workers, a shared token
  bucket, AIMD concurrency, Retry-After with jitter.

A live view (or plain log lines) shows what qhealth sees; at the end, a
side-by-side summary, both pools' traces and a report. Modules: the API
(:mod:`._api`), the workload (:mod:`._workload`), the scenarios
(:mod:`._scenarios`), the pools and the accounting (:mod:`._run`), the
measures (:mod:`._tally`), the views (:mod:`._live`, :mod:`._log_view`,
:mod:`._summary`), and one run end to end (:mod:`._main`).

Importing this package is cheap (``qhealth --help`` does): ``src_pool`` is
imported when the pools are built, rich when the live view or the rich
summary is drawn.
"""

from ._main import INTERVAL_S, WINDOW_S, DemoError, Options, Outcome, print_summary, run_demo
from ._run import NAIVE, QUEUES, REFERENCE, Account, Settings
from ._scenarios import DEFAULT_SCENARIO, SCENARIOS, Scenario
from ._workload import Workload

__all__ = [
    "DEFAULT_SCENARIO",
    "INTERVAL_S",
    "NAIVE",
    "QUEUES",
    "REFERENCE",
    "SCENARIOS",
    "WINDOW_S",
    "Account",
    "DemoError",
    "Options",
    "Outcome",
    "Scenario",
    "Settings",
    "Workload",
    "print_summary",
    "run_demo",
]
