"""Reading and writing traces: strict where a mistake changes a verdict, errors
that name the file and the line."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qhealth import Sample, TraceError, TraceHeader, classify, read_trace, write_trace
from qhealth._trace import dumps_trace
from qhealth.traces import SAMPLE_FIELDS

HEADER = {"format": "qhealth-trace", "version": 1, "queue": "q", "interval_s": 1.0, "capacity": None}
GOOD = {
    "t": 0.0,
    "depth": 1,
    "workers": 2,
    "busy": 1,
    "enqueued_total": 5,
    "processed_total": 4,
    "failed_total": 0,
    "attempts_total": 4,
    "rate_limited_total": 0,
    "idle_s_total": 1.5,
}


def write_lines(tmp_path: Path, *objects: Any, raw: str | None = None) -> Path:
    path = tmp_path / "trace.jsonl"
    text = "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objects)
    path.write_text(raw if raw is not None else text + "\n")
    return path


def sample_at(t: float, **changes: Any) -> dict[str, Any]:
    return {**GOOD, "t": t, **changes}


def test_a_trace_round_trips(tmp_path: Path) -> None:
    header = TraceHeader(queue="emails", interval_s=5.0, capacity=100)
    samples = [
        Sample(
            t=float(t),
            depth=t,
            workers=3,
            busy=1,
            enqueued_total=t,
            processed_total=0,
            failed_total=0,
            attempts_total=0,
            rate_limited_total=0,
            idle_s_total=None,
        )
        for t in range(5)
    ]
    write_trace(tmp_path / "out" / "t.jsonl", header, samples)
    trace = read_trace(tmp_path / "out" / "t.jsonl")
    assert trace.header == header
    assert trace.samples == samples


def test_written_lines_follow_the_spec_key_order() -> None:
    text = dumps_trace(TraceHeader("q", 1.0), [Sample(t=0.0, depth=0)])
    header, line = (json.loads(x) for x in text.splitlines())
    assert header == HEADER
    assert list(line) == list(SAMPLE_FIELDS)


def test_blank_lines_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path, {**HEADER, "generator": "x"}, "", sample_at(0, note="hi"), "  ", sample_at(1)
    )
    assert len(read_trace(path).samples) == 2


def test_integral_floats_are_accepted_for_counts(tmp_path: Path) -> None:
    path = write_lines(tmp_path, HEADER, sample_at(0, depth=3.0))
    assert read_trace(path).samples[0].depth == 3


@pytest.mark.parametrize(
    ("lines", "line_number", "message"),
    [
        ([HEADER, "{not json"], 2, "not valid JSON"),
        ([HEADER, {k: v for k, v in GOOD.items() if k != "busy"}], 2, 'missing key "busy"'),
        ([HEADER, sample_at(0, depth="3")], 2, '"depth" must be an integer'),
        ([HEADER, sample_at(0, depth=1.5)], 2, '"depth" must be an integer'),
        ([HEADER, sample_at(0, busy=True)], 2, '"busy" must be an integer'),
        ([HEADER, sample_at(0, depth=None)], 2, '"depth" must be a number, got null'),
        ([HEADER, {**GOOD, "t": None}], 2, '"t" must be a number, got null'),
        ([HEADER, sample_at(0, idle_s_total="x")], 2, '"idle_s_total" must be a finite number'),
        ([HEADER, sample_at(0, processed_total=10**4000)], 2, '"processed_total" must be below 2^63'),
        ([HEADER, sample_at(0, processed_total=2**63)], 2, '"processed_total" must be below 2^63'),
        ([HEADER, sample_at(0, idle_s_total=1e300)], 2, '"idle_s_total" must be below 2^63'),
        ([HEADER, sample_at(0, processed_total=-1)], 2, "must not be negative"),
        ([HEADER, sample_at(0, busy=3, workers=2)], 2, '"busy" (3) exceeds "workers" (2)'),
        ([HEADER, sample_at(1), sample_at(1)], 3, '"t" must increase'),
        ([HEADER, sample_at(2), sample_at(1)], 3, '"t" must increase'),
        ([HEADER, "[1, 2]"], 2, "a sample must be a JSON object"),
        ([{**HEADER, "format": "other"}], 1, '"format" must be "qhealth-trace"'),
        ([{**HEADER, "version": 2}], 1, 'unsupported "version"'),
        ([{**HEADER, "interval_s": 0}], 1, '"interval_s" must be a number of seconds from 0.001 to 86400'),
        ([{**HEADER, "interval_s": 1e-300}], 1, '"interval_s" must be a number of seconds from 0.001'),
        ([{**HEADER, "interval_s": 1e9}], 1, '"interval_s" must be a number of seconds from 0.001'),
        ([{**HEADER, "capacity": -5}], 1, '"capacity" must be a positive integer below 2^63 or null'),
        ([{**HEADER, "queue": "q" * 300}], 1, '"queue" is longer than 256 characters'),
        ([{**HEADER, "queue": ""}], 1, '"queue" must be a non-empty string'),
    ],
)
def test_bad_input_names_the_file_the_line_and_the_problem(
    tmp_path: Path, lines: list[Any], line_number: int, message: str
) -> None:
    path = write_lines(tmp_path, *lines)
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert caught.value.line == line_number
    assert str(caught.value).startswith(f"{path}:{line_number}: ")
    assert message in str(caught.value)


def test_a_huge_line_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    """A 100 MB line once cost 250 MB of memory: now reading stops at 64 KiB."""
    import tracemalloc

    path = tmp_path / "huge.jsonl"
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps(HEADER) + "\n")
        out.write('{"t": 0, "pad": "' + "x" * 20_000_000 + '"}\n')
    tracemalloc.start()
    with pytest.raises(TraceError, match=r"huge\.jsonl:2: line longer than 65,536 characters"):
        read_trace(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000, f"reading took {peak:,} bytes"


def test_an_integer_of_thousands_of_digits_is_refused_with_a_short_message(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path, HEADER, raw=json.dumps(HEADER) + "\n" + '{"t": 0, "depth": 1' + "0" * 4000 + "}\n"
    )
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert len(str(caught.value)) < 300


def test_an_empty_file_has_no_header(tmp_path: Path) -> None:
    path = write_lines(tmp_path, raw="\n\n")
    with pytest.raises(TraceError, match="empty trace"):
        read_trace(path)


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="No such file"):
        read_trace(tmp_path / "nope.jsonl")


def test_a_reset_counter_is_read_as_a_restart_not_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path, HEADER, sample_at(0, processed_total=500), sample_at(1, processed_total=3))
    assert [s.processed_total for s in read_trace(path).samples] == [500, 3]


# -- properties ---------------------------------------------------------------

_counts = st.one_of(st.none(), st.integers(0, 10**6))


@st.composite
def valid_traces(draw: st.DrawFn) -> tuple[TraceHeader, list[Sample]]:
    interval = draw(st.sampled_from([0.5, 1.0, 5.0, 15.0]))
    capacity = draw(st.one_of(st.none(), st.integers(1, 10_000)))
    n = draw(st.integers(0, 40))
    t = 0.0
    samples = []
    for _ in range(n):
        t += draw(st.floats(0.01, 3 * interval))
        workers = draw(st.one_of(st.none(), st.integers(0, 50)))
        busy = draw(st.one_of(st.none(), st.integers(0, workers if workers is not None else 50)))
        idle = draw(st.one_of(st.none(), st.floats(0, 1e6)))
        samples.append(
            Sample(
                t=round(t, 3),
                depth=draw(st.integers(0, 10**6)),
                workers=workers,
                busy=busy,
                enqueued_total=draw(_counts),
                processed_total=draw(_counts),
                failed_total=draw(_counts),
                attempts_total=draw(_counts),
                rate_limited_total=draw(_counts),
                idle_s_total=idle,
            )
        )
    return TraceHeader("prop", interval, capacity), samples


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_traces())
def test_any_valid_trace_reads_back_and_classifies_without_error(
    trace: tuple[TraceHeader, list[Sample]],
) -> None:
    header, samples = trace
    text = dumps_trace(header, samples)
    read = read_trace(io.StringIO(text))
    verdicts = classify(read.samples, header.interval_s, capacity=header.capacity)
    assert len(verdicts) == len(samples)
    for health in verdicts:
        assert health.state in {"healthy", "warming_up", *health.conditions}
        if health.idle_ratio is not None:
            assert 0.0 <= health.idle_ratio <= 1.0
        if health.workers_recommended is not None:
            assert health.workers_recommended >= 0


_json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(SAMPLE_FIELDS), value=_json_values, drop=st.booleans())
def test_a_corrupted_sample_line_gives_a_clean_error_or_a_valid_sample(
    key: str, value: Any, drop: bool
) -> None:
    line = dict(GOOD)
    if drop:
        del line[key]
    else:
        line[key] = value
    text = json.dumps(HEADER) + "\n" + json.dumps(line) + "\n"
    try:
        trace = read_trace(io.StringIO(text))
    except TraceError as exc:
        assert exc.line == 2
        assert "\n" not in str(exc)
    else:
        (sample,) = trace.samples
        assert not drop
        assert all(getattr(sample, f) is None or math.isfinite(getattr(sample, f)) for f in SAMPLE_FIELDS)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_clean_error_or_a_trace(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        read_trace(io.StringIO(text))
    except TraceError as exc:
        assert "\n" not in str(exc)
