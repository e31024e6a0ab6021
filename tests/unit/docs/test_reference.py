"""The reference generators (``docs/gen/refgen``): code in, the right rows out."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Literal

import click
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from refgen import avro, catalog, cli, clickhouse, dead_letters, markdown, metrics, modules
from refgen import processors as processor_pages
from refgen import settings as settings_pages

from streams.contracts.catalog import TopicSpec, load_catalog
from streams.errors import record_error_kinds
from streams.settings import PROJECT_ROOT, Settings


# -- markdown ------------------------------------------------------------------------------
def test_escape_leaves_code_spans_alone() -> None:
    text = "raw.<dataset> *all* a|b `x|<y>*` end"
    assert markdown.escape(text) == r"raw.&lt;dataset&gt; \*all\* a\|b `x|<y>*` end"


def test_table_and_anchor() -> None:
    assert markdown.table(("a", "b"), [("1", "")]) == "| a | b |\n| --- | --- |\n| 1 |   |\n"
    assert markdown.anchor("sluice.v1.RecordMeta") == "sluicev1recordmeta"
    assert markdown.anchor("sluice dlq show") == "sluice-dlq-show"
    assert markdown.code("a`b") == "``a`b``"


# -- settings ------------------------------------------------------------------------------
class _Section(BaseModel):
    """A nested section."""

    port: int = Field(9092, description="Where it listens.")
    secret: SecretStr | None = None


class _Shared(BaseSettings):
    """Shared settings."""

    model_config = SettingsConfigDict(env_prefix="APP_", env_nested_delimiter="__")
    mode: Literal["a", "b"] = "a"
    items: list[str] = Field(default_factory=lambda: ["x", "y"])
    home: Path = PROJECT_ROOT / "schemas"
    prefix: str = ""
    section: _Section = _Section()


class _Own(BaseSettings):
    """A processor's own."""

    model_config = SettingsConfigDict(env_prefix="APP_OWN__")
    enabled: bool = True


def test_settings_become_one_section_per_class_and_nested_model() -> None:
    shared, nested = settings_pages.sections(_Shared, PROJECT_ROOT)
    assert shared.title == "APP_*" and shared.doc == "Shared settings."
    assert [(r.env, r.type, r.default) for r in shared.rows] == [
        ("APP_MODE", '"a" | "b"', "a"),
        ("APP_ITEMS", "list[str]", '["x", "y"]'),
        ("APP_HOME", "Path", "<repo>/schemas"),
        ("APP_PREFIX", "str", '""'),
    ]
    assert nested.title == "APP_SECTION__*"
    assert [(r.env, r.type, r.default, r.description) for r in nested.rows] == [
        ("APP_SECTION__PORT", "int", "9092", "Where it listens."),
        ("APP_SECTION__SECRET", "secret | None", markdown.DASH, ""),
    ]
    (own,) = settings_pages.sections(_Own)
    assert [(r.env, r.default) for r in own.rows] == [("APP_OWN__ENABLED", "true")]


def test_sluice_settings_cover_every_section_with_its_prefix() -> None:
    found = settings_pages.sections(Settings, PROJECT_ROOT)
    titles = {s.title for s in found}
    assert {"SLUICE_*", "SLUICE_KAFKA__*", "SLUICE_RUNNER__*", "SLUICE_STACK__*"} <= titles
    envs = {r.env for s in found for r in s.rows}
    assert {"SLUICE_TOPIC_PREFIX", "SLUICE_RUNNER__BATCH_SIZE", "SLUICE_KAFKA__OPTIONS"} <= envs
    assert any("local stack" in note for s in found for note in s.notes)
    rendered = settings_pages.render_section(found[0])
    assert "| `SLUICE_TOPIC_PREFIX` | `str` |" in rendered


# -- CLI -----------------------------------------------------------------------------------
@click.group()
def _app() -> None:
    """The app.

    Second paragraph with <brackets>.
    """


@_app.command()
@click.argument("topic")
@click.option("-f", "--file", type=click.Path(), help="A file.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table")
@click.option("--publish/--no-publish", default=True, help="Send it.")
@click.option("--var", multiple=True, help="Repeatable.")
@click.option("--dry-run", is_flag=True, help="Nothing is sent.")
def show(**_: object) -> None:
    """Show TOPIC."""


def test_cli_rows_describe_every_parameter() -> None:
    root, shown = cli.commands(_app, "app")
    assert root.subcommands == ["show"] and root.help.startswith("The app.")
    assert shown.path == "app show" and shown.usage == "app show [OPTIONS] TOPIC"
    rows = {row.names: row for row in shown.params}
    assert rows["TOPIC"].kind == "argument" and rows["TOPIC"].default == ""
    assert rows["-f, --file"].help == "A file." and rows["-f, --file"].default == ""
    assert (rows["--format"].type, rows["--format"].default) == ("table | csv", "table")
    assert (rows["--publish / --no-publish"].kind, rows["--publish / --no-publish"].default) == (
        "flag",
        "--publish",
    )
    assert rows["--var"].kind == "option, repeatable"
    assert (rows["--dry-run"].kind, rows["--dry-run"].default) == ("flag", "")
    page = cli.render(root) + cli.render(shown)
    assert "[`show`](#app-show)" in page and "&lt;brackets&gt;" in page and "--help" not in page


def test_the_real_cli_lists_its_commands() -> None:
    from streams.cli import main

    paths = {doc.path for doc in cli.commands(main)}
    assert {"sluice", "sluice run", "sluice dlq replay", "sluice docs build"} <= paths


# -- catalog -------------------------------------------------------------------------------
def test_durations_read_as_whole_units() -> None:
    assert catalog.duration(604_800_000) == "7 days"
    assert catalog.duration(86_400_000) == "1 day"
    assert catalog.duration(3_600_000) == "1 hour"
    assert catalog.duration(90_000) == "90 s"
    assert catalog.duration(-1) == "unlimited"


def test_topic_rows_split_configs() -> None:
    spec = TopicSpec(
        name="p.drift.state",
        logical="drift.state",
        value="sluice.v1.DriftState",
        key="string",
        partitions=1,
        replication_factor=1,
        compatibility="BACKWARD_TRANSITIVE",
        configs={"retention.ms": "604800000", "cleanup.policy": "compact", "segment.ms": "1"},
    )
    row = catalog.topic_row(spec)
    assert (row.name, row.retention, row.cleanup_policy, row.other_configs, row.dlq) == (
        "drift.state",
        "7 days",
        "compact",
        "segment.ms=1",
        "",
    )
    dlq = catalog.topic_row(
        TopicSpec("x.dlq", "bytes", "string", 3, 1, "BACKWARD_TRANSITIVE", {"retention.ms": "1000"})
    )
    assert dlq.compatibility == "" and dlq.retention == "1 s"


def test_the_shipped_catalog_and_contract() -> None:
    loaded = load_catalog(PROJECT_ROOT / "schemas")
    rows = {row.name: row for row in catalog.topic_rows(loaded)}
    assert rows["raw.support_tickets"].dlq == "raw.support_tickets.dlq"
    assert dict(catalog.contract_rows(loaded, "support_tickets"))["ticket_id"].startswith(
        "required: true"
    )


# -- Avro ----------------------------------------------------------------------------------
def test_records_with_nested_types_and_logical_types() -> None:
    schema = {
        "type": "record",
        "name": "Outer",
        "namespace": "ns",
        "doc": "The outer record.",
        "fields": [
            {"name": "id", "type": "string", "doc": "Its id."},
            {
                "name": "cost",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 9},
            },
            {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
            {"name": "other", "type": ["null", "ns.Elsewhere"], "default": None},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "Inner",
                    "fields": [{"name": "n", "type": "int"}],
                },
            },
        ],
    }
    outer, inner = avro.records(schema)
    assert (outer.fullname, inner.fullname) == ("ns.Outer", "ns.Inner")
    types_ = {f.name: f.type for f in outer.fields}
    assert types_["cost"] == "`bytes` (decimal 18, 9)"
    assert types_["tags"] == "map of `string`"
    assert types_["other"] == "`null` \\| [`Elsewhere`](#nselsewhere)"
    assert types_["inner"] == "[`Inner`](#nsinner)"
    assert {f.name: f.default for f in outer.fields}["other"] == "null"


def test_every_shipped_schema_file_has_documented_records() -> None:
    for path in sorted((PROJECT_ROOT / "schemas" / "avro").glob("*.avsc")):
        records = avro.file_records(path)
        assert records, path
        assert all(r.doc for r in records), path


# -- dead letters --------------------------------------------------------------------------
def test_dead_letter_kinds_leave_out_families() -> None:
    rows = {row.name: row for row in dead_letters.kind_rows(record_error_kinds())}
    assert not any(name.startswith("_") for name in rows)
    assert (rows["ContractViolation"].stage, rows["ContractViolation"].family) == ("contract", "")
    assert rows["CorruptAvro"].family == "decode"
    assert (rows["UnknownModel"].family, rows["UnknownModel"].code) == (
        "inference",
        "unknown_model",
    )
    assert rows["EmptyRecord"].doc.startswith("The record has no value")


# -- metrics -------------------------------------------------------------------------------
def test_module_metrics_read_names_types_and_labels() -> None:
    registry = CollectorRegistry()
    module = types.ModuleType("fake.metrics")
    module.IN = Counter("fake_in_total", "Records in.", ["processor"], registry=registry)  # type: ignore[attr-defined]
    module.LATENCY = Histogram("fake_seconds", "Latency.", registry=registry)  # type: ignore[attr-defined]
    module.OTHER = 3  # type: ignore[attr-defined]
    rows = sorted(metrics.module_metrics(module), key=lambda r: r.name)
    assert [(r.name, r.type, r.labels, r.help) for r in rows] == [
        ("fake_in_total", "counter", ("processor",), "Records in."),
        ("fake_seconds", "histogram", (), "Latency."),
    ]


def test_metric_modules_are_found_by_their_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("from prometheus_client import Gauge\n")
    (tmp_path / "pkg" / "sub" / "m.py").write_text(
        "from prometheus_client import Counter, Histogram\n"
    )
    (tmp_path / "pkg" / "sub" / "n.py").write_text("from collections import Counter\n")
    assert metrics.metric_modules(tmp_path, ["pkg"]) == ["pkg", "pkg.sub.m"]


def test_the_runner_metrics_are_listed() -> None:
    rows = {r.name: r for r in metrics.metric_rows(["streams.runtime.metrics"])}
    assert rows["sluice_records_in_total"].labels == ("processor", "topic")


# -- ClickHouse ----------------------------------------------------------------------------
MIGRATION = """-- A header that belongs to no table.

-- Requests, one row each;
-- never the prompt.
CREATE TABLE IF NOT EXISTS requests
(
    request_id String,
    stage LowCardinality(String) COMMENT 'received; safe or blocked',
    tags Map(String, UInt32),   -- a trailing comment, with a ; in it
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_stage stage TYPE set(0) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(ts)
ORDER BY (request_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS per_day
REFRESH EVERY 1 MINUTE
ENGINE = MergeTree
ORDER BY day
AS SELECT toDate(ts) AS day, count() AS n FROM requests FINAL GROUP BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS requests_mv TO requests AS
SELECT * FROM ingest;
"""


def test_migrations_become_tables_views_and_columns() -> None:
    table, view, mapping = clickhouse.parse_migration(MIGRATION, "0001_x.sql")
    assert (table.name, table.kind, table.engine) == ("requests", "table", "ReplacingMergeTree(ts)")
    assert table.comment == "Requests, one row each; never the prompt."
    assert [(c.name, c.type, c.comment) for c in table.columns] == [
        ("request_id", "String", ""),
        ("stage", "LowCardinality(String)", "received; safe or blocked"),
        ("tags", "Map(String, UInt32)", ""),
        ("ts", "DateTime64(3, 'UTC')", ""),
        ("ingested_at", "DateTime64(3, 'UTC')", ""),
    ]
    assert (view.kind, view.refresh, view.engine, view.columns) == (
        "materialized view",
        "EVERY 1 MINUTE",
        "MergeTree",
        [],
    )
    assert view.definition.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS per_day\nREFRESH")
    assert (mapping.target, mapping.comment) == ("requests", "")


def test_query_comments_and_the_shipped_migrations() -> None:
    assert clickhouse.query_comment("-- Line one,\n-- line two.\nSELECT 1") == "Line one, line two."
    found = {r.name: r for r in clickhouse.relations(PROJECT_ROOT / "infra/clickhouse/migrations")}
    assert {"requests", "results", "usage", "dead_letters", "otel_traces"} <= set(found)
    assert "cost" in {c.name for c in found["usage"].columns}
    assert found["cost_per_tenant_day"].refresh == "EVERY 1 MINUTE"


# -- modules and processors ----------------------------------------------------------------
def test_module_rows_follow_the_tree(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text('"""The package.\n\nMore."""\n')
    (tmp_path / "pkg" / "a.py").write_text('"""Module a."""\n')
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "b.py").write_text('"""Module b."""\n')
    rows = [(r.path, r.depth, r.summary) for r in modules.module_rows(tmp_path, "pkg")]
    assert rows == [
        ("pkg/", 0, "The package."),
        ("pkg/a.py", 1, "Module a."),
        ("pkg/sub/", 1, ""),
        ("pkg/sub/b.py", 2, "Module b."),
    ]


def test_processor_rows_from_the_registry() -> None:
    import processors

    loaded = load_catalog(PROJECT_ROOT / "schemas")
    row = processor_pages.processor_row(
        "validate", processors.PROCESSORS["validate"], processors.resolve("validate"), loaded
    )
    assert (row.kind, row.settings) == ("runner", "SLUICE_VALIDATE__")
    assert row.inputs == ["raw.support_tickets"] and row.outputs == ["support_tickets.validated"]


# -- ACLs ------------------------------------------------------------------------------------
def test_acl_rows_show_each_principals_grants_with_prefix_patterns_marked() -> None:
    from refgen import acls

    from streams.contracts.acls import parse_acls

    loaded = load_catalog(PROJECT_ROOT / "schemas")
    declaration = parse_acls(
        "tenants: [acme]\n"
        "principals:\n"
        "  sluice-infer:\n"
        "    description: Serves\n      requests.\n"
        "    read: [inference.requests.safe]\n"
        "    write: [inference.responses]\n"
        "    groups: ['{group}.infer']\n"
        "    transactional_ids: ['{group}.infer.*']\n"
        "  tenant-{tenant}:\n"
        "    description: A tenant.\n"
        "    write: ['raw.{dataset}']\n",
        loaded,
    )
    infer, tenant = acls.principal_rows(declaration, loaded)
    assert infer == acls.PrincipalRow(
        principal="User:sluice-infer",
        description="Serves requests.",
        read=["inference.requests.safe"],
        write=["inference.responses"],
        groups=["sluice.infer"],
        transactional_ids=["sluice.infer.*"],
        other=[],
    )
    assert tenant.principal == "User:tenant-acme" and tenant.write == ["raw.support_tickets"]
    text = acls.render([infer, tenant])
    assert "### User:sluice-infer" in text and "`sluice.infer.*`" in text
    assert "| use consumer groups | `sluice.infer` |" in text
