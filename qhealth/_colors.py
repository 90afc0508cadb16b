"""The colour of each state, one table for every picture qhealth draws.

The HTML report, the status page and the demo's live view paint the same
states; they read this table so that a condition has one colour everywhere
(the dashboards use the same palette). Here rather than in the report so that
drawing a page does not load the report.
"""

from __future__ import annotations

from ._classifier import HEALTHY, WARMING_UP

#: Band and badge colours of each state (the dashboard's colours).
STATE_COLORS: dict[str, str] = {
    "stalled": "#8f1d1d",
    "overflow": "#e02f44",
    "rate_limited": "#8f3bb8",
    "boom_bust": "#ff9830",
    "idle": "#3274d9",
    WARMING_UP: "#c7c7c7",
    HEALTHY: "#73bf69",
}
