"""Reading and writing traces (``shared/spec/trace-format.md``).

A trace is JSON Lines: a header object, then one sample object per line. The
reader is strict where a mistake would silently change a verdict (a missing
key, a wrong type, time going backwards, busy > workers) and lenient where the
spec asks for forward compatibility (unknown keys, blank lines). Every error
names the file and the line.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeGuard

from ._sample import SAMPLE_FIELDS, TRACE_FORMAT, TRACE_VERSION, Sample, TraceHeader

#: Counts are integers; only the time and the idle worker-seconds are not.
_INT_FIELDS = frozenset(SAMPLE_FIELDS) - {"t", "idle_s_total"}
_NULLABLE = frozenset(SAMPLE_FIELDS) - {"t", "depth"}

#: Every number stays below this: counters are 64-bit in Prometheus and OpenTelemetry.
MAX_VALUE = 2**63
#: Sampling intervals a trace may declare: a millisecond to a day.
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.001, 86_400.0
#: A sample line is about 200 bytes; a line longer than this is refused before it is parsed.
MAX_LINE_BYTES = 64 * 1024
#: Queue names longer than this are refused (a label value, shown on every page).
MAX_QUEUE_NAME = 256


class TraceError(ValueError):
    """A trace that does not follow the format. ``str()`` is one line:
    ``FILE:LINE: what is wrong``."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Trace:
    header: TraceHeader
    samples: list[Sample]


def _is_int(value: Any) -> bool:
    # JSON writers sometimes emit 3.0 for 3; accept integral floats, never bools.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_header(obj: Any, source: str, line: int) -> TraceHeader:
    if not isinstance(obj, dict):
        raise TraceError(source, line, "the header must be a JSON object")
    if obj.get("format") != TRACE_FORMAT:
        raise TraceError(
            source, line, f'header: "format" must be "{TRACE_FORMAT}", got {obj.get("format")!r}'
        )
    version = obj.get("version")
    if version != TRACE_VERSION or isinstance(version, bool):
        raise TraceError(source, line, f'header: unsupported "version" {version!r} (this reader knows 1)')
    queue = obj.get("queue")
    if not isinstance(queue, str) or not queue:
        raise TraceError(source, line, 'header: "queue" must be a non-empty string')
    if len(queue) > MAX_QUEUE_NAME:
        raise TraceError(source, line, f'header: "queue" is longer than {MAX_QUEUE_NAME} characters')
    interval = obj.get("interval_s")
    if not _is_number(interval) or not MIN_INTERVAL_S <= float(interval) <= MAX_INTERVAL_S:
        raise TraceError(
            source,
            line,
            f'header: "interval_s" must be a number of seconds from {MIN_INTERVAL_S:g} to '
            f"{MAX_INTERVAL_S:g}, got {_shown(interval)}",
        )
    capacity = obj.get("capacity")
    if capacity is not None and (not _is_int(capacity) or not 0 < capacity < MAX_VALUE):
        raise TraceError(
            source,
            line,
            f'header: "capacity" must be a positive integer below 2^63 or null, got {_shown(capacity)}',
        )
    return TraceHeader(
        queue=queue, interval_s=float(interval), capacity=None if capacity is None else int(capacity)
    )


def _parse_sample(obj: Any, source: str, line: int, previous: Sample | None) -> Sample:
    if not isinstance(obj, dict):
        raise TraceError(source, line, "a sample must be a JSON object")
    values: dict[str, Any] = {}
    for key in SAMPLE_FIELDS:
        if key not in obj:
            raise TraceError(source, line, f'missing key "{key}"')
        value = obj[key]
        if value is None:
            if key not in _NULLABLE:
                raise TraceError(source, line, f'"{key}" must be a number, got null')
            values[key] = None
            continue
        if key in _INT_FIELDS:
            if not _is_int(value):
                raise TraceError(source, line, f'"{key}" must be an integer, got {_shown(value)}')
            value = int(value)
        elif not _is_number(value):
            raise TraceError(source, line, f'"{key}" must be a finite number, got {_shown(value)}')
        else:
            value = float(value)
        if key != "t" and value < 0:
            raise TraceError(source, line, f'"{key}" must not be negative, got {_shown(value)}')
        if abs(value) >= MAX_VALUE:
            raise TraceError(source, line, f'"{key}" must be below 2^63, got {_shown(value)}')
        values[key] = value
    busy, workers = values["busy"], values["workers"]
    if busy is not None and workers is not None and busy > workers:
        raise TraceError(source, line, f'"busy" ({busy}) exceeds "workers" ({workers})')
    if previous is not None and values["t"] <= previous.t:
        raise TraceError(source, line, f'"t" must increase: {values["t"]} after {previous.t}')
    return Sample(**values)


def _not_a_trace(first_line: str) -> str:
    """What a first line that is not JSON is not, and what a trace looks like."""
    stripped = first_line.strip()
    looks = " (this looks like CSV)" if "," in stripped and not stripped.startswith(("{", "[")) else ""
    return (
        f"not JSON{looks}: a qhealth trace is JSON Lines, a header object "
        f'{{"format": "{TRACE_FORMAT}", "version": {TRACE_VERSION}, "queue": ..., "interval_s": ...}} '
        "then one sample object per line"
    )


def _shown(value: Any) -> str:
    """A value for an error message: huge numbers shortened, never thousands of digits."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _lines(stream: IO[str], source: str) -> Iterator[tuple[int, str]]:
    """The stream's lines, numbered; a line over :data:`MAX_LINE_BYTES` is an
    error before it is read whole (memory stays bounded whatever the input)."""
    number = 0
    while True:
        text = stream.readline(MAX_LINE_BYTES + 1)
        if not text:
            return
        number += 1
        if len(text) > MAX_LINE_BYTES and not text.endswith("\n"):
            raise TraceError(source, number, f"line longer than {MAX_LINE_BYTES:,} characters")
        yield number, text


def iter_trace(stream: IO[str], source: str = "<trace>") -> Iterator[TraceHeader | Sample]:
    """Yield the header, then each sample, validating as it goes."""
    header: TraceHeader | None = None
    previous: Sample | None = None
    for number, text in _lines(stream, source):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            if header is None:  # the first line: most likely not a trace at all (a CSV export...)
                raise TraceError(source, number, _not_a_trace(text)) from None
            raise TraceError(source, number, f"not valid JSON ({exc})") from None
        if header is None:
            header = _parse_header(obj, source, number)
            yield header
        else:
            previous = _parse_sample(obj, source, number, previous)
            yield previous
    if header is None:
        raise TraceError(source, None, "empty trace: no header line")


def read_trace(path: str | os.PathLike[str] | IO[str]) -> Trace:
    """Read and validate a whole trace file (or an open text stream)."""
    if isinstance(path, str | os.PathLike):
        source = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as stream:
                items = list(iter_trace(stream, source))
        except OSError as exc:
            raise TraceError(source, None, exc.strerror or str(exc)) from None
        except UnicodeDecodeError as exc:
            raise TraceError(source, None, f"not UTF-8 text ({exc.reason})") from None
    else:
        items = list(iter_trace(path, getattr(path, "name", "<trace>")))
    header = items[0]
    assert isinstance(header, TraceHeader)
    samples = [s for s in items[1:] if isinstance(s, Sample)]
    return Trace(header, samples)


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class TraceWriter:
    """Write a trace line by line (``qhealth record``, ``demo --record``).

    Each sample is flushed as it is written, so a trace cut short by a crash
    is still readable up to its last whole line.
    """

    def __init__(self, path: str | os.PathLike[str] | IO[str], header: TraceHeader) -> None:
        if isinstance(path, str | os.PathLike):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._stream: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        else:
            self._stream = path
            self._owned = False
        self._last_t: float | None = None
        self._stream.write(_dump(header.to_dict()) + "\n")
        self._stream.flush()

    def write(self, sample: Sample) -> None:
        if self._last_t is not None and sample.t <= self._last_t:
            raise ValueError(f"trace sample times must increase: t={sample.t} after t={self._last_t}")
        self._last_t = sample.t
        self._stream.write(_dump(sample.to_dict()) + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Close the file (idempotent); a stream passed in stays open."""
        if self._owned and not self._stream.closed:
            self._stream.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_trace(
    path: str | os.PathLike[str] | IO[str], header: TraceHeader, samples: Iterable[Sample]
) -> None:
    """Write a whole trace."""
    with TraceWriter(path, header) as writer:
        for sample in samples:
            writer.write(sample)


def dumps_trace(header: TraceHeader, samples: Iterable[Sample]) -> str:
    """A trace as a string (tests, small fixtures)."""
    buffer = io.StringIO()
    write_trace(buffer, header, samples)
    return buffer.getvalue()
