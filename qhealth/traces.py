"""Traces: what a monitor saw of one queue over time (``shared/spec/trace-format.md``).

The most used names are also at the top level (``qhealth.read_trace``,
``qhealth.Sample``...); everything about traces is here::

    from qhealth.traces import SAMPLE_FIELDS, TraceWriter, iter_trace
"""

from ._record import TraceRecorder
from ._sample import SAMPLE_FIELDS, Sample, TraceHeader
from ._trace import Trace, TraceError, TraceWriter, dumps_trace, iter_trace, read_trace, write_trace

__all__ = [
    "SAMPLE_FIELDS",
    "Sample",
    "Trace",
    "TraceError",
    "TraceHeader",
    "TraceRecorder",
    "TraceWriter",
    "dumps_trace",
    "iter_trace",
    "read_trace",
    "write_trace",
]
