"""One seed, one demo run (issue 16, item 17).

The demo runs on simulated time (``qhealth.cli._demo._clock``): the clock moves
only between callbacks, to the next timer, so what happens follows from the
seed alone. Kept to the wall clock or run flat out, a run gives the same
figures, and the README's table is what its command gives.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from dataclasses import replace

import pytest

from qhealth.cli import build_parser
from qhealth.cli._demo import SCENARIOS, Options, Settings, run_demo
from qhealth.cli._demo._clock import SimulatedTime, run
from qhealth.cli._demo._run import QUEUES
from qhealth.cli._demo._summary import plain_table, summary_rows
from qhealth.cli.demo import options_from

from .readme import section


def _table(options: Options) -> str:
    outcome = run_demo(replace(options, live=False, report=None), io.StringIO())
    return plain_table(summary_rows(outcome.tallies, outcome.accounts), ("", *QUEUES))


def _unpaced(scenario: str = "boom-bust", duration_s: float = 60.0, seed: int = 7) -> str:
    settings = Settings(SCENARIOS[scenario], duration_s=duration_s, seed=seed)
    return _table(Options(settings=settings, paced=False))


# -- the clock -------------------------------------------------------------------------------


def test_simulated_time_moves_to_the_next_timer_and_not_while_code_runs() -> None:
    clock = SimulatedTime(paced=False)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = [loop.time()]
        await asyncio.sleep(2.5)
        seen.append(loop.time())
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:  # 50 ms of real work
            pass
        seen.append(loop.time())
        await asyncio.sleep(3600)
        seen.append(loop.time())
        return seen

    started = time.monotonic()
    assert run(main(), clock) == [0.0, 2.5, 2.5, 3602.5]
    assert time.monotonic() - started < 5  # an hour of simulated sleep, not of waiting


def test_paced_time_never_runs_ahead_of_the_wall_clock() -> None:
    clock = SimulatedTime(paced=True)
    started = time.monotonic()
    run(asyncio.sleep(0.3), clock)
    assert time.monotonic() - started >= 0.3
    assert clock.now == pytest.approx(0.3)


def test_a_wake_up_from_another_thread_runs_at_once_and_moves_no_clock() -> None:
    clock = SimulatedTime(paced=True)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        threading.Timer(0.1, lambda: loop.call_soon_threadsafe(woken.set)).start()
        sleeper = asyncio.create_task(asyncio.sleep(30))
        await woken.wait()
        at = loop.time()
        sleeper.cancel()
        return at

    started = time.monotonic()
    assert run(main(), clock) < 0.2
    assert time.monotonic() - started < 5


# -- the demo ----------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_figures_and_another_seed_others() -> None:
    first = _unpaced(duration_s=30)
    assert _unpaced(duration_s=30) == first
    assert _unpaced(duration_s=30, seed=8) != first


@pytest.mark.slow
def test_kept_to_the_wall_clock_a_run_gives_the_figures_of_one_run_flat_out() -> None:
    settings = Settings(SCENARIOS["boom-bust"], duration_s=8.0)
    started = time.monotonic()
    paced = _table(Options(settings=settings, paced=True))
    assert time.monotonic() - started >= 8.0
    assert paced == _table(Options(settings=settings, paced=False))


def test_the_readme_table_is_what_the_readme_command_gives() -> None:
    text = section("## The demo")
    command = re.search(r"From `qhealth (demo[^`]*)`", text)
    shown = re.search(r"```text\n(.*?)\n```", text, re.S)
    assert command and shown, "the README's demo section shows a command and its table"
    args = build_parser().parse_args(command.group(1).split())
    options = replace(options_from(args), paced=False)
    table = _table(options)
    assert table == shown.group(1)
    # The prose's figures are the table's.
    calls = re.search(r"downstream calls\s+([\d,]+)\s+([\d,]+)", table)
    waited = re.search(r"idle worker-s while items waited\s+(\d+)", table)
    assert calls and waited
    naive, reference = (int(n.replace(",", "")) for n in calls.groups())
    prose = " ".join(text.split())
    assert f"makes {naive / reference:.1f} times the calls" in prose
    assert f"wastes {waited.group(1)} worker-seconds idle" in prose
