"""``qhealth demo``'s parts: the simulated API, the workload, the naive pool,
the measures and the summary. The whole run is tested in ``test_demo_e2e.py``."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Callable

import pytest

import qhealth
import qhealth.conditions
import qhealth.ratelimit
from qhealth import Health, QueueSnapshot, Sample
from qhealth.cli._demo import SCENARIOS, Workload
from qhealth.cli._demo._api import RateLimited, SimulatedAPI
from qhealth.cli._demo._naive import NaivePool
from qhealth.cli._demo._run import Account, _account
from qhealth.cli._demo._summary import plain_table, summary_rows
from qhealth.cli._demo._tally import QueueTally, Tally
from qhealth.cli._demo._text import sparkline

from .clocks import FakeClock


async def _no_wait(seconds: float) -> None:
    return None


def _api(rate: float, burst: float, clock: FakeClock) -> SimulatedAPI:
    return SimulatedAPI(rate, burst=burst, latency_s=0.0, reject_latency_s=0.0, clock=clock, sleep=_no_wait)


# -- the simulated API ---------------------------------------------------------------


async def test_calls_within_the_limit_are_served_and_remembered_by_id() -> None:
    api = _api(10, 3, FakeClock())
    for item in range(3):
        await api.call(item)
    assert api.served == {0, 1, 2}
    assert (api.calls, api.refused) == (3, 0)


async def test_a_call_above_the_limit_is_a_429_that_qhealth_recognises() -> None:
    api = _api(10, 1, FakeClock())
    await api.call(1)
    with pytest.raises(RateLimited) as refused:
        await api.call(2)
    assert qhealth.ratelimit.is_rate_limited(refused.value)
    assert qhealth.ratelimit.retry_after_s(refused.value) == 1.0
    assert refused.value.headers == {"Retry-After": "1"}
    assert (api.calls, api.refused, api.served) == (2, 1, {1})


async def test_retry_after_is_whole_seconds_never_below_the_real_wait() -> None:
    api = _api(0.25, 1, FakeClock())  # one call every 4 s
    await api.call(1)
    with pytest.raises(RateLimited) as refused:
        await api.call(2)
    assert refused.value.retry_after == 4


async def test_the_limit_refills_at_its_rate_and_no_faster() -> None:
    clock = FakeClock()
    api = _api(10, 1, clock)
    served = 0
    for step in range(100):  # 1 s in 10 ms steps, two callers per step
        clock.now = step * 0.01
        for item in (2 * step, 2 * step + 1):
            try:
                await api.call(item)
                served += 1
            except RateLimited:
                pass
    assert served in (10, 11)  # the burst of 1, then 10/s


async def test_an_item_served_twice_is_counted() -> None:
    api = _api(10, 5, FakeClock())
    await api.call(7)
    await api.call(7)
    assert api.served == {7}
    assert api.served_twice == 1


def test_a_rate_limit_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="rate limit"):
        SimulatedAPI(0)


# -- the workload ------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_arrivals() -> None:
    w = SCENARIOS["boom-bust"].workload
    first = list(itertools.islice(w.arrivals(3), 500))
    assert first == list(itertools.islice(w.arrivals(3), 500))
    assert first != list(itertools.islice(w.arrivals(4), 500))


def test_arrivals_increase_and_average_the_workload_rate() -> None:
    w = Workload(rate=6.0, burst_size=30, burst_every_s=12.0, burst_spread_s=2.0)
    times = list(itertools.takewhile(lambda t: t < 2000.0, w.arrivals(1)))
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert len(times) / 2000.0 == pytest.approx(w.mean_rate, rel=0.05)


def test_bursts_bring_their_items_within_the_spread() -> None:
    w = Workload(rate=0.0, burst_size=25, burst_every_s=30.0, burst_spread_s=1.0)
    times = list(itertools.takewhile(lambda t: t < 300.0, w.arrivals(2)))
    assert len(times) % 25 == 0 and times
    for start in range(0, len(times), 25):
        burst = times[start : start + 25]
        assert burst[-1] - burst[0] <= 1.0


def test_a_workload_with_bad_numbers_is_refused() -> None:
    with pytest.raises(ValueError):
        Workload(rate=-1.0)
    with pytest.raises(ValueError):
        Workload(rate=1.0, burst_size=5, burst_every_s=0.0)


def test_every_scenario_offers_load_the_reference_pool_can_or_cannot_serve_as_it_says() -> None:
    """A scenario where the reference pool is expected healthy leaves it headroom
    under the API's limit; the overflow one offers more than the limit."""
    for scenario in SCENARIOS.values():
        load = scenario.workload.mean_rate
        if "overflow" in scenario.reference_shows:
            assert load > scenario.rate_limit, scenario.name
        else:
            assert load < 0.75 * scenario.rate_limit, scenario.name


# -- the naive pool ----------------------------------------------------------------------


class StampAPI(SimulatedAPI):
    """An API that notes when each call arrived."""

    def __init__(self, rate: float = 1000.0, burst: float = 1000.0) -> None:
        super().__init__(rate, burst=burst, latency_s=0.0, reject_latency_s=0.001)
        self.at: list[float] = []

    async def call(self, item: int) -> None:
        self.at.append(asyncio.get_running_loop().time())
        await super().call(item)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Let the event loop run until ``condition`` holds (tests wait for events, not for durations)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_naive_workers_sleep_the_same_interval_and_wake_in_step() -> None:
    api = StampAPI()
    pool = NaivePool(api, workers=10, poll_interval_s=0.2)
    for item in range(30):
        pool.submit(item)
    start = asyncio.get_running_loop().time()
    pool.start()
    await until(lambda: pool.probe.polls_empty_total >= 10)
    await pool.stop()
    assert api.served == set(range(30))
    first = min(api.at) - start
    assert 0.19 <= first <= 0.5  # nobody looked before the interval was up
    assert max(api.at) - min(api.at) < 0.1  # all 30 taken in one stampede
    assert pool.probe.polls_hit_total == 30
    assert pool.probe.polls_empty_total == 10  # each worker found the queue empty once, then slept


async def test_a_429_is_retried_at_once_then_the_item_goes_back_on_the_queue() -> None:
    api = StampAPI(rate=0.001, burst=1)  # one call, then 429s for a long while
    pool = NaivePool(api, workers=1, poll_interval_s=0.05, immediate_retries=3)
    pool.submit(1)
    pool.submit(2)
    start = asyncio.get_running_loop().time()
    pool.start()
    await until(lambda: pool.pushed_back >= 1)
    elapsed = asyncio.get_running_loop().time() - start
    await pool.stop()
    probe = pool.probe
    assert api.served == {1}
    # Told to come back in 1000 s, it asked 3 more times at once, then put the item back.
    assert elapsed < 10
    assert probe.rate_limited_total >= 4
    # Every call but the first was a 429 (the last one may have been cut short by stop()).
    assert probe.attempts_total - probe.rate_limited_total in (1, 2)
    assert pool.remaining() == [2]


async def test_stopping_the_naive_pool_puts_held_items_back() -> None:
    api = SimulatedAPI(1000, burst=1000, latency_s=5.0)  # every call outlasts the test
    pool = NaivePool(api, workers=3, poll_interval_s=0.01)
    for item in range(5):
        pool.submit(item)
    pool.start()
    await until(lambda: len(pool.in_hand) == 3)
    await pool.stop()
    assert sorted(pool.remaining()) == [0, 1, 2, 3, 4]
    assert pool.probe.busy == 0
    assert pool.probe.processed_total == 0


async def test_every_sleeping_naive_worker_counts_as_idle() -> None:
    pool = NaivePool(StampAPI(), workers=4, poll_interval_s=0.05)
    pool.start()
    probe = pool.probe
    await until(lambda: probe.polls_empty_total >= 4)  # every worker has slept and looked once
    # Idle worker-seconds grow by one per second per idle worker: 4 while all of them sleep...
    assert probe.idle_seconds(now=1001.0) - probe.idle_seconds(now=1000.0) == pytest.approx(4.0)
    await pool.stop()
    # ...and not at all once they are gone.
    assert probe.idle_seconds(now=1001.0) - probe.idle_seconds(now=1000.0) == pytest.approx(0.0)
    assert probe.workers == 0


# -- accounting --------------------------------------------------------------------------


def test_an_item_neither_served_dead_nor_remaining_is_lost() -> None:
    api = SimulatedAPI(10)
    api.served = {0, 1}
    account = _account(5, api, dead=[3], remaining=[2])
    assert (account.served, account.dead_lettered, account.remaining, account.lost) == (2, 1, 1, 1)


def test_nothing_is_lost_when_every_item_is_accounted_for() -> None:
    api = SimulatedAPI(10)
    api.served = {0, 2}
    assert _account(4, api, dead=[1], remaining=[3]).lost == 0


# -- the measures ------------------------------------------------------------------------


def _snapshot(
    queue: str, t: float, depth: int, processed: int, idle_s: float, health: Health
) -> QueueSnapshot:
    sample = Sample(
        t=t,
        depth=depth,
        workers=4,
        busy=0,
        enqueued_total=processed + depth,
        processed_total=processed,
        failed_total=0,
        attempts_total=processed,
        rate_limited_total=0,
        idle_s_total=idle_s,
    )
    return QueueSnapshot(queue, sample, health, None, 0, 0)


def _health(t: float, *conditions: qhealth.Condition) -> Health:
    return Health(t=t, state=qhealth.conditions.state_of(conditions), conditions=frozenset(conditions))


def test_time_in_each_condition_adds_up_from_the_ticks() -> None:
    tally = QueueTally("q")
    tally.add(_snapshot("q", 0.0, 0, 0, 0.0, Health(t=0.0, state=qhealth.conditions.WARMING_UP)))
    tally.add(_snapshot("q", 1.0, 0, 1, 0.0, Health(t=1.0, state=qhealth.conditions.WARMING_UP)))
    tally.add(_snapshot("q", 2.0, 0, 2, 0.0, _health(2.0)))
    both = (qhealth.Condition.RATE_LIMITED, qhealth.Condition.BOOM_BUST)
    tally.add(_snapshot("q", 3.0, 0, 3, 0.0, _health(3.0, *both)))
    tally.add(_snapshot("q", 4.0, 0, 4, 0.0, _health(4.0, *both)))
    assert tally.time_in == {"warming_up": 1.0, "healthy": 1.0, "rate_limited": 2.0, "boom_bust": 2.0}
    assert tally.seconds == 4.0
    assert tally.conditions_seen == ["rate_limited", "boom_bust"]


def test_idle_time_counts_as_wasted_only_while_items_waited() -> None:
    tally = QueueTally("q")
    h = _health(0.0)
    tally.add(_snapshot("q", 0.0, 5, 0, 0.0, h))
    tally.add(_snapshot("q", 1.0, 3, 0, 4.0, h))  # backlog at both ends: 4 worker-s wasted
    tally.add(_snapshot("q", 2.0, 0, 3, 6.0, h))  # the queue emptied: not counted
    tally.add(_snapshot("q", 3.0, 0, 3, 10.0, h))
    assert tally.idle_waiting_s == 4.0


def test_throughput_variation_separates_a_steady_pool_from_one_that_surges() -> None:
    steady, surging = QueueTally("a"), QueueTally("b")
    done_a = done_b = 0
    for tick in range(60):
        t = tick * 0.5
        steady.add(_snapshot("a", t, 0, done_a, 0.0, _health(t)))
        surging.add(_snapshot("b", t, 0, done_b, 0.0, _health(t)))
        done_a += 5
        done_b += 30 if tick % 6 == 0 else 0
    assert steady.throughput_mean == pytest.approx(10.0)
    assert surging.throughput_mean == pytest.approx(10.0, rel=0.05)
    assert steady.throughput_cv == pytest.approx(0.0, abs=1e-9)
    assert surging.throughput_cv is not None and surging.throughput_cv > 1.0


def test_a_tally_copy_is_safe_to_read_while_ticks_go_on() -> None:
    tally = Tally()
    tally.on_tick(_snapshot("q", 0.0, 1, 0, 0.0, _health(0.0)))
    copy = tally.get("q")
    tally.on_tick(_snapshot("q", 1.0, 2, 1, 0.0, _health(1.0)))
    assert list(copy.depths) == [1]
    assert list(tally.get("q").depths) == [1, 2]


# -- the summary -------------------------------------------------------------------------


def test_the_summary_has_a_row_per_measure_and_per_condition_seen() -> None:
    tallies = {"naive": QueueTally("naive"), "reference": QueueTally("reference")}
    tallies["naive"].add(_snapshot("naive", 0.0, 0, 0, 0.0, _health(0.0)))
    tallies["naive"].add(_snapshot("naive", 1.0, 0, 1, 0.0, _health(1.0, qhealth.Condition.BOOM_BUST)))
    account = Account(10, 9, 0, 1, 0, 0, 12, 2)
    rows = summary_rows(tallies, {"naive": account, "reference": account})
    labels = [r[0] for r in rows]
    assert "time boom_bust" in labels and "time idle" not in labels
    assert dict((r[0], r[1:]) for r in rows)["items lost"] == ("0", "0")
    assert all(len(r) == 3 for r in rows)


def test_the_plain_table_aligns_its_columns() -> None:
    text = plain_table([("a", "1", "22"), ("longer label", "333", "4")], ("", "x", "y"))
    lines = text.splitlines()
    assert len({len(line) for line in lines[1:]}) == 1
    assert lines[2].startswith("a ") and lines[2].endswith(" 22")


def test_a_sparkline_scales_to_its_maximum() -> None:
    assert sparkline([0, 5, 10]) == "▁▅█"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline(list(range(100)), width=10) == sparkline(list(range(90, 100)), width=10)


# -- the live view -----------------------------------------------------------------------


def test_the_live_view_shows_each_pools_condition_with_its_reason_and_fix() -> None:
    from rich.console import Console

    from qhealth.cli._demo._live import LiveView

    finding = qhealth.conditions.Finding(
        qhealth.Condition.BOOM_BUST, "workers sat idle while items waited", "block"
    )
    boom = Health(t=1.0, state="boom_bust", conditions=frozenset({finding.condition}), findings=(finding,))
    tally = Tally()
    tally.on_tick(_snapshot("naive", 0.0, 9, 0, 0.0, Health(t=0.0, state=qhealth.conditions.WARMING_UP)))
    tally.on_tick(_snapshot("naive", 1.0, 12, 4, 2.0, boom))
    tally.on_tick(_snapshot("reference", 1.0, 0, 4, 0.0, _health(1.0)))
    view = LiveView(tally, {"naive": "polls", "reference": "blocks"}, "scenario x", 60.0)
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(view.render())
    text = console.export_text()
    assert "1 s of 60 s" in text
    assert "boom_bust" in text and "workers sat idle while items waited" in text and "fix" in text
    assert "healthy" in text
    assert "   12  " in text  # naive's depth
