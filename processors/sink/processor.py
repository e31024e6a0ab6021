"""sink: every analytics topic into ClickHouse, in batches, losing nothing.

Reads every topic of the catalog that has a table (``streams.warehouse.tables``):
inference requests and results, the metering topics, PII findings, drift
alerts and every ``*.dlq`` (headers only, never the payload). An Avro record is
decoded only when its schema id is registered under its topic's subject and its schema is
safe to decode with (``streams.contracts.serde``), whether Python or ClickHouse
decodes it; any other is dead-lettered with the reason. Each runner batch
(up to 5,000 records or 1 s, unless ``SLUICE_RUNNER__BATCH_*`` say otherwise)
becomes one INSERT per table; the runner commits the input offsets only after
every insert of the batch succeeded.

Failures are told apart by their cause (``streams.warehouse.clickhouse.insert_error``):

* **ClickHouse is unavailable** (connection refused, timeout, server busy, a
  missing table): the batch raises ``TransientError``. The runner commits
  nothing, rewinds, pauses and retries with backoff, so nothing is lost while
  ClickHouse is down, and the rows of a batch that half-succeeded are inserted
  again and collapse (ReplacingMergeTree on each record's natural id).
* **ClickHouse refuses rows** (a value that does not fit its column, refused by
  the server or by the client library before sending): the table's rows are
  split in halves and each half inserted again, down to single rows, so the
  rest loads and k bad rows among n cost about 2·k·log2(n) extra INSERTs. Each
  refused row's record is dead-lettered (``RowRejected``, stage ``load``) with
  the table, the column and the error name, never a value.
* **A record that cannot become a row** (a missing field, a wrong type): it is
  dead-lettered (``RowRejected``) before any insert.

A record with several rows is dead-lettered if any of them is refused; its
other rows load all the same. They cannot be held back (a row already inserted
when another is refused stays), and they do no harm: the record's replay, once
fixed, inserts them again and the ReplacingMergeTree key collapses them.

A record of a dead-letter topic is never dead-lettered again: if its row is
refused, the sink logs it and goes on (the letter itself stays in its topic).

The connection is opened on the first batch (retried like any batch until
ClickHouse answers); it applies the pending migrations first. With the embedded engine (chdb) this
process owns the database directory and serves other processes' queries
(``streams.warehouse.clickhouse.QueryServer``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.contracts.catalog import Catalog
from streams.contracts.serde import AvroSerde
from streams.errors import (
    ConfigurationError,
    RecordError,
    RowRejected,
    SluiceError,
    TransientError,
    value_free,
)
from streams.runtime.spec import Context, InputRecord, NoSettings, Outcome, ProcessorSpec
from streams.warehouse import clickhouse, migrations
from streams.warehouse.tables import (
    AVRO_INGEST,
    BY_TOPIC,
    DEAD_LETTERS,
    Row,
    TableSpec,
    sink_topics,
    table_for,
)

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


@dataclass
class TableRows:
    """The rows a batch has for one table, and the record (its index) each row came from."""

    spec: TableSpec
    rows: list[Row] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)


def to_rows(
    records: Sequence[InputRecord], serde: AvroSerde | None, catalog: Catalog
) -> tuple[dict[str, TableRows], list[Outcome]]:
    """Rows per table for a batch, and the outcome of each record (pure but for decoding)."""
    tables: dict[str, TableRows] = {}
    outcomes: list[Outcome] = []
    for index, record in enumerate(records):
        spec = table_for(record.topic)
        if spec is None:
            outcomes.append(RowRejected(f"no table for topic {record.topic}", stage="sink"))
            continue
        try:
            value: dict[str, Any] = {}
            if spec.avro:
                if serde is None:
                    raise ConfigurationError(
                        f"sink: topic {record.topic} is Avro but the sink was given no Avro "
                        "serde; run it with a Schema Registry (`sluice run sink`)"
                    )
                # As written: rows read fields by name, so no schema resolution is needed.
                value = serde.decode_as_written(record.raw, topic=record.topic)
            rows = spec.rows(record, value)
        except RecordError as error:
            outcomes.append(error)
            continue
        except SluiceError:
            raise  # not the record's fault: no serde, a registry that is down
        except Exception as exc:  # the row functions are pure: the value made it raise
            outcomes.append(
                RowRejected(
                    f"{record.topic} record does not fit table {spec.table}: {value_free(exc)}",
                    details={"exception": type(exc).__name__},
                )
            )
            continue
        table = tables.setdefault(spec.table, TableRows(spec))
        table.rows.extend(rows)
        table.owners.extend([index] * len(rows))
        outcomes.append([])
    return tables, outcomes


@dataclass
class SinkResources:
    """The ClickHouse connections, opened on the first batch, and rows inserted per table."""

    inserted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: INSERT statements per table (more than one per batch when rows were refused).
    inserts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: Rows ClickHouse refused, per table (their records were dead-lettered).
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    warehouse: clickhouse.DirectWarehouse | None = None
    # With the embedded engine: a second connection that serves other processes' queries.
    reader: clickhouse.DirectWarehouse | None = None
    query_server: clickhouse.QueryServer | None = None


SinkContext = Context[NoSettings, SinkResources]


def setup(ctx: Context[NoSettings, None]) -> SinkResources:
    """Nothing to open yet: the first batch connects, so a down ClickHouse only pauses."""
    return SinkResources()


def process_batch(records: Sequence[InputRecord], ctx: SinkContext) -> list[Outcome]:
    """Insert the batch, one INSERT per table; raise TransientError if ClickHouse is down.

    Rows ClickHouse refuses dead-letter their records (``RowRejected``); the rest loads.
    """
    outcomes: list[Outcome | None] = [None] * len(records)
    rest = list(range(len(records)))
    if ctx.settings.clickhouse.avro_ingest:
        rest = _insert_avro(records, ctx, outcomes)
    tables, decoded = to_rows([records[i] for i in rest], ctx.serde, ctx.catalog)
    for index, outcome in zip(rest, decoded, strict=True):
        outcomes[index] = outcome
    if tables:
        for position, error in _insert_rows(tables, ctx, [records[i] for i in rest]).items():
            outcomes[rest[position]] = error
    done = [o if o is not None else [] for o in outcomes]
    return [_unless_dead_letter(r, o) for r, o in zip(records, done, strict=True)]


def _unless_dead_letter(record: InputRecord, outcome: Outcome) -> Outcome:
    """A dead letter that cannot be loaded is logged and skipped: there is no DLQ of a DLQ."""
    if isinstance(outcome, RecordError) and table_for(record.topic) is DEAD_LETTERS:
        log.error(
            "sink: the dead letter %s[%d]@%d has no row in dead_letters: %s: %s "
            "(it stays in its topic)",
            record.topic,
            record.partition,
            record.offset,
            outcome.error_class,
            outcome.message,
        )
        return []
    return outcome


def _insert_avro(
    records: Sequence[InputRecord], ctx: SinkContext, outcomes: list[Outcome | None]
) -> list[int]:
    """ClickHouse-decoded inserts of the Avro topics it can take; returns the records left.

    A topic's records go in one INSERT of their raw bytes. If ClickHouse refuses it (a
    value it cannot decode, a schema it cannot fetch), those records take the Python
    path, which dead-letters the records that do not decode and the rows ClickHouse
    refuses there too (``_load``), or raises TransientError when ClickHouse itself is
    down: a poison record costs one failed Avro INSERT per batch, never a retry loop. An
    INSERT is one block, so nothing is half-applied; a replay would collapse anyway.
    """
    by_topic: dict[str, list[int]] = {}
    rest: list[int] = []
    for index, record in enumerate(records):
        staging = AVRO_INGEST.get(record.topic)
        if staging is None or not record.raw or record.raw[0] != 0:
            rest.append(index)
        elif not _decodable(ctx.serde, record):
            rest.append(index)  # the Python path dead-letters it with the reason
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
        ctx.resources.inserted[BY_TOPIC[topic].table] += len(indexes)
        for index in indexes:
            outcomes[index] = []
    return sorted(rest)


def _decodable(serde: AvroSerde | None, record: InputRecord) -> bool:
    """Whether ClickHouse may decode ``record``: its schema is its topic's, and safe.

    ClickHouse fetches the writer schema by the id in the header, as any decoder
    would, so a record framed with another subject's (or a recursive) schema must
    not reach it: the serde's checks run first, from their caches.
    """
    if serde is None:
        return False
    try:
        serde.check_writer(record.raw, topic=record.topic)
    except RecordError:
        return False
    return True


def _insert_rows(
    tables: dict[str, TableRows], ctx: SinkContext, records: Sequence[InputRecord]
) -> dict[int, RowRejected]:
    """Insert each table's rows; returns the records (their indexes) whose rows were refused."""
    warehouse = _warehouse(ctx)
    refused: dict[int, RowRejected] = {}
    try:
        for table, batch in tables.items():
            for row, error in _load(warehouse, table, batch, ctx.resources):
                owner = batch.owners[row]
                if owner in refused:
                    continue  # the record's first refused row says why
                record = records[owner]
                log.warning(
                    "sink: %s; dead-lettering %s[%d]@%d",
                    error,
                    record.topic,
                    record.partition,
                    record.offset,
                )
                details = {"table": table, "exception": error.exception}
                if error.code is not None:
                    details["code"] = str(error.code)
                refused[owner] = RowRejected(
                    f"ClickHouse refused its row for table {table}: {error.reason}",
                    stage="load",
                    details=details,
                )
    except clickhouse.WarehouseError as exc:
        # The connection stays: clickhouse-connect reconnects over HTTP by itself, and an
        # embedded engine keeps serving queries (and keeps its state) while the runner waits.
        raise TransientError(f"ClickHouse insert failed: {exc}") from exc
    return refused


def _load(
    warehouse: clickhouse.DirectWarehouse,
    table: str,
    batch: TableRows,
    resources: SinkResources,
) -> list[tuple[int, clickhouse.RowsRefusedError]]:
    """Insert ``batch``'s rows; if they are refused, split them to find the refused ones.

    A refused slice is split in halves, each inserted on its own, down to single rows:
    every row that can load loads once, and each refused row is found in about
    2·log2(n) INSERTs. Returns the refused rows (indexes into ``batch.rows``) with
    ClickHouse's refusal. Raises ``WarehouseError`` when ClickHouse is unavailable.
    """
    refused: list[tuple[int, clickhouse.RowsRefusedError]] = []
    pending = [(0, len(batch.rows))]
    while pending:
        start, stop = pending.pop()
        resources.inserts[table] += 1
        try:
            warehouse.insert(table, batch.rows[start:stop], batch.spec.columns)
        except clickhouse.RowsRefusedError as error:
            if stop - start == 1:
                refused.append((start, error))
                resources.refused[table] += 1
            else:
                middle = (start + stop) // 2
                pending += [(middle, stop), (start, middle)]  # the first half first
            continue
        resources.inserted[table] += stop - start
    return sorted(refused, key=lambda item: item[0])


def teardown(ctx: SinkContext) -> None:
    """Stop serving queries and release the database."""
    _disconnect(ctx.resources)
    for table, count in sorted(ctx.resources.inserted.items()):
        log.info("sink: %d rows inserted into %s", count, table)
    for table, count in sorted(ctx.resources.refused.items()):
        log.info("sink: %d rows refused by %s (their records were dead-lettered)", count, table)


def _warehouse(ctx: SinkContext) -> clickhouse.DirectWarehouse:
    resources = ctx.resources
    if resources.warehouse is not None:
        return resources.warehouse
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
    resources.warehouse = warehouse
    path = clickhouse.chdb_path(settings.clickhouse_url)
    if path is not None:
        reader = clickhouse.connect(settings, database=database)
        resources.query_server = clickhouse.QueryServer(
            reader, path, settings.clickhouse.query_host
        ).start()
        resources.reader = reader
    return warehouse


def _disconnect(resources: SinkResources) -> None:
    if resources.query_server is not None:
        resources.query_server.close()
        resources.query_server = None
    for connection in (resources.reader, resources.warehouse):
        if connection is not None:
            connection.close()
    resources.reader = resources.warehouse = None


PROCESSOR: ProcessorSpec[NoSettings, SinkResources] = ProcessorSpec(
    name="sink",
    description="analytics topics and dead letters into ClickHouse",
    inputs=lambda catalog, _settings: inputs(catalog),
    outputs=lambda _catalog, _settings: [],
    process_batch=process_batch,
    decode_inputs=False,
    setup=setup,
    teardown=teardown,
    # Larger, slower batches than a hop: one INSERT per table per batch.
    batching=lambda _settings: (5000, 1000),
)
