"""The sink and the migrations against the real embedded ClickHouse (chdb), no Kafka."""

import dataclasses
import json
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from processors.meter.usage import usage_of
from processors.sink import processor as sink
from streams.contracts.catalog import load_catalog
from streams.contracts.records import InferenceRequest, InferenceResult
from streams.errors import ContractViolation, RecordError, TransientError
from streams.llm.pricing import load_prices
from streams.runtime.dead_letters import error_headers
from streams.runtime.span_export import span_record
from streams.runtime.spec import InputRecord
from streams.settings import PROJECT_ROOT
from streams.warehouse import clickhouse, migrations
from streams.warehouse import tables as sink_tables
from tests.support.warehouse import sink_context

QUERIES = PROJECT_ROOT / "infra" / "clickhouse" / "queries"
MIGRATIONS = PROJECT_ROOT / "infra" / "clickhouse" / "migrations"
CATALOG = load_catalog(PROJECT_ROOT / "schemas")
PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
T0 = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)


def record(topic, value, offset, headers=None):
    return InputRecord(topic, 0, offset, None, value, value, headers or [], 0)


def results(n):
    return [
        InferenceResult(
            request_id=f"r{i}",
            tenant_id=f"t{i % 3}",
            model="gpt-4o-mini" if i % 2 else "textgen",
            status="ok" if i % 10 else "error",
            request_created_at=T0,
            completed_at=T0 + timedelta(seconds=i),
            input_tokens=100 + i,
            output_tokens=i % 7,
            e2e_ms=float(i),
        )
        for i in range(n)
    ]


def batch(serde, items):
    encode_result = serde.encoder("inference.results")
    encode_usage = serde.encoder("metering.usage")
    records = []
    for i, result in enumerate(items):
        records.append(record("inference.results", encode_result(result.to_avro()), i))
        usage = usage_of(result, PRICES).to_avro()
        records.append(record("metering.usage", encode_usage(usage), i))
    return records


def test_the_sink_reads_every_topic_that_has_a_table():
    read, skipped = sink_tables.sink_topics(CATALOG)
    assert skipped == [], "a topic with a table but no dead-letter topic would never be loaded"
    assert set(sink_tables.BY_TOPIC) <= set(read)


def test_migrations_are_versioned_and_idempotent(settings):
    warehouse = clickhouse.connect(settings)
    try:
        clickhouse.ensure_database(warehouse, "sluice")
        warehouse.command("USE sluice")
        first = migrations.migrate(warehouse, MIGRATIONS)
        again = migrations.migrate(warehouse, MIGRATIONS)
        versions = warehouse.query("SELECT version FROM schema_migrations FINAL ORDER BY version")
    finally:
        warehouse.close()
    assert [o.action for o in first] == ["applied"] * len(first)
    assert [o.action for o in again] == ["already-applied"] * len(first)
    assert [v for (v,) in versions.rows] == [o.version for o in first]


def test_totals_are_exact_and_a_replay_changes_nothing(ctx, serde):
    items = results(300)
    records = batch(serde, items)
    assert sink.process_batch(records, ctx) == [[]] * len(records)
    expected_cost = sum((usage_of(r, PRICES).cost for r in items), Decimal(0))
    sink.process_batch(records, ctx)  # the same batch again: what a replay does
    db = clickhouse.open_warehouse(ctx.settings, database="sluice")  # through the sink
    try:
        raw = db.query("SELECT count() FROM usage").scalar()
        totals = db.query(
            "SELECT count(), sum(cost), sum(input_tokens), sum(output_tokens) FROM usage FINAL"
        ).rows[0]
        db.command("SYSTEM REFRESH VIEW cost_per_tenant_day")
        db.command("SYSTEM WAIT VIEW cost_per_tenant_day")
        view = db.query("SELECT sum(requests), sum(cost) FROM cost_per_tenant_day").rows[0]
        latency = db.query("SELECT sum(requests) FROM latency_per_model_minute")
    finally:
        db.close()
    assert raw == 600  # both copies were inserted...
    assert totals == (
        300,
        expected_cost,
        sum(r.input_tokens for r in items),
        sum(r.output_tokens for r in items),
    )
    assert view == (300, expected_cost)  # ...and each request still counts once
    assert latency.scalar() is not None


def test_every_documented_query_runs(ctx, serde):
    sink.process_batch(batch(serde, results(20)), ctx)
    db = clickhouse.open_warehouse(ctx.settings, database="sluice")
    try:
        for path in sorted(QUERIES.glob("*.sql")):
            result = db.query(path.read_text().strip().rstrip(";"))
            assert result.columns, path.name
    finally:
        db.close()


def test_dead_letters_keep_the_reason_not_the_payload(ctx):
    error = ContractViolation(
        "field amount: below min",
        stage="validate",
        details={"field": "amount", "rule": "min"},
    )
    headers = error_headers(
        error, processor="validate", topic="raw.x", partition=2, offset=41, now_ms=1_700_000_000_000
    )
    letter = record("raw.support_tickets.dlq", b"secret payload of a customer", 5, headers)
    assert sink.process_batch([letter], ctx) == [[]]
    db = clickhouse.open_warehouse(ctx.settings, database="sluice")
    try:
        (row,) = db.query("SELECT * FROM dead_letters").dicts()
    finally:
        db.close()
    assert row["topic"] == "raw.x" and row["offset"] == 41 and row["partition"] == 2
    assert row["error_class"] == "ContractViolation" and row["details"]["rule"] == "min"
    assert "secret" not in str(row)


def test_requests_are_stored_without_their_text(ctx, serde):
    request = InferenceRequest.new("acme", "minilm", "Jane Doe, card 4111 1111 1111 1111")
    value = serde.encoder("inference.requests")(request.to_avro())
    sink.process_batch([record("inference.requests", value, 0)], ctx)
    db = clickhouse.open_warehouse(ctx.settings, database="sluice")
    try:
        (row,) = db.query("SELECT * FROM requests").dicts()
    finally:
        db.close()
    assert row["input_chars"] == len(request.input_text)
    assert "Jane" not in str(row) and "4111" not in str(row)


def drift_alert(alert_id: str) -> dict:
    position = {"topic": "support_tickets.validated", "partition": 1, "timestamp": T0}
    return {
        "alert_id": alert_id,
        "signal": "dataset:support_tickets:first_response_minutes",
        "subject_kind": "dataset",
        "subject": "support_tickets",
        "signal_name": "first_response_minutes",
        "signal_kind": "numeric",
        "stream": "location",
        "detector": "adwin",
        "statistic": 0.21,
        "threshold": 0.12,
        "p_value": None,
        "effect": None,
        "window_start": {**position, "offset": 100},
        "window_end": {**position, "offset": 512},
        "window_size": 412,
        "reference": {"count": 2000, "mean": 0.5, "std": 0.29, "p50": 0.5, "top": {}},
        "current": {"count": 412, "mean": 0.71, "std": 0.2, "p50": 0.74, "top": {}},
        "severity": "critical",
        "values_seen": 2513,
        "suppressed": 0,
        "reference_source": "profile:abc",
        "detected_at": T0 + timedelta(minutes=5),
    }


def test_pii_findings_and_drift_alerts_land_once_per_natural_id(ctx, serde):
    finding = {
        "request_id": "r1",
        "tenant_id": "acme",
        "field": "input_text",
        "entity_type": "EMAIL_ADDRESS",
        "start": 4,
        "end": 20,
        "score": 1.0,
        "recognizer": "EmailRecognizer",
        "action": "hash",
        "policy_version": "3",
        "detected_at": T0,
    }
    encode_finding = serde.encoder("pii.findings")
    encode_alert = serde.encoder("drift.alerts")
    records = [
        record("pii.findings", encode_finding(finding), 0),
        record("drift.alerts", encode_alert(drift_alert("s#1#2513")), 0),
    ]
    assert sink.process_batch(records, ctx) == [[], []]
    assert sink.process_batch(records, ctx) == [[], []]  # a replay of the same records
    db = clickhouse.open_warehouse(ctx.settings, database="sluice")
    try:
        findings = db.query("SELECT entity_type, start, action FROM pii_findings FINAL").rows
        alerts = db.query(
            "SELECT alert_id, subject, signal_name, detector, window_size, window_end_offset, "
            "reference_mean, current_mean, p_value FROM drift_alerts FINAL"
        ).rows
    finally:
        db.close()
    assert findings == [("EMAIL_ADDRESS", 4, "hash")]
    assert alerts == [
        (
            "s#1#2513",
            "support_tickets",
            "first_response_minutes",
            "adwin",
            412,
            512,
            0.5,
            0.71,
            None,
        )
    ]


def test_profiles_land_one_row_per_field_with_their_violations(ctx, serde):
    import pandas as pd  # the drift extra, which the dev install has

    from streams.profiling.pandas_engine import profile_dataset

    sample = PROJECT_ROOT / "schemas" / "datasets" / "support_tickets" / "sample.jsonl"
    records = []
    for line in sample.read_text().splitlines()[:2000]:
        try:
            parsed = json.loads(line)
        except ValueError:  # the sample holds broken JSON on purpose
            continue
        if isinstance(parsed, dict):
            records.append(parsed)
    frame = pd.DataFrame.from_records(records)
    profile = profile_dataset(frame, CATALOG.dataset("support_tickets").contract, "test")
    value = serde.encoder("drift.profiles")(profile.to_avro())
    assert sink.process_batch([record("drift.profiles", value, 0)], ctx) == [[]]
    db = clickhouse.open_warehouse(ctx.settings, database="sluice")
    try:
        rows = db.query(
            "SELECT field, kind, count, p50, categories, violations FROM drift_profiles FINAL"
        ).dicts()
    finally:
        db.close()
    by_field = {r["field"]: r for r in rows}
    minutes = profile.numeric_field("first_response_minutes")
    assert minutes is not None
    assert by_field["first_response_minutes"]["kind"] == "numeric"
    assert by_field["first_response_minutes"]["count"] == minutes.count
    assert by_field["first_response_minutes"]["p50"] == minutes.quantiles[50]
    language = profile.categorical_field("language")
    assert language is not None
    assert by_field["language"]["categories"] == dict(
        zip(language.categories, language.counts, strict=True)
    )
    violated = {v.field: v for v in profile.violations}
    assert violated, "the sample breaks the contract on purpose"
    for field, violation in violated.items():
        assert by_field[field]["violations"][violation.rule] == violation.count


def finished_span():
    provider = TracerProvider(resource=Resource.create({"service.name": "sluice-infer"}))
    tracer = provider.get_tracer("sluice.runner")
    with (
        tracer.start_as_current_span("infer inference.requests.safe", kind=SpanKind.CONSUMER),
        tracer.start_as_current_span("embeddings minilm", kind=SpanKind.CLIENT) as span,
    ):
        span.set_attribute("gen_ai.request.model", "minilm")
        span.add_event("retry", {"attempt": 1})
    return span


def test_spans_land_in_the_collectors_otel_traces_layout(ctx, serde):
    span = finished_span()
    value = serde.encoder("telemetry.spans")(span_record(span))
    letters = [record("telemetry.spans", value, 0), record("telemetry.spans", value, 1)]
    assert sink.process_batch(letters, ctx) == [[], []]  # the second is a replay
    db = clickhouse.open_warehouse(ctx.settings, database="sluice")
    try:
        (row,) = db.query(
            "SELECT TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, "
            "SpanAttributes['gen_ai.request.model'], Duration, StatusCode, Events.Name, "
            "toUnixTimestamp64Nano(Timestamp) FROM otel_traces FINAL"
        ).rows
        lookup = db.query("SELECT TraceId FROM otel_traces_trace_id_ts").rows
    finally:
        db.close()
    context = span.get_span_context()
    assert row[:7] == (
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
        f"{span.parent.span_id:016x}",
        "embeddings minilm",
        "Client",
        "sluice-infer",
        "minilm",
    )
    assert row[7] == span.end_time - span.start_time and row[8] == "Unset"
    assert row[9] == ["retry"] and row[10] == span.start_time  # nanoseconds kept
    assert set(lookup) == {(f"{context.trace_id:032x}",)}


def test_undecodable_record_goes_to_the_dlq_and_the_rest_is_inserted(ctx, serde):
    records = batch(serde, results(2))
    outcomes = sink.process_batch([*records, record("metering.usage", b"\x00garbage", 9)], ctx)
    assert outcomes[:4] == [[]] * 4
    assert isinstance(outcomes[4], RecordError)


def test_clickhouse_that_refuses_connections_is_transient(settings, serde):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    down = settings.model_copy(
        update={
            "clickhouse": settings.clickhouse.model_copy(
                update={
                    "url": f"http://default:pw@127.0.0.1:{port}/sluice",
                    "connect_timeout_s": 1.0,
                }
            )
        }
    )
    with (
        sink_context(down, CATALOG, serde) as context,
        pytest.raises(TransientError, match="ClickHouse unavailable") as error,
    ):
        sink.process_batch(batch(serde, results(1)), context)
    assert "pw@" not in str(error.value)  # the password never reaches a log line


def test_other_processes_query_through_the_owner(settings, tmp_path):
    owner = clickhouse.connect(settings)
    path = clickhouse.chdb_path(settings.clickhouse_url)
    server = clickhouse.QueryServer(owner, path).start()
    try:
        owner_file = clickhouse.owner_file(path)
        assert oct(owner_file.stat().st_mode & 0o777) == "0o600"
        import json

        info = json.loads(owner_file.read_text())
        remote = clickhouse.RemoteWarehouse(info["url"], info["token"], path)
        result = remote.query(
            "SELECT toDecimal64('12345.000000001', 9) AS cost, 42 AS n, now64(3) AS at"
        )
        assert result.rows[0][0] == Decimal("12345.000000001")
        assert result.rows[0][1] == 42
        remote.command("CREATE DATABASE IF NOT EXISTS through_owner")
        assert (
            owner.query(
                "SELECT count() FROM system.databases WHERE name = 'through_owner'"
            ).scalar()
            == 1
        )
        with pytest.raises(clickhouse.WarehouseError, match=r"UNKNOWN_TABLE|Unknown table"):
            remote.query("SELECT * FROM nowhere")
        intruder = clickhouse.RemoteWarehouse(info["url"], "wrong", path)
        with pytest.raises(clickhouse.WarehouseError, match="bad token"):
            intruder.query("SELECT 1")
        remote.close()
        intruder.close()
    finally:
        server.close()
        owner.close()
    assert not clickhouse.owner_file(path).exists()


def test_a_cache_hit_is_stored_on_its_result_and_its_usage(ctx, serde):
    hit, miss = results(2)
    hit = dataclasses.replace(hit, status="ok", cache_hit=True, cached_input_tokens=100)
    sink.process_batch(batch(serde, [hit, miss]), ctx)
    db = clickhouse.open_warehouse(ctx.settings, database="sluice")
    try:
        stored = db.query(
            "SELECT request_id, cache_hit, cached_input_tokens FROM results FINAL "
            "ORDER BY request_id"
        ).rows
        usage = db.query(
            "SELECT request_id, cache_hit, cached_input_cost, output_cost FROM usage FINAL "
            "ORDER BY request_id"
        ).rows
    finally:
        db.close()
    assert [tuple(r) for r in stored] == [("r0", True, 100), ("r1", False, 0)]
    [(_, hit_flag, cached_cost, output_cost), (_, miss_flag, _, _)] = usage
    # textgen's cached price (schemas/prices.yaml): 100 tokens at 0.00000005.
    assert (hit_flag, cached_cost, output_cost) == (True, Decimal("0.000005"), Decimal(0))
    assert miss_flag is False
