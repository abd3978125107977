"""The broadcast budget of the dedup plan (selectllm.dedup.budget), without Spark."""

from __future__ import annotations

import pytest

from selectllm.dedup.budget import (AQE_ROW_FACTOR, HASH_GROWTH, HASH_ROW_OVERHEAD, BroadcastBudget, parse_size,
                                    unsafe_row_bytes)


class _Side:
    """A join side that records the hint it was given."""

    def __init__(self):
        self.hints: list[str] = []

    def hint(self, name: str) -> "_Side":
        self.hints.append(name)
        return self


def test_unsafe_row_bytes_follow_sparks_layout():
    assert unsafe_row_bytes(2) == 24  # null bitset word + two longs
    assert unsafe_row_bytes(3, 1) == 8 + 24 + 8  # variable-length bytes rounded up to a word
    assert unsafe_row_bytes(65, 16) == 16 + 65 * 8 + 16  # a second bitset word past 64 fields


@pytest.mark.parametrize("text, want", [("4g", 4 << 30), ("512m", 512 << 20), ("10485760b", 10 << 20),
                                        ("-1", -1), ("1.5g", int(1.5 * (1 << 30))), (None, 7), ("lots", 7)])
def test_parse_size(text, want):
    assert parse_size(text, 7) == want


def test_a_side_is_broadcast_only_when_its_rows_fit_with_the_growth_factor():
    budget = BroadcastBudget(budget_bytes=1_000_000, heap_bytes=10_000_000)
    per_row = int((24 + HASH_ROW_OVERHEAD) * HASH_GROWTH)  # 192 bytes per (bigint, bigint) row
    fits, big = _Side(), _Side()
    assert budget.side("fits", fits, 1_000_000 // per_row, 24) is fits and fits.hints == ["broadcast"]
    assert budget.side("big", big, 1_000_000 // per_row + 1, 24) is big and big.hints == []
    joins = budget.metrics()["joins"]
    assert joins["fits"]["broadcast"] and not joins["big"]["broadcast"]
    assert joins["big"]["jvm_bytes"] == (1_000_000 // per_row + 1) * per_row > budget.budget_bytes
    assert budget.aqe_threshold() == 1_000_000 // AQE_ROW_FACTOR
    assert BroadcastBudget(budget_bytes=AQE_ROW_FACTOR - 1, heap_bytes=1).aqe_threshold() == -1  # never
