"""Spark gives the pandas engine's profile: on files, and reading Kafka with spark-sql-kafka."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from processors.drift.store import read_latest
from streams.contracts.catalog import load_catalog
from streams.contracts.serde import AvroSerde
from streams.profiling import pandas_engine, profile_job, spark_engine
from streams.profiling.profiles import Profile
from streams.runtime import kafka
from streams.settings import PROJECT_ROOT
from tests.support.drift_streams import results, tickets
from tests.support.world import World, make_world, produce


@pytest.fixture(scope="module")
def spark(stack):
    session = spark_engine.session(spark_engine.spark_jars(stack, print))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def contract():
    return load_catalog(PROJECT_ROOT / "schemas").dataset("support_tickets").contract


def same(a: Profile, b: Profile) -> None:
    """Equal profiles: counts exactly, floats to the last few bits (summation order differs)."""
    left, right = json.loads(a.to_json()), json.loads(b.to_json())
    for key in ("profile_id", "created_at", "engine", "source"):
        left.pop(key), right.pop(key)
    _close(left, right, "profile")


def _close(x, y, where: str) -> None:
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for key in x:
            _close(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, list):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _close(u, v, f"{where}[{i}]")
    elif isinstance(x, float) or isinstance(y, float):
        assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {x} != {y}"
    else:
        assert x == y, f"{where}: {x!r} != {y!r}"


def ticket_lines(n: int, seed: int) -> list[dict]:
    rows = list(tickets(n, seed=seed))
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    rows[5]["priority"] = "critical"
    rows[6]["satisfaction"] = 9
    return rows


def test_spark_equals_pandas_on_a_jsonl_file(spark, contract, tmp_path):
    path = tmp_path / "tickets.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ticket_lines(20_000, seed=31)) + "\n")
    by_pandas = pandas_engine.profile_dataset(pandas_engine.read_file(path), contract, str(path))
    by_spark = spark_engine.profile_dataset(
        spark_engine.read_file(spark, path), contract, str(path), json_lines=True
    )
    same(by_pandas, by_spark)
    assert {(v.field, v.rule) for v in by_spark.violations} == {
        ("priority", "enum"),
        ("satisfaction", "max"),
    }


def test_spark_equals_pandas_on_parquet_and_results(spark, contract, tmp_path):
    path = tmp_path / "tickets.parquet"
    # Spark reads micro- or millisecond timestamps, not pandas' default nanoseconds.
    pd.DataFrame(list(tickets(10_000, seed=32))).to_parquet(path, coerce_timestamps="ms")
    same(
        pandas_engine.profile_dataset(pandas_engine.read_file(path), contract, "p"),
        spark_engine.profile_dataset(
            spark_engine.read_file(spark, path), contract, "p", json_lines=False
        ),
    )
    frame = pd.DataFrame(list(results(4000, seed=33)) + list(results(1000, seed=34, model="b")))
    by_pandas = pandas_engine.profile_results(frame, "r")
    by_spark = spark_engine.profile_results(spark.createDataFrame(frame), "r")
    assert [p.subject for p in by_spark] == ["b", "minilm"] == [p.subject for p in by_pandas]
    for a, b in zip(by_pandas, by_spark, strict=True):
        same(a, b)


def test_profile_from_kafka_spark_equals_pandas_and_is_published(stack, tmp_path):
    world: World = make_world(stack, tmp_path)
    encode = AvroSerde(kafka.registry(world.settings), world.catalog).encoder(
        "support_tickets.validated"
    )
    values = []
    for i, row in enumerate(tickets(5000, seed=35)):
        row["meta"] = {
            "event_id": str(i),
            "source": "t",
            "raw_topic": "raw",
            "raw_partition": 0,
            "raw_offset": i,
            "contract_version": 1,
            "validated_at": 0,
        }
        values.append(encode(row))
    produce(world.settings, world.validated, values)

    request = profile_job.ProfileRequest("support_tickets", "pandas")
    by_pandas = profile_job.run(request, world.settings, world.catalog, print).profiles
    request = profile_job.ProfileRequest("support_tickets", "spark")
    by_spark = profile_job.run(request, world.settings, world.catalog, print).profiles
    assert by_pandas[0].rows == by_spark[0].rows == 5000
    same(by_pandas[0], by_spark[0])

    profile_job.publish(by_spark, world.settings, world.catalog)
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.value_schema("drift.profiles")
    loaded = read_latest(
        world.settings, world.topic("drift.profiles"), lambda v: serde.decode(v, schema), 30
    )
    assert Profile.from_avro(loaded["dataset:support_tickets"]) == by_spark[0]
