"""Helpers shared by the export tests (no tests here): the metric contract read
from the spec file itself, a monitor driven by a fake clock, and scraping a registry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import qhealth
import qhealth.conditions

from .clocks import FakeClock
from .conftest import SHARED

SPEC = SHARED / "spec" / "metrics.md"

_SECTION_KIND = {
    "Sampled gauges": "gauge",
    "Counters": "counter",
    "Histograms": "histogram",
    "Classifier outputs": "gauge",
}


@dataclass(frozen=True)
class SpecRow:
    prometheus: str
    otel: str
    unit: str
    kind: str
    labels: frozenset[str]
    """Labels besides queue."""


def spec_rows(path: Path = SPEC) -> list[SpecRow]:
    """Every metric row of shared/spec/metrics.md."""
    rows: list[SpecRow] = []
    kind = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            kind = next((k for title, k in _SECTION_KIND.items() if line[3:].startswith(title)), "")
        match = re.match(r"\| `(qhealth_\w+)` \| `(qhealth\.[\w.]+)` \(`([^`]+)`\) \|(.*)", line)
        if match:
            assert kind, f"metric row outside a known section: {line}"
            cells = match.group(4).split("|")
            # Tables with a labels column have it first after the OTel column.
            labels = set(re.findall(r"`(\w+)` =", cells[0])) if len(cells) > 2 else set()
            rows.append(SpecRow(match[1], match[2], match[3], kind, frozenset(labels)))
    return rows


def fake_monitor(interval: float = 1.0, **config: object) -> tuple[qhealth.Monitor, FakeClock]:
    clock = FakeClock()
    cfg = qhealth.ClassifierConfig(**config) if config else None  # type: ignore[arg-type]
    return qhealth.Monitor(interval=interval, clock=clock, config=cfg), clock


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of one scrape."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def families(registry: CollectorRegistry) -> dict[str, str]:
    """{family name as exposed: type} of one scrape (counters with _total)."""
    out: dict[str, str] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = family.type
    return out


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


def busy_monitor() -> tuple[qhealth.Monitor, qhealth.Probe]:
    """A queue where every field is known, with polls, latencies, a capacity
    and an oldest age: a scrape of it holds every family of the contract."""
    monitor, clock = fake_monitor(window_s=8.0)
    probe = monitor.watch("emails", workers=4, capacity=100, oldest_age=lambda: 2.5)
    probe.polled(True)
    probe.polled(False)
    for t in range(1, 11):
        probe.enqueued()
        probe.started()
        clock.now = t - 0.5
        if t == 4:
            probe.failed()
        else:
            probe.succeeded()
        probe.observe_duration(0.05)
        probe.observe_wait(0.02)
        probe.attempted(2)
        probe.rate_limited(t % 2)
        clock.now = float(t)
        monitor.tick()
    return monitor, probe


class Sidecar:
    """A source that knows only the depth of a bare list (trace fields null)."""

    def __init__(self) -> None:
        sample = qhealth.Sample(t=1.0, depth=7)
        health = qhealth.Health(t=1.0, state=qhealth.conditions.WARMING_UP)
        self._snap = qhealth.QueueSnapshot("bare", sample, health, None, 0, 0)

    def snapshots(self) -> Mapping[str, qhealth.QueueSnapshot]:
        return {"bare": self._snap}
