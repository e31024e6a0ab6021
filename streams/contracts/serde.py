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
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.contracts.avro_schemas import AvroSchema, parse_document
from streams.contracts.catalog import Catalog, TopicSpec
from streams.errors import (
    ConfigurationError,
    CorruptAvro,
    EmptyRecord,
    SchemaMismatch,
    TransientError,
    TruncatedRecord,
    UnknownMagicByte,
    UnknownSchemaId,
)

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
# A garbage record with a random schema id must not cost a registry call each time.
_UNKNOWN_ID_TTL_S = 30.0


class SchemaNotRegisteredError(ConfigurationError):
    """The topic's schema is not registered: the user must run ``sluice schemas apply``."""


class AvroSerde:
    """Encodes and decodes the values of the catalog's topics."""

    def __init__(self, registry: SchemaRegistryClient, catalog: Catalog) -> None:
        self.registry = registry
        self.catalog = catalog
        self._writer_ids: dict[str, int] = {}
        self._by_id: dict[int, Any] = {}
        self._unknown_ids: dict[int, float] = {}
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
    def decode_as_written(self, data: bytes | None) -> dict[str, Any]:
        """Decode a value in its writer's own shape, without schema resolution (2x faster).

        For consumers that read fields by name and tolerate fields the writer did
        not have (the ClickHouse sink); everything else uses ``decode``.
        """
        return self.decode(data, None)

    def decode(self, data: bytes | None, reader: AvroSchema | None) -> dict[str, Any]:
        """Decode one wire-format value into ``reader``'s shape, or raise RecordError."""
        if data is None:
            raise EmptyRecord("record has no value (tombstone)", stage="deserialize")
        if len(data) < _HEADER.size:
            raise TruncatedRecord(
                f"not Confluent Avro: {len(data)} bytes is shorter than the 5-byte header"
            )
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise UnknownMagicByte(f"not Confluent Avro: magic byte 0x{data[0]:02x}, expected 0x00")
        writer = self._writer_schema(schema_id)
        body = io.BytesIO(data)
        body.seek(_HEADER.size)
        try:
            value = fastavro.schemaless_reader(
                body, writer, reader.parsed if reader is not None else None
            )
        except fastavro.read.SchemaResolutionError as exc:
            raise SchemaMismatch(
                f"written with schema id {schema_id}, which cannot be read as "
                f"{reader.fullname if reader else 'itself'}: {exc}"
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
                f"truncated or corrupt Avro body for schema id {schema_id} "
                f"({type(exc).__name__}: {exc})",
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

    def _writer_schema(self, schema_id: int) -> Any:
        parsed = self._by_id.get(schema_id)
        if parsed is not None:
            return parsed
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
            if registered.schema_type not in (None, "AVRO"):
                raise SchemaMismatch(f"schema id {schema_id} is {registered.schema_type}, not Avro")
            parsed = parse_document(json.loads(registered.schema_str or "null"))
            self._by_id[schema_id] = parsed
            return parsed


def _unknown_id(schema_id: int) -> UnknownSchemaId:
    return UnknownSchemaId(f"unknown schema id {schema_id}: the registry has no such schema")
