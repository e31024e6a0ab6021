"""Typed, frozen records for the platform's Avro contracts, converted only at the edge.

Field names match ``schemas/avro/*.avsc`` one to one; ``to_avro`` and
``from_avro`` are the only places a record becomes a dict. Timestamps are
timezone-aware ``datetime`` in UTC (fastavro's mapping of timestamp-millis).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self


def utcnow() -> datetime:
    """Now, in UTC, at millisecond precision (what timestamp-millis keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_id() -> str:
    """A fresh unique id for an event or request."""
    return str(uuid.uuid4())


class _AvroRecord:
    """Conversion between a frozen dataclass and the dict fastavro reads and writes."""

    _nested: dict[str, type[_AvroRecord]] = {}  # noqa: RUF012 (overridden per class)

    def to_avro(self) -> dict[str, Any]:
        """The dict to hand to the Avro encoder."""
        result = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _AvroRecord):
                value = value.to_avro()
            elif isinstance(value, dict):
                value = dict(value)
            result[f.name] = value
        return result

    @classmethod
    def from_avro(cls, value: dict[str, Any]) -> Self:
        """Build the record from a decoded Avro dict (extra fields are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: v for k, v in value.items() if k in names}
        for name, nested in cls._nested.items():
            if kwargs.get(name) is not None:
                kwargs[name] = nested.from_avro(kwargs[name])
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class RawEvent(_AvroRecord):
    """sluice.v1.RawEvent: one raw record of a dataset in its envelope."""

    event_id: str
    dataset: str
    source: str
    produced_at: datetime
    payload: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GuardVerdict(_AvroRecord):
    """sluice.v1.GuardVerdict: what guard decided about a text."""

    policy_version: str
    action: str
    redacted: bool
    checked_at: datetime
    entity_counts: dict[str, int] = field(default_factory=dict)
    injection_score: float = 0.0
    injection_rule: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PiiFinding(_AvroRecord):
    """sluice.v1.PiiFinding: where guard found personal data in a text; never the value."""

    request_id: str
    tenant_id: str
    field: str
    entity_type: str
    start: int
    end: int
    score: float
    recognizer: str
    action: str
    policy_version: str
    detected_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEvent(_AvroRecord):
    """sluice.v1.AuditEvent: one operator action, who took it, where, and how it ended."""

    event_id: str
    occurred_at: datetime
    actor: str
    host: str
    action: str
    target: str
    outcome: str
    details: dict[str, str]
    sluice_version: str


@dataclass(frozen=True, slots=True)
class InferenceRequest(_AvroRecord):
    """sluice.v1.InferenceRequest: one request for a model."""

    request_id: str
    tenant_id: str
    model: str
    input_text: str
    created_at: datetime
    operation: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    user_id: str | None = None
    source: str = "sdk"
    metadata: dict[str, str] = field(default_factory=dict)
    guard: GuardVerdict | None = None
    # The caller wants the generation's deltas as they come (inference.chunks).
    stream: bool = False

    _nested = {"guard": GuardVerdict}  # noqa: RUF012

    @classmethod
    def new(cls, tenant_id: str, model: str, input_text: str, **kwargs: Any) -> InferenceRequest:
        """A request with a fresh id, created now."""
        return cls(
            request_id=new_id(),
            tenant_id=tenant_id,
            model=model,
            input_text=input_text,
            created_at=utcnow(),
            **kwargs,
        )


@dataclass(frozen=True, slots=True)
class InferenceResult(_AvroRecord):
    """sluice.v1.InferenceResult: the one outcome of a request."""

    request_id: str
    tenant_id: str
    model: str
    status: str
    request_created_at: datetime
    completed_at: datetime
    model_version: str = ""
    operation: str = ""
    error_code: str | None = None
    error_message: str | None = None
    output_text: str | None = None
    embedding: list[float] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    queue_ms: float = 0.0
    inference_ms: float = 0.0
    e2e_ms: float = 0.0
    batch_size: int = 0
    device: str = ""
    input_guard: GuardVerdict | None = None
    output_guard: GuardVerdict | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    cache_hit: bool = False

    _nested = {"input_guard": GuardVerdict, "output_guard": GuardVerdict}  # noqa: RUF012


@dataclass(frozen=True, slots=True)
class InferenceChunk(_AvroRecord):
    """sluice.v1.InferenceChunk: one delta of a streamed generation (at least once)."""

    request_id: str
    tenant_id: str
    model: str
    attempt: str
    seq: int
    text: str
    final: bool
    created_at: datetime
    finish_reason: str | None = None
