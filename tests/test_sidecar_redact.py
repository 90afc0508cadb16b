"""Broker URLs shown without their secrets."""

from __future__ import annotations

import pytest

from qhealth.sidecar import redact_url, scrub


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://app:s3cret@cache/2", "redis://app:***@cache/2"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("rediss://user@[::1]:6380/0", "rediss://user@[::1]:6380/0"),
        ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_the_password_is_masked_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_percent_encoded_password_is_masked_in_both_forms() -> None:
    url = "redis://:p%40ss@cache:6379/0"
    assert "p%40ss" not in redact_url(url)
    assert scrub("failed with p@ss and p%40ss", url) == "failed with *** and ***"


def test_scrub_leaves_text_without_secrets_alone() -> None:
    assert scrub("Connection refused", "redis://cache:6379/0") == "Connection refused"


def test_an_unparsable_url_is_not_echoed() -> None:
    assert redact_url("redis://:s3cret@[::1:6379/0") == "<unparsable URL>"
