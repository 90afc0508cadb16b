"""`qhealth classify`: the spec's JSON lines, a readable table, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qhealth.cli import main

from .conftest import ROOT, TRACES


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qhealth", *args], check=False, capture_output=True, text=True, timeout=60
    )


def test_jsonl_output_has_one_spec_object_per_sample(capsys: pytest.CaptureFixture[str]) -> None:
    trace = TRACES / "transition-poll-bug.jsonl"
    assert main(["classify", str(trace), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    samples = [json.loads(line) for line in trace.read_text().splitlines()[1:] if line.strip()]
    assert len(rows) == len(samples)
    for row, sample in zip(rows, samples, strict=True):
        assert set(row) == {"t", "state", "conditions"}
        assert row["t"] == sample["t"]
        if row["conditions"]:
            assert row["state"] == row["conditions"][0]
        else:
            assert row["state"] in {"healthy", "warming_up"}
    assert {"boom_bust", "healthy", "warming_up"} == {r["state"] for r in rows}


def test_the_table_is_a_timeline_of_changes_with_reasons_and_fixes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["classify", str(TRACES / "transition-poll-bug.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "queue webhook-dispatch: sampled every 1 s, unbounded, window 60 s" in out
    assert "fix: workers poll on a fixed interval: block on the queue, or add jitter" in out
    assert "time in each state:" in out
    assert len(out.splitlines()) < 30, "a timeline of changes, not a line per sample"


def test_the_table_says_which_conditions_could_not_be_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "depth-only.jsonl"
    lines = [json.dumps({"format": "qhealth-trace", "version": 1, "queue": "list", "interval_s": 1.0})]
    nulls = dict.fromkeys(
        [
            "workers",
            "busy",
            "enqueued_total",
            "processed_total",
            "failed_total",
            "attempts_total",
            "rate_limited_total",
            "idle_s_total",
        ]
    )
    lines += [json.dumps({"t": float(t), "depth": 5 * t, **nulls}) for t in range(90)]
    trace.write_text("\n".join(lines) + "\n")
    assert main(["classify", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "not judged: rate_limited:" in out and "not judged: stalled:" in out
    assert "overflow" in out


def test_window_and_settings_can_be_overridden(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "classify",
                str(TRACES / "idle-blocking.jsonl"),
                "--window",
                "120",
                "--set",
                "idle_on=0.95",
                "--format",
                "jsonl",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first_judged = next(r for r in rows if r["state"] != "warming_up")
    assert first_judged["t"] == 120.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["classify", "/nonexistent/trace.jsonl"], "No such file or directory"),
        (["classify", "TRACE", "--set", "idle_on"], "--set expects KEY=VALUE"),
        (["classify", "TRACE", "--set", "nope=1"], "unknown classifier setting 'nope'"),
        (["classify", "TRACE", "--window", "-5"], "'window_s' must be positive"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(args: list[str], message: str) -> None:
    args = [str(TRACES / "idle-blocking.jsonl") if a == "TRACE" else a for a in args]
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_malformed_trace_is_reported_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format":"qhealth-trace","version":1,"queue":"q","interval_s":1}\n{"t":0,"depth":1}\n')
    result = run_cli("classify", str(bad), "--format", "jsonl")
    assert result.returncode == 2
    assert result.stderr.strip() == f'qhealth classify: {bad}:2: missing key "workers"'


def test_a_trace_can_come_from_standard_input() -> None:
    text = (TRACES / "idle-blocking.jsonl").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "qhealth", "classify", "-", "--format", "jsonl"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert json.loads(result.stdout.splitlines()[-1])["state"] == "idle"


def test_help_lists_the_commands_and_formats() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "classify" in result.stdout
    result = run_cli("classify", "--help")
    assert "--format" in result.stdout and "jsonl" in result.stdout and "--window" in result.stdout


def test_the_documented_example_is_what_classify_prints(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "instrument.md").read_text()
    command = "$ qhealth classify ../shared/traces/transition-poll-bug.jsonl\n"
    shown = text.split(command, 1)[1].split("```", 1)[0]
    assert main(["classify", str(TRACES / "transition-poll-bug.jsonl")]) == 0
    assert capsys.readouterr().out == shown


def test_a_queue_name_with_terminal_escapes_is_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace is data from outside: its queue name must not drive the terminal."""
    trace = TRACES / "idle-polling.jsonl"
    lines = trace.read_text().splitlines()
    header = json.loads(lines[0])
    header["queue"] = "evil\x1b[2J\rname\u202e"
    path = tmp_path / "evil.jsonl"
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert main(["classify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "evil\\x1b[2J\\rname\\u202e" in out
