"""The meter as a faust-streaming app: two agents and one changelogged table.

Topology (``metering.usage`` is both a product topic and the repartition step)::

    inference.results ──price──► metering.usage ──count──► metering.windows
       (any key)                 (key tenant)        │     ├─► metering.budgets
                                                     │     └─► metering.alerts
                                                     └─ state: <app id>-meter-state-changelog

``price`` is stateless: it meters each result (tokens, exact cost) and writes
one usage event keyed by tenant, so each tenant's usage lands in one
partition. ``count`` keeps windows, budgets and seen request ids in one faust
table (memory store, restored from its compacted changelog topic on start) and
emits snapshots. It counts each request once under faust's at-least-once
processing (see ``processors.meter.state``); results from aborted
transactions are never read (``kafka_io.ReadCommittedTransport``).

A record that cannot be decoded goes to ``<topic>.dlq`` with its original
bytes and the ``sluice.error.*`` headers, like in every other processor; so
does a result dated absurdly (``ImplausibleTimestamp``: before 2000, or more
than ``SLUICE_METER__MAX_FUTURE_S`` ahead of meter's clock).

Every record written to ``metering.budgets`` is signed with meter's budget key
(``SLUICE_METER__BUDGET_SIGNING_KEY``, scheme ``METER_BUDGET``) over the topic's
logical name, the key and the exact value bytes: guard believes only statuses
meter signed, so no other writer of the topic can lift a tenant's block.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from opentelemetry.trace import Status, StatusCode

from processors.meter import observe
from processors.meter import state as meter_state
from processors.meter.connection import faust_broker_options
from processors.meter.kafka_io import AvroCodec, SluiceFaustApp
from processors.meter.settings import MeterSettings
from processors.meter.usage import Usage, usage_of
from streams.contracts.catalog import Catalog
from streams.contracts.records import InferenceResult
from streams.contracts.serde import AvroSerde
from streams.errors import ProcessingFailed, RecordError, value_free
from streams.llm.budgets import BudgetConfig
from streams.llm.pricing import PriceTable
from streams.runtime import kafka, metrics
from streams.runtime.dead_letters import dlq_record_headers, error_headers
from streams.runtime.signing import Signer
from streams.runtime.spec import Headers
from streams.settings import Settings

log = logging.getLogger("sluice.meter")

RESULTS = "inference.results"
USAGE = "metering.usage"
WINDOWS = "metering.windows"
BUDGETS = "metering.budgets"
ALERTS = "metering.alerts"
OUTPUTS = [USAGE, WINDOWS, BUDGETS, ALERTS]
TABLE = "meter-state"


class Meter:
    """Builds the faust app and holds what its agents share.

    ``settings`` are Sluice's shared settings (Kafka, registry, runner, state
    directory), ``config`` meter's own (``SLUICE_METER__*``).
    """

    def __init__(
        self,
        settings: Settings,
        config: MeterSettings,
        catalog: Catalog,
        prices: PriceTable,
        budgets: BudgetConfig,
        *,
        datadir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.catalog = catalog
        self.prices = prices
        self.budgets = budgets
        # Built first: without its key meter must not start (nor write unsigned budgets).
        self.signer = config.budget_signer()
        self.app_id = f"{settings.runner.group_prefix}.{config.app_id}"
        self.serde = AvroSerde(kafka.registry(settings), catalog, settings.registry)
        self.codecs = {topic: AvroCodec(self.serde, topic) for topic in [RESULTS, *OUTPUTS]}
        self.counted = 0
        self.duplicates = 0
        self.priced = 0
        self.late = 0
        self.clamped = 0
        self._since_sweep: dict[int, int] = {}
        self.app = self._build(datadir or settings.stack.root / "meter" / self.app_id)

    # -- the app ------------------------------------------------------------------
    def _build(self, datadir: Path) -> faust.App:
        usage_spec = self.catalog.topic(USAGE)
        datadir.mkdir(parents=True, exist_ok=True)
        app = SluiceFaustApp(
            self.app_id,
            # The broker URL, plus the credentials of a secured cluster (as every client's).
            **faust_broker_options(self.settings.kafka),
            store="memory://",
            processing_guarantee="at_least_once",
            topic_replication_factor=usage_spec.replication_factor,
            topic_partitions=usage_spec.partitions,
            consumer_auto_offset_reset="earliest",
            web_enabled=False,
            datadir=str(datadir),
            key_serializer="raw",
            value_serializer="raw",
            producer_acks=-1,
        )
        self.table = app.Table(
            TABLE,
            default=None,
            partitions=usage_spec.partitions,
            # Plain JSON keys and values: faust's model types would need Records.
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
        )
        self.topics = {
            name: app.topic(
                self.catalog.physical(name), key_serializer="raw", value_serializer="raw"
            )
            for name in [RESULTS, USAGE, WINDOWS, BUDGETS, ALERTS]
        }
        self.dead_letters = {
            name: app.topic(
                self.catalog.physical(self.catalog.topic(name).dlq_topic or ""),
                value_serializer="raw",
            )
            for name in [RESULTS, USAGE]
        }
        app.agent(self.topics[RESULTS], name="sluice.meter.price")(self._price)
        app.agent(self.topics[USAGE], name="sluice.meter.count")(self._count)
        return app

    # -- agents -------------------------------------------------------------------
    async def _price(self, stream: faust.StreamT[Any]) -> None:
        """inference.results → one usage event per request, keyed by tenant."""
        async for event in stream.events():
            message = event.message
            metrics.RECORDS_IN.labels("meter", message.topic).inc()
            span = observe.price_span(
                message.headers, message.topic, self.app_id, message.partition
            )
            try:
                result = InferenceResult.from_avro(self.codecs[RESULTS].loads(message.value))
                usage = usage_of(result, self.prices)
                # An absurd date is dead-lettered here, before it reaches metering.usage.
                meter_state.check_plausible(
                    usage.completed_at, datetime.now(UTC), max_future_ms=self.config.max_future_ms
                )
            except Exception as exc:  # an agent that raises stops for good: dead-letter instead
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.end()
                await self._dead_letter(RESULTS, message, _as_record_error(exc))
                continue
            observe.describe_usage(span, usage)
            span.end()
            self.priced += 1
            await self.topics[USAGE].send(
                key=usage.tenant_id.encode(),
                value=self.codecs[USAGE].dumps(usage.to_avro()),
                headers=observe.headers_of(span),
            )
            metrics.RECORDS_OUT.labels("meter", self.catalog.physical(USAGE)).inc()

    async def _count(self, stream: faust.StreamT[Any]) -> None:
        """metering.usage → windows, budgets and alerts, each request counted once."""
        async for event in stream.events():
            message = event.message
            metrics.RECORDS_IN.labels("meter", message.topic).inc()
            try:
                usage = Usage.from_avro(self.codecs[USAGE].loads(message.value))
            except Exception as exc:
                await self._dead_letter(USAGE, message, _as_record_error(exc))
                continue
            try:
                outputs = meter_state.apply(
                    self.table,
                    usage,
                    partition=message.partition,
                    offset=message.offset,
                    budgets=self.budgets,
                    now=datetime.now(UTC),
                    window_retention_ms=self.config.window_retention_ms,
                    arrived=_arrival(message),
                    max_clock_skew_ms=self.config.max_clock_skew_ms,
                    max_future_ms=self.config.max_future_ms,
                )
            except Exception as exc:  # an agent that raises stops for good: dead-letter instead
                await self._dead_letter(USAGE, message, _as_record_error(exc))
                continue
            if outputs.clamped:
                self.clamped += 1
                if self.clamped % 1000 == 1:
                    log.warning(
                        "%d usage events so far dated in the future (beyond "
                        "SLUICE_METER__MAX_CLOCK_SKEW_S): metered at arrival",
                        self.clamped,
                    )
            if outputs.duplicate:
                self.duplicates += 1
                observe.DUPLICATES.inc()
                continue
            self.counted += 1
            observe.count_usage(usage, self.prices.models)
            key = usage.tenant_id.encode()
            for window in outputs.windows:
                await self.topics[WINDOWS].send(key=key, value=self.codecs[WINDOWS].dumps(window))
            if outputs.budget is not None:
                value = self.codecs[BUDGETS].dumps(outputs.budget.to_avro())
                await self.topics[BUDGETS].send(
                    key=key, value=value, headers=signed_budget_headers(self.signer, key, value)
                )
            for alert in outputs.alerts:
                log.warning(
                    "tenant %s reached %d%% of its %s %s budget",
                    alert["tenant_id"],
                    alert["threshold_pct"],
                    alert["period"],
                    alert["metric"],
                )
                await self.topics[ALERTS].send(key=key, value=self.codecs[ALERTS].dumps(alert))
            if outputs.late:
                self.late += 1
                if self.late % 1000 == 1:  # a backfill would log every record otherwise
                    log.info(
                        "%d usage events so far completed in windows that are already final "
                        "(older than SLUICE_METER__WINDOW_RETENTION_S): metered, not windowed",
                        self.late,
                    )
            self._maybe_sweep(message.partition, message.offset)

    def _maybe_sweep(self, partition: int, offset: int) -> None:
        count = self._since_sweep.get(partition, 0) + 1
        if count < self.config.sweep_every:
            self._since_sweep[partition] = count
            return
        self._since_sweep[partition] = 0
        expired = meter_state.sweep(
            self.table,
            partition=partition,
            offset=offset,
            now=datetime.now(UTC),
            dedup_records=self.config.dedup_records,
            retention_ms=self.config.window_retention_ms,
        )
        if expired:
            log.info("partition %d: dropped %d expired state entries", partition, len(expired))

    async def _dead_letter(self, topic: str, message: Any, error: RecordError) -> None:
        headers = dlq_record_headers(
            list(message.headers or []),
            error_headers(
                error,
                processor="meter",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                max_message_chars=self.settings.runner.max_dlq_message_chars,
            ),
        )
        log.warning(
            "%s[%d]@%d: %s; sent to the DLQ",
            message.topic,
            message.partition,
            message.offset,
            error.error_class,
        )
        await self.dead_letters[topic].send(key=message.key, value=message.value, headers=headers)
        metrics.RECORDS_DLQ.labels("meter", message.topic, error.stage).inc()


def signed_budget_headers(signer: Signer, key: bytes, value: bytes) -> Headers:
    """Meter's signature of one ``metering.budgets`` record (its exact key and value bytes).

    Signed under the topic's logical name, so a prefixed deployment signs what guard,
    reading the same logical topic, verifies.
    """
    return signer.headers(BUDGETS, key, value)


def _arrival(message: Any) -> datetime | None:
    """When a usage event reached ``metering.usage``: its record's timestamp, if it has one."""
    try:
        return datetime.fromtimestamp(float(message.timestamp), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _as_record_error(exc: Exception) -> RecordError:
    """What a record whose decoding or pricing raised becomes in the DLQ."""
    if isinstance(exc, RecordError):
        return exc
    kind = type(exc).__name__
    return ProcessingFailed(
        f"meter raised {value_free(exc)} on this record", details={"exception": kind}
    )
