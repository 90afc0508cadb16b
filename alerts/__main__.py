"""``python3 -m alerts [--check]``: write (or check) ``alerts/qhealth.rules.yml``.

The committed file is for Prometheus' default 15 s scrape interval; for another,
``qhealth rules --scrape-interval 30s -o qhealth.rules.yml`` writes your own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qhealth import rules

RULES_FILE = Path(__file__).resolve().parent / "qhealth.rules.yml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m alerts", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    fresh = rules.render(rules.build())
    if args.check:
        current = RULES_FILE.read_text(encoding="utf-8") if RULES_FILE.exists() else ""
        if current != fresh:
            print(f"{RULES_FILE} is stale: run `python3 -m alerts`", file=sys.stderr)
            return 1
        return 0
    RULES_FILE.write_text(fresh, encoding="utf-8")
    print(f"wrote {RULES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
