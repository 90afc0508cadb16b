"""qhealth: see and fix the health of worker pools.

The core (probe, monitor, classifier, traces) needs nothing outside the
standard library. Exporters and framework integrations live in their own
modules and import their dependencies when used:

* ``qhealth.conditions``, ``qhealth.traces``, ``qhealth.ratelimit``, ``qhealth.redact``: the rest
  of the core's public names
* ``qhealth.prometheus``: prometheus-client collector and ``/metrics`` server
* ``qhealth.otel``: OpenTelemetry instruments and OTLP set-up
* ``qhealth.rules``: the Prometheus rules, for any scrape interval
* ``qhealth.integrations.*``: asyncio, concurrent.futures, Celery, RQ, arq
* ``qhealth.sidecar``, ``qhealth.brokers``: queues watched from outside
"""

from importlib.metadata import PackageNotFoundError, version

from ._classifier import Classifier, Health, classify
from ._condition import Condition
from ._config import ClassifierConfig
from ._monitor import Listener, Monitor, QueueSnapshot, default_monitor
from ._probe import Probe
from ._record import TraceRecorder
from ._sample import Sample, TraceHeader
from ._source import Reading, Source
from ._trace import Trace, TraceError, read_trace, write_trace

try:
    __version__ = version("qhealth")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

#: The public face: at most twenty names. The rest is in named submodules:
#: qhealth.conditions, qhealth.traces, qhealth.ratelimit, qhealth.redact, qhealth.replay,
#: qhealth.rules, qhealth.prometheus, qhealth.otel, qhealth.integrations.*,
#: qhealth.sidecar.
__all__ = [
    "Classifier",
    "ClassifierConfig",
    "Condition",
    "Health",
    "Listener",
    "Monitor",
    "Probe",
    "QueueSnapshot",
    "Reading",
    "Sample",
    "Source",
    "Trace",
    "TraceError",
    "TraceHeader",
    "TraceRecorder",
    "classify",
    "default_monitor",
    "read_trace",
    "write_trace",
]
