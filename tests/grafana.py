"""Reading a generated Grafana dashboard in tests: its panels and their queries."""

from __future__ import annotations

from typing import Any


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row."""
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) with the dashboard variables filled in as Grafana would."""
    queries = []
    for panel in panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$queue", ".+")
            queries.append((panel["title"], expr))
    return queries
