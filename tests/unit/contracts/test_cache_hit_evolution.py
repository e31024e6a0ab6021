"""``cache_hit``, appended to InferenceResult and UsageEvent, reads old records as false."""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import pytest

from streams.contracts.catalog import load_catalog
from streams.settings import PROJECT_ROOT

CATALOG = load_catalog(PROJECT_ROOT / "schemas")


def _without_cache_hit(schema: dict[str, Any]) -> dict[str, Any]:
    old = copy.deepcopy(schema)
    old.pop("__fastavro_parsed", None)
    old.pop("__named_schemas", None)
    assert old["fields"][-1]["name"] == "cache_hit", "cache_hit must stay the last field"
    old["fields"] = old["fields"][:-1]
    return old


@pytest.mark.parametrize("topic", ["inference.results", "inference.responses", "metering.usage"])
def test_a_record_written_before_cache_hit_reads_as_a_miss(topic: str) -> None:
    new = CATALOG.value_schema(topic).parsed
    field = new["fields"][-1]
    assert (field["type"], field["default"]) == ("boolean", False)
    # The nested types (GuardVerdict) as the catalog parsed them; the record itself anew.
    named = {k: v for k, v in new.get("__named_schemas", {}).items() if k != new["name"]}
    named.pop(f"{new.get('namespace', '')}.{new['name']}".lstrip("."), None)
    old = fastavro.parse_schema(_without_cache_hit(new), named_schemas=named)
    record = _minimal(old)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, old, record)
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, old, new)
    assert read["cache_hit"] is False
    assert {k: v for k, v in read.items() if k != "cache_hit"} == record


def _minimal(schema: dict[str, Any]) -> dict[str, Any]:
    """A valid record of ``schema``: defaults where given, a plain value otherwise."""
    plain = {"string": "x", "long": 1, "int": 1, "double": 1.0, "boolean": True}
    record: dict[str, Any] = {}
    for f in schema["fields"]:
        if "default" in f:
            record[f["name"]] = f["default"]
            continue
        kind = f["type"]
        if isinstance(kind, dict) and kind.get("logicalType") == "decimal":
            from decimal import Decimal

            record[f["name"]] = Decimal("0.000000001")
        elif isinstance(kind, dict) and kind.get("logicalType") == "timestamp-millis":
            from datetime import UTC, datetime

            record[f["name"]] = datetime(2026, 3, 5, tzinfo=UTC)
        else:
            record[f["name"]] = plain[kind]
    return record
