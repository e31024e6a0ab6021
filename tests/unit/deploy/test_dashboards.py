"""The Grafana dashboards in infra/grafana/dashboards, checked without a Grafana.

* Structure: unique uids and panel ids, a title, a grid position inside the 24 columns
  without overlaps, and every panel, query, variable and annotation on one of the two
  provisioned data sources (``infra/grafana/provisioning/datasources``).
* Prometheus: every metric an expression names is one the code defines (read from
  prometheus_client's registry after importing every module that defines metrics,
  with the suffixes the exposition adds), and every label it uses is one of those
  metrics' labels or a label Prometheus adds when scraping.
* ClickHouse: every panel query, variable query and annotation query is rendered the
  way Grafana and the ClickHouse plugin render it (``tests/support/grafana_queries.py``:
  $__conditionalAll, template variables, then the plugin's macros, over the last day
  with a 60 s interval), and run against an embedded ClickHouse with the migrations
  applied and rows inserted through the sink, once with every variable on All and
  once with each on its first value. Each must return rows with the columns its panel
  needs (a time column first for time series, the trace view's columns for traces,
  the names that overrides and links refer to), and read ReplacingMergeTree tables
  with FINAL.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from processors.meter import state as meter
from processors.meter.usage import usage_of
from processors.sink import processor as sink
from streams.contracts.catalog import load_catalog
from streams.contracts.records import GuardVerdict, InferenceRequest, InferenceResult
from streams.contracts.serde import AvroSerde
from streams.errors import ContractViolation, InputTooLong, RecordError
from streams.llm.budgets import BudgetConfig
from streams.llm.pricing import load_prices
from streams.runtime.dead_letters import error_headers
from streams.runtime.span_export import span_record
from streams.runtime.spec import InputRecord
from streams.settings import PROJECT_ROOT
from streams.warehouse import clickhouse
from tests.support.grafana_queries import (
    ALL,
    PROMQL_FUNCTIONS,
    TimeRange,
    UnknownMacroError,
    Variable,
    apply_conditional_all,
    expand_macros,
    interpolate_variables,
    render,
    scan_promql,
)
from tests.support.warehouse import embedded_settings, memory_serde, sink_context

GRAFANA = PROJECT_ROOT / "infra" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DASHBOARDS = {path.stem: json.loads(path.read_text()) for path in DASHBOARD_FILES}
PROVISIONED = {
    source["uid"]: source["type"]
    for source in yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "sluice.yaml").read_text()
    )["datasources"]
}
CLICKHOUSE_UID, PROMETHEUS_UID = "sluice-clickhouse", "sluice-prometheus"
PLUGIN = "grafana-clickhouse-datasource"
FORMATS = {0: "timeseries", 1: "table", 3: "traces"}  # the plugin's format ↔ queryType
#: Labels Prometheus adds to every series it scrapes (infra/prometheus/prometheus.yml).
TARGET_LABELS = frozenset({"job", "instance", "service"})
#: Columns Grafana's trace view needs (the plugin's trace format).
TRACE_COLUMNS = frozenset(
    {"traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime",
     "duration"}
)  # fmt: skip
CATALOG = load_catalog(PROJECT_ROOT / "schemas")
PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
NOW = datetime.now(UTC).replace(microsecond=0)
LAST_DAY = TimeRange(NOW - timedelta(days=1), NOW, interval_s=60)


# -- the dashboards' parts -------------------------------------------------------------
def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, with those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def annotations(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in dashboard.get("annotations", {}).get("list", []) if not a.get("builtIn")]


def uid_of(thing: dict[str, Any]) -> str | None:
    source = thing.get("datasource")
    return source.get("uid") if isinstance(source, dict) else None


@dataclass(frozen=True)
class ChQuery:
    """One ClickHouse query of a dashboard, and what uses its result."""

    dashboard: str
    where: str
    sql: str
    use: str  # "panel", "variable" or "annotation"
    panel: dict[str, Any] | None = None
    format: int = 1


def clickhouse_queries(name: str) -> list[ChQuery]:
    dashboard = DASHBOARDS[name]
    queries = [
        ChQuery(name, f"variable {v['name']}", v["query"], "variable")
        for v in variables(dashboard)
        if uid_of(v) == CLICKHOUSE_UID
    ]
    queries += [
        ChQuery(name, f"annotation {a['name']}", a["target"]["rawSql"], "annotation")
        for a in annotations(dashboard)
        if uid_of(a) == CLICKHOUSE_UID
    ]
    queries += [
        ChQuery(name, f"panel {p['title']!r} {t['refId']}", t["rawSql"], "panel", p, t["format"])
        for p in data_panels(dashboard)
        for t in p.get("targets", [])
        if uid_of(t) == CLICKHOUSE_UID
    ]
    return queries


def prometheus_exprs(name: str) -> list[tuple[str, str]]:
    dashboard = DASHBOARDS[name]
    exprs = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"])
        for p in data_panels(dashboard)
        for t in p.get("targets", [])
        if uid_of(t) == PROMETHEUS_UID
    ]
    for v in variables(dashboard):
        if uid_of(v) == PROMETHEUS_UID:
            query = v["query"]
            exprs.append(
                (f"variable {v['name']}", query if isinstance(query, str) else query["query"])
            )
    return exprs


# -- structure ---------------------------------------------------------------------------
def test_the_five_dashboards_are_there_with_unique_uids() -> None:
    assert set(DASHBOARDS) == {
        "sluice-costs",
        "sluice-latency",
        "sluice-pipeline",
        "sluice-guard-drift",
        "sluice-traces",
    }
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    for name, dashboard in DASHBOARDS.items():
        assert dashboard["uid"] == name  # the file is named after its uid: links use it
        assert dashboard["title"].strip()
        assert dashboard.get("id") is None  # provisioned: Grafana assigns the id
        assert "sluice" in dashboard["tags"]


def test_the_provisioned_data_sources_are_the_two_the_dashboards_use() -> None:
    assert PROVISIONED == {CLICKHOUSE_UID: PLUGIN, PROMETHEUS_UID: "prometheus"}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_have_unique_ids_a_place_and_a_provisioned_data_source(name: str) -> None:
    dashboard = DASHBOARDS[name]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        title = panel.get("title", "")
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos), title
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{title!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = title
        if panel["type"] == "row":
            assert not panel.get("targets"), f"row {title!r} has queries"
            continue
        assert title.strip()
        uid = uid_of(panel)
        assert uid in PROVISIONED, f"{title!r}: data source {panel.get('datasource')}"
        assert panel["datasource"]["type"] == PROVISIONED[uid]
        assert panel["targets"], f"{title!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], title
            check_target(target, title)


def check_target(target: dict[str, Any], title: str) -> None:
    if uid_of(target) == CLICKHOUSE_UID:
        assert target["editorType"] == "sql", title
        assert target["rawSql"].strip(), title
        assert FORMATS[target["format"]] == target["queryType"], title
        assert target["pluginVersion"] >= "4", title  # older ones are migrated as v3 queries
    else:
        assert target["expr"].strip(), title


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variables_and_annotations_use_the_provisioned_data_sources(name: str) -> None:
    dashboard = DASHBOARDS[name]
    for variable in variables(dashboard):
        if variable["type"] == "query":
            assert uid_of(variable) in PROVISIONED, variable["name"]
            assert variable["datasource"]["type"] == PROVISIONED[uid_of(variable)]
            assert variable["query"], variable["name"]
        else:
            assert variable["type"] in ("textbox", "custom", "constant", "interval")
    for annotation in annotations(dashboard):
        assert uid_of(annotation) == CLICKHOUSE_UID, annotation["name"]
        check_target(annotation["target"], annotation["name"])


# -- Prometheus ----------------------------------------------------------------------
def _metric_modules() -> list[str]:
    """Every module of streams/ and processors/ that defines Prometheus metrics."""
    modules = []
    for package in ("streams", "processors"):
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            if re.search(
                r"^from prometheus_client import .*\b(Counter|Gauge|Histogram)\b",
                path.read_text(),
                re.MULTILINE,
            ):
                relative = path.relative_to(PROJECT_ROOT).with_suffix("")
                modules.append(".".join(relative.parts))
    return modules


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


@pytest.fixture(scope="module")
def defined_metrics() -> dict[str, frozenset[str]]:
    """Series name → its labels, for every metric the code defines."""
    labels: dict[str, frozenset[str]] = {}
    for module_name in _metric_modules():
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                (family,) = value.describe()
                labels[family.name] = frozenset(value._labelnames)
    series: dict[str, frozenset[str]] = {}
    for family in REGISTRY.collect():
        own = labels.get(family.name, frozenset())
        for suffix in _SUFFIXES.get(family.type, ("",)):
            extra = {"le"} if suffix == "_bucket" else set()
            series[family.name + suffix] = own | extra
    assert "sluice_records_in_total" in series and "sluice_infer_triton_seconds_bucket" in series
    return series


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_prometheus_queries_name_only_metrics_and_labels_the_code_defines(
    name: str, defined_metrics: dict[str, frozenset[str]]
) -> None:
    for where, expr in prometheus_exprs(name):
        scanned = scan_promql(expr)
        assert scanned.metrics, f"{name} {where}: no metric in {expr!r}"
        unknown = scanned.metrics - set(defined_metrics)
        assert not unknown, f"{name} {where}: {sorted(unknown)} are not defined in the code"
        allowed = set(TARGET_LABELS).union(*(defined_metrics[m] for m in scanned.metrics))
        assert scanned.labels <= allowed, (
            f"{name} {where}: labels {sorted(scanned.labels - allowed)} are on none of "
            f"{sorted(scanned.metrics)}"
        )
        functions = scanned.functions - {"label_values"}
        assert functions <= PROMQL_FUNCTIONS, f"{name} {where}: {sorted(functions)}"


def test_the_promql_scanner_sees_metrics_labels_and_functions() -> None:
    scanned = scan_promql(
        "histogram_quantile(0.99, sum by (le, model) (rate(sluice_infer_triton_seconds_bucket"
        '{model=~"$model"}[$__rate_interval]))) / on(model) group_left sum(x_total) * 1e3'
    )
    assert scanned.metrics == {"sluice_infer_triton_seconds_bucket", "x_total"}
    assert scanned.labels == {"le", "model"}
    assert scanned.functions == {"histogram_quantile", "sum", "rate"}
    assert scan_promql("label_values(sluice_records_in_total, processor)").labels == {"processor"}


# -- the macro expansion against the plugin's documented examples ----------------------
def test_macros_expand_as_the_plugin_documents() -> None:
    # The examples of the plugin's README (from 1415792726, to 1447328726, interval 20 s).
    time = TimeRange(
        datetime.fromtimestamp(1415792726.123, UTC),
        datetime.fromtimestamp(1447328726.456, UTC),
        interval_s=20,
    )
    assert expand_macros("$__timeFilter(time)", time) == (
        "time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)"
    )
    assert expand_macros("$__timeFilter_ms(time)", time) == (
        "time >= fromUnixTimestamp64Milli(1415792726123) AND "
        "time <= fromUnixTimestamp64Milli(1447328726456)"
    )
    assert expand_macros("$__dateFilter(date)", time) == (
        "date >= toDate('2014-11-12') AND date <= toDate('2015-11-12')"
    )
    assert expand_macros("$__fromTime $__toTime", time) == (
        "toDateTime(1415792726) toDateTime(1447328726)"
    )
    assert expand_macros("$__timeInterval(column)", time) == (
        "toStartOfInterval(toDateTime(column), INTERVAL 20 second)"
    )
    assert expand_macros("$__timeInterval_ms(column)", time) == (
        "toStartOfInterval(toDateTime64(column, 3), INTERVAL 20000 millisecond)"
    )
    assert expand_macros("$__interval_s", time) == "20"
    assert expand_macros("$__timeFilter( f(a, b) )", time).startswith("f(a, b) >= toDateTime(")
    with pytest.raises(UnknownMacroError):
        expand_macros("$__timeGroup(t, 5m)", time)  # the SDK's, renders datepart()
    with pytest.raises(UnknownMacroError):
        expand_macros("$__timeFiltr(t)", time)  # a typo fails, not silently passes


def test_conditional_all_and_variables_render_as_grafana_does() -> None:
    # The plugin's own test cases (CHDatasource.test.ts, "Conditional All").
    sql = "select stuff from table where $__conditionalAll(fieldVal in ($fieldVal), $fieldVal);"
    everything = {"fieldVal": Variable("fieldVal", ALL, options=["a", "b"])}
    one = {"fieldVal": Variable("fieldVal", ["a"], options=["a", "b"])}
    assert apply_conditional_all(sql, everything) == "select stuff from table where 1=1;"
    assert apply_conditional_all(sql, one) == (
        "select stuff from table where fieldVal in ($fieldVal);"
    )
    both = "$__conditionalAll(x in (${v:singlequote}), $v) AND $__conditionalAll(y, ${w})"
    vs = {"v": Variable("v", ["it's", "b"]), "w": Variable("w", "")}
    assert render(both, vs, LAST_DAY) == r"x in ('it\'s','b') AND 1=1"
    assert interpolate_variables("IN ($v)", {"v": Variable("v", ["a", "b"])}) == "IN ('a','b')"
    assert interpolate_variables("IN ($v)", {"v": Variable("v", ALL, ["a", "b"])}) == (
        "IN ('a','b')"
    )
    custom = {"v": Variable("v", [ALL], ["a"], all_value=".*")}
    assert interpolate_variables("${v:singlequote}", custom) == ".*"
    with pytest.raises(KeyError):
        interpolate_variables("$nope", {})


# -- ClickHouse: a database with data, through the sink -------------------------------------
TENANTS = ("acme", "globex", "initech")
MODELS = ("gpt-4o-mini", "minilm", "textgen")
BUDGETS = BudgetConfig.model_validate(
    {
        "tenants": {
            "acme": {"hard": True, "day": {"usd": "0.002", "tokens": 5000}},
            "globex": {"day": {"tokens": 4000}, "month": {"usd": "10"}},
        },
        "default": {"month": {"tokens": 1_000_000}},
    }
)
TOPICS = (
    "inference.requests",
    "inference.requests.safe",
    "inference.requests.blocked",
    "inference.results",
    "metering.usage",
    "metering.windows",
    "metering.budgets",
    "metering.alerts",
    "pii.findings",
    "drift.alerts",
    "telemetry.spans",
)


@dataclass
class Recorder:
    serde: AvroSerde
    records: list[InputRecord]

    def add(self, topic: str, value: dict[str, Any]) -> None:
        raw = self.serde.encoder(topic)(value)
        offset = len(self.records)
        self.records.append(InputRecord(topic, 0, offset, None, raw, raw, [], 0))

    def letter(self, topic: str, error: RecordError, processor: str, at: datetime) -> None:
        headers = error_headers(
            error,
            processor=processor,
            topic=topic.removesuffix(".dlq"),
            partition=0,
            offset=len(self.records),
            now_ms=int(at.timestamp() * 1000),
        )
        self.records.append(
            InputRecord(topic, 0, len(self.records), None, b"payload", b"payload", headers, 0)
        )


def inference(recorder: Recorder) -> None:
    """Requests, their guard verdicts, results, usage, windows, budgets and budget alerts."""
    state: dict[str, dict[str, Any]] = {}
    count = 120
    for i in range(count + 1):
        at = NOW - timedelta(seconds=20 * (count - i))
        tenant = TENANTS[i % 3]
        model = MODELS[(i // 3) % 3] if i < count else "unpriced-model"
        failed = i % 10 == 5
        request = InferenceRequest(
            request_id=f"r{i}",
            tenant_id=tenant,
            model=model,
            input_text="x" * (20 + i),
            created_at=at - timedelta(milliseconds=300 + i),
        )
        recorder.add("inference.requests", request.to_avro())
        blocked = i % 8 == 3
        reason = (
            ("pii_policy", "prompt_injection", "budget_exceeded")[i // 8 % 3] if blocked else None
        )
        verdict = GuardVerdict(
            policy_version="3",
            action="block" if blocked else ("redact" if i % 4 == 0 else "allow"),
            redacted=i % 4 == 0,
            checked_at=at,
            entity_counts={"EMAIL_ADDRESS": 1} if i % 4 == 0 else {},
            injection_score=(i % 10) / 10,
            reason=reason,
        )
        checked = dataclasses.replace(request, guard=verdict)
        stage = "inference.requests.blocked" if blocked else "inference.requests.safe"
        recorder.add(stage, checked.to_avro())
        result = InferenceResult(
            request_id=f"r{i}",
            tenant_id=tenant,
            model=model,
            status="error" if failed else "ok",
            error_code="BACKEND_REJECTED" if failed else None,
            request_created_at=request.created_at,
            completed_at=at,
            input_tokens=200 + 7 * i,
            cached_input_tokens=50 if i % 5 == 0 else 0,
            output_tokens=0 if failed else 20 + i % 40,
            queue_ms=5.0 + i % 13,
            inference_ms=40.0 + (i * 7) % 90,
            e2e_ms=60.0 + (i * 11) % 240,
            batch_size=1 + i % 8,
            device="cpu",
        )
        recorder.add("inference.results", result.to_avro())
        usage = usage_of(result, PRICES)
        recorder.add("metering.usage", usage.to_avro())
        outputs = meter.apply(state, usage, partition=0, offset=i, budgets=BUDGETS, now=NOW)
        for window in outputs.windows:
            recorder.add("metering.windows", window)
        assert outputs.budget is not None
        recorder.add("metering.budgets", outputs.budget.to_avro())
        for alert in outputs.alerts:
            recorder.add("metering.alerts", alert)


def findings_and_drift(recorder: Recorder) -> None:
    entities = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "PERSON")
    actions = ("hash", "mask", "block", "tag")
    for i in range(24):
        recorder.add(
            "pii.findings",
            {
                "request_id": f"r{i}",
                "tenant_id": TENANTS[i % 3],
                "field": "input_text" if i % 5 else "output_text",
                "entity_type": entities[i % 4],
                "start": i,
                "end": i + 10,
                "score": 0.6 + (i % 4) / 10,
                "recognizer": f"{entities[i % 4].title().replace('_', '')}Recognizer",
                "action": actions[(i // 2) % 4],
                "policy_version": "3",
                "detected_at": NOW - timedelta(minutes=2 * i),
            },
        )
    for i, (kind, subject, signal, severity) in enumerate(
        (
            ("dataset", "support_tickets", "first_response_minutes", "warning"),
            ("dataset", "support_tickets", "first_response_minutes", "critical"),
            ("model", "minilm", "e2e_ms", "critical"),
            ("model", "textgen", "output_tokens", "warning"),
        )
    ):
        position = {"topic": "support_tickets.validated", "partition": 0, "timestamp": NOW}
        recorder.add(
            "drift.alerts",
            {
                "alert_id": f"{subject}#{signal}#{i}",
                "signal": f"{kind}:{subject}:{signal}",
                "subject_kind": kind,
                "subject": subject,
                "signal_name": signal,
                "signal_kind": "numeric",
                "stream": "location",
                "detector": "adwin" if i % 2 else "ks",
                "statistic": 0.2 + i / 10,
                "threshold": 0.12,
                "p_value": 0.001 if i % 2 == 0 else None,
                "effect": None,
                "window_start": {**position, "offset": 100 * i},
                "window_end": {**position, "offset": 100 * i + 400},
                "window_size": 400,
                "reference": {"count": 2000, "mean": 0.5, "std": 0.3, "p50": 0.5, "top": {}},
                "current": {"count": 400, "mean": 0.7, "std": 0.2, "p50": 0.7, "top": {}},
                "severity": severity,
                "values_seen": 5000 + i,
                "suppressed": i,
                "reference_source": "profile:abc" if kind == "dataset" else "warmup",
                "detected_at": NOW - timedelta(minutes=15 * i + 1),
            },
        )


def spans(recorder: Recorder) -> list[str]:
    """Three traces across guard, infer and meter (one failing); their trace ids."""
    tracers = {
        service: TracerProvider(resource=Resource.create({"service.name": service})).get_tracer(
            "sluice.runner"
        )
        for service in ("sluice-guard", "sluice-infer", "sluice-meter")
    }
    trace_ids = []
    for t in range(3):
        start = int((NOW - timedelta(minutes=10 * t + 1)).timestamp() * 1e9)
        context = None
        for hop, (service, name, kind) in enumerate(
            (
                ("sluice-guard", "guard inference.requests", SpanKind.CONSUMER),
                ("sluice-infer", "infer inference.requests.safe", SpanKind.CONSUMER),
                ("sluice-infer", "embeddings minilm", SpanKind.CLIENT),
                ("sluice-meter", "meter inference.results", SpanKind.CONSUMER),
            )
        ):
            begin = start + hop * 20_000_000
            span = tracers[service].start_span(name, context=context, kind=kind, start_time=begin)
            span.set_attribute("sluice.tenant_id", TENANTS[t])
            if kind == SpanKind.CLIENT:
                span.add_event("retry", {"attempt": 1}, timestamp=begin + 1_000_000)
                if t == 1:
                    span.set_status(Status(StatusCode.ERROR, "Triton unavailable"))
            span.end(end_time=begin + (hop + 1) * 15_000_000 + t * 5_000_000)
            recorder.add("telemetry.spans", span_record(span))
            context = trace.set_span_in_context(span)
        trace_ids.append(f"{span.get_span_context().trace_id:032x}")
    return trace_ids


def dead_letters(recorder: Recorder) -> None:
    for i in range(6):
        recorder.letter(
            "raw.support_tickets.dlq",
            ContractViolation(
                "field amount: below min",
                stage="validate",
                details={"field": "amount", "rule": "min"},
            ),
            "validate",
            NOW - timedelta(minutes=3 * i),
        )
    recorder.letter(
        "inference.requests.safe.dlq",
        InputTooLong("input_too_long: input longer than the model's limit"),
        "infer",
        NOW - timedelta(minutes=7),
    )


@dataclass
class Analytics:
    db: clickhouse.Warehouse
    trace_ids: list[str]
    replacing_tables: frozenset[str]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Analytics]:
    settings = embedded_settings(tmp_path_factory.mktemp("ch") / "ch")
    serde = memory_serde(CATALOG, TOPICS)
    recorder = Recorder(serde, [])
    inference(recorder)
    findings_and_drift(recorder)
    trace_ids = spans(recorder)
    dead_letters(recorder)
    with sink_context(settings, CATALOG, serde) as context:
        outcomes = sink.process_batch(recorder.records, context)
        assert outcomes == [[]] * len(recorder.records)  # every record became rows
        db = clickhouse.open_warehouse(settings, database="sluice")
        try:
            replacing = db.query(
                "SELECT name FROM system.tables WHERE database = 'sluice' "
                "AND engine LIKE 'Replacing%'"
            )
            yield Analytics(db, trace_ids, frozenset(r[0] for r in replacing.rows))
        finally:
            db.close()


# -- ClickHouse: every query, rendered and run ---------------------------------------
_TIME_TYPE = re.compile(r"^(Nullable\()?DateTime")
_NUMBER_TYPE = re.compile(r"^(Nullable\()?(U?Int|Float|Decimal)")
_TEXT_TYPE = re.compile(r"^(Nullable\(|LowCardinality\()*(String|FixedString|Enum)")
_NON_NULL_TEXT = re.compile(r"^(LowCardinality\()?(String|FixedString|Enum)")
_FINAL = re.compile(r"\b(?:FROM|JOIN)\s+`?(\w+)`?(\s+FINAL\b)?", re.IGNORECASE)
_INTERVAL = re.compile(r"^(\d+)([smhd])$")


def selections(
    name: str, case: str, db: clickhouse.Warehouse, trace_ids: list[str]
) -> dict[str, Variable]:
    """The dashboard's variables: All (or empty) everywhere, or each on its first value.

    Query variables get their options by running their own query (rendered with the
    variables before them, as Grafana refreshes them in order); a textbox takes a
    sample value from the data.
    """
    samples = {"trace_id": trace_ids[0]}
    chosen: dict[str, Variable] = {}
    for variable in variables(DASHBOARDS[name]):
        var_name = variable["name"]
        if variable["type"] == "textbox":
            assert var_name in samples, f"no sample value for the textbox {var_name}"
            chosen[var_name] = Variable(var_name, "" if case == "all" else samples[var_name])
        elif uid_of(variable) == CLICKHOUSE_UID:
            result = db.query(render(variable["query"], chosen, LAST_DAY))
            options = [str(row[0]) for row in result.rows]
            assert options, f"{name} variable {var_name}: its query returns nothing"
            current: list[str] = [ALL] if case == "all" else options[:1]
            chosen[var_name] = Variable(var_name, current, options, variable.get("allValue"))
    return chosen


def time_range_of(query: ChQuery) -> TimeRange:
    """The last day, with the panel's minimum interval where it is above 60 s."""
    interval = (query.panel or {}).get("interval")
    if interval and (match := _INTERVAL.match(interval)):
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return TimeRange(LAST_DAY.start, LAST_DAY.end, max(60, seconds))
    return LAST_DAY


def names_the_panel_needs(panel: dict[str, Any]) -> set[str]:
    """Columns a panel refers to by name: overrides, reduce fields, links, display names."""
    needed: set[str] = set()
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"]["id"] == "byName":
            needed.add(override["matcher"]["options"])
    fields = panel.get("options", {}).get("reduceOptions", {}).get("fields", "")
    if match := re.fullmatch(r"/\^(\w+)\$/", fields):
        needed.add(match.group(1))
    text = json.dumps(panel.get("fieldConfig", {}))
    needed.update(re.findall(r"__data\.fields\.(\w+)", text))
    needed.update(re.findall(r"__data\.fields\[\\?\"([^\"\\]+)\\?\"\]", text))
    return needed


def labels_the_panel_shows(panel: dict[str, Any]) -> set[str]:
    return set(re.findall(r"__field\.labels\.(\w+)", json.dumps(panel.get("fieldConfig", {}))))


def waits_for_input(query: ChQuery, chosen: dict[str, Variable]) -> bool:
    """The query needs a text nobody has entered (the trace view without a trace id)."""
    sql = apply_conditional_all(query.sql, chosen)
    return any(
        variable.current == "" and re.search(rf"\$\{{?{variable.name}\b", sql)
        for variable in chosen.values()
    )


def check_result(query: ChQuery, result: clickhouse.Result, *, may_be_empty: bool) -> None:
    where = f"{query.dashboard} {query.where}"
    assert result.rows or may_be_empty, f"{where}: no rows"
    assert result.columns, f"{where}: no columns"
    columns = dict(zip(result.columns, result.types, strict=True))
    if query.use == "variable":
        return
    if query.use == "annotation":
        assert _TIME_TYPE.match(columns.get("time", "")), f"{where}: needs a DateTime `time`"
        text = columns.get("text", "")
        assert _NON_NULL_TEXT.match(text), f"{where}: needs a `text` that is never NULL ({text})"
        if "tags" in columns:
            assert _TEXT_TYPE.match(columns["tags"]), f"{where}: tags are a comma-separated text"
        return
    panel = query.panel or {}
    missing = names_the_panel_needs(panel) - set(columns)
    assert not missing, f"{where}: the panel refers to missing columns {sorted(missing)}"
    if query.format == 0:  # time series: a time column first, then labels and numbers
        first, first_type = result.columns[0], result.types[0]
        assert first == "time" and _TIME_TYPE.match(first_type), f"{where}: {first} {first_type}"
        values = [c for c, t in columns.items() if c != "time" and _NUMBER_TYPE.match(t)]
        labels = {c for c, t in columns.items() if _TEXT_TYPE.match(t)}
        assert values, f"{where}: no numeric column"
        assert set(columns) == {"time", *values, *labels}, f"{where}: {columns}"
        assert labels_the_panel_shows(panel) <= labels, f"{where}: labels {labels}"
        times = [row[0] for row in result.rows]
        assert times == sorted(times), f"{where}: rows must be in time order"
    elif query.format == 3:
        missing = TRACE_COLUMNS - set(columns)
        assert not missing, f"{where}: the trace view needs {sorted(missing)}"
    elif panel.get("type") in ("stat", "bargauge", "piechart", "gauge"):
        assert any(_NUMBER_TYPE.match(t) for t in columns.values()), f"{where}: no number"


def check_final(query: ChQuery, replacing: frozenset[str]) -> None:
    for table, final in _FINAL.findall(query.sql):
        if table in replacing:
            assert final, f"{query.dashboard} {query.where}: read {table} with FINAL"


def check_follows_the_time_picker(query: ChQuery) -> None:
    sql = re.sub(r"'[^']*'", "''", query.sql)
    assert not re.search(r"\b(now|now64|today|yesterday)\s*\(", sql, re.IGNORECASE), (
        f"{query.dashboard} {query.where}: use the time range macros, not the clock"
    )
    if query.use == "panel" and query.format == 0:
        assert "$__timeInterval(" in sql and "$__timeFilter(" in sql, query.where


@pytest.mark.parametrize("case", ["all", "first"])
@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_clickhouse_query_runs_and_returns_what_its_panel_needs(
    name: str, case: str, warehouse: Analytics
) -> None:
    queries = clickhouse_queries(name)
    assert queries or name == "sluice-pipeline"
    chosen = selections(name, case, warehouse.db, warehouse.trace_ids)
    for query in queries:
        check_final(query, warehouse.replacing_tables)
        check_follows_the_time_picker(query)
        sql = render(query.sql, chosen, time_range_of(query))
        try:
            result = warehouse.db.query(sql)
        except clickhouse.WarehouseError as exc:
            pytest.fail(f"{name} {query.where} fails ({case}): {exc}\n{sql}")
        check_result(query, result, may_be_empty=waits_for_input(query, chosen))


def test_the_trace_view_shows_the_spans_of_one_trace(warehouse: Analytics) -> None:
    (query,) = [q for q in clickhouse_queries("sluice-traces") if q.format == 3]
    chosen = selections("sluice-traces", "first", warehouse.db, warehouse.trace_ids)
    result = warehouse.db.query(render(query.sql, chosen, LAST_DAY))
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    assert {r["traceID"] for r in rows} == {warehouse.trace_ids[0]}
    assert len(rows) == 4  # guard, infer, its Triton call and meter
    roots = [r for r in rows if r["parentSpanID"] not in {s["spanID"] for s in rows}]
    assert len(roots) == 1 and roots[0]["serviceName"] == "sluice-guard"
    client = next(r for r in rows if r["kind"] == "Client")
    assert client["logs"][0]["name"] == "retry" and abs(client["duration"] - 45.0) < 1e-6


def test_the_spend_panel_counts_a_replayed_usage_row_once(warehouse: Analytics) -> None:
    (spend,) = [
        q for q in clickhouse_queries("sluice-costs") if q.where.startswith("panel 'Spend'")
    ]
    chosen = selections("sluice-costs", "all", warehouse.db, warehouse.trace_ids)
    sql = render(spend.sql, chosen, LAST_DAY)
    before = warehouse.db.query(sql).scalar()
    warehouse.db.command("INSERT INTO usage SELECT * FROM usage")  # what a replay does
    after = warehouse.db.query(sql).scalar()
    expected = warehouse.db.query(
        "SELECT sum(cost) FROM (SELECT request_id, any(cost) AS cost FROM usage "
        "GROUP BY request_id)"
    ).scalar()
    assert before == after == expected > Decimal(0)


def test_dashboards_sit_where_compose_mounts_them() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./infra/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "sluice.yaml").read_text()
    )["providers"][0]
    assert provider["folder"] == "Sluice"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
