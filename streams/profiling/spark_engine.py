"""The Spark engine of ``sluice batch profile``: the same profile as pandas, on data of any size.

Local mode by default (``local[*]``); point ``SLUICE_BATCH__SPARK_MASTER`` at a
cluster for more. Kafka is read with Spark's own source (``spark-sql-kafka-0-10``),
whose jars Maven fetches from Maven Central (``infra/local/maven/spark/pom.xml``,
resolved like the broker's jars, at pyspark's own version so they always match).
Values are Confluent-framed Avro: the 5-byte header (magic byte, schema id) is
stripped and each schema id's writer schema, fetched from the registry, decodes
its records with open-source ``from_avro``.

What must be identical to pandas is shared: quantile ranks and category ranking
(``streams.profiling.profiles``) and the contract check (``streams.profiling.checks``, run in
Spark's Python workers through ``mapInPandas``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyspark
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 (Spark's own convention)
from pyspark.sql import types as T  # noqa: N812

from streams.contracts.datasets import Contract
from streams.profiling.checks import (
    VIOLATIONS_COLUMN,
    check_rows,
    null_rate_violations,
    row_violations,
    rule_violations,
)
from streams.profiling.profiles import (
    MAX_CATEGORIES,
    QUANTILE_PROBS,
    CategoricalProfile,
    EmbeddingProfile,
    NumericProfile,
    Profile,
    dataset_fields,
    histogram_edges,
    rank_categories,
)
from streams.runtime import java_kafka
from streams.runtime.maven import Progress, build_classpath, read_classpath
from streams.settings import PROJECT_ROOT, Settings

POM = PROJECT_ROOT / "infra" / "local" / "maven" / "spark" / "pom.xml"
#: percentile_approx accuracy: rank error at most n / ACCURACY, and exact below that many rows.
ACCURACY = 1_000_000


# -- the session ----------------------------------------------------------------------
def spark_jars(settings: Settings, progress: Progress) -> list[Path]:
    """Kafka and Avro jars for pyspark's Spark version, minus what pyspark already ships."""
    version = pyspark.__version__
    output = settings.stack.root / "dist" / f"spark-kafka-{version}.classpath"
    if not output.exists() or output.stat().st_mtime < POM.stat().st_mtime:
        progress(f"resolving spark-sql-kafka-0-10 {version} with Maven")
        build_classpath(POM, output, {"spark.version": version}, settings.stack.maven, progress)
    bundled = {_artifact(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    return [jar for jar in read_classpath(output) if _artifact(jar.name) not in bundled]


def _artifact(file_name: str) -> str:
    """``kafka-clients-3.9.2.jar`` -> ``kafka-clients``."""
    stem = file_name.removesuffix(".jar")
    parts = stem.split("-")
    while parts and parts[-1][:1].isdigit():
        parts.pop()
    return "-".join(parts)


def session(jars: list[Path], master: str = "local[*]", driver_memory: str = "4g") -> SparkSession:
    """A Spark session in UTC with the Kafka jars; quiet, no UI."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName("sluice-batch")
        .config("spark.jars", ",".join(str(j) for j in jars))
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


# -- sources ---------------------------------------------------------------------------
def read_file(spark: SparkSession, path: Path) -> DataFrame:
    """Parquet as typed columns; JSON lines as one ``value`` column of raw text."""
    if path.suffix in {".jsonl", ".json", ".ndjson"}:
        return spark.read.text(str(path)).where(F.trim("value") != "")
    return spark.read.parquet(str(path))


def read_topic(
    spark: SparkSession, settings: Settings, topic: str, writer_schema: Callable[[int], str]
) -> DataFrame:
    """Every committed record of ``topic`` decoded with its writer schema (by schema id)."""
    options = {
        "kafka.bootstrap.servers": settings.kafka.bootstrap_servers,
        "subscribe": topic,
        "startingOffsets": "earliest",
        "endingOffsets": "latest",
        "kafka.isolation.level": "read_committed",
        # librdkafka's names pass through; its security options are translated (a Java
        # client has no sasl.username or ssl.ca.location), the password into the JAAS login.
        **{
            f"kafka.{k}": v
            for k, v in settings.kafka.options.items()
            if not java_kafka.is_security_option(k)
        },
        **{f"kafka.{k}": v for k, v in java_kafka.java_security_properties(settings.kafka).items()},
    }
    raw = spark.read.format("kafka").options(**options).load().where(F.col("value").isNotNull())
    framed = raw.select(
        F.conv(F.hex(F.substring("value", 2, 4)), 16, 10).cast("int").alias("schema_id"),
        F.expr("substring(value, 6, length(value) - 5)").alias("body"),
    )
    ids = sorted(r.schema_id for r in framed.select("schema_id").distinct().collect())
    if not ids:
        return spark.createDataFrame([], T.StructType([]))
    from pyspark.sql.avro.functions import from_avro  # noqa: PLC0415 (needs the spark-avro jar)

    parts = []
    for schema_id in ids:
        decoded = framed.where(F.col("schema_id") == schema_id).select(
            from_avro("body", writer_schema(schema_id), {"mode": "FAILFAST"}).alias("r")
        )
        parts.append(decoded.select("r.*"))
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part, allowMissingColumns=True)
    return result


# -- the contract check ------------------------------------------------------------------
def checked(frame: DataFrame, contract: Contract, json_lines: bool) -> DataFrame:
    """``frame`` with a column of the rules each row breaks ("" when it passes)."""
    schema = T.StructType([*frame.schema.fields, T.StructField(VIOLATIONS_COLUMN, T.StringType())])

    def check(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if json_lines:
                rows = [_line_violations(line, contract) for line in batch["value"]]
            else:
                rows = check_rows(batch.to_dict("records"), contract)
            yield batch.assign(**{VIOLATIONS_COLUMN: rows})

    return frame.mapInPandas(check, schema)


def _line_violations(line: str, contract: Contract) -> str:
    try:
        document = json.loads(line)
    except ValueError:
        return "_record:invalid_json"
    if not isinstance(document, dict):
        return "_record:invalid_json"
    return row_violations(document, contract)


def typed_lines(frame: DataFrame, contract: Contract) -> DataFrame:
    """Parse JSON lines into the columns the profile reads, typed as the schema says."""
    fields = dataset_fields(contract)
    schema = T.StructType(
        [T.StructField(n, T.DoubleType()) for n in fields.numeric]
        + [T.StructField(n, T.StringType()) for n in fields.categorical]
    )
    return frame.select(F.from_json("value", schema).alias("r")).select("r.*")


# -- profiles ------------------------------------------------------------------------------
def _number(name: str) -> Column:
    column = F.col(name).cast("double")
    return F.when(F.isnan(column), F.lit(None)).otherwise(column)


def numeric_profiles(frame: DataFrame, names: list[str]) -> list[NumericProfile]:
    """The pandas engine's ``numeric_profile`` for several columns, in two passes over the data."""
    if not names:
        return []
    aggregations = []
    for i, name in enumerate(names):
        value = _number(name)
        aggregations += [
            F.count(value).alias(f"n{i}"),
            F.sum(value.isNull().cast("long")).alias(f"nulls{i}"),
            F.mean(value).alias(f"mean{i}"),
            F.stddev_samp(value).alias(f"std{i}"),
            F.min(value).alias(f"min{i}"),
            F.max(value).alias(f"max{i}"),
            F.percentile_approx(value, list(QUANTILE_PROBS), ACCURACY).alias(f"q{i}"),
        ]
    first = frame.agg(*aggregations).collect()[0]
    edges = {
        i: histogram_edges(float(q) for q in first[f"q{i}"])
        for i in range(len(names))
        if first[f"n{i}"]
    }
    # Second pass: each value's bin by binary search over its column's edges (k = the
    # smallest edge >= the value), then one group-by over (column, bin) for all columns.
    binned = frame.select(
        F.explode(
            F.array(
                *[
                    F.struct(F.lit(i).alias("c"), _bin_of(_number(names[i]), e).alias("b"))
                    for i, e in edges.items()
                ]
            )
        ).alias("x")
    ).where(F.col("x.b").isNotNull())
    bins: dict[tuple[int, int], int] = {}
    if edges:
        for row in binned.groupBy("x.c", "x.b").count().collect():
            bins[(int(row["c"]), int(row["b"]))] = int(row["count"])
    profiles = []
    for i, name in enumerate(names):
        n, nulls = int(first[f"n{i}"]), int(first[f"nulls{i}"] or 0)
        if n == 0:
            profiles.append(NumericProfile(name, 0, nulls, None, None, None, None, [], [], [], []))
            continue
        std = first[f"std{i}"]
        profiles.append(
            NumericProfile(
                field=name,
                count=n,
                null_count=nulls,
                mean=float(first[f"mean{i}"]),
                std=float(std) if n > 1 and std is not None and math.isfinite(std) else 0.0,
                min=float(first[f"min{i}"]),
                max=float(first[f"max{i}"]),
                quantile_probs=list(QUANTILE_PROBS),
                quantiles=[float(q) for q in first[f"q{i}"]],
                histogram_edges=edges[i],
                histogram_counts=[bins.get((i, k), 0) for k in range(len(edges[i]))],
            )
        )
    return profiles


def _bin_of(value: Column, edges: list[float], low: int = 0, high: int | None = None) -> Column:
    """Smallest k in [low, high) with value <= edges[k] (else high), as nested CASE WHENs.

    About seven comparisons per value for 101 edges, and an expression Spark compiles,
    unlike a hundred ``sum(when(...))`` aggregates or a lambda over an array.
    """
    high = len(edges) if high is None else high
    if low >= high:
        return F.lit(low)
    middle = (low + high) // 2
    return F.when(value <= F.lit(edges[middle]), _bin_of(value, edges, low, middle)).otherwise(
        _bin_of(value, edges, middle + 1, high)
    )


def categorical_profile(frame: DataFrame, name: str) -> CategoricalProfile | None:
    """Category counts; None when there are more than MAX_CATEGORIES distinct values."""
    rows = frame.groupBy(name).count().limit(MAX_CATEGORIES + 2).collect()
    null_count = sum(int(r["count"]) for r in rows if r[name] is None)
    tally = {str(r[name]): int(r["count"]) for r in rows if r[name] is not None}
    if len(tally) > MAX_CATEGORIES:
        return None
    names, kept, other = rank_categories(tally)
    return CategoricalProfile(name, sum(tally.values()), null_count, names, kept, other)


def profile_dataset(
    frame: DataFrame, contract: Contract, source: str, *, json_lines: bool, check: bool = True
) -> Profile:
    """Check every record against the contract, then profile the ones that pass."""
    counts: dict[tuple[str, str], int] = {}
    if check:
        frame = checked(frame, contract, json_lines).persist()
        exploded = frame.where(F.col(VIOLATIONS_COLUMN) != "").select(
            F.explode(F.split(VIOLATIONS_COLUMN, ";")).alias("v")
        )
        for row in exploded.groupBy("v").count().collect():
            field, _, rule = row["v"].partition(":")
            counts[(field, rule)] = int(row["count"])
        frame = frame.where(F.col(VIOLATIONS_COLUMN) == "")
    if json_lines:
        frame = typed_lines(frame, contract)
    fields = dataset_fields(contract)
    present = set(frame.columns)
    numeric = numeric_profiles(frame, [n for n in fields.numeric if n in present])
    categorical = [
        p
        for n in fields.categorical
        if n in present and (p := categorical_profile(frame, n)) is not None
    ]
    rows = frame.count()
    profile = Profile(
        subject_kind="dataset",
        subject=contract.dataset,
        source=source,
        engine="spark",
        rows=rows,
        numeric=numeric,
        categorical=categorical,
        contract_version=contract.version,
    )
    violations = rule_violations(counts, contract) + null_rate_violations(profile, contract)
    return Profile(**{**profile.__dict__, "violations": violations})


def profile_results(frame: DataFrame, source: str) -> list[Profile]:
    """One profile per model, as the pandas engine computes it."""
    ok = F.col("status") == "ok"
    columns = set(frame.columns)
    text = F.length("output_text") if "output_text" in columns else F.lit(None)
    measures = frame.select(
        F.col("model").cast("string").alias("model"),
        (~ok).cast("double").alias("error"),
        *[
            F.when(ok, F.col(n).cast("double")).alias(n)
            for n in ("e2e_ms", "input_tokens", "output_tokens")
        ],
        F.when(ok, text.cast("double")).alias("output_chars"),
        F.when(ok, F.transform("embedding", lambda x: x.cast("double"))).alias("embedding")
        if "embedding" in columns
        else F.lit(None).cast("array<double>").alias("embedding"),
    ).persist()
    profiles = []
    for model in sorted(r["model"] for r in measures.select("model").distinct().collect()):
        mine = measures.where(F.col("model") == model)
        numeric = numeric_profiles(
            mine, ["e2e_ms", "input_tokens", "output_tokens", "output_chars", "error"]
        )
        embedding, extra = _embedding_profiles(mine)
        profiles.append(
            Profile(
                subject_kind="model",
                subject=model,
                source=source,
                engine="spark",
                rows=mine.count(),
                numeric=numeric + extra,
                categorical=[],
                embedding=embedding,
            )
        )
    measures.unpersist()
    return profiles


def _embedding_profiles(frame: DataFrame) -> tuple[EmbeddingProfile | None, list[NumericProfile]]:
    vectors = frame.where(F.col("embedding").isNotNull() & (F.size("embedding") > 0))
    widths = vectors.groupBy(F.size("embedding").alias("w")).count().collect()
    if not widths:
        return None, []
    width = max(widths, key=lambda r: (r["count"], r["w"]))["w"]
    vectors = vectors.where(F.size("embedding") == width)
    sums = (
        vectors.select(F.posexplode("embedding").alias("i", "x"))
        .groupBy("i")
        .agg(F.mean("x").alias("m"))
    )
    centroid = [float(r["m"]) for r in sorted(sums.collect(), key=lambda r: r["i"])]
    length = math.sqrt(sum(x * x for x in centroid)) or 1.0
    unit = F.array(*[F.lit(x / length) for x in centroid])
    norm = F.sqrt(
        F.aggregate(F.transform("embedding", lambda x: x * x), F.lit(0.0), lambda a, b: a + b)
    )
    dot = F.aggregate(
        F.zip_with("embedding", unit, lambda a, b: a * b), F.lit(0.0), lambda a, b: a + b
    )
    derived = vectors.select(
        norm.alias("embedding_norm"),
        F.when(norm > 0, dot / norm).otherwise(F.lit(0.0)).alias("embedding_cosine"),
    )
    count = vectors.count()
    return (
        EmbeddingProfile(int(width), count, centroid),
        numeric_profiles(derived, ["embedding_norm", "embedding_cosine"]),
    )
