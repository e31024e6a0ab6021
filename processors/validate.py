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

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter, Gauge
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.catalog import Catalog, Dataset
from streams.contracts import Contract, NullRateMonitor, Violation
from streams.errors import RecordError
from streams.processor import Context, InputRecord, Output, ProcessorSpec, per_record
from streams.serde import MAGIC_BYTE, AvroSerde

RAW_EVENT = "sluice.v1.RawEvent"
#: Fields that Kafka Connect transforms add (Debezium's add.fields and delete rewrite).
CONNECT_FIELD_PREFIX = "__"
#: Header a connector can set (InsertHeader transform) to name itself in ``meta.source``.
SOURCE_HEADER = "sluice.source"
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


class ValidateSettings(BaseSettings):
    """Settings of the validate processor (``SLUICE_VALIDATE__*``)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_VALIDATE__", frozen=True, extra="ignore")
    datasets: list[str] = Field(
        default_factory=list, description="Datasets to validate; empty means all in the catalog."
    )
    null_rate_window: int = Field(1000, ge=10, description="Records per null-rate window.")


# -- pure functions ---------------------------------------------------------------
def parse_raw(
    data: bytes | None, contract: Contract, decode_avro: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn raw bytes into (JSON object, envelope fields) or raise RecordError.

    ``decode_avro(data)`` decodes a Confluent-framed RawEvent (the serde, in
    production; a plain function in unit tests).
    """
    if data is None:
        raise RecordError("parse", "record has no value (tombstone)", error_class="EmptyRecord")
    if len(data) > contract.spec.max_record_bytes:
        raise RecordError(
            "parse",
            f"record is {len(data)} bytes; the {contract.dataset} contract allows "
            f"{contract.spec.max_record_bytes}",
            error_class="RecordTooLarge",
        )
    if not data:
        raise RecordError("parse", "record value is empty", error_class="EmptyRecord")
    if data[0] == MAGIC_BYTE:
        envelope = decode_avro(data)
        if envelope["dataset"] != contract.dataset:
            raise RecordError(
                "parse",
                f"RawEvent is for dataset {envelope['dataset']!r}, "
                f"but this topic carries {contract.dataset!r}",
                error_class="WrongDataset",
            )
        document = _json_object(envelope["payload"].encode("utf-8"), "RawEvent.payload")
        return document, envelope
    if data[0] in _JSON_START:
        return _unwrap_connect(_json_object(data, "value")), {}
    raise RecordError(
        "parse",
        f"neither Confluent Avro (magic byte 0x00) nor a JSON object: first byte 0x{data[0]:02x}",
        error_class="UnknownMagicByte",
    )


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = orjson.loads(data)  # validates UTF-8 too; about 5x faster than json
    except orjson.JSONDecodeError:
        raise _json_error(data, what) from None
    if not isinstance(document, dict):
        raise RecordError(
            "parse",
            f"{what} is a JSON {type(document).__name__}, expected an object",
            error_class="InvalidJson",
        )
    return document


def _json_error(data: bytes, what: str) -> RecordError:
    """Why ``data`` is not JSON, in the words of the standard library (failure path only)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RecordError(
            "parse",
            f"{what} is not valid UTF-8 (byte {exc.start}: {exc.reason})",
            error_class="InvalidUtf8",
        )
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return RecordError(
            "parse",
            f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            error_class="InvalidJson",
        )
    return RecordError("parse", f"{what} is not valid JSON", error_class="InvalidJson")


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
    """The typed record, or RecordError naming every broken rule by field."""
    record, violations = contract.check(document)
    if violations:
        raise contract_error(contract, violations)
    return record


def contract_error(contract: Contract, violations: Sequence[Violation]) -> RecordError:
    """A RecordError that tells a person exactly which rules failed on which fields."""
    listing = "; ".join(str(v) for v in violations)
    first = violations[0]
    return RecordError(
        "contract",
        f"{contract.dataset} v{contract.version}: {len(violations)} rule(s) failed: {listing}",
        error_class="ContractViolation",
        details={
            "field": first.field,
            "rule": first.rule,
            "violations": json.dumps(
                [{"field": v.field, "rule": v.rule, "message": v.message} for v in violations]
            ),
        },
    )


def incomplete_delete(
    contract: Contract, document: Mapping[str, Any], error: RecordError
) -> RecordError:
    """A delete whose old row is missing fields: the source table must log whole rows.

    PostgreSQL logs only the key of a deleted row unless the table has
    ``REPLICA IDENTITY FULL``; such a delete cannot become a typed record, and it
    must not vanish either, so it goes to the DLQ saying what to change.
    """
    key = document.get(contract.key_field)
    return RecordError(
        "contract",
        f"delete of {contract.key_field}={key!r} does not carry the deleted row "
        f"({error.message}); set REPLICA IDENTITY FULL on the source table so that "
        "deletes carry the whole row, then replay this record",
        error_class="IncompleteDelete",
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
    record: InputRecord, dataset: Dataset, decode_avro: Any, raw_topic: str | None = None
) -> Output:
    """Validate one raw record of ``dataset`` into its validated output."""
    contract = dataset.contract
    document, envelope = parse_raw(record.raw, contract, decode_avro)
    change = pop_change(document)
    try:
        typed = check_contract(document, contract)
    except RecordError as error:
        for violation in json.loads(error.details["violations"]):
            VIOLATIONS.labels(contract.dataset, violation["field"], violation["rule"]).inc()
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
def _datasets(catalog: Catalog) -> list[Dataset]:
    wanted = ValidateSettings().datasets or sorted(catalog.datasets)
    return [catalog.dataset(name) for name in wanted]


def _setup(ctx: Context) -> None:
    serde: AvroSerde = ctx.services["serde"]
    raw_schema = ctx.catalog.schemas[RAW_EVENT]
    settings = ValidateSettings()
    ctx.resources["by_topic"] = {d.raw_topic: d for d in _datasets(ctx.catalog)}
    ctx.resources["decode_avro"] = lambda data: serde.decode(data, raw_schema)
    ctx.resources["null_rates"] = {
        d.raw_topic: NullRateMonitor(d.contract.null_rate_limits, settings.null_rate_window)
        for d in _datasets(ctx.catalog)
        if d.contract.null_rate_limits
    }
    ctx.resources["breached"] = set()


def _process(record: InputRecord, ctx: Context) -> list[Output]:
    dataset: Dataset = ctx.resources["by_topic"][record.topic]
    raw_topic = ctx.catalog.physical(record.topic)
    output = validate_record(record, dataset, ctx.resources["decode_avro"], raw_topic)
    monitor = ctx.resources["null_rates"].get(record.topic)
    if monitor is not None:
        monitor.observe(output.value)
    return [output]


def _after_commit(ctx: Context) -> None:
    breached: set[tuple[str, str]] = ctx.resources["breached"]
    for topic, monitor in ctx.resources["null_rates"].items():
        dataset = ctx.resources["by_topic"][topic].name
        for field, rate in monitor.rates().items():
            NULL_RATE.labels(dataset, field).set(rate)
        now = set(monitor.breaches())
        for field in now:
            if (dataset, field) not in breached:
                ctx.logger.warning(
                    "%s.%s null rate %.2f is above its contract limit %.2f",
                    dataset,
                    field,
                    monitor.rates()[field],
                    monitor.limits[field],
                )
                breached.add((dataset, field))
        breached -= {(dataset, f) for f in monitor.limits if f not in now}


PROCESSOR = ProcessorSpec(
    name="validate",
    description="Apply each dataset's data contract: typed records out, broken ones to the DLQ.",
    inputs=lambda catalog: [d.raw_topic for d in _datasets(catalog)],
    outputs=lambda catalog: [d.validated_topic for d in _datasets(catalog)],
    process_batch=per_record(_process),
    decode_inputs=False,
    setup=_setup,
    after_commit=_after_commit,
)
