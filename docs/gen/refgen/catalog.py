"""The topic catalog (``schemas/topics.yaml`` via ``streams.contracts.catalog``) → rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from refgen.markdown import anchor, code, escape, table
from streams.contracts.catalog import Catalog, TopicSpec


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
    )


def topic_rows(catalog: Catalog) -> list[TopicRow]:
    """Every topic, sorted by name."""
    return [topic_row(spec) for _, spec in sorted(catalog.topics.items())]


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
        "partitions",
        "key",
        "value schema",
        "compatibility",
        "retention",
        "cleanup",
        "dead-letter topic",
        "other configs",
    )
    text = "## Topics\n\n" + table(headers, rows) + "\n## Datasets and their contracts\n\n"
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
