"""OTLP export to a real receiver (gRPC ``MetricsService/Export`` and HTTP
``/v1/metrics``, built from opentelemetry-proto): the names, units, attributes
and values that arrive, set up from the standard ``OTEL_EXPORTER_OTLP_*``
variables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest

import qhealth
import qhealth.conditions
from qhealth.cli._exports import Asked, start_exports
from qhealth.otel import Messaging, OtlpExport, http_metrics_url, setup_otlp

from .export_support import busy_monitor, spec_rows
from .otel_support import OtlpReceiver, prometheus_name

Protocol = Literal["grpc", "http"]
PROTOCOLS: list[Protocol] = ["grpc", "http"]


@pytest.fixture(params=PROTOCOLS)
def receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    with OtlpReceiver(request.param) as r:
        yield r


def _env_for(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the standard variables at the receiver, as a deployment would."""
    for name in (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    base = f"http://127.0.0.1:{receiver.port}"
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc" if receiver.protocol == "grpc" else "http/protobuf"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)  # HTTP appends /v1/metrics itself
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "qhealth-test")


def _exported(monitor: qhealth.Monitor, probe: qhealth.Probe) -> None:
    probe.observe_duration(0.05)
    probe.observe_wait(0.02)
    monitor.tick(11.0)


@pytest.fixture
def exported(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OtlpReceiver, qhealth.Monitor, OtlpExport]]:
    _env_for(receiver, monkeypatch)
    monitor, probe = busy_monitor()
    export = setup_otlp(monitor)
    _exported(monitor, probe)
    try:
        receiver.wait_for({r.otel for r in spec_rows()})
        yield receiver, monitor, export
    finally:
        export.shutdown()


def test_the_protocol_comes_from_the_standard_variables(
    exported: tuple[OtlpReceiver, qhealth.Monitor, OtlpExport],
) -> None:
    receiver, _, export = exported
    assert export.protocol == ("grpc" if receiver.protocol == "grpc" else "http/protobuf")
    assert export.failures == 0


def test_every_metric_arrives_with_its_unit_and_kind(
    exported: tuple[OtlpReceiver, qhealth.Monitor, OtlpExport],
) -> None:
    receiver, _, _ = exported
    seen = {p.metric: p for p in receiver.points()}
    kinds = {"gauge": "gauge", "counter": "sum", "histogram": "histogram"}
    for row in spec_rows():
        point = seen[row.otel]
        assert (point.unit, point.kind) == (row.unit, kinds[row.kind]), row.otel
        if row.kind == "counter":
            assert point.monotonic, row.otel
        # The names a Collector writing to Prometheus makes of them: the contract's.
        assert prometheus_name(point.metric, point.unit, point.kind, point.monotonic) == row.prometheus


def test_attributes_are_queue_and_the_contract_labels_only(
    exported: tuple[OtlpReceiver, qhealth.Monitor, OtlpExport],
) -> None:
    receiver, _, _ = exported
    extra = {r.otel: r.labels for r in spec_rows()}
    for point in receiver.points():
        assert set(point.attributes) == {"queue", *extra[point.metric]}, point.metric
        assert point.attributes["queue"] == "emails"


def test_values_that_arrive_are_what_the_monitor_saw(
    exported: tuple[OtlpReceiver, qhealth.Monitor, OtlpExport],
) -> None:
    receiver, monitor, _ = exported
    snap = monitor.snapshot("emails")
    assert snap is not None
    latest = {(k[0], tuple(sorted(k[1]))): p.value for k, p in receiver.latest().items()}
    q = (("queue", "emails"),)
    assert latest[("qhealth.queue.depth", q)] == snap.sample.depth
    assert latest[("qhealth.workers", q)] == 4
    assert latest[("qhealth.items.enqueued", q)] == 10
    assert latest[("qhealth.items.processed", (("outcome", "success"), *q))] == 9
    assert latest[("qhealth.items.processed", (("outcome", "error"), *q))] == 1
    assert latest[("qhealth.attempts", q)] == 20
    assert latest[("qhealth.rate_limited", q)] == 5
    assert latest[("qhealth.worker.idle", q)] == pytest.approx(snap.sample.idle_s_total)
    for condition in qhealth.conditions.SEVERITY:
        active = 1.0 if condition in snap.health.conditions else 0.0
        assert latest[("qhealth.condition", (("condition", str(condition)), *q))] == active
    # The histogram counts what was observed after the instruments existed: one item.
    assert latest[("qhealth.item.duration", q)] == 1


def test_the_service_name_comes_from_the_environment(
    exported: tuple[OtlpReceiver, qhealth.Monitor, OtlpExport],
) -> None:
    receiver, _, _ = exported
    request = receiver.requests[0]
    attributes = {kv.key: kv.value.string_value for kv in request.resource_metrics[0].resource.attributes}
    assert attributes["service.name"] == "qhealth-test"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_arguments_override_the_variables(protocol: Protocol, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")  # would be refused if read
    with OtlpReceiver(protocol) as receiver:
        monitor, probe = busy_monitor()
        export = setup_otlp(
            monitor,
            protocol="grpc" if protocol == "grpc" else "http/protobuf",
            endpoint=receiver.endpoint,
            interval_s=0.2,
        )
        try:
            _exported(monitor, probe)
            receiver.wait_for({"qhealth.queue.depth", "qhealth.item.duration"})
        finally:
            export.shutdown()


def test_an_unsupported_protocol_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        setup_otlp()


def test_credentials_in_the_endpoint_are_not_shown() -> None:
    export = setup_otlp(endpoint="http://user:s3cret@127.0.0.1:1/v1/metrics", interval_s=60)
    try:
        assert "s3cret" not in export.endpoint and "s3cret" not in repr(export)
    finally:
        export.shutdown(timeout_s=1)


def _throttles() -> list[object]:
    import logging

    from qhealth.otel import EXPORTER_LOGGERS

    return [
        f
        for name in EXPORTER_LOGGERS
        for f in logging.getLogger(name).filters
        if type(f).__name__ == "_ThrottleFilter"
    ]


def test_a_bad_setting_leaves_nothing_running() -> None:
    before = len(_throttles())
    monitor, _ = busy_monitor()
    with pytest.raises(ValueError, match="buckets"):
        setup_otlp(monitor, endpoint="http://127.0.0.1:1/v1/metrics", buckets=())
    assert len(_throttles()) == before


def test_shutting_down_twice_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    export = setup_otlp(endpoint="http://127.0.0.1:1/v1/metrics", interval_s=60)
    export.shutdown(timeout_s=1)
    caplog.clear()
    export.shutdown(timeout_s=1)
    assert not caplog.records, [r.getMessage() for r in caplog.records]


# -- the endpoint given on the command line ----------------------------------------------


@pytest.mark.parametrize(
    ("given", "posted_to"),
    [
        ("http://collector:4318", "http://collector:4318/v1/metrics"),
        ("http://collector:4318/", "http://collector:4318/v1/metrics"),
        ("https://gateway/otlp", "https://gateway/otlp/v1/metrics"),
        ("http://collector:4318/v1/metrics", "http://collector:4318/v1/metrics"),
    ],
)
def test_an_http_endpoint_is_a_base_url_as_in_the_standard_variable(given: str, posted_to: str) -> None:
    assert http_metrics_url(given) == posted_to


def test_an_endpoint_that_is_no_url_is_refused_with_its_value_but_no_credentials() -> None:
    with pytest.raises(ValueError, match="collector:4318"):
        http_metrics_url("collector:4318")
    with pytest.raises(ValueError) as err:
        http_metrics_url("user:s3cret@collector:4318")
    assert "s3cret" not in str(err.value) and "collector:4318" in str(err.value)


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_the_endpoint_flag_posts_where_the_standard_variable_does(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--otlp-endpoint http://host:port`` and ``OTEL_EXPORTER_OTLP_ENDPOINT``
    with the same value both reach the receiver's ``/v1/metrics`` (it answers
    404 anywhere else and keeps nothing)."""
    for name in ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monitor, probe = busy_monitor()
    with OtlpReceiver("http") as receiver:
        base = f"http://127.0.0.1:{receiver.port}"
        if how == "variable":
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
        exports = start_exports(monitor, Asked(otlp=True, otlp_endpoint=base if how == "flag" else None))
        try:
            _exported(monitor, probe)
            receiver.wait_for({"qhealth.queue.depth"})
            assert exports.running == [("exporting", f"over OTLP (http/protobuf) to {base}/v1/metrics")]
        finally:
            exports.close()


def test_messaging_conventions_arrive_beside_qhealths_names_only_when_asked(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env_for(receiver, monkeypatch)
    monitor, probe = busy_monitor()
    export = setup_otlp(monitor, messaging=Messaging("rabbitmq", consumer_group="mailers"))
    try:
        _exported(monitor, probe)
        seen = receiver.wait_for(
            {"messaging.process.duration", "messaging.client.consumed.messages", "qhealth.item.duration"}
        )
    finally:
        export.shutdown()
    consumed = seen["messaging.client.consumed.messages"]
    assert (consumed.kind, consumed.monotonic, consumed.unit) == ("sum", True, "{message}")
    assert consumed.attributes == {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": "emails",
        "messaging.consumer.group.name": "mailers",
        "messaging.operation.name": "process",
    }
    assert seen["messaging.process.duration"].kind == "histogram"


def test_without_asking_no_messaging_convention_is_exported(
    exported: tuple[OtlpReceiver, qhealth.Monitor, OtlpExport],
) -> None:
    receiver, _, _ = exported
    assert not [p for p in receiver.points() if p.metric.startswith("messaging.")]


def test_the_messaging_conventions_can_be_turned_on_from_the_environment(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that ``qhealth watch --otlp`` and ``qhealth demo --otlp`` can emit them too."""
    _env_for(receiver, monkeypatch)
    monkeypatch.setenv("QHEALTH_OTEL_MESSAGING_SYSTEM", "redis")
    monitor, probe = busy_monitor()
    export = setup_otlp(monitor)
    try:
        _exported(monitor, probe)
        seen = receiver.wait_for({"messaging.client.consumed.messages"})
    finally:
        export.shutdown()
    assert seen["messaging.client.consumed.messages"].attributes["messaging.system"] == "redis"
