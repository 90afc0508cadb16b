"""The adaptive poller: backoff to a real ceiling, full jitter, reset on work, nothing dropped."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence

import pytest

from qhealth import Probe
from src_pool import AdaptivePoller, PollGroup


class Stop(BaseException):
    """Ends a poller's run() from inside fetch (pollers catch Exception only)."""


class VirtualClock:
    """One poller's own time: its sleeps advance it, nothing else does."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def empty_source(clock: VirtualClock, polls: list[float], limit: int) -> object:
    async def fetch() -> Sequence[int]:
        polls.append(clock.now)
        if len(polls) >= limit:
            raise Stop
        return ()

    return fetch


async def nothing(item: object) -> None:
    pass


async def run_empty(
    seed: int, limit: int = 200, **kwargs: float
) -> tuple[VirtualClock, list[float], AdaptivePoller[int]]:
    clock, polls = VirtualClock(), []
    poller: AdaptivePoller[int] = AdaptivePoller(
        empty_source(clock, polls, limit),  # type: ignore[arg-type]
        nothing,
        rng=random.Random(seed),
        sleep=clock.sleep,
        **kwargs,  # type: ignore[arg-type]
    )
    with pytest.raises(Stop):
        await poller.run()
    return clock, polls, poller


async def test_max_interval_is_a_real_ceiling() -> None:
    clock, _, _ = await run_empty(1, min_interval=1.0, max_interval=30.0)
    assert max(clock.sleeps) <= 30.0
    assert max(clock.sleeps) > 20.0  # and it is reached: it backs off


async def test_sleeps_at_the_minimum_stay_spread_instead_of_collapsing_onto_it() -> None:
    sleeps = []
    for seed in range(200):
        clock, _, _ = await run_empty(seed, limit=2, min_interval=1.0, max_interval=30.0)
        sleeps.append(clock.sleeps[1])  # the sleep after the first empty poll: ceiling = min
    assert all(0.0 <= s <= 1.0 for s in sleeps)
    assert len({round(s, 6) for s in sleeps}) == len(sleeps)  # no value repeats
    assert 0.35 < sum(sleeps) / len(sleeps) < 0.65  # uniform over [0, 1]


async def test_pollers_started_together_do_not_poll_together() -> None:
    first_polls = []
    for seed in range(10):
        _, polls, _ = await run_empty(seed, limit=1, min_interval=1.0)
        first_polls.append(polls[0])
    assert max(first_polls) - min(first_polls) > 0.5
    assert len({round(t, 3) for t in first_polls}) == 10


async def test_n_pollers_spread_out_measured_as_collisions_and_gap_variation() -> None:
    """The spread of 10 pollers backing off from the same start: how often two
    polls land within 1% of min_interval of each other, and how regular the
    gaps between consecutive polls are (synchronised pollers: every poll
    collides; evenly spread ones: few collisions)."""
    times: list[float] = []
    for seed in range(10):
        _, polls, _ = await run_empty(seed, limit=60, min_interval=1.0, max_interval=8.0)
        times += polls
    times.sort()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    collisions = sum(1 for g in gaps if g < 0.01) / len(gaps)
    assert collisions < 0.05
    mean = sum(gaps) / len(gaps)
    cv = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean
    assert cv < 2.0  # synchronised pollers would give a CV of about sqrt(n) = 3.2


async def test_finding_work_resets_the_ceiling_and_polls_again_at_once() -> None:
    clock = VirtualClock()
    batches: list[Sequence[int]] = [(), (), (), (), (1, 2), ()]
    polled_at: list[float] = []

    async def fetch() -> Sequence[int]:
        polled_at.append(clock.now)
        if not batches:
            raise Stop
        return batches.pop(0)

    poller: AdaptivePoller[int] = AdaptivePoller(
        fetch, nothing, min_interval=1.0, max_interval=30.0, rng=random.Random(2), sleep=clock.sleep
    )
    with pytest.raises(Stop):
        await poller.run()
    assert polled_at[5] == polled_at[4]  # no sleep after a hit
    assert poller.ceiling == 2.0  # reset to 1, then one empty poll doubled it
    assert poller.handled == 2


async def test_a_failing_fetch_counts_as_empty_and_the_poller_keeps_going() -> None:
    clock = VirtualClock()
    calls = 0

    async def fetch() -> Sequence[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("source down")
        if calls == 3:
            raise Stop
        return ()

    probe = Probe("polled", timed=False)
    poller: AdaptivePoller[int] = AdaptivePoller(
        fetch, nothing, rng=random.Random(3), sleep=clock.sleep, probe=probe
    )
    with pytest.raises(Stop):
        await poller.run()
    assert calls == 3
    assert probe.polls_empty_total == 2


async def test_a_failing_item_does_not_drop_the_rest_of_its_batch() -> None:
    clock = VirtualClock()
    batches: list[Sequence[int]] = [(1, 2, 3, 4)]
    handled: list[int] = []
    errors: list[tuple[int, str]] = []

    async def fetch() -> Sequence[int]:
        if not batches:
            raise Stop
        return batches.pop(0)

    async def handle(item: int) -> None:
        if item == 2:
            raise TypeError("wrong type")
        handled.append(item)

    poller: AdaptivePoller[int] = AdaptivePoller(
        fetch,
        handle,
        rng=random.Random(4),
        sleep=clock.sleep,
        on_error=lambda item, exc: errors.append((item, str(exc))),
    )
    with pytest.raises(Stop):
        await poller.run()
    assert handled == [1, 3, 4]
    assert errors == [(2, "wrong type")]


@pytest.mark.slow
async def test_a_batch_after_an_idle_spell_is_taken_up_by_the_whole_group() -> None:
    """10 pollers backed off for a while; 100 items arrive: one poller's hit
    wakes the others, and all of them take part in draining the batch."""
    items: list[int] = []
    taken_by: dict[int, int] = {}
    group = PollGroup()

    def source(worker: int) -> object:
        async def fetch() -> Sequence[int]:
            batch = items[:5]
            del items[:5]
            for _ in batch:
                taken_by[worker] = taken_by.get(worker, 0) + 1
            return batch

        return fetch

    async def handle(item: int) -> None:
        await asyncio.sleep(0.01)

    pollers = [
        AdaptivePoller(
            source(w), handle, min_interval=0.02, max_interval=2.0, group=group, rng=random.Random(w)
        )  # type: ignore[arg-type]
        for w in range(10)
    ]
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    try:
        await asyncio.sleep(1.5)  # ceilings grow towards 2 s
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        items.extend(range(100))
        while items or sum(p.handled for p in pollers) < 100:
            await asyncio.sleep(0.005)
            assert loop.time() - t0 < 4.0, "the batch was not drained"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # Woken by the first hit instead of sleeping out ceilings of ~1.5 s: most pollers
    # took part (10 of 10 in runs here), not the textbook's 2-4 of 10.
    assert len(taken_by) >= 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_interval": 0}, "busy loop"),
        ({"backoff": 1}, "never back off"),
        ({"min_interval": 5, "max_interval": 1}, "must not exceed"),
        ({"max_interval": float("inf")}, "max_interval"),
    ],
)
def test_settings_that_would_spin_or_never_back_off_are_refused(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AdaptivePoller(lambda: asyncio.sleep(0, ()), nothing, **kwargs)  # type: ignore[arg-type]
