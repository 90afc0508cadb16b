"""qhealth: see and fix the health of worker pools.

The core (probe, monitor, window, classifier, traces) needs nothing outside
the standard library. Exporters and framework integrations live in their own
modules and import their dependencies when used:

* ``qhealth.prometheus``: prometheus-client collector and ``/metrics`` server
* ``qhealth.otel``: OpenTelemetry instruments and OTLP set-up
* ``qhealth.integrations.*``: asyncio, concurrent.futures, Celery, RQ, arq
"""

from importlib.metadata import PackageNotFoundError, version

from ._classifier import (
    HEALTHY,
    SEVERITY,
    WARMING_UP,
    Classifier,
    Condition,
    Finding,
    Health,
    classify,
    judge,
    state_of,
)
from ._config import ClassifierConfig
from ._monitor import Listener, Monitor, QueueSnapshot, default_monitor
from ._probe import Probe
from ._ratelimit import is_rate_limited, parse_retry_after, retry_after, status_of
from ._record import TraceRecorder
from ._sample import SAMPLE_FIELDS, Sample, TraceHeader
from ._source import Reading, Source
from ._trace import Trace, TraceError, TraceWriter, read_trace, write_trace
from ._window import Window

try:
    __version__ = version("qhealth")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "HEALTHY",
    "SAMPLE_FIELDS",
    "SEVERITY",
    "WARMING_UP",
    "Classifier",
    "ClassifierConfig",
    "Condition",
    "Finding",
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
    "TraceWriter",
    "Window",
    "__version__",
    "classify",
    "default_monitor",
    "is_rate_limited",
    "judge",
    "parse_retry_after",
    "read_trace",
    "retry_after",
    "state_of",
    "status_of",
    "write_trace",
]
