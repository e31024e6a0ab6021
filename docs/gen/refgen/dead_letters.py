"""The dead-letter kinds (every public subclass of ``streams.errors.RecordError``) → rows."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass

from refgen.markdown import code, escape, one_line, table
from streams.errors import RecordError


@dataclass(frozen=True)
class KindRow:
    """One dead-letter kind: what ``sluice.error.class`` says."""

    name: str
    stage: str
    family: str
    module: str
    doc: str
    code: str  # the error code an inference refusal carries on its error result


def _family(kind: type[RecordError]) -> str:
    """The kind's nearest base under RecordError (``_DecodeError`` → "decode"), if any."""
    for base in kind.__mro__[1:]:
        if base is RecordError:
            return ""
        if issubclass(base, RecordError):
            name = base.__name__.lstrip("_")
            return name.removesuffix("Error").removesuffix("Refused").lower() or name
    return ""


def kind_rows(kinds: Mapping[str, type[RecordError]]) -> list[KindRow]:
    """One row per public kind (names starting with ``_`` are families, never raised), by name."""
    rows = []
    for name, kind in sorted(kinds.items()):
        if name.startswith("_"):
            continue
        rows.append(
            KindRow(
                name=name,
                stage=kind.default_stage,
                family=_family(kind),
                module=kind.__module__,
                doc=one_line(inspect.getdoc(kind) or ""),
                code=str(getattr(kind, "code", "") or ""),
            )
        )
    return rows


def render(rows: list[KindRow]) -> str:
    """The table of kinds."""
    cells = [
        (
            code(r.name),
            code(r.stage),
            r.family,
            escape(r.doc) + (f" Error result code: `{r.code}`." if r.code else ""),
            code(r.module),
        )
        for r in rows
    ]
    return table(("kind (`sluice.error.class`)", "stage", "family", "meaning", "defined in"), cells)
