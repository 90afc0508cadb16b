"""``qhealth serve``: serve the metric contract on ``/metrics`` without code.

Two sources:

* recorded traces, replayed in real time (or ``--speed`` times faster) as live
  metrics and conditions: point Prometheus and the Grafana dashboards at it
  to see what a boom-bust or a 429 storm looks like, or to try alert rules;
* ``--multiprocess-dir DIR``: the files of prometheus-client's multiprocess
  mode, merged (a sidecar for gunicorn or Celery prefork workers that run
  :class:`qhealth.prometheus.MultiProcessExporter`).

The server binds 127.0.0.1 unless ``--listen`` names another address; it is
the route-table server of :mod:`qhealth._http`, so pages can be added to it.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TextIO

from .._classifier import Classifier, Health
from .._config import ClassifierConfig
from .._monitor import QueueSnapshot
from .._sample import COUNTER_FIELDS, Sample
from .._text import finding_lines
from .._trace import Trace, TraceError, read_trace
from . import UsageError
from .classify import config_from_args

DEFAULT_LISTEN = "127.0.0.1:9808"
_TICK_S = 0.25

_DESCRIPTION = f"""\
Serve qhealth's metrics (shared/spec/metrics.md) on http://ADDR:PORT/metrics.

  qhealth serve TRACE [TRACE ...]        replay recorded traces as live metrics,
                                         one queue per trace, in real time
  qhealth serve --multiprocess-dir DIR   merge prometheus-client multiprocess files

Replay: each trace's samples come out at the pace they were recorded
(--speed 10 plays ten times faster), are judged by the classifier as a live
monitor would, and are served with their conditions; a change of condition is
printed as it happens. At the end of a trace its last sample stays on show,
or with --loop the trace starts again, its counters carrying on upwards.

Listens on {DEFAULT_LISTEN} unless --listen says otherwise (0.0.0.0:PORT to
accept other hosts). Stops on Ctrl-C or SIGTERM.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve /metrics: replay traces as live metrics, or merge multiprocess files",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("traces", nargs="*", metavar="TRACE", help="trace files (JSON Lines) to replay")
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="ADDR:PORT",
        help="address to serve on (default: %(default)s; port 0 picks a free port)",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="replay this many times faster (default: %(default)s)"
    )
    parser.add_argument("--loop", action="store_true", help="start each trace again when it ends")
    parser.add_argument(
        "--multiprocess-dir",
        metavar="DIR",
        help="serve the merged files of prometheus-client's multiprocess mode in DIR",
    )
    parser.add_argument("--window", type=float, metavar="SECONDS", help="classifier window (default: 60)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a classifier setting"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the address served")
    parser.set_defaults(handler=run)


# -- replaying traces ------------------------------------------------------------------------


@dataclass
class _Track:
    """One trace being played back."""

    trace: Trace
    classifier: Classifier
    position: int = 0
    t_offset: float = 0.0
    """Added to the trace's times: grows at each loop."""
    counter_offset: dict[str, float] | None = None
    latest: QueueSnapshot | None = None

    @property
    def name(self) -> str:
        return self.trace.header.queue

    @property
    def span(self) -> float:
        """Trace time covered by one play-through, the gap to the next loop included."""
        samples = self.trace.samples
        return samples[-1].t - samples[0].t + self.trace.header.interval_s


class Replay:
    """Traces played back as live queue snapshots.

    A snapshot source for the exporters (``snapshots()``, as a monitor has):
    :meth:`advance` moves each trace to the wall time elapsed since the start
    times ``speed``, classifying every sample passed on the way, exactly as
    ``qhealth classify`` would. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        traces: Sequence[Trace],
        *,
        speed: float = 1.0,
        loop: bool = False,
        config: ClassifierConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[QueueSnapshot, Health | None], None] | None = None,
    ) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        names = [t.header.queue for t in traces]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two traces have the same queue name: {', '.join(duplicates)}")
        empty = [t.header.queue for t in traces if not t.samples]
        if empty:
            raise ValueError(f"trace of queue {empty[0]!r} has no samples")
        self._tracks = [_Track(t, Classifier(t.header.interval_s, config, t.header.capacity)) for t in traces]
        self._speed = speed
        self._loop = loop
        self._clock = clock
        self._start = clock()
        self._on_change = on_change
        self._lock = threading.Lock()
        self._snapshots: Mapping[str, QueueSnapshot] = {}

    def snapshots(self) -> Mapping[str, QueueSnapshot]:
        return self._snapshots

    @property
    def finished(self) -> bool:
        """Every trace has played to its end (never, with ``loop``)."""
        return not self._loop and all(tr.position >= len(tr.trace.samples) for tr in self._tracks)

    def advance(self) -> None:
        """Play every trace up to now."""
        with self._lock:
            elapsed = (self._clock() - self._start) * self._speed
            for track in self._tracks:
                self._advance(track, elapsed)
            self._snapshots = {tr.name: tr.latest for tr in self._tracks if tr.latest is not None}

    def _advance(self, track: _Track, elapsed: float) -> None:
        samples = track.trace.samples
        t0 = samples[0].t
        while True:
            if track.position >= len(samples):
                if not self._loop:
                    return
                self._wrap(track)
            sample = samples[track.position]
            if sample.t - t0 + track.t_offset > elapsed:
                return
            self._play(track, sample)
            track.position += 1

    def _wrap(self, track: _Track) -> None:
        """Start the trace again, shifted so that time and counters carry on."""
        first, last = track.trace.samples[0], track.trace.samples[-1]
        offsets = dict(track.counter_offset or {})
        for name in COUNTER_FIELDS:
            a, b = getattr(first, name), getattr(last, name)
            if a is not None and b is not None:
                offsets[name] = offsets.get(name, 0.0) + b - a
        track.counter_offset = offsets
        track.t_offset += track.span
        track.position = 0

    def _play(self, track: _Track, sample: Sample) -> None:
        header = track.trace.header
        t = sample.t - track.trace.samples[0].t + track.t_offset
        changes: dict[str, object] = {"t": t}
        for name, offset in (track.counter_offset or {}).items():
            value = getattr(sample, name)
            if value is not None:
                changes[name] = type(value)(value + offset)
        shifted = replace(sample, **changes)  # type: ignore[arg-type]
        previous = track.latest.health if track.latest is not None else None
        health = track.classifier.update(shifted)
        track.latest = QueueSnapshot(
            queue=header.queue,
            sample=shifted,
            health=health,
            capacity=header.capacity,
            polls_hit_total=0,
            polls_empty_total=0,
            interval_s=header.interval_s,
            sampled_at=time.time(),
        )
        if self._on_change is not None and (
            previous is None or previous.state != health.state or previous.conditions != health.conditions
        ):
            self._on_change(track.latest, previous)


# -- the command ---------------------------------------------------------------------------------


def _printer(out: TextIO) -> Callable[[QueueSnapshot, Health | None], None]:
    def on_change(snapshot: QueueSnapshot, previous: Health | None) -> None:
        health = snapshot.health
        conditions = ", ".join(health.ordered_conditions) or "-"
        out.write(f"{snapshot.queue}  t={snapshot.sample.t:>8.1f}  {health.state:<13} {conditions}\n")
        for line in finding_lines(health, indent=4):
            out.write(line + "\n")
        out.flush()

    return on_change


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from .. import prometheus, status_page
    from .._http import HttpServer, parse_listen

    try:
        parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    if bool(args.traces) == bool(args.multiprocess_dir):
        raise UsageError("give trace files to replay, or --multiprocess-dir DIR (one of the two)")

    out = sys.stdout
    replay: Replay | None = None
    if args.multiprocess_dir:
        try:
            registry = prometheus.multiprocess_registry(args.multiprocess_dir)
        except ValueError as exc:
            raise UsageError(f"--multiprocess-dir: {exc}") from None
        what = f"the multiprocess files in {args.multiprocess_dir}"
    else:
        config = config_from_args(args.window, args.set)
        try:
            traces = [read_trace(path) for path in args.traces]
            replay = Replay(
                traces,
                speed=args.speed,
                loop=args.loop,
                config=config,
                on_change=None if args.quiet else _printer(out),
            )
        except (TraceError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        registry = CollectorRegistry()
        prometheus.register(replay, registry)
        queues = ", ".join(t.header.queue for t in traces)
        plural = "s" if len(traces) != 1 else ""
        what = f"{len(traces)} replayed trace{plural} ({queues}) at speed {args.speed:g}"

    server = HttpServer(args.listen)
    server.add_route("/metrics", prometheus.metrics_route(registry))
    page = status_page.mount(server, replay) if replay is not None else None  # `/`: the status page
    try:
        server.start()
    except OSError as exc:
        raise UsageError(str(exc.strerror or exc)) from None

    stop = threading.Event()
    previous_term = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out.write(f"serving {server.url}/metrics: {what}; Ctrl-C stops\n")
    out.flush()
    ended = False
    try:
        while not stop.is_set():
            if replay is not None:
                replay.advance()
                if page is not None:
                    page.poll()
                if replay.finished and not ended:
                    ended = True
                    if not args.quiet:
                        out.write("every trace has ended: their last samples stay on show\n")
                        out.flush()
            stop.wait(_TICK_S)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        server.close()
    return 0
