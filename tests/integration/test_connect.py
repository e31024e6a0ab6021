"""Kafka Connect ingestion on the real worker: files and PostgreSQL CDC into validate.

Every test applies the shipped connector files from connectors/ through the real
`sluice connect apply` CLI, pointed at its own sandboxed dataset with ``--set``,
and runs validate as a child process, as in production.

Exactness: the worker runs with ``exactly.once.source.support=enabled``, so each
batch a source task polls is written together with its source offsets in one Kafka
transaction; validate reads ``read_committed``. A killed worker's open transaction
is aborted (fenced by the restarted task) and the task resumes from the offsets of
its last committed transaction: nothing is lost and nothing is written twice, which
the restart test checks on counts as well as on the set of ticket ids.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from streams.runtime.dead_letters import parse_error_headers
from streams.settings import PROJECT_ROOT, Settings
from streams.stack import Stack
from tests.support import postgres
from tests.support.tickets import TicketFactory
from tests.support.world import (
    World,
    make_world,
    process_log,
    read_all,
    start_processor,
    stop_all,
    wait_for,
)

FILE_CONNECTOR = PROJECT_ROOT / "connectors" / "support-tickets-file.json"
POSTGRES_CONNECTOR = PROJECT_ROOT / "connectors" / "support-tickets-postgres.json"
PG_PORT = int(os.environ.get("SLUICE_TEST_PORT_BASE", "19000")) + 432


@pytest.fixture
def world(connect_worker: Settings, tmp_path: Path) -> Iterator[World]:
    box = make_world(connect_worker, tmp_path)
    try:
        yield box
    finally:
        stop_all(box)


def sluice(world: World, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real `sluice` CLI with the world's settings."""
    result = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **world.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sluice {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def connector_name(world: World, what: str) -> str:
    return f"test-{what}-{world.sandbox.suffix}"


def decoded(world: World, messages: list[Message]) -> list[dict[str, object]]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.SupportTicket"]
    return [serde.decode(m.value(), schema) for m in messages]


def raw_count(settings: Settings, topic: str, timeout: float = 60.0) -> int:
    """Committed records in ``topic`` now (read_committed: markers and aborted records are
    not counted), read up to each partition's end offset."""
    consumer = Consumer(
        settings.kafka.client_config(
            **{
                "group.id": f"count-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        count, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = consumer.position([TopicPartition(topic, p) for p in partitions])
            if all(max(tp.offset, 0) >= ends[tp.partition] for tp in positions):
                return count
            count += sum(1 for m in consumer.consume(5000, 0.5) if m.error() is None)
        raise AssertionError(f"could not read {topic} to its end within {timeout:.0f}s")
    finally:
        consumer.close()


def high_watermark(settings: Settings, topic: str) -> int:
    """Sum of the partitions' end offsets: cheap, counts transaction markers too."""
    consumer = Consumer(settings.kafka.client_config(**{"group.id": f"hw-{uuid.uuid4().hex}"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in partitions
        )
    finally:
        consumer.close()


# -- FileStream source --------------------------------------------------------------
def ticket_lines(
    good_ticket: TicketFactory, start: int, count: int, *, broken_every: int = 0
) -> tuple[list[str], set[str]]:
    """JSON lines of tickets ``start..start+count``; returns (lines, ids that are valid)."""
    lines, valid = [], set()
    for i in range(start, start + count):
        ticket_id = f"TCK-{i:08d}"
        broken = broken_every and i % broken_every == 0
        lines.append(
            json.dumps(good_ticket(ticket_id=ticket_id, priority="critical" if broken else "low"))
        )
        if not broken:
            valid.add(ticket_id)
    return lines, valid


def test_jsonl_file_is_ingested_and_validated_exactly(
    world: World, tmp_path: Path, good_ticket: TicketFactory
):
    lines, valid = ticket_lines(good_ticket, 0, 2000, broken_every=20)  # 100 break the contract
    garbage = ['{"ticket_id": "TCK-9', "not json at all"]  # truncated and not JSON
    source = tmp_path / "tickets.jsonl"
    source.write_text("\n".join(lines[:1000] + garbage + lines[1000:]) + "\n")
    invalid = len(lines) - len(valid) + len(garbage)

    start_processor(world, "validate")
    name = connector_name(world, "file")
    result = sluice(
        world,
        "connect",
        "apply",
        str(FILE_CONNECTOR),
        "--name",
        name,
        "--var",
        f"SLUICE_TICKETS_FILE={source}",
        "--set",
        f"topic={world.raw}",
    )
    assert "created" in result.stdout and "RUNNING" in result.stdout, result.stdout
    try:
        validated = read_all(world.settings, world.validated, len(valid), timeout=240)
        dead = read_all(world.settings, world.dlq, invalid, timeout=60)
        assert len(validated) == len(valid), "every valid line once"
        assert {m.key().decode() for m in validated} == valid
        assert len(dead) == invalid
        classes = Counter(parse_error_headers(m.headers()).error_class for m in dead)
        assert classes == {"ContractViolation": 100, "InvalidJson": 2}
        meta = decoded(world, validated[:5])[0]["meta"]
        assert meta["source"] == "connect:support-tickets-file"  # InsertHeader in the file
        assert meta["op"] is None and meta["deleted"] is False

        # The FileStream source tails the file: appended lines are ingested too.
        more, more_valid = ticket_lines(good_ticket, 5000, 300)
        with source.open("a") as out:
            out.write("\n".join(more) + "\n")
        validated = read_all(world.settings, world.validated, len(valid) + 300, timeout=120)
        assert len(validated) == len(valid) + 300
        assert {m.key().decode() for m in validated} == valid | more_valid

        status = sluice(world, "connect", "status", name)
        assert "RUNNING" in status.stdout
    finally:
        sluice(world, "connect", "delete", name, check=False)
    assert "Traceback" not in process_log(world)


# -- Debezium PostgreSQL CDC ----------------------------------------------------------
TABLE_DDL = """
CREATE TABLE {table} (
    ticket_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    created_at timestamptz NOT NULL,
    channel text NOT NULL,
    priority text NOT NULL,
    product text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    customer_tier text,
    first_response_minutes double precision,
    satisfaction integer,
    order_value_usd numeric(12, 2),
    language text NOT NULL DEFAULT 'en'
);
-- Deletes carry the whole old row, so a delete is a complete, typed record downstream.
ALTER TABLE {table} REPLICA IDENTITY FULL;
"""


def insert_sql(table: str, ids: range, *, priority: str = "low") -> str:
    rows = []
    for i in ids:
        rows.append(
            f"('TCK-{i:08d}', 'acme', '2026-10-01T00:{i % 60:02d}:00Z', 'email', '{priority}', "
            f"'billing', 'Refund for order {i}', 'Please refund order {i}.', 'pro', "
            f"{i % 90}.5, {1 + i % 5}, {i}.25, 'en')"
        )
    return f"INSERT INTO {table} VALUES {', '.join(rows)};"


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.PostgresCluster]:
    try:
        cluster = postgres.create(PG_PORT)
    except postgres.PostgresUnavailableError as exc:  # pragma: no cover (CI installs it)
        pytest.fail(str(exc))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_postgres_row_changes_arrive_as_validated_change_events(
    world: World, pg: postgres.PostgresCluster
):
    table = f"tickets_{world.sandbox.suffix}"
    pg.sql(TABLE_DDL.format(table=table))
    pg.sql(insert_sql(table, range(0, 50)))  # before the connector: the snapshot reads them
    start_processor(world, "validate")
    name = connector_name(world, "pg")
    sluice(
        world,
        "connect",
        "apply",
        str(POSTGRES_CONNECTOR),
        "--name",
        name,
        "--var",
        f"SLUICE_PG_PORT={pg.port}",
        "--var",
        f"SLUICE_PG_PASSWORD={postgres.PASSWORD}",
        "--var",
        f"SLUICE_PG_SLOT=slot_{world.sandbox.suffix}",
        "--set",
        f"table.include.list=public.{table}",
        "--set",
        f"transforms.route.replacement={world.raw}",
    )
    try:
        wait_for(lambda: raw_count(world.settings, world.raw) >= 50, 120, "the snapshot")
        pg.sql(insert_sql(table, range(50, 100)))  # 50 creates
        pg.sql(f"UPDATE {table} SET priority = 'high' WHERE ticket_id < 'TCK-00000020'")  # 20
        pg.sql(f"DELETE FROM {table} WHERE ticket_id >= 'TCK-00000090'")  # 10 full deletes
        pg.sql(insert_sql(table, range(100, 101), priority="critical"))  # breaks the contract
        # Without REPLICA IDENTITY FULL a delete carries only the key: not a typed record,
        # so it must land in the DLQ saying what to change, never vanish.
        pg.sql(f"ALTER TABLE {table} REPLICA IDENTITY DEFAULT")
        pg.sql(f"DELETE FROM {table} WHERE ticket_id = 'TCK-00000080'")

        validated = read_all(world.settings, world.validated, 130, timeout=180)
        dead = read_all(world.settings, world.dlq, 2, timeout=60)
        records = decoded(world, validated)
        ops = Counter(r["meta"]["op"] for r in records)
        assert ops == {"r": 50, "c": 50, "u": 20, "d": 10}, ops
        deleted = {r["ticket_id"] for r in records if r["meta"]["deleted"]}
        assert deleted == {f"TCK-{i:08d}" for i in range(90, 100)}
        assert all(r["meta"]["source"] == "connect:support-tickets-postgres" for r in records)
        updated = [r for r in records if r["meta"]["op"] == "u"]
        assert {r["priority"] for r in updated} == {"high"}
        # Timestamps arrive as ISO-8601 strings (Debezium's ZonedTimestamp) and are typed.
        first = next(r for r in records if r["ticket_id"] == "TCK-00000001")
        assert first["created_at"].isoformat().startswith("2026-10-01T00:01:00")

        # Current state per key (what a table keyed by ticket_id keeps): last record wins.
        latest: dict[str, dict[str, object]] = {}
        for message, record in zip(validated, records, strict=True):
            latest[message.key().decode()] = record
        live = {k for k, r in latest.items() if not r["meta"]["deleted"]}
        assert live == {f"TCK-{i:08d}" for i in range(90)}

        reasons = Counter(parse_error_headers(m.headers()).error_class for m in dead)
        assert reasons == {"ContractViolation": 1, "IncompleteDelete": 1}, reasons
        incomplete = next(
            m for m in dead if parse_error_headers(m.headers()).error_class == "IncompleteDelete"
        )
        assert "REPLICA IDENTITY FULL" in parse_error_headers(incomplete.headers()).message
        assert incomplete.key() == b"TCK-00000080"
    finally:
        sluice(world, "connect", "delete", name, check=False)
        # A slot keeps WAL for its reader forever: drop it once the stopped task let go.
        slot = f"slot_{world.sandbox.suffix}"
        wait_for(
            lambda: (
                not pg.sql(
                    f"SELECT 1 FROM pg_replication_slots WHERE active AND slot_name = '{slot}'"
                ).strip()
            ),
            60,
            "the connector to release its replication slot",
        )
        pg.sql(f"SELECT pg_drop_replication_slot('{slot}')")


# -- the worker dies mid-ingestion ----------------------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_ingestion_loses_and_duplicates_nothing(
    world: World, tmp_path: Path, good_ticket: TicketFactory
):
    # A tiny batch.size makes thousands of small transactions: slow enough for the kill to
    # land mid-file, and likely inside an open transaction. The total is a multiple of it:
    # the FileStream source leaves buffered lines unread when a poll fills a batch exactly
    # at the end of the file (see connectors/README.md).
    total, batch = 60_000, 20
    lines, valid = ticket_lines(good_ticket, 0, total)
    source = tmp_path / "big.jsonl"
    source.write_text("\n".join(lines) + "\n")
    start_processor(world, "validate")
    name = connector_name(world, "restart")
    sluice(
        world,
        "connect",
        "apply",
        str(FILE_CONNECTOR),
        "--name",
        name,
        "--var",
        f"SLUICE_TICKETS_FILE={source}",
        "--set",
        f"topic={world.raw}",
        "--set",
        f"batch.size={batch}",
    )
    worker = Stack(world.settings, only=["connect"]).components[0].process
    try:
        wait_for(lambda: high_watermark(world.settings, world.raw) >= 2_000, 120, "ingestion")
        pid = worker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: worker.pid() is None, 30, "the worker to die")
        ingested = raw_count(world.settings, world.raw)
        assert ingested < total, "the kill must land mid-ingestion"

        # The command a person would run, for the component this test's stack runs (a plain
        # `sluice up` would also start Triton, which this test does not use).
        result = sluice(world, "up", "--only", "connect")
        assert "Kafka Connect: starting" in result.stdout, result.stdout

        validated = read_all(world.settings, world.validated, total, timeout=420, settle=5)
        keys = Counter(m.key().decode() for m in validated)
        duplicates = {k: n for k, n in keys.items() if n > 1}
        assert set(keys) == valid, f"{len(valid - set(keys))} tickets lost"
        assert not duplicates, f"{len(duplicates)} tickets validated twice"
        assert raw_count(world.settings, world.raw) == total, "raw holds every line once"
        print(f"killed the worker after {ingested:,} of {total:,} lines; all {total:,} once")
    finally:
        if worker.pid() is None:  # failed before the restart: leave a running worker behind
            sluice(world, "up", "--only", "connect", check=False)
        sluice(world, "connect", "delete", name, check=False)
