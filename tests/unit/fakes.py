"""Test doubles for unit tests only; integration tests use the real services."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.schema_registry.error import SchemaRegistryError


@dataclass
class Registered:
    schema_id: int
    schema_str: str
    schema_type: str = "AVRO"
    version: int = 1


class DictRegistry:
    """Just enough of SchemaRegistryClient for framing tests."""

    def __init__(self):
        self.by_id: dict[int, str] = {}
        self.by_subject: dict[str, int] = {}

    def register(self, subject, document):
        schema_id = len(self.by_id) + 1
        self.by_id[schema_id] = document
        self.by_subject[subject] = schema_id

    def lookup_schema(self, subject, schema):
        if subject not in self.by_subject:
            raise SchemaRegistryError(404, 40401, "not found")
        return Registered(self.by_subject[subject], self.by_id[self.by_subject[subject]])

    def get_schema(self, schema_id):
        if schema_id not in self.by_id:
            raise SchemaRegistryError(404, 40403, "schema not found")
        return Registered(schema_id, self.by_id[schema_id])
