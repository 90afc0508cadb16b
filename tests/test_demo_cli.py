"""``qhealth demo``'s options: bad input is refused with one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qhealth.cli import main


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Exit status 2, one line on stderr, and nothing started (nothing printed)."""
    assert main(["demo", "--no-live", "--no-report", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("qhealth demo: ")
    return err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--duration", "0"], "--duration must be a positive number"),
        (["--duration", "nan"], "--duration must be a positive number"),
        (["--duration", "1e9"], "--duration must be a positive number and at most 86400"),
        (["--workers", "0"], "--workers must be between 1 and 500"),
        (["--rate-limit", "-3"], "--rate-limit must be a positive number"),
        (["--window", "3"], "--window must be at least 4 s"),
    ],
)
def test_a_bad_number_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    assert named in _refused(capsys, *args)


def test_a_listen_address_without_a_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--serve nowhere: listen address must be HOST:PORT" in _refused(capsys, "--serve", "nowhere")


def test_a_port_in_use_is_refused(capsys: pytest.CaptureFixture[str], busy_port: int) -> None:
    err = _refused(capsys, "--serve", f"127.0.0.1:{busy_port}")
    assert f"cannot listen on 127.0.0.1:{busy_port}" in err


def test_a_record_directory_that_is_a_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert f"--record {target}" in _refused(capsys, "--record", str(target))


def test_an_unknown_scenario_is_refused_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--scenario", "chaos"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'chaos'" in err
    assert all(name in err for name in ("boom-bust", "rate-limit", "overflow", "idle"))


def test_the_help_needs_neither_src_pool_nor_rich() -> None:
    """``qhealth --help`` builds every command's parser: the demo's must stay cheap."""
    code = (
        "import sys, qhealth.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('src_pool', 'rich', 'prometheus_client') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
