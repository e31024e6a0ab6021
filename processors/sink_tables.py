"""Which topic goes to which ClickHouse table, and how a record becomes a row (pure).

Columns are listed in the order the row functions fill them; the tables
themselves are in ``infra/clickhouse/migrations``. Text that may hold personal
data (prompts, outputs, dead-letter payloads) is never turned into a column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.catalog import DLQ_SUFFIX, Catalog
from streams.dlq import parse_error_headers
from streams.processor import InputRecord

Row = tuple[Any, ...]


@dataclass(frozen=True)
class TableSpec:
    """A ClickHouse table and how to fill it from a decoded record."""

    table: str
    columns: tuple[str, ...]
    row: Callable[[InputRecord, dict[str, Any]], Row | list[Row]]
    avro: bool = True  # False: the record's value is not decoded (dead-letter topics)
    multi_row: bool = False  # True: ``row`` returns a list of rows

    def rows(self, record: InputRecord, value: dict[str, Any]) -> list[Row]:
        """The rows of one record."""
        made = self.row(record, value)
        return made if isinstance(made, list) else [made]


def _guard(verdict: dict[str, Any] | None) -> tuple[Any, ...]:
    if verdict is None:
        return None, None, None, None, None, {}
    return (
        verdict["action"],
        verdict.get("reason"),
        verdict["policy_version"],
        verdict["redacted"],
        verdict.get("injection_score"),
        dict(verdict.get("entity_counts") or {}),
    )


_STAGES = {
    "inference.requests": "received",
    "inference.requests.safe": "safe",
    "inference.requests.blocked": "blocked",
}


def _request(record: InputRecord, v: dict[str, Any]) -> Row:
    action, reason, policy, redacted, score, entities = _guard(v.get("guard"))
    return (
        v["request_id"],
        _STAGES[record.topic],
        v["tenant_id"],
        v["model"],
        v.get("operation", ""),
        v.get("source", ""),
        v.get("user_id"),
        v["created_at"],
        len(v.get("input_text") or ""),
        v.get("max_tokens"),
        action,
        reason,
        policy,
        redacted,
        score,
        entities,
        record.topic,
    )


def _result(record: InputRecord, v: dict[str, Any]) -> Row:
    in_action, in_reason, in_policy, in_redacted, score, in_entities = _guard(v.get("input_guard"))
    out_action, _, _, out_redacted, _, out_entities = _guard(v.get("output_guard"))
    return (
        v["request_id"],
        v["tenant_id"],
        v["model"],
        v.get("model_version", ""),
        v.get("operation", ""),
        v["status"],
        v.get("error_code"),
        max(0, v.get("input_tokens", 0)),
        max(0, v.get("cached_input_tokens", 0)),
        max(0, v.get("output_tokens", 0)),
        v.get("queue_ms", 0.0),
        v.get("inference_ms", 0.0),
        v.get("e2e_ms", 0.0),
        max(0, v.get("batch_size", 0)),
        v.get("device", ""),
        v["request_created_at"],
        v["completed_at"],
        in_action,
        in_reason,
        in_policy,
        in_redacted,
        score,
        in_entities,
        out_action,
        out_redacted,
        out_entities,
    )


_USAGE_COLUMNS = (
    "request_id",
    "tenant_id",
    "model",
    "operation",
    "status",
    "error_code",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "total_tokens",
    "input_cost",
    "cached_input_cost",
    "output_cost",
    "cost",
    "currency",
    "priced",
    "price_version",
    "request_created_at",
    "completed_at",
)
_WINDOW_COLUMNS = (
    "tenant_id",
    "model",
    "window",
    "window_start",
    "window_end",
    "requests",
    "errors",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost",
    "version",
    "updated_at",
)
_ALERT_COLUMNS = (
    "alert_id",
    "tenant_id",
    "period",
    "period_start",
    "metric",
    "threshold_pct",
    "used",
    "budget_limit",
    "hard",
    "request_id",
    "raised_at",
)


def _fields(columns: tuple[str, ...]) -> Callable[[InputRecord, dict[str, Any]], Row]:
    def row(_record: InputRecord, v: dict[str, Any]) -> Row:
        return tuple(v[c] for c in columns)

    return row


def _budget_rows(_record: InputRecord, v: dict[str, Any]) -> list[Row]:
    return [
        (
            v["tenant_id"],
            p["period"],
            p["period_start"],
            p["period_end"],
            v["hard"],
            p["tokens"],
            p["cost"],
            p.get("token_limit"),
            p.get("cost_limit"),
            p["requests"],
            v["version"],
            v["updated_at"],
        )
        for p in v["periods"]
    ]


def _pii(_record: InputRecord, v: dict[str, Any]) -> Row:
    ts = v.get("detected_at") or v.get("ts")
    return (
        v["request_id"],
        v["tenant_id"],
        v["field"],
        v["entity_type"],
        v["start"],
        v["end"],
        v["score"],
        v.get("recognizer", ""),
        v.get("action", ""),
        v.get("policy_version", ""),
        ts,
    )


def _drift(record: InputRecord, v: dict[str, Any]) -> Row:
    ts = v.get("ts") or v.get("detected_at") or _ms(record.timestamp_ms)
    signal = str(v.get("signal", ""))
    detector = str(v.get("detector", ""))
    alert_id = v.get("alert_id") or f"{signal}|{detector}|{record.partition}|{record.offset}"
    return (
        alert_id,
        ts,
        signal,
        detector,
        float(v.get("statistic") or 0.0),
        float(v.get("threshold") or 0.0),
        str(v.get("severity", "")),
        str(v.get("window", "")),
        str(v.get("reference_summary", "")),
        str(v.get("current_summary", "")),
        str(v.get("dataset") or ""),
        str(v.get("model") or ""),
    )


def _dead_letter(record: InputRecord, _v: dict[str, Any]) -> Row:
    try:
        info = parse_error_headers(record.headers)
        topic, partition, offset, ts = info.topic, info.partition, info.offset, info.ts
    except ValueError:  # malformed numbers in the headers: keep what identifies the letter
        info = None
        topic, partition, offset, ts = "", -1, -1, 0
    return (
        record.topic,
        record.partition,
        record.offset,
        topic or record.topic.removesuffix(DLQ_SUFFIX),
        max(partition, 0),
        max(offset, 0),
        info.processor if info else "?",
        info.stage if info else "?",
        info.error_class if info else "?",
        info.message if info else "",
        dict(info.details) if info else {},
        _ms(ts or record.timestamp_ms),
    )


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


REQUESTS = TableSpec(
    "requests",
    (
        "request_id",
        "stage",
        "tenant_id",
        "model",
        "operation",
        "source",
        "user_id",
        "created_at",
        "input_chars",
        "max_tokens",
        "guard_action",
        "guard_reason",
        "guard_policy_version",
        "guard_redacted",
        "injection_score",
        "pii_entities",
        "topic",
    ),
    _request,
)
RESULTS = TableSpec(
    "results",
    (
        "request_id",
        "tenant_id",
        "model",
        "model_version",
        "operation",
        "status",
        "error_code",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "queue_ms",
        "inference_ms",
        "e2e_ms",
        "batch_size",
        "device",
        "request_created_at",
        "completed_at",
        "input_guard_action",
        "input_guard_reason",
        "input_guard_policy_version",
        "input_redacted",
        "injection_score",
        "input_pii_entities",
        "output_guard_action",
        "output_redacted",
        "output_pii_entities",
    ),
    _result,
)
BUDGETS = TableSpec(
    "budget_status",
    (
        "tenant_id",
        "period",
        "period_start",
        "period_end",
        "hard",
        "tokens",
        "cost",
        "token_limit",
        "cost_limit",
        "requests",
        "version",
        "updated_at",
    ),
    _budget_rows,
    multi_row=True,
)
DEAD_LETTERS = TableSpec(
    "dead_letters",
    (
        "dlq_topic",
        "dlq_partition",
        "dlq_offset",
        "topic",
        "partition",
        "offset",
        "processor",
        "stage",
        "error_class",
        "reason",
        "details",
        "ts",
    ),
    _dead_letter,
    avro=False,
)

#: topic → table, for every topic the sink knows (those in the catalog are read).
BY_TOPIC: dict[str, TableSpec] = {
    "inference.requests": REQUESTS,
    "inference.requests.safe": REQUESTS,
    "inference.requests.blocked": REQUESTS,
    "inference.results": RESULTS,
    "metering.usage": TableSpec("usage", _USAGE_COLUMNS, _fields(_USAGE_COLUMNS)),
    "metering.windows": TableSpec("usage_windows", _WINDOW_COLUMNS, _fields(_WINDOW_COLUMNS)),
    "metering.budgets": BUDGETS,
    "metering.alerts": TableSpec("budget_alerts", _ALERT_COLUMNS, _fields(_ALERT_COLUMNS)),
    "pii.findings": TableSpec(
        "pii_findings",
        (
            "request_id",
            "tenant_id",
            "field",
            "entity_type",
            "start",
            "end",
            "score",
            "recognizer",
            "action",
            "policy_version",
            "ts",
        ),
        _pii,
    ),
    "drift.alerts": TableSpec(
        "drift_alerts",
        (
            "alert_id",
            "ts",
            "signal",
            "detector",
            "statistic",
            "threshold",
            "severity",
            "window",
            "reference_summary",
            "current_summary",
            "dataset",
            "model",
        ),
        _drift,
    ),
}


def table_for(topic: str) -> TableSpec | None:
    """The table of ``topic``: its own, dead_letters for every ``*.dlq``, or None."""
    if topic.endswith(DLQ_SUFFIX):
        return DEAD_LETTERS
    return BY_TOPIC.get(topic)


def sink_topics(catalog: Catalog) -> tuple[list[str], list[str]]:
    """Topics of the catalog the sink reads, and those it must skip (no dead-letter topic)."""
    read, skipped = [], []
    for name, spec in sorted(catalog.topics.items()):
        if table_for(name) is None:
            continue
        if name.endswith(DLQ_SUFFIX) or spec.dlq_topic is not None:
            read.append(name)
        else:
            skipped.append(name)
    return read, skipped
