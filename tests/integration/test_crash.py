"""kill -9 and SIGTERM in the middle of a stream: nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import re
import signal
from collections import Counter

import pytest

from streams.runtime.dead_letters import parse_error_headers
from tests.support.tickets import TicketFactory
from tests.support.world import (
    World,
    committed_count,
    make_world,
    process_log,
    processor_logs,
    produce,
    read_all,
    start_processor,
    stop_all,
    wait_for,
)

TOTAL = 50_000
INVALID_EVERY = 10  # every 10th record breaks the contract


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def load(world: World, good_ticket: TicketFactory) -> tuple[set[bytes], set[bytes]]:
    values, keys, valid, invalid = [], [], set(), set()
    for i in range(TOTAL):
        key = f"TCK-{i:08d}".encode()
        broken = i % INVALID_EVERY == 0
        ticket = good_ticket(ticket_id=key.decode(), priority="critical" if broken else "low")
        values.append(json.dumps(ticket).encode())
        keys.append(key)
        (invalid if broken else valid).add(key)
    produce(world.settings, world.raw, values, keys)
    return valid, invalid


def assert_exactly_once(world: World, valid: set[bytes], invalid: set[bytes]) -> None:
    validated = read_all(world.settings, world.validated, len(valid), timeout=300)
    dead = read_all(world.settings, world.dlq, len(invalid), timeout=120)
    counts = Counter(m.key() for m in validated)
    duplicates = {k: n for k, n in counts.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} records validated more than once"
    assert set(counts) == valid, f"missing {len(valid - set(counts))} valid records"
    dead_counts = Counter(m.key() for m in dead)
    assert all(n == 1 for n in dead_counts.values()), "a record reached the DLQ twice"
    assert set(dead_counts) == invalid
    assert {parse_error_headers(m.headers()).error_class for m in dead} == {"ContractViolation"}


@pytest.mark.slow
def test_kill_9_mid_stream_loses_and_duplicates_nothing(world: World, good_ticket: TicketFactory):
    valid, invalid = load(world, good_ticket)
    # Small batches: many transactions, so the kill lands between and inside them.
    first = start_processor(world, "validate", SLUICE_RUNNER__BATCH_SIZE="500")
    wait_for(
        lambda: committed_count(world.settings, world.validated) >= 8_000,
        180,
        "validate to commit part of the stream",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    done = committed_count(world.settings, world.validated)
    assert done < len(valid), "the kill must land mid-stream"

    second = start_processor(world, "validate", SLUICE_RUNNER__BATCH_SIZE="500")
    try:
        assert_exactly_once(world, valid, invalid)
        assert second.poll() is None
    finally:
        stop_all(world)
    log = process_log(world)
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.slow
def test_sigterm_finishes_the_batch_and_commits(world: World, good_ticket: TicketFactory):
    valid, invalid = load(world, good_ticket)
    first = start_processor(world, "validate", SLUICE_RUNNER__BATCH_SIZE="2000")
    wait_for(
        lambda: committed_count(world.settings, world.validated) >= 5_000,
        180,
        "validate to commit part of the stream",
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, "SIGTERM must end validate cleanly"
    start_processor(world, "validate")
    try:
        assert_exactly_once(world, valid, invalid)
    finally:
        stop_all(world)


#: The runner's rebalance lines: ``assigned t[0], t[2]``, ``revoked t[1]``, ``assigned nothing``.
REBALANCE = re.compile(r"\b(assigned|revoked) (nothing|\S+\[\d+\](?:, \S+\[\d+\])*)\s*$")
PARTITION = re.compile(r"(\S+)\[(\d+)\]")


def held_partitions(log: str, topic: str) -> set[int]:
    """The partitions of ``topic`` a replica holds after the rebalances its log records.

    The group is cooperative-sticky: each callback names only the partitions
    added or taken away, so the assignment is the running sum of them.
    """
    held: set[int] = set()
    for line in log.splitlines():
        match = REBALANCE.search(line)
        if match is None:
            continue
        event, listed = match.groups()
        changed = {int(p) for t, p in PARTITION.findall(listed) if t == topic}
        held = held | changed if event == "assigned" else held - changed
    return held


def test_two_replicas_share_the_partitions(world: World, good_ticket: TicketFactory):
    valid, invalid = load(world, good_ticket)
    start_processor(world, "validate")
    start_processor(world, "validate")
    partitions = set(range(world.catalog.topic(f"raw.{world.dataset}").partitions))
    assert len(partitions) >= 2, "one partition cannot be shared"

    def assignment() -> list[set[int]]:
        return [held_partitions(log, world.raw) for log in processor_logs(world, "validate")]

    def shared() -> bool:
        first, second = assignment()
        return bool(first) and bool(second) and first | second == partitions

    try:
        assert_exactly_once(world, valid, invalid)
        wait_for(shared, 60, f"both replicas to hold some of {world.raw}'s partitions")
        first, second = assignment()
        assert first and second, f"a replica holds nothing: {first} / {second}"
        assert not first & second, f"a partition is held twice: {first} / {second}"
        assert first | second == partitions, f"unassigned: {partitions - first - second}"
    finally:
        stop_all(world)
