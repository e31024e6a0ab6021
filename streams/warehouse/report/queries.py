"""The report's SQL and what it reads back: one query per chart, each over a time window.

Every query reads the deduplicated rows (``FINAL``: the tables are ReplacingMergeTrees
and the sink may insert a replayed row twice). Times go over the wire as epoch seconds
or milliseconds, so a direct connection and the sink's query server (JSON) give the
same values. The window's bounds are the only values formatted into the SQL, and they
are integers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from streams.warehouse.clickhouse import Warehouse
from streams.warehouse.report.slo import SloRow

#: Bucket widths (seconds) the time charts choose from: the smallest giving <= 60 bars.
BUCKETS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MOST_BUCKETS = 60
SLOWEST_TRACES = 15


@dataclass(frozen=True)
class Window:
    """The report's period [start, end) and the width of its time buckets."""

    start: datetime
    end: datetime
    step: timedelta

    @classmethod
    def last(cls, hours: float, now: datetime | None = None) -> Window:
        """The last ``hours`` hours up to ``now`` (UTC, whole seconds)."""
        end = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        start = end - timedelta(hours=hours)
        span = (end - start).total_seconds()
        step = next((s for s in BUCKETS if span / s <= MOST_BUCKETS), BUCKETS[-1])
        return cls(start, end, timedelta(seconds=step))

    @property
    def axis_start(self) -> datetime:
        """The start of the first bucket (buckets are aligned on the epoch)."""
        seconds = self.step.total_seconds()
        return _at(math.floor(self.start.timestamp() / seconds) * seconds)

    @property
    def axis_end(self) -> datetime:
        """The end of the last bucket."""
        seconds = self.step.total_seconds()
        return _at(math.ceil(self.end.timestamp() / seconds) * seconds)

    def sql(self, template: str) -> str:
        """``template`` with {start}, {end} (DateTime64), {step} (seconds) and {limit}."""
        return template.format(
            start=_literal(self.start),
            end=_literal(self.end),
            step=int(self.step.total_seconds()),
            limit=SLOWEST_TRACES,
        )


def _literal(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli(toInt64({int(moment.timestamp() * 1000)}), 'UTC')"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _ms(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def _float(value: Any) -> float:
    return float(value) if value is not None else math.nan


def _decimal(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value is not None else None


COST = """
SELECT
    toUnixTimestamp(toStartOfInterval(completed_at, INTERVAL {step} SECOND)) AS bucket,
    tenant_id,
    model,
    count() AS requests,
    sum(total_tokens) AS tokens,
    sum(cost) AS cost_usd
FROM usage FINAL
WHERE completed_at >= {start} AND completed_at < {end}
GROUP BY bucket, tenant_id, model
ORDER BY bucket, tenant_id, model
"""

LATENCY = """
SELECT
    toUnixTimestamp(toStartOfInterval(completed_at, INTERVAL {step} SECOND)) AS bucket,
    model,
    count() AS requests,
    quantileExact(0.5)(e2e_ms) AS p50_ms,
    quantileExact(0.95)(e2e_ms) AS p95_ms,
    quantileExact(0.99)(e2e_ms) AS p99_ms
FROM results FINAL
WHERE completed_at >= {start} AND completed_at < {end} AND status = 'ok'
GROUP BY bucket, model
ORDER BY bucket, model
"""

THROUGHPUT = """
SELECT
    toUnixTimestamp(toStartOfInterval(completed_at, INTERVAL {step} SECOND)) AS bucket,
    count() AS results,
    countIf(status != 'ok') AS errors
FROM results FINAL
WHERE completed_at >= {start} AND completed_at < {end}
GROUP BY bucket
ORDER BY bucket
"""

DEAD_LETTERS = """
SELECT
    topic,
    error_class,
    if(details['field'] != '', concat(details['field'], ': ', details['rule']), '') AS rule,
    count() AS records
FROM dead_letters FINAL
WHERE ts >= {start} AND ts < {end}
GROUP BY topic, error_class, rule
ORDER BY records DESC, topic, error_class, rule
"""

BLOCKED = """
SELECT
    ifNull(guard_reason, 'unknown') AS reason,
    tenant_id,
    count() AS requests
FROM requests FINAL
WHERE stage = 'blocked' AND created_at >= {start} AND created_at < {end}
GROUP BY reason, tenant_id
ORDER BY requests DESC, reason, tenant_id
"""

PII = """
SELECT entity_type, action, count() AS findings
FROM pii_findings FINAL
WHERE ts >= {start} AND ts < {end}
GROUP BY entity_type, action
ORDER BY findings DESC, entity_type, action
"""

DRIFT = """
SELECT
    toUnixTimestamp64Milli(ts) AS at_ms,
    subject_kind,
    subject,
    signal_name,
    detector,
    severity,
    reference_mean,
    current_mean
FROM drift_alerts FINAL
WHERE ts >= {start} AND ts < {end}
ORDER BY ts, signal
LIMIT 5000
"""

BUDGETS = """
SELECT
    tenant_id,
    period,
    hard,
    requests,
    tokens,
    token_limit,
    cost AS cost_usd,
    cost_limit AS cost_limit_usd
FROM budget_status FINAL
WHERE period_start <= {end} AND period_end > {end}
ORDER BY tenant_id, period
"""

TRACES = """
SELECT
    TraceId AS trace_id,
    toUnixTimestamp64Milli(min(Timestamp)) AS start_ms,
    (max(toUnixTimestamp64Nano(Timestamp) + toInt64(Duration))
        - min(toUnixTimestamp64Nano(Timestamp))) / 1e6 AS duration_ms,
    count() AS spans,
    if(countIf(ParentSpanId = '') > 0,
       argMinIf(SpanName, Timestamp, ParentSpanId = ''),
       argMin(SpanName, Timestamp)) AS root_span,
    arraySort(groupUniqArray(ServiceName)) AS services,
    countIf(StatusCode = 'Error') AS errors
FROM otel_traces FINAL
WHERE Timestamp >= {start} AND Timestamp < {end} AND TraceId != ''
GROUP BY TraceId
ORDER BY duration_ms DESC, trace_id
LIMIT {limit}
"""


# -- rows -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostRow:
    """Spend of a tenant on a model in one bucket."""

    bucket: datetime
    tenant_id: str
    model: str
    requests: int
    tokens: int
    cost: Decimal


@dataclass(frozen=True)
class LatencyRow:
    """End-to-end latency quantiles of a model's successful results in one bucket."""

    bucket: datetime
    model: str
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ThroughputRow:
    """Results (and how many failed) in one bucket."""

    bucket: datetime
    results: int
    errors: int


@dataclass(frozen=True)
class DeadLetterRow:
    """Dead-lettered records of a topic for one reason."""

    topic: str
    error_class: str
    rule: str
    records: int

    @property
    def reason(self) -> str:
        """The error class, with the field and rule of a contract violation."""
        return f"{self.error_class} ({self.rule})" if self.rule else self.error_class


@dataclass(frozen=True)
class BlockedRow:
    """Requests of a tenant that guard blocked for one reason."""

    reason: str
    tenant_id: str
    requests: int


@dataclass(frozen=True)
class PiiRow:
    """PII findings of one entity type handled with one action."""

    entity_type: str
    action: str
    findings: int


@dataclass(frozen=True)
class DriftRow:
    """One drift alert."""

    at: datetime
    subject_kind: str
    subject: str
    signal_name: str
    detector: str
    severity: str
    reference_mean: float | None
    current_mean: float | None

    @property
    def signal(self) -> str:
        """What drifted, as ``subject · signal``."""
        return f"{self.subject} · {self.signal_name}"


@dataclass(frozen=True)
class BudgetRow:
    """A tenant's spend in its current day or month against the limits."""

    tenant_id: str
    period: str
    hard: bool
    requests: int
    tokens: int
    token_limit: int | None
    cost: Decimal
    cost_limit: Decimal | None


@dataclass(frozen=True)
class TraceRow:
    """One trace: when it started, how long its spans took end to end, and where."""

    trace_id: str
    start: datetime
    duration_ms: float
    spans: int
    root_span: str
    services: tuple[str, ...]
    errors: int


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, read from one database."""

    window: Window
    source: str
    cost: list[CostRow] = field(default_factory=list)
    latency: list[LatencyRow] = field(default_factory=list)
    throughput: list[ThroughputRow] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    blocked: list[BlockedRow] = field(default_factory=list)
    pii: list[PiiRow] = field(default_factory=list)
    drift: list[DriftRow] = field(default_factory=list)
    budgets: list[BudgetRow] = field(default_factory=list)
    traces: list[TraceRow] = field(default_factory=list)
    # Over each model's SLO window ending at the report's end, not the report's window.
    slos: list[SloRow] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when the window holds no row at all (budgets aside: they are current)."""
        return not any(
            (
                self.cost,
                self.latency,
                self.throughput,
                self.dead_letters,
                self.blocked,
                self.pii,
                self.drift,
                self.traces,
            )
        )


@dataclass(frozen=True)
class Query:
    """One query of the report, and how its rows become typed rows."""

    name: str
    title: str
    sql: str
    row: Callable[[dict[str, Any]], Any]


QUERIES: tuple[Query, ...] = (
    Query(
        "cost",
        "cost per tenant and model",
        COST,
        lambda r: CostRow(
            _at(r["bucket"]),
            r["tenant_id"],
            r["model"],
            int(r["requests"]),
            int(r["tokens"]),
            Decimal(str(r["cost_usd"])),
        ),
    ),
    Query(
        "latency",
        "latency quantiles per model",
        LATENCY,
        lambda r: LatencyRow(
            _at(r["bucket"]),
            r["model"],
            int(r["requests"]),
            _float(r["p50_ms"]),
            _float(r["p95_ms"]),
            _float(r["p99_ms"]),
        ),
    ),
    Query(
        "throughput",
        "throughput and errors",
        THROUGHPUT,
        lambda r: ThroughputRow(_at(r["bucket"]), int(r["results"]), int(r["errors"])),
    ),
    Query(
        "dead_letters",
        "dead letters",
        DEAD_LETTERS,
        lambda r: DeadLetterRow(r["topic"], r["error_class"], r["rule"], int(r["records"])),
    ),
    Query(
        "blocked",
        "blocked requests",
        BLOCKED,
        lambda r: BlockedRow(r["reason"], r["tenant_id"], int(r["requests"])),
    ),
    Query(
        "pii",
        "PII findings",
        PII,
        lambda r: PiiRow(r["entity_type"], r["action"], int(r["findings"])),
    ),
    Query(
        "drift",
        "drift alerts",
        DRIFT,
        lambda r: DriftRow(
            _ms(r["at_ms"]),
            r["subject_kind"],
            r["subject"],
            r["signal_name"],
            r["detector"],
            r["severity"],
            None if r["reference_mean"] is None else float(r["reference_mean"]),
            None if r["current_mean"] is None else float(r["current_mean"]),
        ),
    ),
    Query(
        "budgets",
        "budget status",
        BUDGETS,
        lambda r: BudgetRow(
            r["tenant_id"],
            r["period"],
            bool(r["hard"]),
            int(r["requests"]),
            int(r["tokens"]),
            None if r["token_limit"] is None else int(r["token_limit"]),
            Decimal(str(r["cost_usd"])),
            _decimal(r["cost_limit_usd"]),
        ),
    ),
    Query(
        "traces",
        "slowest traces",
        TRACES,
        lambda r: TraceRow(
            r["trace_id"],
            _ms(r["start_ms"]),
            float(r["duration_ms"]),
            int(r["spans"]),
            r["root_span"],
            tuple(r["services"]),
            int(r["errors"]),
        ),
    ),
)


def collect(
    warehouse: Warehouse,
    window: Window,
    *,
    on_query: Callable[[Query], None] | None = None,
    queries: Sequence[Query] = QUERIES,
) -> ReportData:
    """Run every query of the report over ``window``; ``on_query`` is told before each."""
    found: dict[str, list[Any]] = {}
    for query in queries:
        if on_query is not None:
            on_query(query)
        result = warehouse.query(window.sql(query.sql).strip())
        found[query.name] = [query.row(row) for row in result.dicts()]
    return ReportData(window=window, source=warehouse.description, **found)
