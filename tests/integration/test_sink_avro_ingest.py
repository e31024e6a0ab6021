"""The sink's two ways into ClickHouse give the same rows, with the real registry.

ClickHouse decoding the raw Confluent Avro (its AvroConfluent format, schemas fetched
from the registry by id, materialized views doing the mapping) and Python decoding
(fastavro, ``processors/sink_tables.py``) must agree to the last column, for every
topic that has both; a value ClickHouse cannot decode sends its batch down the Python
path, which dead-letters that value alone.
"""

from __future__ import annotations

import logging
import random
import struct
from datetime import UTC, datetime, timedelta

import pytest

from processors.meter.usage import usage_of
from processors.sink import processor as sink
from streams.contracts.records import GuardVerdict, InferenceRequest, InferenceResult
from streams.contracts.serde import AvroSerde
from streams.errors import RecordError
from streams.llm.pricing import load_prices
from streams.runtime import kafka
from streams.runtime.spec import InputRecord, NoSettings
from streams.runtime.testing import Harness
from streams.settings import PROJECT_ROOT, Settings
from streams.warehouse import clickhouse
from tests.support.world import World, make_world

# Recent: the tables' TTLs (data classes in schemas/topics.yaml) drop rows of old dates.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
KEYS = {"results": "request_id", "requests": "request_id, stage", "usage": "request_id"}


@pytest.fixture
def world(stack: Settings, tmp_path) -> World:
    return make_world(stack, tmp_path)


def verdict(rng: random.Random) -> GuardVerdict | None:
    if rng.random() < 0.3:
        return None
    return GuardVerdict(
        policy_version="7",
        action=rng.choice(["pass", "flag", "block"]),
        redacted=rng.random() < 0.5,
        checked_at=T0,
        entity_counts={"PERSON": rng.randint(1, 3)} if rng.random() < 0.5 else {},
        injection_score=round(rng.random(), 3),
        reason=rng.choice([None, "prompt_injection", "pii_policy"]),
    )


def records(serde: AvroSerde) -> list[InputRecord]:
    rng = random.Random(5)
    out: list[InputRecord] = []

    def add(topic: str, value: dict) -> None:
        raw = serde.encoder(topic)(value)
        out.append(InputRecord(topic, 0, len(out), None, raw, raw, [], 0))

    for i in range(300):
        ok = rng.random() > 0.1
        result = InferenceResult(
            request_id=f"r{i}",
            tenant_id=f"tenant-{i % 4}",
            model=rng.choice(["gpt-4o-mini", "textgen", "minilm", "unpriced-model"]),
            status="ok" if ok else "error",
            error_code=None if ok else "backend_rejected",
            request_created_at=T0 + timedelta(seconds=i),
            completed_at=T0 + timedelta(seconds=i, milliseconds=rng.randint(5, 900)),
            input_tokens=rng.randint(0, 4000),
            cached_input_tokens=rng.randint(0, 100),
            output_tokens=rng.randint(0, 500),
            e2e_ms=rng.random() * 900,
            queue_ms=rng.random() * 40,
            inference_ms=rng.random() * 400,
            batch_size=rng.randint(1, 64),
            device="cpu",
            input_guard=verdict(rng),
            output_guard=verdict(rng),
            output_text="Dear Jane Doe, ..." if rng.random() < 0.5 else None,
        )
        add("inference.results", result.to_avro())
        add("metering.usage", usage_of(result, PRICES).to_avro())
    for topic in ("inference.requests", "inference.requests.safe", "inference.requests.blocked"):
        for i in range(60):
            request = InferenceRequest(
                request_id=f"q{i}",
                tenant_id=f"tenant-{i % 3}",
                model="textgen",
                input_text="Résumé of ticket 42 for Jane Doe ✓" * rng.randint(1, 3),
                created_at=T0 + timedelta(seconds=i),
                max_tokens=rng.choice([None, 16, 64]),
                user_id=rng.choice([None, "u-1"]),
                guard=verdict(rng) if topic != "inference.requests" else None,
            )
            add(topic, request.to_avro())
    return out


def run_sink(settings: Settings, world: World, serde: AvroSerde, batch: list[InputRecord]) -> list:
    """The sink's batch function over ``batch``, set up and torn down as the runner does."""
    with Harness(
        sink.PROCESSOR,
        settings=settings,
        config=NoSettings(),
        catalog=world.catalog,
        registry=serde.registry,
    ) as harness:
        return list(sink.PROCESSOR.process_batch(batch, harness.ctx))


def table(settings: Settings, name: str) -> list[tuple]:
    db = clickhouse.connect(settings, database=settings.clickhouse.database)
    try:
        return db.query(f"SELECT * EXCEPT ingested_at FROM {name} FINAL ORDER BY {KEYS[name]}").rows
    finally:
        db.close()


def test_clickhouse_decoding_equals_python_decoding(world: World, tmp_path, caplog):
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    batch = records(serde)
    # Framed like Avro with a schema id nobody has: the serde's checks keep it from
    # ClickHouse (which would fetch any id), so it takes the Python path straight away.
    garbage = b"\x00" + struct.pack(">I", 987_654_321) + b"\x02\x04xy"
    batch.insert(7, InputRecord("inference.results", 0, 9999, None, garbage, garbage, [], 0))
    # The results' own schema id with a truncated body: only ClickHouse finds it bad.
    header = next(r.raw for r in batch if r.topic == "inference.results" and r.raw)[:5]
    corrupt = header + b"\x02\x04xy"
    batch.insert(12, InputRecord("inference.results", 0, 9998, None, corrupt, corrupt, [], 0))
    url = f"chdb://{tmp_path / 'clickhouse'}"

    def settings(database: str, avro_ingest: bool) -> Settings:
        return world.settings.model_copy(
            update={
                "clickhouse": world.settings.clickhouse.model_copy(
                    update={"url": url, "database": database, "avro_ingest": avro_ingest}
                )
            }
        )

    in_clickhouse, in_python = settings("fast", True), settings("python", False)
    # Without the bad value, the fast path takes every topic it knows.
    clean = [r for r in batch if r.raw is not garbage and r.raw is not corrupt]
    with caplog.at_level(logging.WARNING, logger="sluice.sink"):
        assert run_sink(in_clickhouse, world, serde, clean) == [[]] * len(clean)
    assert "decoding them here" not in caplog.text, "ClickHouse refused a clean batch"
    assert run_sink(in_python, world, serde, clean) == [[]] * len(clean)
    for name in KEYS:
        rows = table(in_clickhouse, name)
        assert rows, name
        assert rows == table(in_python, name), name

    # With them: the results ClickHouse refuses fall back to Python, which dead-letters
    # the two bad values only.
    with caplog.at_level(logging.WARNING, logger="sluice.sink"):
        outcomes = run_sink(in_clickhouse, world, serde, batch)
    assert "301 inference.results records as Avro" in caplog.text
    assert isinstance(outcomes[7], RecordError) and outcomes[7].error_class == "UnknownSchemaId"
    assert isinstance(outcomes[12], RecordError) and outcomes[12].error_class == "CorruptAvro"
    assert all(o == [] for i, o in enumerate(outcomes) if i not in (7, 12))
    for name in KEYS:
        assert table(in_clickhouse, name) == table(in_python, name), name
    stored = table(in_clickhouse, "requests")
    assert stored and all("Jane" not in str(row) for row in stored), "the prompt is not stored"
