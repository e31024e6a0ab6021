"""Field rules of a data contract, compiled into one small checker per field.

``validate`` runs every rule of every field on every record, so the rules are
compiled once, when the contract loads: each field gets a closure that reads the
value, types it and runs only the rules that field has. Typing raises on the
rare failure and returns the value otherwise, so the common case allocates
nothing.

Messages name the field, the rule and the limit, never the value: dead-letter
reasons are stored in analytics tables and must not carry personal data that a
producer put in the wrong field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.contracts.linear_regex import LinearRegexError, compile_linear
from streams.errors import ConfigurationError

_INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
NUMERIC = frozenset({"int", "long", "float", "double", "timestamp-millis"})


class ContractError(ConfigurationError, ValueError):
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
                compile_linear(self.regex)
            except LinearRegexError as exc:
                raise ValueError(f"regex does not compile: {exc}") from exc
        return self


@dataclass(frozen=True)
class AvroField:
    """What the Avro schema says about one payload field."""

    name: str
    base: str  # string, int, long, float, double, boolean, timestamp-millis
    nullable: bool
    has_default: bool
    default: Any


#: Types ``document[name]`` into ``record[name]`` or appends to ``violations``.
FieldCheck = Callable[[Mapping[str, Any], dict[str, Any], list[Violation]], None]
_Rule = Callable[[Any], "Violation | None"]


class _WrongTypeError(Exception):
    """A value of the wrong type; raised only on the failure path."""


def compile_field(field: AvroField, rules: FieldRules) -> FieldCheck:
    """The checker of one field: presence, type, then each of its rules."""
    name = field.name
    to_type = _TYPERS[field.base]
    checks = _rules(field, rules)
    missing = _absent(field, rules)

    def check(document: Mapping[str, Any], record: dict[str, Any], out: list[Violation]) -> None:
        value = document.get(name)
        if value is None:
            missing(name in document, record, out)
            return
        try:
            value = to_type(value)
        except _WrongTypeError as problem:
            out.append(Violation(name, "type", str(problem)))
            return
        for rule in checks:
            broken = rule(value)
            if broken is not None:
                out.append(broken)
        record[name] = value

    return check


def _absent(
    field: AvroField, rules: FieldRules
) -> Callable[[bool, dict[str, Any], list[Violation]], None]:
    """What a missing or null value means for this field."""
    name = field.name
    if rules.required:
        null = Violation(name, "required", "is required but null")
        gone = Violation(name, "required", "is required but missing")
        return lambda present, _record, out: out.append(null if present else gone)
    if field.nullable:

        def to_null(present: bool, record: dict[str, Any], _out: list[Violation]) -> None:
            record[name] = None if present or not field.has_default else field.default

        return to_null
    not_null = Violation(name, "type", "must not be null")

    def to_default(present: bool, record: dict[str, Any], out: list[Violation]) -> None:
        if present:
            out.append(not_null)
        else:
            record[name] = field.default

    return to_default


# -- typing ---------------------------------------------------------------------
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


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _string(value: Any) -> str:
    if type(value) is str:
        return value
    raise _WrongTypeError(f"expected a string, got {_kind(value)}")


def _boolean(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise _WrongTypeError(f"expected a boolean, got {_kind(value)}")


def _integer(base: str) -> Callable[[Any], int]:
    low, high = _INT_BOUNDS[base]

    def to_int(value: Any) -> int:
        # JSON booleans are ints in Python; a contract never means them as numbers.
        if type(value) is float and value.is_integer():
            value = int(value)
        elif type(value) is not int:
            what = "a fraction" if type(value) is float else _kind(value)
            raise _WrongTypeError(f"expected an integer, got {what}")
        if not low <= value <= high:
            raise _WrongTypeError(f"does not fit in an Avro {base}")
        return int(value)

    return to_int


def _real(value: Any) -> float:
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise _WrongTypeError("expected a finite number")
    if type(value) is int:
        return float(value)
    raise _WrongTypeError(f"expected a finite number, got {_kind(value)}")


def _timestamp(value: Any) -> int:
    try:
        return parse_timestamp_millis(value)
    except (ValueError, OverflowError) as exc:
        # datetime's own message quotes the string ("Invalid isoformat string: '…'").
        raise _WrongTypeError(_timestamp_problem(value)) from exc


def _timestamp_problem(value: Any) -> str:
    """Why ``value`` is no timestamp, by its type and length, never its text."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"not an ISO-8601 timestamp ({len(value)} characters)"
        if parsed.tzinfo is None:
            return "an ISO-8601 timestamp without a time zone (add Z or +00:00)"
        return "an ISO-8601 timestamp out of range"
    if isinstance(value, bool):
        return "expected an ISO-8601 string or epoch milliseconds, got a boolean"
    return f"expected an ISO-8601 string or epoch milliseconds, got {_kind(value)}"


_TYPERS: dict[str, Callable[[Any], Any]] = {
    "string": _string,
    "boolean": _boolean,
    "int": _integer("int"),
    "long": _integer("long"),
    "float": _real,
    "double": _real,
    "timestamp-millis": _timestamp,
}


# -- rules ----------------------------------------------------------------------
def _rules(field: AvroField, rules: FieldRules) -> tuple[_Rule, ...]:
    """The rule checks of one field, refusing rules that do not fit its type."""
    name, base = field.name, field.base
    checks: list[_Rule] = []
    for rule, bound in (("min", rules.min), ("max", rules.max)):
        if bound is None:
            continue
        if base not in NUMERIC:
            raise ContractError(f"field {name!r}: {rule} applies to numbers and timestamps only")
        limit = parse_timestamp_millis(bound) if base == "timestamp-millis" else bound
        if not isinstance(limit, int | float):
            raise ContractError(f"field {name!r}: {rule} must be a number")
        checks.append(_bound(name, rule, limit, bound))
    for rule, length in (("min_length", rules.min_length), ("max_length", rules.max_length)):
        if length is None:
            continue
        if base != "string":
            raise ContractError(f"field {name!r}: min_length/max_length apply to strings only")
        checks.append(_length(name, rule, length))
    if rules.regex is not None:
        if base != "string":
            raise ContractError(f"field {name!r}: regex applies to strings only")
        search = compile_linear(rules.regex).search
        no_match = Violation(name, "regex", f"does not match {rules.regex}")
        checks.append(lambda v: None if search(v) else no_match)
    if rules.enum is not None:
        allowed = frozenset(rules.enum)
        listing = ", ".join(str(a) for a in rules.enum)
        not_one = Violation(name, "enum", f"is not one of [{listing}]")
        checks.append(lambda v: None if v in allowed else not_one)
    return tuple(checks)


def _bound(name: str, rule: str, limit: float, shown: float | str) -> _Rule:
    if rule == "min":
        below = Violation(name, "min", f"is below min {shown}")
        return lambda v: below if v < limit else None
    above = Violation(name, "max", f"is above max {shown}")
    return lambda v: above if v > limit else None


def _length(name: str, rule: str, limit: int) -> _Rule:
    if rule == "min_length":
        return lambda v: (
            Violation(name, rule, f"length {len(v)} < {limit}") if len(v) < limit else None
        )
    return lambda v: Violation(name, rule, f"length {len(v)} > {limit}") if len(v) > limit else None
