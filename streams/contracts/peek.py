"""A leading string field of an Avro record, read from its bytes without decoding it.

Some decisions must be made on every record before it is decoded, and cheaply: which
infer lane owns a request (its ``model``), whose turn a record waits for in a fair
runner (its ``tenant_id``). The field is read straight from the Confluent-framed Avro
body by skipping the primitive fields the writer schema puts before it. Whatever that
cannot read (a writer schema with something harder to skip before the field, bytes
that do not parse) gives None, and the caller falls back to a full decode or a default.
The rule depends only on the bytes and the writer schema, so every reader agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.contracts.serde import AvroSerde
from streams.errors import RecordError, TransientError

#: The field that names a record's tenant in Sluice's contracts.
TENANT_FIELD = "tenant_id"
_HEADER = 5  # Confluent framing: magic byte and a 4-byte schema id
_FIXED = {"boolean": 1, "float": 4, "double": 8}
_VARINT = frozenset({"int", "long"})
_LENGTH_PREFIXED = frozenset({"string", "bytes"})
#: A value longer than this is not read (None): names and ids are short.
_MAX_VALUE_BYTES = 1024
#: Schema ids remembered (writer schemas are few; the bound keeps hostile ids harmless).
_MAX_PLANS = 256


class _UnreadableError(Exception):
    """The bytes before the field are not what the writer schema says."""


@dataclass
class FieldPeek:
    """Reads one string field from records' bytes; keep one per process (it caches plans)."""

    name: str
    # Per writer schema id: the primitive types to skip before the field, or None when
    # the writer schema has no such plan.
    _plans: dict[int, tuple[str, ...] | None] = field(default_factory=dict)

    def read(self, serde: AvroSerde, raw: bytes | None, topic: str) -> str | None:
        """The field's value in a consumed record of ``topic``; None when unreadable.

        None too when the registry cannot be reached for its writer schema: a reader that
        only peeks carries on, and whoever decodes the record retries that later.
        """
        try:
            schema_id, writer = serde.check_writer(raw, topic=topic)
        except (RecordError, TransientError):
            return None
        return self.value_of(raw or b"", schema_id, writer)

    def value_of(self, raw: bytes, schema_id: int, writer: Any) -> str | None:
        """The field's value in ``raw``, or None when it cannot be read without a decode."""
        plan = self._plans.get(schema_id, ...)
        if plan is ...:
            plan = _plan(writer, self.name)
            if len(self._plans) < _MAX_PLANS:
                self._plans[schema_id] = plan
        if plan is None:
            return None
        try:
            position = _HEADER
            for kind in plan:
                position = _skip(raw, position, kind)
            length, position = _varint(raw, position)
            if not 0 <= length <= _MAX_VALUE_BYTES or position + length > len(raw):
                return None
            return raw[position : position + length].decode("utf-8")
        except (_UnreadableError, UnicodeDecodeError):
            return None


def _primitive(schema: Any) -> str | None:
    """The primitive type of a field's schema (a logical type keeps its base), else None."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict) and isinstance(schema.get("type"), str):
        kind: str = schema["type"]
        return kind if kind in _FIXED or kind in _VARINT or kind in _LENGTH_PREFIXED else None
    return None


def _plan(writer: Any, name: str) -> tuple[str, ...] | None:
    fields: Sequence[Any] = writer.get("fields", []) if isinstance(writer, dict) else []
    before: list[str] = []
    for spec in fields:
        kind = _primitive(spec.get("type")) if isinstance(spec, dict) else None
        if isinstance(spec, dict) and spec.get("name") == name:
            return tuple(before) if kind == "string" else None
        if kind is None or not (kind in _FIXED or kind in _VARINT or kind in _LENGTH_PREFIXED):
            return None
        before.append(kind)
    return None


def _varint(raw: bytes, position: int) -> tuple[int, int]:
    """A zig-zag encoded Avro long at ``position``, and where the next value starts."""
    result = shift = 0
    for index in range(position, min(position + 10, len(raw))):
        byte = raw[index]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), index + 1
        shift += 7
    raise _UnreadableError("varint runs past the record or past 10 bytes")


def _skip(raw: bytes, position: int, kind: str) -> int:
    if kind in _VARINT:
        return _varint(raw, position)[1]
    if kind in _FIXED:
        end = position + _FIXED[kind]
    else:
        length, position = _varint(raw, position)
        if length < 0:
            raise _UnreadableError("negative length")
        end = position + length
    if end > len(raw):
        raise _UnreadableError("field runs past the record")
    return end
