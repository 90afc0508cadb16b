"""The ``qhealth`` command line.

Each sub-command lives in its own module here, exposing ``register(subparsers)``
which adds its parser and sets ``run`` (``args -> exit status``) as the
handler. Command modules import their heavy dependencies inside ``run``, so
``qhealth --help`` stays fast and needs only the core.

Exit status: 0 on success, 2 on bad input (one line on stderr, no traceback),
1 when a command ran but found what it was asked to find (e.g. a failing check).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("demo", "classify", "report", "rules", "trace-to-promtool", "watch", "serve")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: its description is laid out as written (examples
    keep their lines)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="qhealth",
        description="See and fix the health of worker pools: boom-bust polling, 429 storms, "
        "stalls, overflow and idle capacity.",
    )
    parser.add_argument("--version", action="version", version=f"qhealth {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        module.register(subparsers)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, and say what a sub-command does not know with that sub-command's
    own usage (argparse alone would print the top-level one)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = commands.choices.get(getattr(args, "command", None) or "")
        (command or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args))
    except UsageError as exc:
        print(f"qhealth {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `qhealth classify ... | head`
        sys.stderr.close()
        return 0
