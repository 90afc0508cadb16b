"""Starting the exports a command asks for: a ``/metrics`` server with the
status page beside it, OTLP.

``qhealth watch`` and ``qhealth demo`` take the same options and start the
same things; this is the one place that does it, so that both say the same
when it fails and close what they started, in reverse order.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

from .._monitor import Monitor


def add_export_arguments(parser: argparse.ArgumentParser, serve_help: str) -> None:
    """``--serve ADDR:PORT``, ``--otlp``, ``--otlp-endpoint``, ``--otlp-protocol``."""
    parser.add_argument("--serve", metavar="ADDR:PORT", help=serve_help)
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="export over OTLP, configured by the OTEL_EXPORTER_OTLP_* variables",
    )
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="the collector's URL, read as OTEL_EXPORTER_OTLP_ENDPOINT is (http/protobuf: "
        "http://host:4318, to which /v1/metrics is appended; grpc: http://host:4317); implies --otlp",
    )
    parser.add_argument(
        "--otlp-protocol", choices=("grpc", "http/protobuf"), help="OTLP protocol (implies --otlp)"
    )


@dataclass
class Exports:
    """What was started: how to stop it, and one line per export saying where it is."""

    closers: list[Callable[[], object]] = field(default_factory=list)
    running: list[tuple[str, str]] = field(default_factory=list)
    """(kind, where): ("serving", "http://127.0.0.1:9808"), ("exporting", "over OTLP (grpc) to ...")."""
    url: str | None = None
    """The metrics server's base URL, when serving."""

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()


@dataclass(frozen=True)
class Asked:
    """The exports a command was asked for (the options of :func:`add_export_arguments`)."""

    serve: str | None = None
    otlp: bool = False
    otlp_endpoint: str | None = None
    otlp_protocol: str | None = None

    @classmethod
    def of(cls, options: object) -> Asked:
        """From parsed arguments, or any object with the same attributes."""
        return cls(**{name: getattr(options, name) for name in cls.__dataclass_fields__})


def start_exports(monitor: Monitor, asked: Asked) -> Exports:
    """Start what is asked, each on its own fresh registry / meter provider.

    Raises ValueError naming the option when an export cannot start (a bad or
    busy address, a missing extra); whatever had started by then is closed.
    """
    serve, otlp_endpoint, otlp_protocol = asked.serve, asked.otlp_endpoint, asked.otlp_protocol
    exports = Exports()
    try:
        if serve:
            from prometheus_client import CollectorRegistry

            from .. import prometheus, status_page
            from .._http import parse_listen

            try:
                parse_listen(serve)
            except ValueError as exc:
                raise ValueError(f"--serve {serve}: {exc}") from None
            page = status_page.StatusPage(monitor)  # `/`: conditions at a glance
            exports.closers.append(page.close)
            try:
                server = prometheus.serve(
                    monitor, listen=serve, registry=CollectorRegistry(), routes={"/": page.route}
                )
            except (ValueError, OSError) as exc:
                raise ValueError(f"--serve {serve}: {exc}") from None
            exports.closers.append(server.close)
            exports.url = server.url
            exports.running.append(("serving", server.url))
        if asked.otlp or otlp_endpoint or otlp_protocol:
            from .. import otel

            try:
                export = otel.setup_otlp(monitor, protocol=otlp_protocol, endpoint=otlp_endpoint)
            except (ValueError, ImportError) as exc:
                raise ValueError(str(exc)) from None
            exports.closers.append(export.shutdown)
            exports.running.append(("exporting", f"over OTLP ({export.protocol}) to {export.endpoint}"))
    except BaseException:
        exports.close()
        raise
    return exports
