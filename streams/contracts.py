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

import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.avro_schemas import AvroSchema

#: Fields of a validated schema that validate fills in itself (lineage).
SYSTEM_FIELDS = frozenset({"meta"})

_INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class ContractError(ValueError):
    """A contract file is malformed or disagrees with its Avro schema."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: which field, which rule, and a message for a person."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} [{self.rule}]"


class FieldRules(BaseModel):
    """The rules of one field, as written in the contract file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    required: bool = False
    min: int | float | str | None = None
    max: int | float | str | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    regex: str | None = None
    enum: list[str | int | float] | None = None
    max_null_rate: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _regex_compiles(self) -> FieldRules:
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from exc
        return self


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


@dataclass(frozen=True)
class _AvroField:
    name: str
    base: str  # string, int, long, float, double, boolean, timestamp-millis
    nullable: bool
    has_default: bool
    default: Any


Check = Callable[[Any], "Violation | None"]


@dataclass(frozen=True)
class _CompiledField:
    avro: _AvroField
    rules: FieldRules
    checks: tuple[Check, ...]


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
                f"does not have: {', '.join(sorted(unknown))}"
            )
        if spec.key not in avro_fields:
            raise ContractError(f"contract {spec.dataset!r}: key field {spec.key!r} not in schema")
        compiled = []
        for name, avro_field in avro_fields.items():
            rules = spec.fields.get(name, FieldRules())
            if not rules.required and not avro_field.nullable and not avro_field.has_default:
                raise ContractError(
                    f"contract {spec.dataset!r}: field {name!r} is optional in the contract "
                    f"but neither nullable nor defaulted in {schema.fullname}"
                )
            compiled.append(_CompiledField(avro_field, rules, _compile_rules(avro_field, rules)))
        self._fields = tuple(compiled)
        self._known = frozenset(avro_fields) | SYSTEM_FIELDS
        self.null_rate_limits = {
            f.avro.name: f.rules.max_null_rate
            for f in compiled
            if f.rules.max_null_rate is not None
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
        for compiled in self._fields:
            avro = compiled.avro
            present = avro.name in document
            value = document.get(avro.name)
            if value is None:
                if compiled.rules.required:
                    reason = "is required but null" if present else "is required but missing"
                    violations.append(Violation(avro.name, "required", reason))
                elif not present and avro.has_default:
                    record[avro.name] = avro.default
                elif avro.nullable:
                    record[avro.name] = None
                else:
                    violations.append(Violation(avro.name, "type", "must not be null"))
                continue
            typed, type_problem = _coerce(avro, value)
            if type_problem is not None:
                violations.append(Violation(avro.name, "type", type_problem))
                continue
            for check in compiled.checks:
                problem = check(typed)
                if problem is not None:
                    violations.append(problem)
            record[avro.name] = typed
        if self.spec.unknown_fields == "reject":
            extra = sorted(k for k in document if k not in self._known)
            if extra:
                violations.append(
                    Violation(",".join(extra), "unknown_fields", "fields not in the contract")
                )
        return record, violations


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
        raise ContractError(f"{path}: schema {spec.schema_name!r} is not in schemas/avro")
    try:
        return Contract(spec, schema)
    except ContractError as exc:
        raise ContractError(f"{path}: {exc}") from exc


def parse_timestamp_millis(value: Any) -> int:
    """Epoch milliseconds from an int (already millis) or an ISO-8601 string with a zone."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("timestamp has no time zone (add Z or +00:00)")
        return int(parsed.astimezone(UTC).timestamp() * 1000)
    raise ValueError(f"expected an ISO-8601 string or epoch milliseconds, got {_kind(value)}")


def _payload_fields(schema: AvroSchema) -> list[_AvroField]:
    result = []
    for f in schema.json["fields"]:
        if f["name"] in SYSTEM_FIELDS:
            continue
        branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
        non_null = [b for b in branches if b != "null"]
        if len(non_null) != 1:
            raise ContractError(f"{schema.fullname}.{f['name']}: unions other than [null, T]")
        base = _base_type(non_null[0], f"{schema.fullname}.{f['name']}")
        result.append(
            _AvroField(f["name"], base, "null" in branches, "default" in f, f.get("default"))
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


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _coerce(avro: _AvroField, value: Any) -> tuple[Any, str | None]:
    """Turn a JSON value into the Python value Avro expects, or say why it cannot."""
    base = avro.base
    if base == "string":
        if isinstance(value, str):
            return value, None
        return None, f"expected a string, got {_kind(value)}"
    if base == "boolean":
        if isinstance(value, bool):
            return value, None
        return None, f"expected a boolean, got {_kind(value)}"
    if base == "timestamp-millis":
        try:
            return parse_timestamp_millis(value), None
        except ValueError as exc:
            return None, f"invalid timestamp: {exc}"
    # JSON booleans are ints in Python; a contract never means them as numbers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"expected {_article(base)}, got {_kind(value)}"
    if base in _INT_BOUNDS:
        if isinstance(value, float):
            if not value.is_integer():
                return None, f"expected {_article(base)}, got a fraction"
            value = int(value)
        low, high = _INT_BOUNDS[base]
        if not low <= value <= high:
            return None, f"does not fit in an Avro {base}"
        return value, None
    if not math.isfinite(value):
        return None, "expected a finite number"
    return float(value), None


def _article(base: str) -> str:
    return {"int": "an integer", "long": "an integer"}.get(base, f"a {base}")


def _compile_rules(avro: _AvroField, rules: FieldRules) -> tuple[Check, ...]:
    name = avro.name
    checks: list[Check] = []
    numeric = avro.base in {"int", "long", "float", "double", "timestamp-millis"}
    for rule, bound in (("min", rules.min), ("max", rules.max)):
        if bound is None:
            continue
        if not numeric:
            raise ContractError(f"field {name!r}: {rule} applies to numbers and timestamps only")
        limit = parse_timestamp_millis(bound) if avro.base == "timestamp-millis" else bound
        if not isinstance(limit, int | float):
            raise ContractError(f"field {name!r}: {rule} must be a number")
        shown = bound
        if rule == "min":
            checks.append(_bound_check(name, "min", limit, shown, lambda v, lim: v < lim, "below"))
        else:
            checks.append(_bound_check(name, "max", limit, shown, lambda v, lim: v > lim, "above"))
    if rules.min_length is not None or rules.max_length is not None:
        if avro.base != "string":
            raise ContractError(f"field {name!r}: min_length/max_length apply to strings only")
        if rules.min_length is not None:
            checks.append(_length_check(name, "min_length", rules.min_length))
        if rules.max_length is not None:
            checks.append(_length_check(name, "max_length", rules.max_length))
    if rules.regex is not None:
        if avro.base != "string":
            raise ContractError(f"field {name!r}: regex applies to strings only")
        pattern = re.compile(rules.regex)
        message = f"does not match {rules.regex}"
        checks.append(lambda v: None if pattern.search(v) else Violation(name, "regex", message))
    if rules.enum is not None:
        allowed = frozenset(rules.enum)
        listing = ", ".join(str(a) for a in rules.enum)
        message = f"is not one of [{listing}]"
        checks.append(lambda v: None if v in allowed else Violation(name, "enum", message))
    return tuple(checks)


def _bound_check(  # noqa: PLR0917 (a private factory; keywords would only add noise)
    name: str,
    rule: str,
    limit: float,
    shown: float | str,
    broken: Callable[[float, float], bool],
    word: str,
) -> Check:
    message = f"is {word} {rule} {shown}"
    return lambda v: Violation(name, rule, message) if broken(v, limit) else None


def _length_check(name: str, rule: str, limit: int) -> Check:
    def check(value: str) -> Violation | None:
        size = len(value)
        if rule == "min_length" and size < limit:
            return Violation(name, rule, f"length {size} < {limit}")
        if rule == "max_length" and size > limit:
            return Violation(name, rule, f"length {size} > {limit}")
        return None

    return check
