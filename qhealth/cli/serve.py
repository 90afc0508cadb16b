"""``qhealth serve``: serve the metric contract on ``/metrics`` without code.

Two sources:

* recorded traces, replayed in real time (or ``--speed`` times faster) as live
  metrics and conditions: point Prometheus and the Grafana dashboards at it
  to see what a boom-bust or a 429 storm looks like, or to try alert rules;
* ``--multiprocess-dir DIR``: the files of prometheus-client's multiprocess
  mode, merged (a sidecar for gunicorn or Celery prefork workers that run
  :class:`qhealth.prometheus.MultiProcessExporter`).

The server binds 127.0.0.1 unless ``--serve`` names another address; it is
the route-table server of :mod:`qhealth._http`, so pages can be added to it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import TextIO

from .._classifier import Health
from .._monitor import Listener, QueueSnapshot
from .._text import finding_lines, printable
from .._trace import TraceError, read_trace
from ..replay import Replay, replay_monitor
from . import UsageError
from ._options import add_classifier_arguments, config_from_args

DEFAULT_LISTEN = "127.0.0.1:9808"
_IDLE_WAIT_S = 0.25

_HELP = "serve /metrics: replay traces as live metrics, or merge multiprocess files"

_DESCRIPTION = f"""\
Serve qhealth's metrics (shared/spec/metrics.md) on http://ADDR:PORT/metrics.

  qhealth serve TRACE [TRACE ...]        replay recorded traces as live metrics,
                                         one queue per trace, in real time
  qhealth serve --multiprocess-dir DIR   merge prometheus-client multiprocess files

Replay: each trace's samples come out at the pace they were recorded
(--speed 10 plays ten times faster), are judged by the monitor as a live
queue's would be, and are served with their conditions; a change of condition
is printed as it happens. At the end of a trace its queue is reported down
(qhealth_source_up 0: no fresh samples), or with --loop the trace starts
again, its counters carrying on upwards.

Listens on {DEFAULT_LISTEN} unless --serve says otherwise (0.0.0.0:PORT to
accept other hosts): the option `qhealth demo` and `qhealth watch` take too
(--listen, its former name, still works). Stops on Ctrl-C or SIGTERM.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help=_HELP, description=_DESCRIPTION)
    parser.add_argument("traces", nargs="*", metavar="TRACE", help="trace files (JSON Lines) to replay")
    parser.add_argument(
        "--serve",
        metavar="ADDR:PORT",
        help=f"address to serve on (default: {DEFAULT_LISTEN}; port 0 picks a free port)",
    )
    parser.add_argument("--listen", metavar="ADDR:PORT", help=argparse.SUPPRESS)  # the former name
    parser.add_argument(
        "--speed", type=float, default=1.0, help="replay this many times faster (default: %(default)s)"
    )
    parser.add_argument("--loop", action="store_true", help="start each trace again when it ends")
    parser.add_argument(
        "--multiprocess-dir",
        metavar="DIR",
        help="serve the merged files of prometheus-client's multiprocess mode in DIR",
    )
    add_classifier_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="print only the address served")
    parser.set_defaults(handler=run)


# -- the command ---------------------------------------------------------------------------------


class ChangePrinter(Listener):
    """Prints each queue's verdict when it changes (and the reasons and fixes)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last: dict[str, Health] = {}

    def on_tick(self, snapshot: QueueSnapshot) -> None:
        health, previous = snapshot.health, self._last.get(snapshot.queue)
        self._last[snapshot.queue] = health
        if (
            previous is not None
            and previous.state == health.state
            and previous.conditions == health.conditions
        ):
            return
        conditions = ", ".join(health.ordered_conditions) or "-"
        self._out.write(
            f"{printable(snapshot.queue)}  t={snapshot.sample.t:>8.1f}  {health.state:<13} {conditions}\n"
        )
        for line in finding_lines(health, indent=4):
            self._out.write(line + "\n")
        self._out.flush()


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from .. import prometheus, status_page
    from .._http import HttpServer, parse_listen

    if args.serve is not None and args.listen is not None:
        raise UsageError("--listen is the former name of --serve: give only --serve")
    option, listen = ("--listen", args.listen) if args.listen is not None else ("--serve", args.serve)
    listen = listen or DEFAULT_LISTEN
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
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
            replay = replay_monitor(traces, speed=args.speed, loop=args.loop, config=config)
        except (TraceError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        if not args.quiet:
            replay.monitor.add_listener(ChangePrinter(out))
        registry = CollectorRegistry()
        prometheus.register(replay.monitor, registry)
        queues = ", ".join(t.header.queue for t in traces)
        plural = "s" if len(traces) != 1 else ""
        what = f"{len(traces)} replayed trace{plural} ({queues}) at speed {args.speed:g}"

    server = HttpServer(listen)
    server.add_route("/metrics", prometheus.metrics_route(registry))
    if replay is not None:
        status_page.mount(server, replay.monitor)  # `/`: the status page
    try:
        server.start()
    except OSError as exc:
        raise UsageError(f"{option} {listen}: {exc.strerror or exc}") from None
    if option == "--listen":
        print(
            "qhealth serve: --listen is now --serve (as for demo and watch); --listen will go",
            file=sys.stderr,
        )

    stop = threading.Event()
    previous_term = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out.write(f"serving {server.url}/metrics: {what}; Ctrl-C stops\n")
    out.flush()
    ended = False
    tick_s = replay.tick_s if replay is not None else _IDLE_WAIT_S
    next_tick = time.monotonic()
    try:
        while not stop.is_set():
            if replay is not None:
                replay.monitor.tick()
                if replay.ended and not ended:
                    ended = True
                    if not args.quiet:
                        out.write(
                            "every trace has ended: their queues are now reported down (no fresh samples)\n"
                        )
                        out.flush()
            next_tick += tick_s
            stop.wait(max(0.0, next_tick - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        server.close()
    return 0
