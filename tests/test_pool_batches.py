"""Round trips bounded in items and in bytes (``put_many`` on Redis and RabbitMQ)."""

from __future__ import annotations

from src_pool.batches import chunks


def sizes(runs: list[list[int]]) -> list[int]:
    return [sum(run) for run in runs]


def test_a_run_holds_items_up_to_exactly_the_byte_limit() -> None:
    runs = [list(r) for r in chunks([10] * 8, int, 100, 40)]
    assert runs == [[10] * 4, [10] * 4]


def test_one_byte_over_the_limit_starts_a_new_run() -> None:
    runs = [list(r) for r in chunks([10, 10, 10, 11], int, 100, 40)]
    assert runs == [[10, 10, 10], [11]]


def test_an_item_larger_than_the_limit_travels_alone() -> None:
    runs = [list(r) for r in chunks([5, 100, 5], int, 100, 40)]
    assert runs == [[5], [100], [5]]


def test_the_item_bound_holds_whatever_the_bytes() -> None:
    runs = [list(r) for r in chunks([1] * 7, int, 3, 1000)]
    assert [len(r) for r in runs] == [3, 3, 1]


def test_order_is_kept_and_nothing_is_lost() -> None:
    items = list(range(1, 200))
    runs = list(chunks(items, lambda n: n, 10, 300))
    assert [i for run in runs for i in run] == items
    assert all(sum(run) <= 300 or len(run) == 1 for run in runs)


def test_no_items_make_no_runs() -> None:
    assert list(chunks([], int, 10, 10)) == []
