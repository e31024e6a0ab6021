"""Commit points and done-offsets maps of partitions whose records finish out of order."""

from __future__ import annotations

import base64
import random
import zlib

import pytest

from streams.runtime.offset_ledger import (
    MAX_SPAN,
    PREFIX,
    MetadataError,
    PartitionLedger,
    decode_done,
    encode_done,
)


def test_the_map_round_trips_any_set_of_done_offsets_within_the_span() -> None:
    rng = random.Random(7)
    for _ in range(200):
        point = rng.randrange(0, 10**12)
        done = {point + rng.randrange(1, MAX_SPAN) for _ in range(rng.randrange(1, 300))}
        assert decode_done(point, encode_done(point, done)) == done


def test_the_worst_map_fits_the_brokers_default_metadata_limit() -> None:
    rng = random.Random(1)
    # Every other offset done, at random: the bitmap compresses worst.
    done = {o for o in range(1, MAX_SPAN) if rng.random() < 0.5}
    assert len(encode_done(0, done)) < 4096


def test_nothing_done_beyond_the_commit_point_is_an_empty_metadata() -> None:
    assert encode_done(5, []) == ""
    assert decode_done(5, "") == set()
    assert decode_done(5, None) == set()


def test_offsets_outside_the_span_are_refused() -> None:
    with pytest.raises(ValueError, match="must lie"):
        encode_done(10, [10])
    with pytest.raises(ValueError, match="must lie"):
        encode_done(10, [10 + MAX_SPAN])


@pytest.mark.parametrize(
    "metadata",
    [
        "some other tool's note",
        PREFIX + "!!!not base64",
        PREFIX + base64.b64encode(b"not zlib").decode(),
        # A bomb: inflates far past the span.
        PREFIX + base64.b64encode(zlib.compress(b"\xff" * (10 * MAX_SPAN))).decode(),
    ],
)
def test_metadata_that_is_not_a_readable_map_is_an_error_not_a_guess(metadata: str) -> None:
    with pytest.raises(MetadataError):
        decode_done(0, metadata)


def test_the_commit_point_is_the_first_record_not_done() -> None:
    ledger = PartitionLedger(100)
    for offset in (100, 101, 102, 104):  # 103: a transaction marker, never delivered
        assert ledger.admit(offset)
    assert ledger.commit_point() == 100
    assert ledger.commit_point(finishing=[102]) == 100
    assert ledger.metadata(finishing=[102, 104]) == encode_done(100, [102, 104])
    ledger.committed([102, 104])
    assert ledger.commit_point() == 100
    ledger.committed([100])
    assert ledger.commit_point() == 101
    ledger.committed([101])
    # Nothing pending: the offset after the last record read, past the marker.
    assert ledger.commit_point() == 105
    assert ledger.metadata() == ""


def test_records_done_before_a_restart_are_skipped_when_read_again() -> None:
    first = PartitionLedger(0)
    for offset in range(10):
        first.admit(offset)
    first.committed([3, 7, 8])
    point, metadata = first.commit_point(), first.metadata()
    assert point == 0

    again = PartitionLedger(point, decode_done(point, metadata))
    admitted = [offset for offset in range(10) if again.admit(offset)]
    assert admitted == [0, 1, 2, 4, 5, 6, 9]


def test_a_record_read_twice_is_admitted_once() -> None:
    ledger = PartitionLedger(0)
    assert ledger.admit(0)
    assert not ledger.admit(0)


def test_a_rewind_reads_again_from_the_commit_point_and_keeps_what_is_done() -> None:
    ledger = PartitionLedger(0)
    for offset in range(6):
        ledger.admit(offset)
    ledger.committed([4])
    assert ledger.rewind() == 0
    assert [o for o in range(6) if ledger.admit(o)] == [0, 1, 2, 3, 5]


def test_a_record_too_far_ahead_of_the_commit_point_must_wait() -> None:
    ledger = PartitionLedger(0)
    ledger.admit(0)
    assert ledger.eligible(MAX_SPAN - 1)
    assert not ledger.eligible(MAX_SPAN)
    ledger.committed([0])
    assert ledger.eligible(MAX_SPAN)


def test_a_group_without_a_commit_starts_at_the_first_record_read() -> None:
    ledger = PartitionLedger(None)
    assert ledger.commit_point() is None
    ledger.admit(42)
    assert ledger.commit_point() == 42
