"""Which topic goes to which ClickHouse table, and how a record becomes a row (pure).

Columns are listed in the order the row functions fill them; the tables
themselves are in ``infra/clickhouse/migrations``. Text that may hold personal
data (prompts, outputs, dead-letter payloads) is never turned into a column.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.contracts.catalog import DLQ_SUFFIX, Catalog
from streams.runtime.dead_letters import parse_error_headers
from streams.runtime.spec import InputRecord

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
    stage = _STAGES[record.topic]
    # Before guard, user_id and source are the producer's free text: not stored.
    checked = stage != "received"
    return (
        v["request_id"],
        stage,
        v["tenant_id"],
        v["model"],
        v.get("operation", ""),
        v.get("source", "") if checked else "",
        v.get("user_id") if checked else None,
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
        bool(v.get("cache_hit", False)),  # absent from results written before it existed
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
    "cache_hit",
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


_BUDGET_COLUMNS = (
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
)
_budget_row = _fields(_BUDGET_COLUMNS)


_usage_fields = _fields(_USAGE_COLUMNS)


def _usage_row(record: InputRecord, v: dict[str, Any]) -> Row:
    # cache_hit came later, with a default: usage written before it has none.
    return _usage_fields(record, {"cache_hit": False, **v})


def _budget_rows(record: InputRecord, v: dict[str, Any]) -> list[Row]:
    # One row per period: the tenant's fields and the period's (no name is in both).
    limits = {"token_limit": None, "cost_limit": None}
    return [_budget_row(record, {**limits, **v, **p}) for p in v["periods"]]


_PII_COLUMNS = (
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
)
_pii_row = _fields(_PII_COLUMNS)


def _pii(record: InputRecord, v: dict[str, Any]) -> Row:
    optional = {"recognizer": "", "action": "", "policy_version": ""}
    return _pii_row(record, {**optional, **v, "ts": v.get("detected_at") or v.get("ts")})


_AUDIT_COLUMNS = (
    "event_id",
    "occurred_at",
    "actor",
    "host",
    "action",
    "target",
    "outcome",
    "details",
    "sluice_version",
)


def _drift(_record: InputRecord, v: dict[str, Any]) -> Row:
    reference, current = v["reference"], v["current"]
    return (
        v["alert_id"],
        v["detected_at"],
        v["signal"],
        v["subject_kind"],
        v["subject"],
        v["signal_name"],
        v["signal_kind"],
        v["stream"],
        v["detector"],
        v["statistic"],
        v["threshold"],
        v.get("p_value"),
        v.get("effect"),
        v["severity"],
        v["window_size"],
        v["window_start"]["timestamp"],
        v["window_end"]["timestamp"],
        v["window_end"]["offset"],
        reference.get("mean"),
        current.get("mean"),
        json.dumps(reference, sort_keys=True),
        json.dumps(current, sort_keys=True),
        v["reference_source"],
        v["values_seen"],
        v["suppressed"],
    )


#: The columns every row of a profile repeats (the profile's own fields), then one field's.
_PROFILE_HEAD = (
    "profile_id",
    "subject_kind",
    "subject",
    "created_at",
    "engine",
    "source",
    "rows",
    "contract_version",
)
_PROFILE_COLUMNS = (
    *_PROFILE_HEAD,
    "field",
    "kind",
    "count",
    "null_count",
    "mean",
    "std",
    "min",
    "max",
    "p50",
    "p99",
    "quantiles",
    "categories",
    "other_count",
    "violations",
)
_profile_head = _fields(_PROFILE_HEAD)


def _profile_rows(record: InputRecord, v: dict[str, Any]) -> list[Row]:
    head = _profile_head(record, {"contract_version": None, **v})
    violations: dict[str, dict[str, int]] = {}
    for violation in v["violations"]:
        violations.setdefault(violation["field"], {})[violation["rule"]] = violation["count"]
    rows: list[Row] = []
    for n in v["numeric"]:
        quantiles = dict(zip(n["quantile_probs"], n["quantiles"], strict=True))
        rows.append(
            (
                *head,
                n["field"],
                "numeric",
                n["count"],
                n["null_count"],
                n["mean"],
                n["std"],
                n["min"],
                n["max"],
                quantiles.get(0.5),
                quantiles.get(0.99),
                n["quantiles"],
                {},
                0,
                violations.pop(n["field"], {}),
            )
        )
    for c in v["categorical"]:
        rows.append(
            (
                *head,
                c["field"],
                "categorical",
                c["count"],
                c["null_count"],
                *(None,) * 6,
                [],
                dict(zip(c["categories"], c["counts"], strict=True)),
                c["other_count"],
                violations.pop(c["field"], {}),
            )
        )
    for field, rules in sorted(violations.items()):
        rows.append((*head, field, "violations", 0, 0, *(None,) * 6, [], {}, 0, rules))
    return rows


def _span(_record: InputRecord, v: dict[str, Any]) -> Row:
    start = v["start_time_unix_nano"]
    events, links = v["events"], v["links"]
    return (
        start,  # nanoseconds: clickhouse-connect writes ints into DateTime64(9) as ticks
        v["trace_id"],
        v["span_id"],
        v["parent_span_id"],
        v["trace_state"],
        v["name"],
        _SPAN_KINDS.get(v["kind"], v["kind"]),
        v["service_name"],
        v["resource_attributes"],
        v["scope_name"],
        v["scope_version"],
        v["attributes"],
        v["duration_nano"],
        _STATUS_CODES.get(v["status_code"], v["status_code"]),
        v["status_message"],
        [e["time_unix_nano"] for e in events],
        [e["name"] for e in events],
        [e["attributes"] for e in events],
        [link["trace_id"] for link in links],
        [link["span_id"] for link in links],
        [link["trace_state"] for link in links],
        [link["attributes"] for link in links],
    )


# The collector writes OTLP's enum names without their prefix (Server, Error, ...).
_SPAN_KINDS = {
    "SPAN_KIND_INTERNAL": "Internal",
    "SPAN_KIND_SERVER": "Server",
    "SPAN_KIND_CLIENT": "Client",
    "SPAN_KIND_PRODUCER": "Producer",
    "SPAN_KIND_CONSUMER": "Consumer",
}
_STATUS_CODES = {
    "STATUS_CODE_UNSET": "Unset",
    "STATUS_CODE_OK": "Ok",
    "STATUS_CODE_ERROR": "Error",
}


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
        "cache_hit",
    ),
    _result,
)
BUDGETS = TableSpec("budget_status", _BUDGET_COLUMNS, _budget_rows, multi_row=True)
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
    "metering.usage": TableSpec("usage", _USAGE_COLUMNS, _usage_row),
    "metering.windows": TableSpec("usage_windows", _WINDOW_COLUMNS, _fields(_WINDOW_COLUMNS)),
    "metering.budgets": BUDGETS,
    "metering.alerts": TableSpec("budget_alerts", _ALERT_COLUMNS, _fields(_ALERT_COLUMNS)),
    "pii.findings": TableSpec("pii_findings", _PII_COLUMNS, _pii),
    "drift.alerts": TableSpec(
        "drift_alerts",
        (
            "alert_id",
            "ts",
            "signal",
            "subject_kind",
            "subject",
            "signal_name",
            "signal_kind",
            "stream",
            "detector",
            "statistic",
            "threshold",
            "p_value",
            "effect",
            "severity",
            "window_size",
            "window_start_ts",
            "window_end_ts",
            "window_end_offset",
            "reference_mean",
            "current_mean",
            "reference_summary",
            "current_summary",
            "reference_source",
            "values_seen",
            "suppressed",
        ),
        _drift,
    ),
    "audit.events": TableSpec("audit_events", _AUDIT_COLUMNS, _fields(_AUDIT_COLUMNS)),
    "drift.profiles": TableSpec("drift_profiles", _PROFILE_COLUMNS, _profile_rows),
    "telemetry.spans": TableSpec(
        "otel_traces",
        (
            "Timestamp",
            "TraceId",
            "SpanId",
            "ParentSpanId",
            "TraceState",
            "SpanName",
            "SpanKind",
            "ServiceName",
            "ResourceAttributes",
            "ScopeName",
            "ScopeVersion",
            "SpanAttributes",
            "Duration",
            "StatusCode",
            "StatusMessage",
            "Events.Timestamp",
            "Events.Name",
            "Events.Attributes",
            "Links.TraceId",
            "Links.SpanId",
            "Links.TraceState",
            "Links.Attributes",
        ),
        _span,
    ),
}


#: topic → Null-engine table whose materialized view fills that topic's table from raw
#: Confluent Avro (infra/clickhouse/migrations/0005_avro_ingest.sql): ClickHouse decodes.
AVRO_INGEST: dict[str, str] = {
    "inference.results": "ingest_results",
    "inference.requests": "ingest_requests_received",
    "inference.requests.safe": "ingest_requests_safe",
    "inference.requests.blocked": "ingest_requests_blocked",
    "metering.usage": "ingest_usage",
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
