"""Options several commands share: the classifier's settings (``--window``,
``--set KEY=VALUE``) and where a command writes its result (``-o FILE``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._config import ClassifierConfig
from . import UsageError


def add_classifier_arguments(parser: argparse.ArgumentParser, *, window: bool = True) -> None:
    """``--window SECONDS`` (unless the command has a window of its own) and ``--set KEY=VALUE``."""
    if window:
        parser.add_argument(
            "--window",
            type=float,
            metavar="SECONDS",
            help="sliding window in seconds (default: 60; at least 8 sampling intervals)",
        )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a classifier setting (repeatable), e.g. --set idle_on=0.95",
    )


def config_from_args(window: float | None, settings: list[str]) -> ClassifierConfig:
    """The classifier settings the options describe (UsageError naming a bad one)."""
    overrides: dict[str, object] = {}
    if window is not None:
        overrides["window_s"] = window
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    try:
        return ClassifierConfig().with_overrides(overrides)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def write_output(path: str | None, text: str) -> None:
    """``text`` to the file ``-o`` names, or to standard output."""
    if path is None:
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


def writable_file(option: str, path: Path) -> None:
    """A file the command will write once it runs: refuse it before starting
    (a demo run, a connection to the broker), not after."""
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory, not a file")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: no directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")
