"""The topic catalog (``schemas/topics.yaml`` via ``streams.contracts.catalog``) → rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from refgen.markdown import anchor, code, escape, table
from streams.contracts.catalog import Catalog, TopicSpec
from streams.warehouse.retention import table_classes


@dataclass(frozen=True)
class TopicRow:
    """One topic of the catalog, as the cluster gets it."""

    name: str
    partitions: int
    key: str
    value: str
    compatibility: str
    retention: str
    cleanup_policy: str
    dlq: str
    other_configs: str
    data_class: str = ""
    encrypted: bool = False


def duration(ms: int) -> str:
    """Milliseconds as the largest whole unit: ``604800000`` → ``7 days``."""
    for unit, size in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            count = ms // size
            if unit == "s":
                return f"{count} s"
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "unlimited" if ms < 0 else f"{ms} ms"


def topic_row(spec: TopicSpec) -> TopicRow:
    """The documentation row of one topic."""
    configs = dict(spec.configs)
    retention = configs.pop("retention.ms", None)
    cleanup = configs.pop("cleanup.policy", "delete")
    return TopicRow(
        name=spec.logical,
        partitions=spec.partitions,
        key=spec.key,
        value=spec.value,
        compatibility=spec.compatibility if spec.is_avro else "",
        retention=duration(int(retention)) if retention is not None else "broker default",
        cleanup_policy=cleanup,
        dlq=spec.dlq_topic or "",
        other_configs=", ".join(f"{k}={v}" for k, v in sorted(configs.items())),
        data_class=spec.data_class,
        encrypted=spec.encrypted,
    )


def topic_rows(catalog: Catalog) -> list[TopicRow]:
    """Every topic, sorted by name."""
    return [topic_row(spec) for _, spec in sorted(catalog.topics.items())]


def _days(days: int | None) -> str:
    return duration(days * 86_400_000) if days else ""


def retention_table(catalog: Catalog) -> str:
    """The data classes: what each keeps, for how long, on which topics and tables.

    docs/explanation/data-retention.md holds this table verbatim (a unit test keeps the
    two in step).
    """
    topics: dict[str, list[str]] = {}
    for name, spec in sorted(catalog.topics.items()):
        own = int(spec.configs["retention.ms"])
        cell = code(name)
        if own != catalog.data_class(spec.data_class).retention_ms:
            cell += f" ({duration(own)})"  # the topic's own retention wins
        topics.setdefault(spec.data_class, []).append(cell)
    tables: dict[str, list[str]] = {}
    for table_name, name in table_classes(catalog).items():
        tables.setdefault(name, []).append(table_name)
    rows = []
    for name, kind in catalog.data_classes.items():
        listed = topics.get(name, [])
        shown = ", ".join(listed[:4]) + (f" and {len(listed) - 4} more" if len(listed) > 4 else "")
        rows.append(
            (
                code(name),
                escape(kind.description),
                duration(kind.retention_ms) if kind.retention_ms else "",
                shown,
                _days(kind.clickhouse_ttl_days),
                ", ".join(code(t) for t in tables.get(name, [])),
                code(kind.dead_letters) if kind.dead_letters else "",
                "yes" if kind.encrypted else "",
            )
        )
    headers = (
        "data class",
        "what",
        "Kafka retention",
        "topics",
        "ClickHouse TTL",
        "tables",
        "dead letters",
        "encrypted",
    )
    return table(headers, rows)


def contract_rows(catalog: Catalog, dataset: str) -> list[tuple[str, str]]:
    """(field, rules) of a dataset's contract, in the contract's order."""
    spec = catalog.dataset(dataset).contract.spec
    rows = []
    for name, rules in spec.fields.items():
        given: dict[str, Any] = rules.model_dump(exclude_defaults=True)
        rows.append((name, ", ".join(f"{k}: {json.dumps(v)}" for k, v in given.items())))
    return rows


def render(catalog: Catalog) -> str:
    """The catalog page body: topics, then datasets and their contracts."""
    rows = []
    for row in topic_rows(catalog):
        value = row.value
        value_cell = code(value) if value == "bytes" else f"[`{value}`](schemas.md#{anchor(value)})"
        rows.append(
            (
                code(row.name),
                code(row.data_class) + (" (encrypted)" if row.encrypted else ""),
                str(row.partitions),
                code(row.key),
                value_cell,
                code(row.compatibility),
                row.retention,
                code(row.cleanup_policy),
                code(row.dlq),
                code(row.other_configs),
            )
        )
    headers = (
        "topic",
        "data class",
        "partitions",
        "key",
        "value schema",
        "compatibility",
        "retention",
        "cleanup",
        "dead-letter topic",
        "other configs",
    )
    text = (
        "## Data classes\n\n"
        "Every topic and ClickHouse table belongs to a data class, which sets how long it "
        "is kept (a topic's own `retention_ms` wins); see "
        "[Data retention](../explanation/data-retention.md).\n\n"
        + retention_table(catalog)
        + "\n## Topics\n\n"
        + table(headers, rows)
        + "\n## Datasets and their contracts\n\n"
    )
    for name, dataset in sorted(catalog.datasets.items()):
        spec = dataset.contract.spec
        text += f"### {name}\n\n{escape(spec.description)}\n\n"
        facts = [
            (
                "topics",
                f"`{dataset.raw_topic}` → `{dataset.validated_topic}`, `{dataset.dlq_topic}`",
            ),
            ("schema", f"`{spec.schema_name}`"),
            ("contract version", str(spec.version)),
            ("owner", escape(spec.owner)),
            ("key", f"`{spec.key}`"),
            ("max record bytes", f"{spec.max_record_bytes:,}"),
            ("unknown fields", f"`{spec.unknown_fields}`"),
        ]
        text += table(("", ""), facts) + "\n"
        text += table(
            ("field", "rules"), [(code(f), code(r)) for f, r in contract_rows(catalog, name)]
        )
        text += "\n"
    return text
