"""src_pool's own redaction: broker URLs and error texts without their secrets,
and src_pool built on qhealth's public API only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from qhealth.redact import error_text, redact_url, scrub

SRC_POOL = Path(__file__).resolve().parent.parent / "src_pool"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://app:s3cret@cache/2", "redis://app:***@cache/2"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("amqp://app:p@ss:w@rd@mq:5672/", "amqp://app:***@mq:5672/"),
        ("rediss://user@[::1]:6380/0", "rediss://user@[::1]:6380/0"),
        ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_the_password_is_masked_and_the_rest_of_the_url_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_unparsable_url_is_not_echoed() -> None:
    assert redact_url("redis://:s3cret@[::1:6379/0") == "<unparsable URL>"


def test_a_percent_encoded_password_is_scrubbed_in_both_spellings() -> None:
    url = "redis://:p%40ss@cache:6379/0"
    assert scrub("failed with p@ss and p%40ss", url) == "failed with *** and ***"


def test_an_error_text_names_the_type_and_hides_the_password() -> None:
    url = "amqp://app:s3cret@mq:5672/"
    text = error_text(ConnectionError(f"cannot reach {url}"), url)
    assert text == "ConnectionError: cannot reach amqp://app:***@mq:5672/"


def test_an_error_whose_str_raises_still_gives_a_text() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert error_text(Broken(), "redis://x") == "Broken: <unprintable>"


def test_src_pool_imports_no_private_qhealth_module() -> None:
    private = []
    for path in sorted(SRC_POOL.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            private += [
                f"{path.name}: {name}"
                for name in names
                if name.startswith("qhealth") and any(p.startswith("_") for p in name.split(".")[1:])
            ]
    assert private == []
