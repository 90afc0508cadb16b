"""docs/reference-pool.md's "On RabbitMQ" example runs against the local RabbitMQ and prints what the
page says."""

from __future__ import annotations

import asyncio

from src_pool.rabbit_broker import RabbitBroker
from tests.integration_brokers import amqp_url, unique
from tests.readme import example, run_example

__all__ = ["amqp_url"]  # fixtures used by this module

PAGE_URL = "amqp://guest:guest@127.0.0.1:5672/"


def test_the_rabbitmq_example_runs_and_prints_its_counts(amqp_url: str) -> None:
    program, shown = example("## On RabbitMQ", page="docs/reference-pool.md")
    assert PAGE_URL in program and '"emails"' in program
    queue = unique("docs-emails")  # the page's queue name, made unique for this run
    try:
        lines = run_example(program.replace('"emails"', f'"{queue}"'))
    finally:
        asyncio.run(RabbitBroker(amqp_url, queue).delete())
    assert lines == shown.splitlines()
