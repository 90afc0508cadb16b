"""The prometheus-client path: every metric of the contract, with the spec's
names, types, labels and units, read from the monitor at scrape time."""

from __future__ import annotations

import gzip
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

import qhealth
from qhealth import _contract as c
from qhealth._http import HttpServer, Request, Response, parse_listen
from qhealth.prometheus import DEFAULT_LISTEN, QHealthCollector, register, serve

from .export_support import Sidecar, busy_monitor, fake_monitor, families, labels, scrape, spec_rows

CONDITIONS = {"stalled", "overflow", "rate_limited", "boom_bust", "idle"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_the_contract_module_matches_the_spec_file() -> None:
    rows = {r.prometheus: r for r in spec_rows()}
    assert len(rows) == 19, "the spec lists 19 metrics"
    ours = {m.prometheus: m for m in c.METRICS}
    assert set(ours) == set(rows)
    for name, row in rows.items():
        m = ours[name]
        assert (m.otel, m.unit, m.kind.value, set(m.labels)) == (row.otel, row.unit, row.kind, row.labels), (
            name
        )


def test_a_full_scrape_has_every_family_of_the_spec_with_its_type(registry: CollectorRegistry) -> None:
    monitor, _ = busy_monitor()
    register(monitor, registry)
    assert families(registry) == {r.prometheus: r.kind for r in spec_rows()}


def test_every_series_carries_queue_and_only_the_labels_of_the_spec(registry: CollectorRegistry) -> None:
    monitor, _ = busy_monitor()
    register(monitor, registry)
    allowed = {r.prometheus: r.labels for r in spec_rows()}
    for (name, lbls), _value in scrape(registry).items():
        family = next(f for f in allowed if name == f or name.startswith(f + "_"))
        keys = {k for k, _ in lbls} - {"le"}
        assert keys == {"queue", *allowed[family]}, name
        assert dict(lbls)["queue"] == "emails"


def test_gauges_and_counters_are_the_monitors_latest_sample(registry: CollectorRegistry) -> None:
    monitor, _ = busy_monitor()
    register(monitor, registry)
    got = scrape(registry)
    snap = monitor.snapshot("emails")
    assert snap is not None
    q = labels(queue="emails")
    assert got[("qhealth_queue_depth", q)] == snap.sample.depth == 0
    assert got[("qhealth_workers", q)] == 4
    assert got[("qhealth_workers_busy", q)] == 0
    assert got[("qhealth_queue_capacity", q)] == 100
    assert got[("qhealth_queue_oldest_age_seconds", q)] == 2.5
    assert got[("qhealth_items_enqueued_total", q)] == 10
    assert got[("qhealth_attempts_total", q)] == 20
    assert got[("qhealth_rate_limited_total", q)] == 5
    assert got[("qhealth_worker_idle_seconds_total", q)] == pytest.approx(snap.sample.idle_s_total)


def test_processed_items_split_into_success_and_error(registry: CollectorRegistry) -> None:
    monitor, _ = busy_monitor()
    register(monitor, registry)
    got = scrape(registry)
    assert got[("qhealth_items_processed_total", labels(queue="emails", outcome="success"))] == 9
    assert got[("qhealth_items_processed_total", labels(queue="emails", outcome="error"))] == 1


def test_polls_are_split_by_result(registry: CollectorRegistry) -> None:
    monitor, _ = busy_monitor()
    register(monitor, registry)
    got = scrape(registry)
    assert got[("qhealth_polls_total", labels(queue="emails", result="hit"))] == 1
    assert got[("qhealth_polls_total", labels(queue="emails", result="empty"))] == 1


def test_polls_are_absent_for_blocking_workers(registry: CollectorRegistry) -> None:
    monitor, clock = fake_monitor()
    probe = monitor.watch("blocking", workers=2)
    probe.enqueued()
    probe.started()
    probe.succeeded()
    clock.now = 1.0
    monitor.tick()
    register(monitor, registry)
    assert not [k for k in scrape(registry) if k[0] == "qhealth_polls_total"]


def test_the_condition_gauge_has_one_series_per_condition_all_zero_while_warming_up(
    registry: CollectorRegistry,
) -> None:
    monitor, clock = fake_monitor()
    monitor.watch("new", workers=1)
    clock.now = 1.0
    monitor.tick()
    register(monitor, registry)
    got = {dict(k[1])["condition"]: v for k, v in scrape(registry).items() if k[0] == "qhealth_condition"}
    assert got == dict.fromkeys(CONDITIONS, 0.0)


def test_a_condition_turns_its_series_to_one(registry: CollectorRegistry) -> None:
    monitor, clock = fake_monitor(window_s=8.0)
    probe = monitor.watch("stuck", workers=2)
    probe.enqueued(5)  # items wait, nobody takes them: stalled once the window is full
    register(monitor, registry)
    for t in range(1, 12):
        clock.now = float(t)
        monitor.tick()
    got = {dict(k[1])["condition"]: v for k, v in scrape(registry).items() if k[0] == "qhealth_condition"}
    assert got["stalled"] == 1.0
    assert {k for k, v in got.items() if v} == {"stalled"}


def test_ratios_and_recommended_workers_come_from_the_verdict(registry: CollectorRegistry) -> None:
    monitor, _ = busy_monitor()
    register(monitor, registry)
    got = scrape(registry)
    health = monitor.health("emails")
    assert health is not None and health.idle_ratio is not None and health.workers_recommended is not None
    q = labels(queue="emails")
    assert got[("qhealth_idle_ratio", q)] == pytest.approx(health.idle_ratio)
    assert got[("qhealth_workers_recommended", q)] == health.workers_recommended


def test_unknown_fields_give_absent_series_never_a_fake_zero(registry: CollectorRegistry) -> None:
    register(Sidecar(), registry)
    assert {k[0] for k in scrape(registry)} == {
        "qhealth_queue_depth",
        "qhealth_condition",
        "qhealth_source_up",  # always present for a watched queue
    }


def test_a_sampled_queue_is_up_with_the_time_of_its_sample(registry: CollectorRegistry) -> None:
    monitor, clock = fake_monitor()
    monitor.watch("q", workers=1)
    clock.now = 1.0
    monitor.tick()
    register(monitor, registry)
    got = scrape(registry)
    assert got[("qhealth_source_up", labels(queue="q"))] == 1
    stamp = got[("qhealth_last_sample_timestamp_seconds", labels(queue="q"))]
    assert abs(stamp - time.time()) < 60, "Unix time of the sample"


def test_while_a_source_is_down_its_gauges_are_withdrawn_and_its_conditions_read_zero(
    registry: CollectorRegistry,
) -> None:
    monitor, clock = fake_monitor(window_s=4.0)
    failing = {"now": False}

    def depth() -> int:
        if failing["now"]:
            raise ConnectionError("redis is down")
        return 9

    monitor.watch("q", depth=depth, workers=2, capacity=10)  # items wait, nothing processed: stalled
    for t in range(1, 12):
        clock.now = float(t)
        monitor.tick()
    register(monitor, registry)
    before = scrape(registry)
    assert before[("qhealth_condition", labels(queue="q", condition="stalled"))] == 1
    failing["now"] = True
    clock.now = 12.0
    monitor.tick()
    after = scrape(registry)
    names = {name for name, _ in after}
    assert after[("qhealth_source_up", labels(queue="q"))] == 0
    assert (
        after[("qhealth_last_sample_timestamp_seconds", labels(queue="q"))]
        == (before[("qhealth_last_sample_timestamp_seconds", labels(queue="q"))])
    )
    for gone in ("qhealth_queue_depth", "qhealth_queue_capacity", "qhealth_workers", "qhealth_workers_busy"):
        assert gone not in names, f"{gone} served from a stale sample"
    assert {v for (name, _), v in after.items() if name == "qhealth_condition"} == {0.0}
    assert after[("qhealth_items_processed_total", labels(queue="q", outcome="success"))] == 0, (
        "counters keep their last value"
    )


def test_a_collector_that_saw_the_queue_up_reports_it_down_when_its_source_fails(
    registry: CollectorRegistry,
) -> None:
    """Registered before the ticks (the usual order), the collector follows
    the monitor's down notice instead of serving its last good tick."""
    monitor, clock = fake_monitor()
    state = {"up": True}

    class Flaky:
        unknown: Mapping[str, str] = {}

        def read(self) -> qhealth.Reading:
            if not state["up"]:
                raise ConnectionError("down")
            return qhealth.Reading(depth=4, workers=1)

    monitor.watch_source("flaky", Flaky())
    register(monitor, registry)
    clock.now = 1.0
    monitor.tick()
    state["up"] = False
    clock.now = 2.0
    monitor.tick()
    got = scrape(registry)
    assert got[("qhealth_source_up", labels(queue="flaky"))] == 0
    assert ("qhealth_queue_depth", labels(queue="flaky")) not in got


def test_histograms_accumulate_the_observations_drained_at_each_tick(registry: CollectorRegistry) -> None:
    monitor, clock = fake_monitor()
    probe = monitor.watch("lat", workers=1)
    register(monitor, registry)
    for d in (0.003, 0.2, 7.0):
        probe.observe_duration(d)
    clock.now = 1.0
    monitor.tick()
    probe.observe_duration(0.2)
    clock.now = 2.0
    monitor.tick()
    got = scrape(registry)

    def bucket(le: str) -> float:
        return got[("qhealth_item_duration_seconds_bucket", labels(queue="lat", le=le))]

    assert (bucket("0.001"), bucket("0.005"), bucket("0.25"), bucket("10.0"), bucket("+Inf")) == (
        0,
        1,
        3,
        4,
        4,
    )
    assert got[("qhealth_item_duration_seconds_count", labels(queue="lat"))] == 4
    assert got[("qhealth_item_duration_seconds_sum", labels(queue="lat"))] == pytest.approx(7.403)
    assert got[("qhealth_item_wait_seconds_count", labels(queue="lat"))] == 0


def test_an_unwatched_queue_leaves_the_scrape(registry: CollectorRegistry) -> None:
    monitor, _ = busy_monitor()
    register(monitor, registry)
    monitor.unwatch("emails")
    assert scrape(registry) == {}


def test_the_collector_works_with_the_default_registry() -> None:
    monitor, _ = busy_monitor()
    collector = register(monitor)
    try:
        text = generate_latest(REGISTRY).decode()
        assert 'qhealth_items_enqueued_total{queue="emails"} 10.0' in text
        assert "python_gc_objects_collected_total" in text  # the default registry's own metrics still there
    finally:
        REGISTRY.unregister(collector)
        collector.close()


def test_registering_a_second_collector_in_one_registry_is_refused(registry: CollectorRegistry) -> None:
    monitor, _ = busy_monitor()
    register(monitor, registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(monitor, registry)


def test_bad_buckets_are_refused_at_construction() -> None:
    monitor, _ = fake_monitor()
    with pytest.raises(ValueError, match="buckets"):
        QHealthCollector(monitor, buckets=(1.0, 0.5))


# -- the HTTP endpoint ------------------------------------------------------------------


@pytest.fixture
def served(registry: CollectorRegistry) -> Iterator[HttpServer]:
    monitor, _ = busy_monitor()
    server = serve(monitor, listen="127.0.0.1:0", registry=registry)
    try:
        yield server
    finally:
        server.close()


def test_serve_answers_a_scrape_with_the_metrics(served: HttpServer) -> None:
    with urllib.request.urlopen(served.url + "/metrics", timeout=5) as response:
        body = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/plain")
    assert 'qhealth_workers{queue="emails"} 4.0' in body


def test_serve_gzips_when_the_scraper_accepts_it(served: HttpServer) -> None:
    request = urllib.request.Request(served.url + "/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert b"qhealth_queue_depth" in gzip.decompress(response.read())


def test_serve_answers_openmetrics_when_asked(served: HttpServer) -> None:
    request = urllib.request.Request(
        served.url + "/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read().decode()
    assert "# UNIT qhealth_worker_idle_seconds seconds" in body
    assert body.endswith("# EOF\n")


def test_an_unknown_path_is_404(served: HttpServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(served.url + "/nope", timeout=5)
    assert err.value.code == 404
    err.value.close()


def test_a_route_can_be_added_to_a_running_server(served: HttpServer) -> None:
    served.add_route("/", lambda request: Response(b"<p>status</p>", content_type="text/html"))
    with urllib.request.urlopen(served.url + "/", timeout=5) as response:
        assert response.read() == b"<p>status</p>"


def test_a_failing_route_answers_500_and_the_server_keeps_serving(served: HttpServer) -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    served.add_route("/broken", broken)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(served.url + "/broken", timeout=5)
    assert err.value.code == 500
    err.value.close()
    with urllib.request.urlopen(served.url + "/metrics", timeout=5) as response:
        assert response.status == 200


def test_the_default_listen_address_is_loopback() -> None:
    assert parse_listen(DEFAULT_LISTEN)[0] == "127.0.0.1"
    assert parse_listen("9808") == ("127.0.0.1", 9808)
    with HttpServer("0") as server:
        assert server.address[0] == "127.0.0.1" and server.address[1] > 0


@pytest.mark.parametrize("bad", [":9808", "localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_a_bad_listen_address_is_refused_with_its_name(bad: str) -> None:
    with pytest.raises(ValueError, match=r"listen|port"):
        parse_listen(bad)


def test_a_port_in_use_says_which_address() -> None:
    with HttpServer("127.0.0.1:0") as first:
        port = first.address[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            HttpServer(f"127.0.0.1:{port}").start()


# -- consistency under load -------------------------------------------------------------


@pytest.mark.slow
def test_a_scrape_during_heavy_load_is_one_consistent_tick(registry: CollectorRegistry) -> None:
    """A thread hammers the probe while the monitor ticks every 5 ms and the
    test scrapes: every scrape must hold values of one tick (the derived depth
    equals enqueued - processed - busy) and whole histograms."""
    monitor = qhealth.Monitor(interval=0.005)
    probe = monitor.watch("hot", workers=1)
    register(monitor, registry)
    stop = threading.Event()

    def pool() -> None:
        p = probe.local()
        i = 0
        while not stop.is_set():
            p.enqueued(2)
            p.started()
            p.failed() if i % 7 == 0 else p.succeeded()
            p.observe_duration(0.001 * (i % 50))
            i += 1

    worker = threading.Thread(target=pool)
    worker.start()
    monitor.start()
    checked = 0
    try:
        while checked < 200:
            got = scrape(registry)
            q = labels(queue="hot")
            if ("qhealth_queue_depth", q) not in got:
                continue
            enq = got[("qhealth_items_enqueued_total", q)]
            ok = got[("qhealth_items_processed_total", labels(queue="hot", outcome="success"))]
            err = got[("qhealth_items_processed_total", labels(queue="hot", outcome="error"))]
            busy = got[("qhealth_workers_busy", q)]
            assert got[("qhealth_queue_depth", q)] == max(enq - ok - err - busy, 0)
            buckets = sorted(
                (float(dict(k[1])["le"]), v)
                for k, v in got.items()
                if k[0].endswith("duration_seconds_bucket")
            )
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), "buckets are cumulative"
            assert counts[-1] == got[("qhealth_item_duration_seconds_count", q)]
            checked += 1
    finally:
        stop.set()
        worker.join()
        monitor.stop()
    assert enq > 1000, "the pool really was under load"
