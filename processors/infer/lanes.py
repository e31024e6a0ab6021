"""Which lane owns a record of ``inference.requests.safe``, read from its bytes cheaply.

Every lane reads every record, so telling another lane's record apart must cost
little: the model name is read straight from the Avro body (the writer schema puts
it third, after two strings) by skipping the fields before it, without decoding the
prompt. Whatever that cannot read (a writer schema with something harder to skip
before ``model``, bytes that do not parse) makes the record the default lane's, which
decodes it fully and serves or dead-letters it. The rule depends only on the bytes
and the writer schema, so every lane comes to the same owner: a request is served,
refused or dead-lettered by exactly one lane.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.contracts.catalog import Catalog
from streams.contracts.serde import AvroSerde
from streams.errors import RecordError
from streams.llm.model_catalog import DEFAULT_LANE, ModelCatalog
from streams.runtime.spec import InputRecord, Outcome

#: The field that names a request's model.
MODEL_FIELD = "model"
_HEADER = 5  # Confluent framing: magic byte and a 4-byte schema id
_FIXED = {"boolean": 1, "float": 4, "double": 8}
_VARINT = frozenset({"int", "long"})
_LENGTH_PREFIXED = frozenset({"string", "bytes"})
#: A model name longer than this is nobody's lane's: the default lane refuses it.
_MAX_MODEL_BYTES = 1024
#: Schema ids remembered (writer schemas are few; the bound keeps hostile ids harmless).
_MAX_PLANS = 256


class _UnreadableError(Exception):
    """The bytes before the model name are not what the writer schema says."""


@dataclass
class ModelPeek:
    """Reads a request's model name from its bytes; one per process (it caches plans)."""

    # Per writer schema id: the primitive types to skip before the model string, or None
    # when the writer schema has no such plan (the record then goes to the default lane).
    _plans: dict[int, tuple[str, ...] | None] = field(default_factory=dict)

    def model_of(self, raw: bytes, schema_id: int, writer: Any) -> str | None:
        """The model name in ``raw``, or None when it cannot be read without a full decode."""
        plan = self._plans.get(schema_id, ...)
        if plan is ...:
            plan = _plan(writer)
            if len(self._plans) < _MAX_PLANS:
                self._plans[schema_id] = plan
        if plan is None:
            return None
        try:
            position = _HEADER
            for kind in plan:
                position = _skip(raw, position, kind)
            length, position = _varint(raw, position)
            if not 0 <= length <= _MAX_MODEL_BYTES or position + length > len(raw):
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


def _plan(writer: Any) -> tuple[str, ...] | None:
    fields: Sequence[Any] = writer.get("fields", []) if isinstance(writer, dict) else []
    before: list[str] = []
    for spec in fields:
        kind = _primitive(spec.get("type")) if isinstance(spec, dict) else None
        if isinstance(spec, dict) and spec.get("name") == MODEL_FIELD:
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


def in_lane(
    record: InputRecord,
    *,
    lane: str,
    models: ModelCatalog,
    topics: Catalog,
    serde: AvroSerde,
    peek: ModelPeek,
) -> InputRecord | Outcome:
    """``record`` decoded when ``lane`` owns it; otherwise what this lane owes it.

    Another lane's record is owed nothing here: an empty outcome (committed, nothing
    written). The owner is the lane of the model read from the bytes, or the default
    lane when it cannot be read; only the owner decodes the record fully, and only the
    owner dead-letters a record that then does not decode.
    """
    try:
        schema_id, writer = serde.check_writer(record.raw, topic=record.topic)
    except RecordError as error:
        return error if lane == DEFAULT_LANE else []
    raw = record.raw or b""
    named = peek.model_of(raw, schema_id, writer)
    owner = DEFAULT_LANE if named is None else models.lane_of(named)
    if owner != lane:
        return []
    try:
        value = serde.decode(raw, topics.value_schema(record.topic), topic=record.topic)
    except RecordError as error:
        return error
    return dataclasses.replace(record, value=value)
