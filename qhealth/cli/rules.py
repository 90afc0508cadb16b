"""``qhealth rules``: the Prometheus rules and alerts for your scrape interval."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from . import UsageError
from ._options import add_classifier_arguments, config_from_args, write_output

if TYPE_CHECKING:
    from ..rules import RulesConfig

_HELP = "write the Prometheus rules and alerts for a scrape interval"

_DESCRIPTION = """\
Write the Prometheus recording and alerting rules that judge every queue the way
the in-process classifier does (compiled from the same definition), for the
interval at which Prometheus scrapes qhealth: the window is the classifier's
(at least 8 scrapes), and the rule group is evaluated once per scrape.

  qhealth rules --scrape-interval 30s -o qhealth.rules.yml
  promtool check rules qhealth.rules.yml
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("rules", help=_HELP, description=_DESCRIPTION)
    add_rules_options(parser)
    parser.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    parser.set_defaults(handler=run)


def add_rules_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scrape-interval",
        default="15s",
        metavar="DURATION",
        help="how often Prometheus scrapes qhealth, e.g. 15s, 30s, 1m (default: 15s)",
    )
    parser.add_argument(
        "--selector",
        default="",
        metavar="MATCHERS",
        help="extra label matchers for every qhealth series, e.g. 'job=\"billing\"'",
    )
    parser.add_argument(
        "--depth",
        choices=("max", "sum"),
        default="max",
        help="how the depth reported by several processes combines: max (one shared broker "
        "queue, the default) or sum (a queue of its own in each process)",
    )
    add_classifier_arguments(parser, window=False)


def rules_config(args: argparse.Namespace) -> RulesConfig:
    """The RulesConfig the options describe (UsageError naming a bad one)."""
    from ..rules import RulesConfig, parse_duration

    try:
        interval = parse_duration(args.scrape_interval)
    except ValueError:
        raise UsageError(
            f"--scrape-interval: not a duration: {args.scrape_interval!r} (e.g. 15s, 1m)"
        ) from None
    if not 0.001 <= interval <= 86400:
        raise UsageError(f"--scrape-interval must be between 1ms and 1d, got {args.scrape_interval!r}")
    classifier = config_from_args(None, args.set)
    try:
        return RulesConfig(
            classifier=classifier,
            scrape_interval_s=interval,
            selector=args.selector,
            depth_aggregation=args.depth,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from ..rules import build, render

    write_output(args.output, render(build(rules_config(args))))
    return 0
