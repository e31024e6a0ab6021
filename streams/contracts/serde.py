"""Avro in the Confluent wire format, over a Confluent-compatible Schema Registry.

Wire format: one magic byte ``0x00``, the schema id as a 4-byte big-endian
integer, then the Avro binary body. Any Confluent client (Java, Go, Python)
reads what Sluice writes and the other way round; a test proves it against
confluent-kafka's own ``AvroSerializer``/``AvroDeserializer``.

Serializing never registers a schema (``auto.register.schemas=False`` in
Confluent's terms): the schema must already be registered under the topic's
subject by ``sluice schemas apply``, so a processor cannot silently fork a
topic's contract. Encoding and decoding go straight to fastavro with schemas
cached by id, which keeps the per-record cost to the Avro work itself.

Every producer is a stranger, and the schema id in a record's header is the
producer's word. A decoder therefore checks, in this order, before fastavro
sees anything:

1. **The id is one of the topic's.** When the caller names the topic (every
   processor does), the id must be the id of a version of the topic's subject
   (``<topic>-value``); any other id, known to the registry under another
   subject or not at all, is ``UnknownSchemaId``. The ids of a subject are
   cached; an id that is not among them re-reads the subject's versions at most
   once per ``SLUICE_REGISTRY__SUBJECT_REFRESH_S``, so a version registered
   later is accepted within that time and a flood of unknown ids costs no
   registry call per record. A foreign schema is never fetched nor parsed.
2. **The writer schema is small and shallow.** Its document must be at most
   ``SLUICE_REGISTRY__MAX_SCHEMA_BYTES`` long and its values at most
   ``SLUICE_REGISTRY__MAX_SCHEMA_DEPTH`` record/array/map/union levels deep,
   measured by ``streams.contracts.nesting`` with an explicit stack. Otherwise
   the record is ``SchemaTooComplex`` and the id is refused for good (an id's
   schema never changes), without another registry call.
3. **The writer schema is not recursive.** A named type that contains itself
   (``Node`` with a field ``["null", "Node"]``) is tiny, yet its values nest as
   deep as the producer likes, one byte per level: 100,000 levels in 100 KB make
   fastavro's compiled reader overflow the C stack, which kills the process (a
   segmentation fault, not an exception) and kills it again after every restart,
   since the offset was never committed. Decoding with a reader schema does not
   help: the writer schema drives the reading. No Sluice schema is recursive, and
   step 1 already keeps other subjects' schemas out, but a recursive version
   could still be registered under a topic's own subject (a compatible one, with
   an optional field), so recursive writer schemas are refused outright as
   ``SchemaTooComplex``. With recursion ruled out, a value nests no deeper than
   its schema, which step 2 bounds: the decoder's recursion is bounded too.
"""

from __future__ import annotations

import io
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.contracts.avro_schemas import AvroSchema, parse_document
from streams.contracts.catalog import Catalog, TopicSpec
from streams.contracts.nesting import (
    avro_schema_depth,
    json_nests_deeper,
)
from streams.errors import (
    ConfigurationError,
    CorruptAvro,
    EmptyRecord,
    RecordError,
    SchemaMismatch,
    SchemaTooComplex,
    TransientError,
    TruncatedRecord,
    UnknownMagicByte,
    UnknownSchemaId,
    value_free,
)
from streams.settings import RegistrySettings

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
# A garbage record with a random schema id must not cost a registry call each time.
_UNKNOWN_ID_TTL_S = 30.0
# orjson refuses JSON nested deeper than this rather than recurse further.
_PARSER_DEPTH = 1024


class SchemaNotRegisteredError(ConfigurationError):
    """The topic's schema is not registered: the user must run ``sluice schemas apply``."""


class AvroSerde:
    """Encodes and decodes the values of the catalog's topics."""

    def __init__(
        self,
        registry: SchemaRegistryClient,
        catalog: Catalog,
        limits: RegistrySettings | None = None,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.limits = limits if limits is not None else RegistrySettings()
        self._writer_ids: dict[str, int] = {}
        self._by_id: dict[int, Any] = {}
        # Negative caches: ids the registry does not have (retried after a while), and
        # ids whose schema a decoder must not be given (for good: an id's schema is fixed).
        self._unknown_ids: dict[int, float] = {}
        self._refused: dict[int, RecordError] = {}
        self._subjects: dict[str, _SubjectIds] = {}
        self._lock = threading.Lock()

    # -- encoding ---------------------------------------------------------------
    def encoder(self, topic: str) -> Callable[[Mapping[str, Any]], bytes]:
        """A function that encodes values for ``topic`` with its registered schema."""
        spec = self.catalog.topic(topic)
        schema = self.catalog.value_schema(topic)
        header = _HEADER.pack(MAGIC_BYTE, self.schema_id(spec, schema))
        parsed = schema.parsed
        writer = fastavro.schemaless_writer

        def encode(value: Mapping[str, Any]) -> bytes:
            buffer = io.BytesIO()
            buffer.write(header)
            writer(buffer, parsed, value)
            return buffer.getvalue()

        return encode

    def schema_id(self, spec: TopicSpec, schema: AvroSchema) -> int:
        """Registry id of ``schema`` under the topic's subject; never registers it."""
        cached = self._writer_ids.get(spec.name)
        if cached is not None:
            return cached
        try:
            registered = self.registry.lookup_schema(spec.subject, Schema(schema.document, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaNotRegisteredError(
                    f"schema {schema.fullname} is not registered under subject "
                    f"{spec.subject!r}; run `sluice schemas apply` first"
                ) from exc
            raise
        if registered.schema_id is None:
            raise SchemaNotRegisteredError(
                f"registry returned no id for {spec.subject!r}; run `sluice schemas apply` first"
            )
        schema_id = int(registered.schema_id)
        self._writer_ids[spec.name] = schema_id
        return schema_id

    # -- decoding ---------------------------------------------------------------
    def decode_as_written(self, data: bytes | None, *, topic: str | None = None) -> dict[str, Any]:
        """Decode a value in its writer's own shape, without schema resolution (2x faster).

        For consumers that read fields by name and tolerate fields the writer did
        not have (the ClickHouse sink); everything else uses ``decode``.
        """
        return self.decode(data, None, topic=topic)

    def decode(
        self, data: bytes | None, reader: AvroSchema | None, *, topic: str | None = None
    ) -> dict[str, Any]:
        """Decode one wire-format value into ``reader``'s shape, or raise RecordError.

        ``topic`` (its logical name) is where the value was read: its schema id must
        then be one registered under the topic's subject. Without it, only the bounds
        on the writer schema apply; every processor names its topic.
        """
        data, schema_id, writer = self._framed(data, topic)
        body = io.BytesIO(data)
        body.seek(_HEADER.size)
        try:
            value = fastavro.schemaless_reader(
                body, writer, reader.parsed if reader is not None else None
            )
        except fastavro.read.SchemaResolutionError as exc:
            # fastavro's message may quote the value (an enum symbol, a union branch).
            raise SchemaMismatch(
                f"written with schema id {schema_id}, which cannot be read as "
                f"{reader.fullname if reader else 'itself'}: {value_free(exc)}"
            ) from exc
        except (
            EOFError,
            StopIteration,
            ValueError,
            IndexError,
            UnicodeDecodeError,
            struct.error,
            OverflowError,
            MemoryError,
        ) as exc:
            raise CorruptAvro(
                f"truncated or corrupt Avro body for schema id {schema_id} ({value_free(exc)})",
                details={"exception": type(exc).__name__},
            ) from exc
        if body.tell() != len(data):
            raise CorruptAvro(
                f"{len(data) - body.tell()} bytes left after the Avro record "
                f"(schema id {schema_id}): corrupt or written with another schema"
            )
        if not isinstance(value, dict):
            raise CorruptAvro("Avro value is not a record")
        return value

    def check_writer(self, data: bytes | None, *, topic: str | None = None) -> tuple[int, Any]:
        """The schema id and parsed writer schema of a wire-format value, or RecordError.

        Everything ``decode`` checks before it reads the body: the framing, that the
        id is one of ``topic``'s, and that its schema is safe to decode with. For a
        caller that hands the bytes to another decoder (ClickHouse's Avro format).
        """
        _, schema_id, writer = self._framed(data, topic)
        return schema_id, writer

    def _framed(self, data: bytes | None, topic: str | None) -> tuple[bytes, int, Any]:
        if data is None:
            raise EmptyRecord("record has no value (tombstone)", stage="deserialize")
        if len(data) < _HEADER.size:
            raise TruncatedRecord(
                f"not Confluent Avro: {len(data)} bytes is shorter than the 5-byte header"
            )
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise UnknownMagicByte(f"not Confluent Avro: magic byte 0x{data[0]:02x}, expected 0x00")
        if topic is not None:
            self._check_subject(self.catalog.topic(topic).subject, schema_id)
        return data, schema_id, self._writer_schema(schema_id)

    def _check_subject(self, subject: str, schema_id: int) -> None:
        known = self._subjects.get(subject)
        if known is not None and schema_id in known.ids:
            return
        with self._lock:
            known = self._subjects.get(subject)
            now = time.monotonic()
            if known is None or (
                schema_id not in known.ids
                and now - known.checked_at >= self.limits.subject_refresh_s
            ):
                known = self._read_subject(subject, known, now)
                self._subjects[subject] = known
        if schema_id not in known.ids:
            raise UnknownSchemaId(
                f"schema id {schema_id} is not registered under subject {subject!r}: "
                "not this topic's schema"
            )

    def _read_subject(self, subject: str, known: _SubjectIds | None, now: float) -> _SubjectIds:
        """The ids of every version of ``subject``, soft-deleted ones included.

        Records written with a version that was deleted later are still the topic's.
        Versions already known are not asked again (a version's id never changes).
        """
        ids = set(known.ids) if known is not None else set()
        versions = dict(known.versions) if known is not None else {}
        try:
            try:
                listed = self.registry.get_versions(subject, deleted=True)
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise
                listed = []  # no such subject: no id is the topic's
            for version in listed:
                if version not in versions:
                    registered = self.registry.get_version(subject, version, deleted=True)
                    if registered.schema_id is not None:
                        versions[version] = int(registered.schema_id)
                        ids.add(int(registered.schema_id))
        except Exception as exc:
            # Connection refused, timeouts, 5xx: the record is fine, the registry is not.
            raise TransientError(f"schema registry error for subject {subject!r}: {exc}") from exc
        return _SubjectIds(frozenset(ids), versions, now)

    def _writer_schema(self, schema_id: int) -> Any:
        parsed = self._by_id.get(schema_id)
        if parsed is not None:
            return parsed
        refused = self._refused.get(schema_id)
        if refused is not None:
            raise _again(refused)
        with self._lock:
            retry_at = self._unknown_ids.get(schema_id)
            if retry_at is not None and retry_at > time.monotonic():
                raise _unknown_id(schema_id)
            try:
                registered = self.registry.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    self._unknown_ids[schema_id] = time.monotonic() + _UNKNOWN_ID_TTL_S
                    raise _unknown_id(schema_id) from exc
                raise TransientError(f"schema registry error for id {schema_id}: {exc}") from exc
            except Exception as exc:
                # Connection refused, timeouts: the record is fine, the registry is not.
                raise TransientError(f"schema registry unreachable: {exc}") from exc
            try:
                parsed = self._parse_writer(
                    schema_id, registered.schema_type, registered.schema_str
                )
            except RecordError as error:
                self._refused[schema_id] = error
                raise
            self._by_id[schema_id] = parsed
            return parsed

    def _parse_writer(self, schema_id: int, schema_type: str | None, text: str | None) -> Any:
        """The parsed writer schema, once it is known to be safe to decode with."""
        if schema_type not in (None, "AVRO"):
            raise SchemaMismatch(f"schema id {schema_id} is {schema_type}, not Avro")
        document = (text or "null").encode("utf-8")
        limits = self.limits
        if len(document) > limits.max_schema_bytes:
            raise SchemaTooComplex(
                f"schema id {schema_id} is {len(document)} bytes; decoders accept at most "
                f"{limits.max_schema_bytes} (SLUICE_REGISTRY__MAX_SCHEMA_BYTES)"
            )
        try:
            # orjson does not recurse without bound: past 1024 levels it refuses.
            tree = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            if json_nests_deeper(document, _PARSER_DEPTH):
                raise SchemaTooComplex(
                    f"schema id {schema_id} is refused: its JSON nests deeper than "
                    f"{_PARSER_DEPTH} levels (decoders accept at most "
                    f"{limits.max_schema_depth} Avro levels, SLUICE_REGISTRY__MAX_SCHEMA_DEPTH)"
                ) from None
            raise SchemaMismatch(
                f"schema id {schema_id} is not a JSON document ({exc.msg})"
            ) from None
        try:
            avro_schema_depth(tree, limits.max_schema_depth)
        except SchemaMismatch as exc:
            raise SchemaMismatch(f"schema id {schema_id} is not an Avro schema: {exc}") from None
        except SchemaTooComplex as exc:
            raise SchemaTooComplex(
                f"schema id {schema_id} is refused: {exc} (decoders accept at most "
                f"{limits.max_schema_depth} levels, SLUICE_REGISTRY__MAX_SCHEMA_DEPTH, "
                "and no recursive type)"
            ) from None
        try:
            return parse_document(tree)
        except Exception as exc:  # fastavro's SchemaParseException, UnknownType, ...
            raise SchemaMismatch(
                f"schema id {schema_id} is not an Avro schema fastavro accepts ({value_free(exc)})"
            ) from None


@dataclass(frozen=True)
class _SubjectIds:
    """What the registry said about one subject, and when."""

    ids: frozenset[int]
    versions: dict[int, int]  # version -> schema id
    checked_at: float


def _again(error: RecordError) -> RecordError:
    """A fresh copy of a refusal seen before (exceptions carry tracebacks: never reuse one)."""
    return type(error)(error.message, stage=error.stage, details=error.details)


def _unknown_id(schema_id: int) -> UnknownSchemaId:
    return UnknownSchemaId(f"unknown schema id {schema_id}: the registry has no such schema")
