"""What a first-time user tripped on at the command line (issue 16, items 14-16).

Options are checked before anything starts; the three commands that serve
``/metrics`` take the same ``--serve ADDR:PORT``; an unknown option gets the
sub-command's own usage; and each message says what the user needs to know.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from qhealth.cli import main

from .conftest import ROOT, TRACES
from .fresh_python import run_python
from .services import free_port

IDLE = str(TRACES / "idle-polling.jsonl")


def _qhealth(
    *args: str, without: str | tuple[str, ...] = (), stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``qhealth ARGS`` in a fresh interpreter (where ``without`` cannot be imported)."""
    program = "import sys; from qhealth.cli import main; sys.exit(main(sys.argv[1:]))"
    return run_python(program, *args, without=without, stdin=stdin)


def _one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"qhealth {command}: "), result.stderr
    return lines[0]


# -- 14: options checked before anything starts ------------------------------------------------


@pytest.mark.parametrize(
    ("report", "says"),
    [("/nonexistent/dir/r.html", "no directory /nonexistent/dir"), (".", "is a directory")],
)
def test_the_demo_refuses_a_report_it_could_not_write_before_running(report: str, says: str) -> None:
    started = time.monotonic()
    error = _one_line_error(_qhealth("demo", "--no-live", "--report", report), "demo")
    assert time.monotonic() - started < 10  # not after a minute of demo
    assert f"--report {report}: {says}" in error


def test_watch_refuses_a_busy_serve_address_before_touching_the_broker(busy_port: int) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: connecting would fail otherwise
    result = _qhealth(
        "watch", "--kind", "redis-list", "--queue", "q", "--url", nobody, "--serve", f"127.0.0.1:{busy_port}"
    )
    error = _one_line_error(result, "watch")
    assert error.startswith(f"qhealth watch: --serve 127.0.0.1:{busy_port}: ")
    assert f"cannot listen on 127.0.0.1:{busy_port}" in error


def test_watch_without_the_otlp_extra_says_so_before_touching_the_broker() -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    result = _qhealth(
        "watch", "--kind", "redis-list", "--queue", "q", "--url", nobody, "--otlp", without="opentelemetry"
    )
    error = _one_line_error(result, "watch")
    assert "qhealth[otlp]" in error and "cannot read" not in error


@pytest.mark.parametrize(
    ("command", "queues", "record", "says"),
    [
        (
            "watch",
            ["q"],
            "/nonexistent/dir/q.jsonl",
            "--record /nonexistent/dir/q.jsonl: no directory /nonexistent/dir",
        ),
        ("watch", ["q"], ".", "--record .: is a directory, not a file"),
        (
            "watch",
            ["q", "r"],
            str(ROOT / "README.md"),
            "several queues are recorded into a folder, and this is a file",
        ),
        ("record", ["q"], ".", "--output .: is a directory, not a file"),
    ],
)
def test_watch_refuses_a_recording_it_could_not_write_before_touching_the_broker(
    command: str, queues: list[str], record: str, says: str
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    where = ["--record", record] if command == "watch" else ["-o", record]
    names = [arg for queue in queues for arg in ("--queue", queue)]
    error = _one_line_error(
        _qhealth(command, "--kind", "redis-list", *names, "--url", nobody, *where), command
    )
    assert says in error and "cannot read" not in error


# -- 15: one name for the listen address, and each command's own usage ---------------------------


def _serving(*args: str) -> tuple[str, str]:
    """Start ``qhealth serve ARGS``, read its first line, stop it: (that line, its stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qhealth", "serve", *args, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    return first, err


def test_serve_takes_serve_addr_port_like_demo_and_watch() -> None:
    port = free_port()
    first, err = _serving(IDLE, "--serve", f"127.0.0.1:{port}")
    assert first.startswith(f"serving http://127.0.0.1:{port}/metrics")
    assert err == ""


def test_serve_still_takes_listen_and_says_it_is_now_serve() -> None:
    port = free_port()
    first, err = _serving(IDLE, "--listen", f"127.0.0.1:{port}")
    assert first.startswith(f"serving http://127.0.0.1:{port}/metrics")
    assert err.strip() == "qhealth serve: --listen is now --serve (as for demo and watch); --listen will go"


def test_serve_with_both_names_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", IDLE, "--serve", "127.0.0.1:0", "--listen", "127.0.0.1:0"]) == 2
    assert "give only --serve" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [["serve", IDLE, "--serve", "127.0.0.1:0"], ["classify", IDLE], ["report", IDLE]]
)
def test_an_unknown_option_prints_the_commands_own_usage(command: list[str]) -> None:
    result = _qhealth(*command, "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: qhealth {command[0]} ")
    assert f"qhealth {command[0]}: error: unrecognized arguments: --bogus" in result.stderr


# -- 16: messages ---------------------------------------------------------------------------------


def test_a_csv_given_to_classify_is_told_what_a_trace_is(tmp_path: Path) -> None:
    csv = tmp_path / "run.csv"
    csv.write_text("t,depth,busy,workers\n0,3,1,4\n")
    error = _one_line_error(_qhealth("classify", str(csv)), "classify")
    assert f"{csv}:1: not JSON (this looks like CSV)" in error
    assert 'a qhealth trace is JSON Lines, a header object {"format": "qhealth-trace"' in error


@pytest.mark.parametrize("piped", [False, True])
def test_classify_prints_nothing_but_the_error_for_a_bad_line(tmp_path: Path, piped: bool) -> None:
    lines = (TRACES / "idle-polling.jsonl").read_text().splitlines()
    bad = "\n".join([*lines[:100], '{"t": 999}']) + "\n"
    path = tmp_path / "bad.jsonl"
    path.write_text(bad)
    result = _qhealth("classify", "-", stdin=bad) if piped else _qhealth("classify", str(path))
    source = "<stdin>" if piped else str(path)
    assert _one_line_error(result, "classify") == f'qhealth classify: {source}:101: missing key "depth"'


def test_report_png_without_matplotlib_writes_nothing_and_says_why(tmp_path: Path) -> None:
    html, png = tmp_path / "r.html", tmp_path / "r.png"
    result = _qhealth("report", IDLE, "-o", str(html), "--png", str(png), without="matplotlib")
    error = _one_line_error(result, "report")
    assert f"--png {png}: the PNG report needs matplotlib: pip install 'qhealth[report]'" in error
    assert not html.exists() and not png.exists()


def test_when_one_of_two_conditions_clears_the_demo_says_which() -> None:
    import io

    from qhealth.cli._demo import SCENARIOS, Options, Settings, run_demo

    out = io.StringIO()
    settings = Settings(SCENARIOS["boom-bust"], duration_s=60)
    run_demo(Options(settings=settings, live=False, report=None, paced=False), out)
    changes = [line for line in out.getvalue().splitlines() if " naive      now " in line]
    both = next(i for i, line in enumerate(changes) if "(rate_limited, boom_bust)" in line)
    after = changes[both + 1]
    assert after.endswith(" cleared") and ("rate_limited cleared" in after or "boom_bust cleared" in after)
    # The line still starts as every change line does (what the end-to-end test reads).
    assert " now " in after and after.split(" now ")[1].split(";")[0] in ("rate_limited", "boom_bust")
