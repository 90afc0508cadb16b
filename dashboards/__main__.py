"""``python3 -m dashboards [--check]``: write (or check) ``dashboards/queue-health.json``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DASHBOARD_FILE = Path(__file__).resolve().parent / "queue-health.json"


#: What to do when grafanalib is missing: one line, not a traceback.
NEEDS_GRAFANALIB = (
    "python3 -m dashboards needs grafanalib: pip install -e '.[dashboards]' "
    "(or pip install 'grafanalib>=0.7.1')"
)


def render() -> str:
    from . import queue_health  # imports grafanalib

    data = queue_health.to_json_data(queue_health.build())
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m dashboards", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    try:
        fresh = render()
    except ModuleNotFoundError as exc:
        if exc.name != "grafanalib" and not (exc.name or "").startswith("grafanalib."):
            raise
        print(NEEDS_GRAFANALIB, file=sys.stderr)
        return 2
    if args.check:
        current = DASHBOARD_FILE.read_text(encoding="utf-8") if DASHBOARD_FILE.exists() else ""
        if current != fresh:
            print(f"{DASHBOARD_FILE} is stale: run `python3 -m dashboards`", file=sys.stderr)
            return 1
        return 0
    DASHBOARD_FILE.write_text(fresh, encoding="utf-8")
    print(f"wrote {DASHBOARD_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
