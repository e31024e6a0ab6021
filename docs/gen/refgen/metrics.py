"""The Prometheus metrics Sluice defines → rows (name, type, labels, help, module).

Modules are found by their source (an import of a metric class from
``prometheus_client``), imported, and their module-level metric objects read.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from prometheus_client.metrics import MetricWrapperBase

from refgen.markdown import code, escape, table

_DEFINES_METRICS = re.compile(
    r"^from prometheus_client import .*\b(Counter|Gauge|Histogram|Summary|Info|Enum)\b",
    re.MULTILINE,
)


@dataclass(frozen=True)
class MetricRow:
    """One metric family as Prometheus scrapes it."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    module: str


def metric_modules(root: Path, packages: Iterable[str]) -> list[str]:
    """Dotted names of the modules under ``packages`` whose source defines metrics."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if _DEFINES_METRICS.search(path.read_text(encoding="utf-8")):
                parts = list(path.relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                found.append(".".join(parts))
    return found


def module_metrics(module: ModuleType) -> Iterator[MetricRow]:
    """The metric objects a module defines at its top level."""
    for value in vars(module).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            yield MetricRow(
                name=family.name + ("_total" if family.type == "counter" else ""),
                type=family.type,
                labels=tuple(value._labelnames),
                help=family.documentation,
                module=module.__name__,
            )


def metric_rows(modules: Iterable[str]) -> list[MetricRow]:
    """Every metric of ``modules`` (imported here), sorted by name."""
    rows = {
        row.name: row for name in modules for row in module_metrics(importlib.import_module(name))
    }
    return [rows[name] for name in sorted(rows)]


def render(rows: list[MetricRow]) -> str:
    """The table of metrics."""
    cells = [
        (
            code(r.name),
            r.type,
            ", ".join(code(label) for label in r.labels),
            escape(r.help),
            code(r.module),
        )
        for r in rows
    ]
    return table(("metric", "type", "labels", "help", "defined in"), cells)
