"""The Avro schemas (``schemas/avro/*.avsc``) → one table of fields per record, with their docs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refgen.markdown import anchor, code, escape, one_line, table

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class FieldRow:
    """One field of a record."""

    name: str
    type: str  # Markdown: named types are links
    default: str
    doc: str


@dataclass(frozen=True)
class RecordDoc:
    """One named record: the file's top-level record, or one defined inline in it."""

    fullname: str
    doc: str
    fields: list[FieldRow]


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def type_text(schema: Any, namespace: str, found: list[RecordDoc]) -> str:
    """Markdown for an Avro type; inline named records are appended to ``found``."""
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return f"`{schema}`"
        name = _fullname(schema, namespace)
        return f"[`{name.rsplit('.', 1)[-1]}`](#{anchor(name)})"
    if isinstance(schema, list):
        return " \\| ".join(type_text(branch, namespace, found) for branch in schema)
    kind = schema["type"]
    if kind == "record":
        found += records(schema, namespace)
        return type_text(_fullname(schema["name"], schema.get("namespace", namespace)), "", found)
    if kind == "enum":
        return "enum " + code(" | ".join(schema["symbols"]))
    if kind == "array":
        return f"array of {type_text(schema['items'], namespace, found)}"
    if kind == "map":
        return f"map of {type_text(schema['values'], namespace, found)}"
    if kind == "fixed":
        return f"`fixed({schema['size']})`"
    logical = schema.get("logicalType")
    if logical == "decimal":
        return f"`{kind}` (decimal {schema['precision']}, {schema.get('scale', 0)})"
    if logical:
        return f"`{kind}` ({logical})"
    return type_text(kind, namespace, found)


def records(schema: dict[str, Any], namespace: str = "") -> list[RecordDoc]:
    """The record ``schema`` and every record defined inline in it, outermost first."""
    namespace = schema.get("namespace", namespace)
    fullname = _fullname(schema["name"], namespace)
    nested: list[RecordDoc] = []
    fields = [
        FieldRow(
            name=field["name"],
            type=type_text(field["type"], namespace, nested),
            default=json.dumps(field["default"]) if "default" in field else "",
            doc=one_line(field.get("doc", "")),
        )
        for field in schema["fields"]
    ]
    return [RecordDoc(fullname, one_line(schema.get("doc", "")), fields), *nested]


def file_records(path: Path) -> list[RecordDoc]:
    """Every record an ``.avsc`` file defines."""
    schema = json.loads(path.read_text(encoding="utf-8"))
    return records(schema) if schema.get("type") == "record" else []


def render(doc: RecordDoc, path: Path | None = None) -> str:
    """One record as a section with a table of its fields."""
    text = f"### {doc.fullname}\n\n"
    if path is not None:
        text += f"File: `schemas/avro/{path.name}`\n\n"
    if doc.doc:
        text += escape(doc.doc) + "\n\n"
    rows = [(code(f.name), f.type, code(f.default), escape(f.doc)) for f in doc.fields]
    return text + table(("field", "type", "default", "doc"), rows) + "\n"
