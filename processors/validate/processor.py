"""validate: ``raw.<dataset>`` → ``<dataset>.validated`` or ``raw.<dataset>.dlq``.

A raw record arrives in one of two shapes, and both are accepted:

* the ``RawEvent`` Avro envelope in the Confluent wire format (the Sluice SDK
  and ``sluice produce``), whose ``payload`` is the record as a JSON object;
* plain UTF-8 JSON bytes (any Kafka client, Kafka Connect's JsonConverter with
  or without schemas, the FileStream source's lines through the StringConverter).

Rows from Debezium arrive flattened by its ``ExtractNewRecordState`` transform,
with Debezium's metadata in ``__``-prefixed fields (``__op``, ``__deleted``,
``__source_ts_ms``). Those are not data: validate takes them out before the
contract and records the operation in ``meta.op`` and ``meta.deleted``, so a
deleted row is a validated record that says it was deleted (never an unknown
field, never silently an upsert).

The dataset's contract types the record and checks its rules; a record that
passes becomes a typed Avro record keyed by the contract's key field, with its
lineage in ``meta``. Anything else goes to the dead-letter topic with the exact
field and rule that failed.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from processors.validate.settings import ValidateSettings
from streams.contracts.catalog import Catalog, Dataset
from streams.contracts.datasets import Contract, NullRateMonitor, Violation
from streams.contracts.nesting import json_nests_deeper
from streams.contracts.serde import MAGIC_BYTE
from streams.errors import (
    ContractViolation,
    EmptyRecord,
    IncompleteDelete,
    InvalidJson,
    InvalidUtf8,
    RecordError,
    RecordTooLarge,
    UnknownMagicByte,
    WrongDataset,
    value_free,
)
from streams.runtime.metrics import bounded_label
from streams.runtime.spec import Context, InputRecord, Output, ProcessorSpec, per_record

RAW_EVENT = "sluice.v1.RawEvent"
#: Fields that Kafka Connect transforms add (Debezium's add.fields and delete rewrite).
CONNECT_FIELD_PREFIX = "__"
#: Header a connector can set (InsertHeader transform) to name itself in ``meta.source``.
SOURCE_HEADER = "sluice.source"
#: How deeply a producer's JSON may nest, unless SLUICE_VALIDATE__MAX_JSON_DEPTH says otherwise.
DEFAULT_MAX_JSON_DEPTH = 64
# Bytes a JSON text can start with (RFC 8259): whitespace or the first byte of a value.
_JSON_START = frozenset(b' \t\r\n{["-0123456789tfn')

VIOLATIONS = Counter(
    "sluice_contract_violations_total",
    "Broken contract rules, by dataset, field and rule.",
    ["dataset", "field", "rule"],
)
NULL_RATE = Gauge(
    "sluice_contract_null_rate",
    "Null rate of a field over the last records, for fields with max_null_rate.",
    ["dataset", "field"],
)


# -- pure functions ---------------------------------------------------------------
def parse_raw(
    data: bytes | None,
    contract: Contract,
    decode_avro: Any,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn raw bytes into (JSON object, envelope fields) or raise RecordError.

    ``decode_avro(data)`` decodes a Confluent-framed RawEvent (the serde, in
    production; a plain function in unit tests). JSON nested deeper than
    ``max_depth`` is refused before it is parsed; no RecursionError escapes.
    """
    try:
        return _parse_raw(data, contract, decode_avro, max_depth)
    except RecursionError:
        # Last resort: the depth check makes this unreachable for JSON and Avro alike.
        raise InvalidJson(
            f"record nests too deeply to parse (the limit is {max_depth} levels)"
        ) from None


def _parse_raw(
    data: bytes | None, contract: Contract, decode_avro: Any, max_depth: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    if data is None:
        raise EmptyRecord("record has no value (tombstone)")
    if len(data) > contract.spec.max_record_bytes:
        raise RecordTooLarge(
            f"record is {len(data)} bytes; the {contract.dataset} contract allows "
            f"{contract.spec.max_record_bytes}"
        )
    if not data:
        raise EmptyRecord("record value is empty")
    if data[0] == MAGIC_BYTE:
        envelope = decode_avro(data)
        if envelope["dataset"] != contract.dataset:
            # Its length, not its text: the envelope is the producer's, like the payload.
            raise WrongDataset(
                f"RawEvent names another dataset ({len(str(envelope['dataset']))} characters), "
                f"but this topic carries {contract.dataset!r}"
            )
        document = _json_object(envelope["payload"].encode("utf-8"), "RawEvent.payload", max_depth)
        return document, envelope
    if data[0] in _JSON_START:
        return _unwrap_connect(_json_object(data, "value", max_depth)), {}
    raise UnknownMagicByte(
        f"neither Confluent Avro (magic byte 0x00) nor a JSON object: first byte 0x{data[0]:02x}",
        stage="parse",
    )


def _json_object(data: bytes, what: str, max_depth: int) -> dict[str, Any]:
    if json_nests_deeper(data, max_depth):
        # Parsers recurse per level: measured first, with a flat scan, and never quoted.
        raise InvalidJson(
            f"{what} nests arrays and objects deeper than {max_depth} levels, "
            "the limit (SLUICE_VALIDATE__MAX_JSON_DEPTH)",
            details={"max_depth": str(max_depth)},
        )
    try:
        document = orjson.loads(data)  # validates UTF-8 too; about 5x faster than json
    except orjson.JSONDecodeError:
        raise _json_error(data, what) from None
    if not isinstance(document, dict):
        raise InvalidJson(f"{what} is a JSON {type(document).__name__}, expected an object")
    return document


def _json_error(data: bytes, what: str) -> RecordError:
    """Why ``data`` is not JSON, in the words of the standard library (failure path only)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidUtf8(f"{what} is not valid UTF-8 ({value_free(exc)})")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return InvalidJson(f"{what} is not valid JSON: {value_free(exc)}")
    except RecursionError:
        return InvalidJson(f"{what} is not valid JSON (nested too deeply to say where)")
    return InvalidJson(f"{what} is not valid JSON")


def _unwrap_connect(document: dict[str, Any]) -> dict[str, Any]:
    """Kafka Connect's JsonConverter with schemas.enable=true wraps the record."""
    if set(document) == {"schema", "payload"} and isinstance(document["payload"], dict):
        payload: dict[str, Any] = document["payload"]
        return payload
    return document


@dataclass(frozen=True, slots=True)
class Change:
    """What a CDC source said about a row besides its values."""

    op: str | None = None
    deleted: bool = False


def pop_change(document: dict[str, Any]) -> Change:
    """Remove Connect's ``__`` metadata fields from ``document`` and say what they meant.

    ``__deleted`` is ``"true"``/``"false"`` (a string) from Debezium's delete rewrite;
    ``__op`` is ``c``, ``u``, ``d`` or ``r``. A record without them is no change event.
    """
    if not any(name.startswith(CONNECT_FIELD_PREFIX) for name in document):
        return Change()
    extra = {
        name: document.pop(name)
        for name in [n for n in document if n.startswith(CONNECT_FIELD_PREFIX)]
    }
    op = extra.get("__op")
    deleted = str(extra.get("__deleted", "")).lower() == "true" or op == "d"
    return Change(op=None if op is None else str(op), deleted=deleted)


def check_contract(document: Mapping[str, Any], contract: Contract) -> dict[str, Any]:
    """The typed record, or ContractViolation naming every broken rule by field."""
    record, violations = contract.check(document)
    if violations:
        raise contract_error(contract, violations)
    return record


def contract_error(contract: Contract, violations: Sequence[Violation]) -> ContractViolation:
    """A ContractViolation that tells a person exactly which rules failed on which fields."""
    listing = "; ".join(str(v) for v in violations)
    first = violations[0]
    return ContractViolation(
        f"{contract.dataset} v{contract.version}: {len(violations)} rule(s) failed: {listing}",
        details={
            "field": first.field,
            "rule": first.rule,
            "violations": json.dumps(
                [{"field": v.field, "rule": v.rule, "message": v.message} for v in violations]
            ),
        },
    )


def incomplete_delete(
    contract: Contract, document: Mapping[str, Any], error: ContractViolation
) -> IncompleteDelete:
    """A delete whose old row is missing fields: the source table must log whole rows.

    PostgreSQL logs only the key of a deleted row unless the table has
    ``REPLICA IDENTITY FULL``; such a delete cannot become a typed record, and it
    must not vanish either, so it goes to the DLQ saying what to change.
    """
    # The key is named, not quoted: it is the row's value (an e-mail address, say).
    return IncompleteDelete(
        f"delete by {contract.key_field} does not carry the deleted row "
        f"({error.message}); set REPLICA IDENTITY FULL on the source table so that "
        "deletes carry the whole row, then replay this record",
        details=error.details,
    )


def lineage(
    record: InputRecord,
    envelope: Mapping[str, Any],
    contract: Contract,
    raw_topic: str,
    change: Change | None = None,
) -> dict[str, Any]:
    """The ``meta`` field of a validated record."""
    change = change or Change()
    header = record.header(SOURCE_HEADER)
    return {
        # Plain JSON has no event id: topic, partition and offset identify it for good.
        "event_id": envelope.get("event_id") or f"{raw_topic}:{record.partition}:{record.offset}",
        "source": envelope.get("source")
        or (header.decode("utf-8", "replace") if header else "kafka"),
        "raw_topic": raw_topic,
        "raw_partition": record.partition,
        "raw_offset": record.offset,
        "contract_version": contract.version,
        "validated_at": int(time.time() * 1000),
        "op": change.op,
        "deleted": change.deleted,
    }


def validate_record(
    record: InputRecord,
    dataset: Dataset,
    decode_avro: Any,
    raw_topic: str | None = None,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> Output:
    """Validate one raw record of ``dataset`` into its validated output."""
    contract = dataset.contract
    document, envelope = parse_raw(record.raw, contract, decode_avro, max_json_depth)
    change = pop_change(document)
    try:
        typed = check_contract(document, contract)
    except ContractViolation as error:
        for violation in json.loads(error.details["violations"]):
            # Unknown field names come from the producer: they are counted as "other".
            field_label = bounded_label(violation["field"], contract.field_names)
            VIOLATIONS.labels(contract.dataset, field_label, violation["rule"]).inc()
        if change.deleted:
            raise incomplete_delete(contract, document, error) from None
        raise
    # Lineage names the topic as the cluster does, so the raw event can be found again.
    typed["meta"] = lineage(record, envelope, contract, raw_topic or record.topic, change)
    return Output(
        topic=dataset.validated_topic,
        value=typed,
        key=str(typed[contract.key_field]),
    )


# -- the processor declaration ------------------------------------------------------
@dataclass
class ValidateResources:
    """What one validate replica keeps: datasets and RawEvent decoders by raw topic, null rates."""

    by_topic: dict[str, Dataset]
    # One per raw topic: a RawEvent's schema id must be one of that topic's subject.
    decoders: dict[str, Callable[[bytes | None], dict[str, Any]]]
    null_rates: dict[str, NullRateMonitor]
    # (dataset, field) pairs whose null rate is above the contract's limit, to warn once.
    breached: set[tuple[str, str]] = field(default_factory=set)


ValidateContext = Context[ValidateSettings, ValidateResources]


def _datasets(catalog: Catalog, settings: ValidateSettings) -> list[Dataset]:
    wanted = settings.datasets or sorted(catalog.datasets)
    return [catalog.dataset(name) for name in wanted]


def _setup(ctx: Context[ValidateSettings, None]) -> ValidateResources:
    serde = ctx.serde
    raw_schema = ctx.catalog.schemas[RAW_EVENT]
    datasets = _datasets(ctx.catalog, ctx.config)
    return ValidateResources(
        by_topic={d.raw_topic: d for d in datasets},
        decoders={
            d.raw_topic: functools.partial(serde.decode, reader=raw_schema, topic=d.raw_topic)
            for d in datasets
        },
        null_rates={
            d.raw_topic: NullRateMonitor(d.contract.null_rate_limits, ctx.config.null_rate_window)
            for d in datasets
            if d.contract.null_rate_limits
        },
    )


def _process(record: InputRecord, ctx: ValidateContext) -> list[Output]:
    resources = ctx.resources
    dataset = resources.by_topic[record.topic]
    raw_topic = ctx.catalog.physical(record.topic)
    output = validate_record(
        record,
        dataset,
        resources.decoders[record.topic],
        raw_topic,
        ctx.config.max_json_depth,
    )
    monitor = resources.null_rates.get(record.topic)
    if monitor is not None:
        monitor.observe(output.value)
    return [output]


def _after_commit(ctx: ValidateContext) -> None:
    breached = ctx.resources.breached
    for topic, monitor in ctx.resources.null_rates.items():
        dataset = ctx.resources.by_topic[topic].name
        for name, rate in monitor.rates().items():
            NULL_RATE.labels(dataset, name).set(rate)
        now = set(monitor.breaches())
        for name in now:
            if (dataset, name) not in breached:
                ctx.logger.warning(
                    "%s.%s null rate %.2f is above its contract limit %.2f",
                    dataset,
                    name,
                    monitor.rates()[name],
                    monitor.limits[name],
                )
                breached.add((dataset, name))
        breached -= {(dataset, f) for f in monitor.limits if f not in now}


PROCESSOR: ProcessorSpec[ValidateSettings, ValidateResources] = ProcessorSpec(
    name="validate",
    description="Apply each dataset's data contract: typed records out, broken ones to the DLQ.",
    settings=ValidateSettings,
    inputs=lambda catalog, settings: [d.raw_topic for d in _datasets(catalog, settings)],
    outputs=lambda catalog, settings: [d.validated_topic for d in _datasets(catalog, settings)],
    process_batch=per_record(_process),
    decode_inputs=False,
    setup=_setup,
    after_commit=_after_commit,
)
