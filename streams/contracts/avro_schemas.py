"""The Avro schemas in ``schemas/avro/``: the source of truth for every topic's value.

A schema may refer to a named type defined in another file (InferenceRequest
uses sluice.v1.GuardVerdict). The registry gets each schema expanded into one
self-contained document, so that any Confluent-compatible client can read it
without schema references.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.types import Schema as FastavroSchema

from streams.errors import ConfigurationError


class SchemaError(ConfigurationError, ValueError):
    """A schema file is missing, unreadable or not valid Avro."""


@dataclass(frozen=True)
class AvroSchema:
    """One named Avro schema, parsed for fastavro and expanded for the registry."""

    fullname: str
    path: Path
    parsed: FastavroSchema = field(repr=False, compare=False)
    document: str = field(repr=False)

    @property
    def json(self) -> dict[str, Any]:
        """The expanded schema as a JSON object."""
        result: dict[str, Any] = json.loads(self.document)
        return result


def load_schemas(directory: Path) -> dict[str, AvroSchema]:
    """Parse every ``*.avsc`` under ``directory``, resolving cross-file references.

    Files are parsed in rounds: a file whose named references are not yet known
    waits for the next round, so the order of files on disk does not matter.
    """
    pending = {path: _read(path) for path in sorted(directory.glob("*.avsc"))}
    named: dict[str, Any] = {}
    result: dict[str, AvroSchema] = {}
    while pending:
        progressed = False
        errors: dict[Path, str] = {}
        for path, raw in list(pending.items()):
            try:
                parsed = fastavro.parse_schema(raw, named_schemas=named)
            except fastavro.schema.UnknownType as exc:
                errors[path] = f"unknown type {exc.name}"
                continue
            except (fastavro.schema.SchemaParseException, TypeError, ValueError) as exc:
                raise SchemaError(f"{path}: not a valid Avro schema: {exc}") from exc
            fullname = _fullname(raw)
            expanded = fastavro.parse_schema(
                raw, named_schemas=dict(named), expand=True, _write_hint=False
            )
            document = json.dumps(_define_once(expanded, set()), separators=(",", ":"))
            result[fullname] = AvroSchema(fullname, path, parsed, document)
            del pending[path]
            progressed = True
        if not progressed:
            detail = "; ".join(f"{p.name}: {msg}" for p, msg in errors.items())
            raise SchemaError(f"unresolvable schema references in {directory}: {detail}")
    return result


def parse_document(document: str | Mapping[str, Any]) -> FastavroSchema:
    """Parse a self-contained schema document (e.g. a writer schema from the registry)."""
    raw = json.loads(document) if isinstance(document, str) else dict(document)
    return fastavro.parse_schema(raw, named_schemas={})


def _define_once(node: Any, defined: set[str]) -> Any:
    """Replace every repeated definition of a named type by a reference to its name.

    fastavro's ``expand`` inlines a named type wherever it is referenced, so a
    record using sluice.v1.GuardVerdict twice (InferenceResult) would define it
    twice, which Avro forbids: parsers (fastavro's own included) reject such a
    writer schema. A self-contained document defines each named type once.
    """
    if isinstance(node, list):
        return [_define_once(item, defined) for item in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        name = _fullname(node)
        if name in defined:
            return name
        defined.add(name)
    result = dict(node)
    for key in ("type", "items", "values"):
        if key in result and not (key == "type" and isinstance(result[key], str)):
            result[key] = _define_once(result[key], defined)
    if "fields" in result:
        result["fields"] = [_define_once(f, defined) for f in result["fields"]]
    return result


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read schema: {exc}") from exc
    if not isinstance(data, dict) or data.get("type") != "record":
        raise SchemaError(f"{path}: a topic schema must be an Avro record")
    return data


def _fullname(raw: Mapping[str, Any]) -> str:
    name = str(raw["name"])
    namespace = raw.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"
