"""`import qhealth` needs only the standard library."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = (
    "redis",
    "celery",
    "kombu",
    "rq",
    "arq",
    "prometheus_client",
    "opentelemetry",
    "rich",
    "grpc",
    "aio_pika",
    "matplotlib",
    "src_pool",
)


def test_importing_qhealth_loads_no_optional_dependency() -> None:
    code = (
        "import sys, qhealth, qhealth.integrations.asyncio_queue, qhealth.cli;"
        "qhealth.cli.build_parser();"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OPTIONAL!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_version_comes_from_the_package_metadata() -> None:
    import qhealth

    assert qhealth.__version__ and qhealth.__version__ != "0.0.0"


def test_the_prometheus_exporter_loads_neither_the_status_page_nor_the_report() -> None:
    """Layers point one way: the exporter serves the routes it is given; the
    command line mounts the status page."""
    code = (
        "import sys, qhealth.prometheus;"
        "print(sorted(m for m in sys.modules if m in ('qhealth.status_page', 'qhealth.report')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
