"""The fix for a growing backlog asks for workers only when workers are what is
missing (issue 16, item 6).

A downstream limit caps throughput in two ways a window can show: the
downstream answers 429 (rate_limited), or the pool paces its calls with a
limiter at the downstream's limit and gets no 429 at all. The second needs the
limit stated (``downstream_limit``); then the fix names it.
"""

from __future__ import annotations

import pytest

from qhealth import ClassifierConfig, Condition, Health, Sample, classify


def _falling_behind(calls_per_s: float, n: int = 80) -> list[Sample]:
    """30 items/s arrive; 10 workers, all busy, process ``calls_per_s`` (one
    call per item, no 429): the backlog grows by the difference."""
    return [
        Sample(
            t=float(t),
            depth=int((30 - calls_per_s) * t) + 1,
            workers=10,
            busy=10,
            enqueued_total=30 * t,
            processed_total=int(calls_per_s * t),
            failed_total=0,
            attempts_total=int(calls_per_s * t),
            rate_limited_total=0,
            idle_s_total=0.0,
        )
        for t in range(n)
    ]


def _overflow_fix(samples: list[Sample], config: ClassifierConfig) -> str:
    health: Health = classify(samples, 1.0, config)[-1]
    assert health.conditions == {Condition.OVERFLOW}, health.conditions
    (finding,) = health.findings
    return finding.hint


def test_without_a_stated_limit_a_backlog_with_every_worker_busy_asks_for_workers() -> None:
    fix = _overflow_fix(_falling_behind(19.6), ClassifierConfig())
    assert fix.startswith("add workers (about ") and "10 running" in fix


def test_a_pool_calling_at_the_stated_limit_is_told_that_more_workers_cannot_help() -> None:
    fix = _overflow_fix(_falling_behind(19.6), ClassifierConfig(downstream_limit=20))
    assert fix == (
        "the downstream limit caps processing at 20 calls/s (calls run at 19.6/s): "
        "more workers cannot help; raise the downstream limit or shed load"
    )


def test_a_pool_far_below_the_stated_limit_still_needs_workers() -> None:
    fix = _overflow_fix(_falling_behind(19.6), ClassifierConfig(downstream_limit=40))
    assert fix.startswith("add workers (about ")


def test_a_downstream_that_answers_429_names_the_rate_it_accepts_whatever_is_stated() -> None:
    samples = [
        Sample(
            t=float(t),
            depth=10 * t + 1,
            workers=10,
            busy=10,
            enqueued_total=30 * t,
            processed_total=20 * t,
            failed_total=0,
            attempts_total=60 * t,
            rate_limited_total=40 * t,
            idle_s_total=0.0,
        )
        for t in range(80)
    ]
    health = classify(samples, 1.0, ClassifierConfig(downstream_limit=100))[-1]
    assert Condition.RATE_LIMITED in health.conditions
    overflow = next(f for f in health.findings if f.condition is Condition.OVERFLOW)
    assert overflow.hint.startswith("the downstream API caps processing at about 20 calls/s (it answers 429)")


def test_a_negative_limit_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'downstream_limit'"):
        ClassifierConfig(downstream_limit=-1)
    with pytest.raises(ValueError, match="'downstream_limit' must be a number"):
        ClassifierConfig().with_overrides({"downstream_limit": "twenty"})


def test_in_the_overflow_demo_the_reference_pool_is_told_the_limit_not_to_add_workers() -> None:
    """src_pool paces its calls with a token bucket at the API's limit: no 429,
    and yet more workers cannot help. The demo states the limit, and the fix says so."""
    import io

    from qhealth.cli._demo import SCENARIOS, Options, Settings, run_demo

    out = io.StringIO()
    settings = Settings(SCENARIOS["overflow"], duration_s=30)
    outcome = run_demo(Options(settings=settings, live=False, report=None, paced=False), out)
    assert outcome.accounts["reference"].refused == 0
    text = out.getvalue()
    reference = text[text.index("reference  now overflow") :]
    fix = reference.split("fix: ", 1)[1].splitlines()[0]
    assert fix.startswith("the downstream limit caps processing at 20 calls/s (calls run at ")
    assert "add workers" not in text
