"""What `qhealth watch` prints about queues it cannot read: a line a minute, then one when they read again."""

from __future__ import annotations

import io

from qhealth import ClassifierConfig, Monitor, Reading
from qhealth.cli.watch_output import WatchOutput


class Switch:
    """A source that reads while ``up`` and gives no reading otherwise."""

    def __init__(self) -> None:
        self.up = True

    def read(self) -> Reading | None:
        return Reading(depth=2) if self.up else None

    @property
    def unknown(self) -> dict[str, str]:
        return {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch(
    queues: list[str], fmt: str = "text"
) -> tuple[Monitor, dict[str, Switch], Clock, io.StringIO, io.StringIO]:
    clock = Clock()
    monitor = Monitor(interval=1.0, config=ClassifierConfig(window_s=5, min_window_intervals=2), clock=clock)
    switches = {q: Switch() for q in queues}
    for q, switch in switches.items():
        monitor.watch_source(q, switch)
    out, err = io.StringIO(), io.StringIO()
    monitor.add_listener(
        WatchOutput(
            out,
            err,
            fmt=fmt,
            kind="rq",
            where="redis://:***@cache:6379/0",
            many=len(queues) > 1,
            why_down=lambda q: "Error 111 connecting to cache:6379. Connection refused.",
            watched=lambda: len(switches),
            clock=clock,
        )
    )
    return monitor, switches, clock, out, err


def run(monitor: Monitor, clock: Clock, seconds: int) -> None:
    for _ in range(seconds):
        clock.now += 1
        monitor.tick()


def test_a_queue_down_for_150_seconds_gives_three_lines_not_150() -> None:
    monitor, switches, clock, _, err = watch(["emails"])
    run(monitor, clock, 3)
    switches["emails"].up = False
    run(monitor, clock, 150)
    lines = err.getvalue().splitlines()
    assert len(lines) == 3  # at once, after 60 s, after 120 s
    assert all(
        line.startswith("qhealth watch: cannot read rq queue 'emails' at redis://:***@cache")
        for line in lines
    )
    assert "(down 0 s;" in lines[0] and "(down 120 s;" in lines[2]
    assert "Connection refused" in lines[0]


def test_a_queue_that_reads_again_says_so_once_and_its_samples_resume() -> None:
    monitor, switches, clock, out, err = watch(["emails"])
    run(monitor, clock, 2)
    switches["emails"].up = False
    run(monitor, clock, 10)
    switches["emails"].up = True
    before = out.getvalue().count("depth")
    run(monitor, clock, 3)
    assert (
        err.getvalue().splitlines()[-1] == "qhealth watch: reading rq queue 'emails' again, after 10 s down"
    )
    assert out.getvalue().count("depth") == before + 3
    switches["emails"].up = False
    run(monitor, clock, 1)  # a new outage is reported at once, not a minute after the last line
    assert err.getvalue().splitlines()[-1].startswith("qhealth watch: cannot read rq queue 'emails'")


def test_many_queues_down_together_give_one_line_naming_a_few() -> None:
    queues = [f"q{i}" for i in range(50)]
    monitor, switches, clock, out, err = watch(queues)
    run(monitor, clock, 2)
    for switch in switches.values():
        switch.up = False
    run(monitor, clock, 5)
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert "cannot read 50 rq queues ('q0', 'q1', 'q10' and 47 more)" in lines[0]
    assert "not read 50" not in out.getvalue()  # no summary line of queues read when none was


def test_many_queues_print_one_summary_line_per_tick() -> None:
    queues = [f"q{i}" for i in range(100)]
    monitor, _, clock, out, _ = watch(queues)
    run(monitor, clock, 4)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].split()[1:5] == ["100", "queues", "depth", "200"]
