"""``sluice batch profile``: build, check and publish reference profiles, with either engine.

Targets: a dataset (its ``<dataset>.validated`` history, or a Parquet/JSON-lines
file of its records), or ``results`` (``inference.results``, one profile per
model). The job writes each profile as JSON (``<out>/<subject_kind>.<subject>.json``)
and publishes it to the compacted topic ``drift.profiles``, which drift loads at
start and which the ClickHouse sink can load like any other topic.

ClickHouse hook: the JSON file and the ``drift.profiles`` topic carry the whole
profile (``Profile.to_json`` / ``sluice.v1.DriftProfile``); a sink maps it to
a table keyed by (subject_kind, subject, profile_id). Nothing here talks to
ClickHouse.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contracts.catalog import Catalog
from streams.contracts.serde import AvroSerde
from streams.profiling.profiles import Profile
from streams.runtime import kafka
from streams.settings import Settings

Engine = Literal["spark", "pandas", "cudf"]
RESULTS = "results"
RESULTS_TOPIC = "inference.results"
PROFILES_TOPIC = "drift.profiles"


class BatchSettings(BaseSettings):
    """Settings of ``sluice batch`` (``SLUICE_BATCH__*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_BATCH__", frozen=True, extra="ignore")
    spark_master: str = Field("local[*]", description="Spark master URL.")
    spark_driver_memory: str = Field("4g", description="Driver memory (local mode: all of Spark).")
    out_dir: Path | None = Field(
        None, description="Where profiles are written; default <state>/profiles."
    )


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile, from where, how."""

    target: str  # a dataset name, or "results"
    engine: Engine = "spark"
    input: Path | None = None
    check: bool = True
    limit: int | None = None


@dataclass(frozen=True)
class ProfileOutcome:
    """The profiles built, and how long it took."""

    profiles: list[Profile]
    seconds: float


def run(
    request: ProfileRequest,
    settings: Settings,
    catalog: Catalog,
    progress: Callable[[str], None],
    batch: BatchSettings | None = None,
) -> ProfileOutcome:
    """Build the profiles of ``request`` (nothing is written or published here).

    ``batch``: the batch jobs' settings, built once by the caller (default: the environment).
    """
    started = time.perf_counter()
    if request.engine == "spark":
        profiles = _with_spark(request, settings, catalog, progress, batch or BatchSettings())
    else:
        profiles = _with_pandas(request, settings, catalog, progress)
    return ProfileOutcome(profiles, time.perf_counter() - started)


def _history_topic(request: ProfileRequest, catalog: Catalog) -> str:
    """The topic whose history is profiled: ``inference.results`` or the dataset's validated."""
    if request.target == RESULTS:
        return RESULTS_TOPIC
    return catalog.dataset(request.target).validated_topic


def _with_pandas(
    request: ProfileRequest, settings: Settings, catalog: Catalog, progress: Callable[[str], None]
) -> list[Profile]:
    import pandas as pd  # noqa: PLC0415 (after cudf.pandas.install(), when asked for)

    from streams.profiling import pandas_engine  # noqa: PLC0415

    engine = request.engine
    if request.input is not None:
        progress(f"reading {request.input}")
        frame = pandas_engine.read_file(request.input)
        source = str(request.input)
    else:
        topic = _history_topic(request, catalog)
        progress(f"reading {catalog.physical(topic)} from the beginning")
        from streams.profiling.topics import read_history  # noqa: PLC0415

        records, source = read_history(settings, catalog, topic, request.limit)
        frame = pd.DataFrame.from_records(records)
    if request.limit is not None:
        frame = frame.head(request.limit)
    progress(f"profiling {len(frame):,} records with {engine}")
    if request.target == RESULTS:
        return pandas_engine.profile_results(frame, source, engine)
    contract = catalog.dataset(request.target).contract
    return [pandas_engine.profile_dataset(frame, contract, source, engine, request.check)]


def _with_spark(
    request: ProfileRequest,
    settings: Settings,
    catalog: Catalog,
    progress: Callable[[str], None],
    batch: BatchSettings,
) -> list[Profile]:
    from streams.profiling import spark_engine  # noqa: PLC0415 (pyspark is an optional extra)

    jars = spark_engine.spark_jars(settings, progress)
    progress(f"starting Spark ({batch.spark_master}) with {len(jars)} Kafka/Avro jars")
    spark = spark_engine.session(jars, batch.spark_master, batch.spark_driver_memory)
    json_lines = False
    if request.input is not None:
        frame = spark_engine.read_file(spark, request.input)
        json_lines = request.input.suffix in {".jsonl", ".json", ".ndjson"}
        source = str(request.input)
    else:
        topic = _history_topic(request, catalog)
        registry = kafka.registry(settings)
        physical = catalog.physical(topic)
        progress(f"reading {physical} with spark-sql-kafka")
        frame = spark_engine.read_topic(
            spark, settings, physical, lambda i: str(registry.get_schema(i).schema_str)
        )
        source = f"topic:{physical}"
    if request.limit is not None:
        frame = frame.limit(request.limit)
    progress("profiling with Spark")
    if request.target == RESULTS:
        return spark_engine.profile_results(frame, source)
    contract = catalog.dataset(request.target).contract
    return [
        spark_engine.profile_dataset(
            frame, contract, source, json_lines=json_lines, check=request.check
        )
    ]


def write(profiles: list[Profile], directory: Path) -> list[Path]:
    """Each profile as ``<directory>/<subject_kind>.<subject>.json``."""
    paths = []
    for profile in profiles:
        path = directory / f"{profile.subject_kind}.{profile.subject}.json"
        profile.write(path)
        paths.append(path)
    return paths


def publish(profiles: list[Profile], settings: Settings, catalog: Catalog) -> None:
    """Send the profiles to ``drift.profiles`` (keyed ``<subject_kind>:<subject>``)."""
    encode = AvroSerde(kafka.registry(settings), catalog).encoder(PROFILES_TOPIC)
    producer = kafka.producer(settings)
    topic = catalog.physical(PROFILES_TOPIC)
    for profile in profiles:
        producer.produce(topic, encode(profile.to_avro()), key=profile.key)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} profile(s) not delivered to {topic}; is Kafka up?")
