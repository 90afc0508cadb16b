"""qhealth judges the reference pool as it is: healthy under a steady load.

The pool reports idle time only around its blocking waits, so a pool whose
workers never sit idle while items wait must not look like boom-bust, and a
pool doing its work at a comfortable utilisation must not look idle or stalled.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from qhealth import ClassifierConfig, Monitor
from src_pool import Pool


@pytest.mark.slow
async def test_a_steadily_loaded_reference_pool_is_judged_healthy() -> None:
    monitor = Monitor(interval=0.05, config=ClassifierConfig(window_s=1.0))

    async def handle(item: int) -> None:
        await asyncio.sleep(0.02)  # 10 workers x 50/s: 500 items/s of capacity

    pool = Pool(handle, name="steady", concurrency=10, monitor=monitor, rng=random.Random(1))
    states: Counter[str] = Counter()
    async with pool:
        ticker = asyncio.create_task(monitor.run())
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            i = 0
            while loop.time() - t0 < 2.5:  # ~200 items/s: about 40% busy
                await pool.submit(i)
                i += 1
                await asyncio.sleep(0.005)
                health = monitor.health("steady")
                if health is not None and loop.time() - t0 > 1.2:
                    states[health.state] += 1
        finally:
            ticker.cancel()
    assert states, "the monitor judged nothing"
    judged = sum(states.values())
    assert states["healthy"] >= 0.9 * judged, states
    assert not (set(states) & {"boom_bust", "stalled", "overflow", "rate_limited"}), states
