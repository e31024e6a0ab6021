"""Weighted fair batches across tenants, and the offsets they commit."""

from __future__ import annotations

from collections import Counter

import pytest

from streams.runtime.fair_window import FairWindow
from streams.runtime.offset_ledger import MAX_SPAN, PartitionLedger, decode_done
from streams.runtime.spec import InputRecord, Share

TOPIC = "inference.requests"


def record(partition: int, offset: int, size: int = 10) -> InputRecord:
    return InputRecord(TOPIC, partition, offset, b"k", None, b"x" * size, [], 0)


def window(max_records: int = 100_000, max_bytes: int = 10**9) -> FairWindow:
    w = FairWindow(max_records, max_bytes)
    for partition in range(3):
        w.assign((TOPIC, partition), PartitionLedger(0))
    return w


def test_a_late_tenant_is_served_within_twice_its_records_with_equal_shares() -> None:
    w = window()
    offsets = [0, 0, 0]
    for i in range(5050):
        partition = i % 3
        tenant = "a" if i < 5000 else "b"
        w.add(
            InputRecord(TOPIC, partition, offsets[partition], tenant.encode(), None, b"x", [], 0),
            Share(tenant),
        )
        offsets[partition] += 1
    order: list[bytes] = []
    while w.records:
        batch = w.take(128)
        order.extend(r.key or b"" for r in batch)
        w.committed(batch)
    last_b = max(i for i, key in enumerate(order) if key == b"b")
    # SCFQ: b's k-th record within the next 2k taken (plus a tie).
    assert last_b < 2 * 50 + 1
    assert order.count(b"a") == 5000 and order.count(b"b") == 50


@pytest.mark.parametrize(("wa", "wb"), [(1, 4), (4, 1), (2, 3)])
def test_shares_divide_the_turns_by_weight_while_both_wait(wa: int, wb: int) -> None:
    w = window()
    for i in range(3000):
        tenant, weight = ("a", wa) if i % 2 == 0 else ("b", wb)
        w.add(record(i % 3, i // 3), Share(tenant, weight))
    taken: Counter[str] = Counter()
    keys = {}
    # The first 500 taken, while both still wait: shares in the ratio of the weights.
    for r in w.take(500):
        keys[(r.partition, r.offset)] = r
    for (partition, offset), _ in keys.items():
        i = offset * 3 + partition
        taken["a" if i % 2 == 0 else "b"] += 1
    assert taken["a"] / taken["b"] == pytest.approx(wa / wb, rel=0.05)


def test_a_tenants_own_records_keep_the_order_they_were_read_in() -> None:
    w = window()
    for offset in range(200):
        w.add(record(offset % 3, offset // 3), Share("a" if offset % 5 else "b"))
    taken = w.take(200)
    a_order = [(r.offset * 3 + r.partition) for r in taken if (r.offset * 3 + r.partition) % 5]
    assert a_order == sorted(a_order)


def test_commits_carry_the_done_records_ahead_of_the_commit_point() -> None:
    w = window()
    for offset in range(10):
        w.add(record(0, offset), Share("a"))
    w.add(record(0, 10), Share("b"))
    batch = w.take(2)  # a's first, then b's (its tag ties a's second; it arrived later)
    assert [(r.offset) for r in batch] == [0, 10]
    (offset, metadata) = w.commit_offsets(batch)[(TOPIC, 0)]
    assert offset == 1
    assert decode_done(1, metadata) == {10}
    w.committed(batch)


def test_a_rewind_empties_the_window_and_says_where_to_read_from() -> None:
    w = window()
    for offset in range(5):
        w.add(record(1, offset), Share("a"))
    w.add(record(1, 5), Share("b"))
    batch = w.take(2)
    w.committed(batch)  # 0 and 5 done
    assert w.rewind() == {(TOPIC, 0): 0, (TOPIC, 1): 1, (TOPIC, 2): 0}
    assert w.records == 0 and w.bytes == 0
    readmitted = [o for o in range(6) if w.add(record(1, o), Share("a"))]
    assert readmitted == [1, 2, 3, 4]
    assert w.skipped == 2


def test_revoked_partitions_leave_the_window() -> None:
    w = window()
    for partition in range(3):
        w.add(record(partition, 0, size=7), Share("a"))
    w.revoke([(TOPIC, 1)])
    assert w.records == 2 and w.bytes == 2 * (7 + 1)
    assert {r.partition for r in w.take(10)} == {0, 2}


def test_the_window_is_full_at_either_bound() -> None:
    by_count = window(max_records=2)
    by_count.add(record(0, 0), Share("a"))
    assert not by_count.full and by_count.room == 1
    by_count.add(record(0, 1), Share("a"))
    assert by_count.full and by_count.room == 0
    by_bytes = window(max_bytes=15)
    by_bytes.add(record(0, 0, size=20), Share("a"))
    assert by_bytes.full


def test_a_record_too_far_ahead_of_its_commit_point_waits_for_the_head() -> None:
    w = window()
    w.add(record(0, 0), Share("a"))
    w.add(record(0, MAX_SPAN + 5), Share("b"))
    first = w.take(1)
    assert [r.offset for r in first] == [0]
    assert w.take(1) == []  # b's record waits: the head is taken but not committed
    w.committed(first)
    assert [r.offset for r in w.take(1)] == [MAX_SPAN + 5]
