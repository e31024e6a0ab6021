"""sink: every analytics topic into ClickHouse, in batches, losing nothing.

Reads every topic of the catalog that has a table (``processors.sink_tables``):
inference requests and results, the metering topics, PII findings, drift
alerts and every ``*.dlq`` (headers only, never the payload). Each runner batch
(up to 5,000 records or 1 s, unless ``SLUICE_RUNNER__BATCH_*`` say otherwise)
becomes one INSERT per table; the runner commits the input offsets only after
every insert of the batch succeeded. If ClickHouse fails, the batch raises
``TransientError``: the runner commits nothing, rewinds, pauses and retries
with backoff, so nothing is lost while ClickHouse is down, and the rows of a
batch that half-succeeded are inserted again and collapse (ReplacingMergeTree
on each record's natural id).

The connection is opened on the first batch (retried like any batch until
ClickHouse answers); it applies the pending migrations first. With the embedded engine (chdb) this
process owns the database directory and serves other processes' queries
(``streams.clickhouse.QueryServer``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from processors.sink_tables import AVRO_INGEST, BY_TOPIC, TableSpec, sink_topics, table_for
from streams import clickhouse, migrations
from streams.catalog import Catalog
from streams.errors import RecordError, TransientError
from streams.processor import Context, InputRecord, Outcome, ProcessorSpec
from streams.serde import AvroSerde

log = logging.getLogger("sluice.sink")
MIGRATIONS = "infra/clickhouse/migrations"


def inputs(catalog: Catalog) -> list[str]:
    """Every catalog topic with a table; warns about those without a dead-letter topic."""
    read, skipped = sink_topics(catalog)
    for topic in skipped:
        log.warning(
            "sink: not reading %s: it has no dead-letter topic. Set `dlq: true` on it in "
            "schemas/topics.yaml and run `sluice schemas apply`.",
            topic,
        )
    return read


def to_rows(
    records: Sequence[InputRecord], serde: AvroSerde | None, catalog: Catalog
) -> tuple[dict[str, tuple[TableSpec, list[Any]]], list[Outcome]]:
    """Rows per table for a batch, and the outcome of each record (pure but for decoding)."""
    tables: dict[str, tuple[TableSpec, list[Any]]] = {}
    outcomes: list[Outcome] = []
    for record in records:
        spec = table_for(record.topic)
        if spec is None:
            outcomes.append(RecordError("sink", f"no table for topic {record.topic}"))
            continue
        try:
            value: dict[str, Any] = {}
            if spec.avro:
                if serde is None:
                    raise RecordError("deserialize", "no Avro serde")
                # As written: rows read fields by name, so no schema resolution is needed.
                value = serde.decode_as_written(record.raw)
            rows = spec.rows(record, value)
        except RecordError as error:
            outcomes.append(error)
            continue
        except (KeyError, TypeError, ValueError) as exc:
            outcomes.append(
                RecordError(
                    "transform",
                    f"{record.topic} record does not fit table {spec.table}: "
                    f"{type(exc).__name__}: {exc}",
                    error_class=type(exc).__name__,
                )
            )
            continue
        tables.setdefault(spec.table, (spec, []))[1].extend(rows)
        outcomes.append([])
    return tables, outcomes


def setup(ctx: Context) -> None:
    """Nothing to open yet: the first batch connects, so a down ClickHouse only pauses."""
    ctx.resources["inserted"] = defaultdict(int)


def process_batch(records: Sequence[InputRecord], ctx: Context) -> list[Outcome]:
    """Insert the batch, one INSERT per table; raise TransientError if ClickHouse fails."""
    outcomes: list[Outcome | None] = [None] * len(records)
    rest = list(range(len(records)))
    if ctx.settings.clickhouse.avro_ingest:
        rest = _insert_avro(records, ctx, outcomes)
    tables, decoded = to_rows([records[i] for i in rest], ctx.services.get("serde"), ctx.catalog)
    for index, outcome in zip(rest, decoded, strict=True):
        outcomes[index] = outcome
    done = [o if o is not None else [] for o in outcomes]
    if not tables:
        return done
    _insert_rows(tables, ctx)
    return done


def _insert_avro(
    records: Sequence[InputRecord], ctx: Context, outcomes: list[Outcome | None]
) -> list[int]:
    """ClickHouse-decoded inserts of the Avro topics it can take; returns the records left.

    A topic's records go in one INSERT of their raw bytes. If ClickHouse refuses it (a
    value it cannot decode, a schema it cannot fetch), those records take the Python
    path, which finds the bad ones and dead-letters them, or raises TransientError when
    ClickHouse itself is down. An INSERT is one block, so nothing is half-applied; a
    replay would collapse anyway.
    """
    by_topic: dict[str, list[int]] = {}
    rest: list[int] = []
    for index, record in enumerate(records):
        staging = AVRO_INGEST.get(record.topic)
        if staging is None or not record.raw or record.raw[0] != 0:
            rest.append(index)
        else:
            by_topic.setdefault(record.topic, []).append(index)
    if not by_topic:
        return rest
    warehouse = _warehouse(ctx)
    registry = ctx.settings.clickhouse.avro_registry_url or ctx.settings.registry.url
    for topic, indexes in by_topic.items():
        try:
            warehouse.insert_avro(
                AVRO_INGEST[topic], [records[i].raw or b"" for i in indexes], registry
            )
        except clickhouse.WarehouseError as exc:
            log.warning(
                "sink: ClickHouse did not take %d %s records as Avro (%s); decoding them here",
                len(indexes),
                topic,
                exc,
            )
            rest.extend(indexes)
            continue
        ctx.resources["inserted"][BY_TOPIC[topic].table] += len(indexes)
        for index in indexes:
            outcomes[index] = []
    return sorted(rest)


def _insert_rows(tables: dict[str, tuple[TableSpec, list[Any]]], ctx: Context) -> None:
    warehouse = _warehouse(ctx)
    try:
        for table, (spec, rows) in tables.items():
            warehouse.insert(table, rows, spec.columns)
            ctx.resources["inserted"][table] += len(rows)
    except clickhouse.WarehouseError as exc:
        # The connection stays: clickhouse-connect reconnects over HTTP by itself, and an
        # embedded engine keeps serving queries (and keeps its state) while the runner waits.
        raise TransientError(f"ClickHouse insert failed: {exc}") from exc


def teardown(ctx: Context) -> None:
    """Stop serving queries and release the database."""
    _disconnect(ctx)
    for table, count in sorted(ctx.resources.get("inserted", {}).items()):
        log.info("sink: %d rows inserted into %s", count, table)


def _warehouse(ctx: Context) -> clickhouse.DirectWarehouse:
    warehouse: clickhouse.DirectWarehouse | None = ctx.resources.get("warehouse")
    if warehouse is not None:
        return warehouse
    settings = ctx.settings
    database = settings.clickhouse.database
    try:
        bootstrap = clickhouse.connect(settings)
        try:
            clickhouse.ensure_database(bootstrap, database)
        finally:
            bootstrap.close()
        warehouse = clickhouse.connect(settings, database=database)
        applied = migrations.migrate(warehouse, settings.project_root / MIGRATIONS)
    except clickhouse.WarehouseError as exc:
        raise TransientError(f"ClickHouse unavailable: {exc}") from exc
    new = [f"{o.version:04d}_{o.name}" for o in applied if o.action == "applied"]
    log.info(
        "sink: writing to %s, database %s%s",
        warehouse.description,
        database,
        f" (applied migrations {', '.join(new)})" if new else "",
    )
    ctx.resources["warehouse"] = warehouse
    path = clickhouse.chdb_path(settings.clickhouse_url)
    if path is not None:
        reader = clickhouse.connect(settings, database=database)
        ctx.resources["query_server"] = clickhouse.QueryServer(
            reader, path, settings.clickhouse.query_host
        ).start()
        ctx.resources["reader"] = reader
    return warehouse


def _disconnect(ctx: Context) -> None:
    server = ctx.resources.pop("query_server", None)
    if server is not None:
        server.close()
    for name in ("reader", "warehouse"):
        warehouse = ctx.resources.pop(name, None)
        if warehouse is not None:
            warehouse.close()


PROCESSOR = ProcessorSpec(
    name="sink",
    description="analytics topics and dead letters into ClickHouse",
    inputs=inputs,
    outputs=lambda _catalog: [],
    process_batch=process_batch,
    decode_inputs=False,
    setup=setup,
    teardown=teardown,
    # Larger, slower batches than a hop: one INSERT per table per batch.
    batching=lambda: (5000, 1000),
)
