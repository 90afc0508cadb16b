"""Prometheus rules and alerts for qhealth, generated from :mod:`alerts.config`."""
