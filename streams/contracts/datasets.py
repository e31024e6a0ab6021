"""Data contracts: the rules a dataset's records must meet beyond their Avro types.

A contract (``schemas/contracts/<dataset>.yaml``) names the Avro schema of the
validated topic and adds per-field rules: required, min/max, min/max length,
regex, enum and an allowed null rate. ``Contract.check`` turns one JSON object
into a typed record or into the list of every rule it broke.

Violation messages name the field, the rule and the limit, never the value:
dead-letter reasons are stored in analytics tables and must not carry
personal data that a producer put in the wrong field.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.contracts.avro_schemas import AvroSchema
from streams.contracts.rules import (
    AvroField,
    ContractError,
    FieldRules,
    Violation,
    compile_field,
    parse_timestamp_millis,
)

__all__ = [
    "Contract",
    "ContractError",
    "ContractFile",
    "FieldRules",
    "NullRateMonitor",
    "Violation",
    "load_contract",
    "parse_timestamp_millis",
]

#: Fields of a validated schema that validate fills in itself (lineage).
SYSTEM_FIELDS = frozenset({"meta"})


class ContractFile(BaseModel):
    """A contract file as written by the dataset's owner."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    dataset: str
    version: int = Field(ge=1)
    owner: str = ""
    description: str = ""
    schema_name: str = Field(alias="schema")
    key: str
    max_record_bytes: int = Field(1_048_576, ge=1)
    unknown_fields: Literal["drop", "reject"] = "drop"
    fields: dict[str, FieldRules] = Field(default_factory=dict)


class Contract:
    """A loaded, compiled contract bound to its Avro schema."""

    def __init__(self, spec: ContractFile, schema: AvroSchema) -> None:
        self.spec = spec
        self.schema = schema
        avro_fields = {f.name: f for f in _payload_fields(schema)}
        unknown = set(spec.fields) - set(avro_fields)
        if unknown:
            raise ContractError(
                f"contract {spec.dataset!r} has rules for fields that {schema.fullname} "
                f"does not have: {', '.join(sorted(unknown))}; remove those rules or add "
                "the fields to the schema"
            )
        if spec.key not in avro_fields:
            raise ContractError(
                f"contract {spec.dataset!r}: key field {spec.key!r} is not in "
                f"{schema.fullname}; set `key` to one of its fields"
            )
        checks = []
        for name, avro_field in avro_fields.items():
            rules = spec.fields.get(name, FieldRules())
            if not rules.required and not avro_field.nullable and not avro_field.has_default:
                raise ContractError(
                    f"contract {spec.dataset!r}: field {name!r} is optional in the contract "
                    f"but neither nullable nor defaulted in {schema.fullname}; mark it "
                    "`required: true` or make it nullable in the schema"
                )
            checks.append(compile_field(avro_field, rules))
        self._checks = tuple(checks)
        self.field_names = frozenset(avro_fields)
        self._known = self.field_names | SYSTEM_FIELDS
        self.null_rate_limits = {
            name: rules.max_null_rate
            for name, rules in spec.fields.items()
            if rules.max_null_rate is not None
        }

    @property
    def dataset(self) -> str:
        """Name of the dataset this contract governs."""
        return self.spec.dataset

    @property
    def version(self) -> int:
        """Version of the contract, recorded on every record it accepts."""
        return self.spec.version

    @property
    def schema_name(self) -> str:
        """Full name of the validated topic's Avro schema."""
        return self.spec.schema_name

    @property
    def key_field(self) -> str:
        """Field whose value keys the validated record."""
        return self.spec.key

    def check(self, document: Mapping[str, Any]) -> tuple[dict[str, Any], list[Violation]]:
        """Type and check one JSON object.

        Returns the typed record (Avro-ready, without system fields) and the
        violations; the record is only meaningful when there are none.
        """
        record: dict[str, Any] = {}
        violations: list[Violation] = []
        for check in self._checks:
            check(document, record, violations)
        if self.spec.unknown_fields == "reject":
            extra = sorted(k for k in document if k not in self._known)
            if extra:
                violations.append(
                    Violation(unknown_names(extra), "unknown_fields", "fields not in the contract")
                )
        return record, violations


# A field name a contract could declare; anything else is the producer's free text.
_NAME_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def unknown_names(names: list[str]) -> str:
    """Unknown field names for a violation: those shaped like field names, and a count.

    A producer's keys are free text (a map keyed by e-mail address sent where a
    record was expected): only names a contract could declare are quoted.
    """
    shown = [n for n in names if _NAME_SHAPE.fullmatch(n)]
    hidden = len(names) - len(shown)
    if hidden:
        shown.append(f"<{hidden} other name{'s' if hidden > 1 else ''}>")
    return ",".join(shown)


class NullRateMonitor:
    """Tracks the null rate of fields over the last ``window`` records.

    A null rate is a property of many records, so it cannot send one record to
    the DLQ; the validate processor exports it as a metric and logs a warning
    when a field crosses its ``max_null_rate``.
    """

    def __init__(self, limits: Mapping[str, float], window: int = 1000) -> None:
        self.limits = dict(limits)
        self._window = {name: deque[bool](maxlen=window) for name in self.limits}
        self._nulls = dict.fromkeys(self.limits, 0)

    def observe(self, record: Mapping[str, Any]) -> None:
        """Count one accepted record."""
        for name, seen in self._window.items():
            is_null = record.get(name) is None
            if len(seen) == seen.maxlen and seen[0]:
                self._nulls[name] -= 1
            seen.append(is_null)
            self._nulls[name] += is_null

    def rates(self) -> dict[str, float]:
        """Current null rate per monitored field."""
        return {n: (self._nulls[n] / len(s) if s else 0.0) for n, s in self._window.items()}

    def breaches(self, min_records: int = 100) -> dict[str, float]:
        """Fields whose null rate is above their limit, once enough records were seen."""
        return {
            name: rate
            for name, rate in self.rates().items()
            if len(self._window[name]) >= min_records and rate > self.limits[name]
        }


def load_contract(path: Path, schemas: Mapping[str, AvroSchema]) -> Contract:
    """Read, validate and compile a contract file against the Avro schemas."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = ContractFile.model_validate(raw)
    except OSError as exc:
        raise ContractError(f"cannot read contract {path}: {exc}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ContractError(f"{path} is not a valid data contract:\n{exc}") from exc
    schema = schemas.get(spec.schema_name)
    if schema is None:
        raise ContractError(
            f"{path}: schema {spec.schema_name!r} is not in schemas/avro; add it there "
            "or fix `schema`"
        )
    try:
        return Contract(spec, schema)
    except ContractError as exc:
        raise ContractError(f"{path}: {exc}") from exc


def _payload_fields(schema: AvroSchema) -> list[AvroField]:
    result = []
    for f in schema.json["fields"]:
        if f["name"] in SYSTEM_FIELDS:
            continue
        branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
        non_null = [b for b in branches if b != "null"]
        if len(non_null) != 1:
            raise ContractError(
                f"{schema.fullname}.{f['name']}: unions other than [null, T] are not "
                "supported; give the field one type, nullable or not"
            )
        base = _base_type(non_null[0], f"{schema.fullname}.{f['name']}")
        result.append(
            AvroField(f["name"], base, "null" in branches, "default" in f, f.get("default"))
        )
    return result


def _base_type(avro_type: Any, where: str) -> str:
    if isinstance(avro_type, str) and avro_type in {
        "string",
        "int",
        "long",
        "float",
        "double",
        "boolean",
    }:
        return avro_type
    if isinstance(avro_type, dict) and avro_type.get("logicalType") == "timestamp-millis":
        return "timestamp-millis"
    raise ContractError(f"{where}: contract fields must be primitive or timestamp-millis")
