"""Grafana dashboards for qhealth, generated with grafanalib (``python3 -m dashboards``)."""
