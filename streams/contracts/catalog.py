"""The topic catalog (``schemas/topics.yaml``): every topic, its schema and its settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.contracts.avro_schemas import AvroSchema, load_schemas
from streams.contracts.datasets import Contract, load_contract
from streams.errors import ConfigurationError
from streams.settings import Settings

Compatibility = Literal[
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
]
BYTES = "bytes"
DLQ_SUFFIX = ".dlq"


class CatalogError(ConfigurationError, ValueError):
    """The catalog file is malformed or refers to something that does not exist."""


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(1, ge=1)
    compatibility: Compatibility = "BACKWARD_TRANSITIVE"
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = "delete"
    key: Literal["string", "none"] = "string"


class _DlqDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    partitions: int | None = None


class DataClass(BaseModel):
    """What kind of data a topic or table holds, and so how long it is kept.

    ``retention_ms`` is the Kafka retention of the class's topics (a topic's own
    ``retention_ms`` wins); ``clickhouse_ttl_days`` the TTL of the ClickHouse tables
    of the class; ``dead_letters`` the class of the dead-letter topics of the class's
    topics; ``encrypted``: dead-letter topics of the class keep the original bytes
    encrypted (``streams.runtime.sealing``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    retention_ms: int | None = None
    clickhouse_ttl_days: int | None = Field(None, ge=1)
    dead_letters: str | None = None
    encrypted: bool = False


class _TopicEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    value: str
    key: Literal["string", "none"] | None = None
    partitions: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    compatibility: Compatibility | None = None
    retention_ms: int | None = None
    cleanup_policy: Literal["delete", "compact", "compact,delete"] | None = None
    data_class: str | None = None
    dlq: bool = False
    configs: dict[str, str] = Field(default_factory=dict)


class _DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    contract: str
    partitions: int | None = Field(None, ge=1)
    raw_class: str | None = None
    validated_class: str | None = None


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    defaults: _Defaults = _Defaults()
    dlq: _DlqDefaults = _DlqDefaults()
    data_classes: dict[str, DataClass] = Field(default_factory=dict)
    tables: dict[str, str] = Field(default_factory=dict)
    datasets: dict[str, _DatasetEntry] = Field(default_factory=dict)
    topics: list[_TopicEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class TopicSpec:
    """Everything Sluice knows about one topic.

    ``logical`` is the name code refers to (``inference.requests``); ``name`` is
    the topic on the cluster: the logical name behind the deployment's topic
    prefix (``staging.inference.requests``), so several environments or test
    runs can share one cluster.
    """

    name: str
    value: str  # Avro full name, or "bytes"
    key: str
    partitions: int
    replication_factor: int
    compatibility: str
    configs: dict[str, str] = field(default_factory=dict)
    dlq_topic: str | None = None  # logical name of this topic's dead-letter topic, if an input
    logical: str = ""
    data_class: str = ""
    encrypted: bool = False  # a dead-letter topic whose payloads are encrypted

    def __post_init__(self) -> None:
        if not self.logical:
            object.__setattr__(self, "logical", self.name)

    @property
    def subject(self) -> str:
        """Schema Registry subject of the value (TopicNameStrategy)."""
        return f"{self.name}-value"

    @property
    def is_avro(self) -> bool:
        """True when the value is Avro in the Confluent wire format."""
        return self.value != BYTES


@dataclass(frozen=True)
class Dataset:
    """A dataset: its contract and the topics it expands to."""

    name: str
    contract: Contract

    @property
    def raw_topic(self) -> str:
        """Where producers and connectors write the dataset's raw records."""
        return f"raw.{self.name}"

    @property
    def validated_topic(self) -> str:
        """Where validate writes records that passed the contract."""
        return f"{self.name}.validated"

    @property
    def dlq_topic(self) -> str:
        """Where validate writes records that broke the contract."""
        return self.raw_topic + DLQ_SUFFIX


@dataclass(frozen=True)
class Catalog:
    """The loaded catalog, with the Avro schemas the topics refer to.

    Topics are looked up by logical name; ``physical``/``logical`` translate at
    the Kafka boundary.
    """

    topics: dict[str, TopicSpec]
    datasets: dict[str, Dataset]
    schemas: dict[str, AvroSchema]
    prefix: str = ""
    data_classes: dict[str, DataClass] = field(default_factory=dict)
    #: ClickHouse table → data class, for tables whose class is not that of their topics
    tables: dict[str, str] = field(default_factory=dict)

    def physical(self, logical: str) -> str:
        """The cluster topic of a logical topic name."""
        return self.topic(logical).name

    def logical(self, physical: str) -> str:
        """The logical name of a cluster topic (the name itself when it has no prefix)."""
        if self.prefix and physical.startswith(self.prefix):
            return physical[len(self.prefix) :]
        return physical

    def topic(self, name: str) -> TopicSpec:
        """The spec of ``name``, or a clear error naming the known topics."""
        try:
            return self.topics[name]
        except KeyError:
            known = ", ".join(sorted(self.topics))
            raise CatalogError(f"topic {name!r} is not in the catalog; known: {known}") from None

    def dataset(self, name: str) -> Dataset:
        """The dataset ``name``, or a clear error naming the known datasets."""
        try:
            return self.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise CatalogError(f"dataset {name!r} is not in the catalog; known: {known}") from None

    def value_schema(self, topic: str) -> AvroSchema:
        """The Avro schema of ``topic``'s values."""
        spec = self.topic(topic)
        if not spec.is_avro:
            raise CatalogError(f"topic {topic!r} carries raw bytes, not Avro")
        return self.schemas[spec.value]

    def data_class(self, name: str) -> DataClass:
        """The data class ``name``, or a clear error naming the known classes."""
        try:
            return self.data_classes[name]
        except KeyError:
            known = ", ".join(sorted(self.data_classes)) or "none"
            raise CatalogError(
                f"data class {name!r} is not in the catalog; known: {known}"
            ) from None

    def encrypted_dead_letters(self, topic: str) -> bool:
        """True when the dead-letter topic of ``topic`` (logical) keeps payloads encrypted."""
        spec = self.topics.get(topic)
        if spec is None or spec.dlq_topic is None:
            return False
        return self.topic(spec.dlq_topic).encrypted

    @cached_property
    def dlq_topics(self) -> list[str]:
        """Every dead-letter topic in the catalog."""
        return sorted(t.dlq_topic for t in self.topics.values() if t.dlq_topic)


def catalog_for(settings: Settings) -> Catalog:
    """The catalog a process works with: its schemas directory and its topic prefix."""
    return load_catalog(settings.schemas_dir, prefix=settings.topic_prefix)


def load_catalog(schemas_dir: Path, *, prefix: str = "") -> Catalog:
    """Load ``topics.yaml``, the Avro schemas and every dataset's contract.

    ``prefix`` is put in front of every topic name on the cluster.
    """
    path = schemas_dir / "topics.yaml"
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        spec = _CatalogFile.model_validate(raw)
    except OSError as exc:
        raise CatalogError(f"cannot read the topic catalog {path}: {exc}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise CatalogError(f"{path} is not a valid topic catalog:\n{exc}") from exc

    schemas = load_schemas(schemas_dir / "avro")
    topics: dict[str, TopicSpec] = {}
    datasets: dict[str, Dataset] = {}
    d = spec.defaults
    classes = spec.data_classes
    _check_classes(path, spec)

    def data_class(entry: _TopicEntry) -> DataClass:
        if entry.data_class is None:
            raise CatalogError(
                f"{path}: topic {entry.name!r} has no data class; set `data_class` to one of "
                f"{', '.join(sorted(classes)) or 'the classes of a `data_classes` section'}"
            )
        if entry.data_class not in classes:
            raise CatalogError(
                f"{path}: topic {entry.name!r} names the unknown data class "
                f"{entry.data_class!r}; known: {', '.join(sorted(classes)) or 'none'}"
            )
        return classes[entry.data_class]

    def add(entry: _TopicEntry) -> None:
        if entry.name in topics:
            raise CatalogError(f"{path}: topic {entry.name!r} is declared twice; remove one")
        if entry.value != BYTES and entry.value not in schemas:
            raise CatalogError(
                f"{path}: topic {entry.name!r} uses schema {entry.value!r}, "
                f"which is not in {schemas_dir / 'avro'}; add it there or fix `value`"
            )
        kind = data_class(entry)
        retention_ms = entry.retention_ms or kind.retention_ms
        if retention_ms is None:
            raise CatalogError(
                f"{path}: topic {entry.name!r} has no retention: its data class "
                f"{entry.data_class!r} declares no `retention_ms` and neither does the topic"
            )
        if entry.dlq and kind.dead_letters is None:
            raise CatalogError(
                f"{path}: topic {entry.name!r} has a dead-letter topic, but its data class "
                f"{entry.data_class!r} does not say which class its dead letters are "
                "(`dead_letters`)"
            )
        configs = {
            "retention.ms": str(retention_ms),
            "cleanup.policy": entry.cleanup_policy or d.cleanup_policy,
            **entry.configs,
        }
        dlq_name = entry.name + DLQ_SUFFIX if entry.dlq else None
        topics[entry.name] = TopicSpec(
            name=prefix + entry.name,
            logical=entry.name,
            value=entry.value,
            key=entry.key or d.key,
            partitions=entry.partitions or d.partitions,
            replication_factor=entry.replication_factor or d.replication_factor,
            compatibility=entry.compatibility or d.compatibility,
            configs=configs,
            dlq_topic=dlq_name,
            data_class=entry.data_class or "",
            encrypted=entry.name.endswith(DLQ_SUFFIX) and kind.encrypted,
        )
        if dlq_name:
            add(
                _TopicEntry(
                    name=dlq_name,
                    value=BYTES,
                    partitions=spec.dlq.partitions or entry.partitions,
                    data_class=kind.dead_letters,
                )
            )

    for name, ds in spec.datasets.items():
        contract = load_contract(schemas_dir / ds.contract, schemas)
        if contract.dataset != name:
            raise CatalogError(
                f"{path}: dataset {name!r} points at the contract of {contract.dataset!r}; "
                "point it at its own contract, or rename one of the two"
            )
        datasets[name] = Dataset(name, contract)
        add(
            _TopicEntry(
                name=f"raw.{name}",
                value="sluice.v1.RawEvent",
                partitions=ds.partitions,
                dlq=True,
                data_class=ds.raw_class,
            )
        )
        # Validated records feed other processors (drift), which dead-letter what they refuse.
        add(
            _TopicEntry(
                name=f"{name}.validated",
                value=contract.schema_name,
                partitions=ds.partitions,
                dlq=True,
                data_class=ds.validated_class,
            )
        )
    for entry in spec.topics:
        add(entry)
    return Catalog(
        topics=topics,
        datasets=datasets,
        schemas=schemas,
        prefix=prefix,
        data_classes=dict(classes),
        tables=dict(spec.tables),
    )


def _check_classes(path: Path, spec: _CatalogFile) -> None:
    """Every class a class or a table refers to exists."""
    known = ", ".join(sorted(spec.data_classes)) or "none"
    for name, kind in spec.data_classes.items():
        if kind.dead_letters is not None and kind.dead_letters not in spec.data_classes:
            raise CatalogError(
                f"{path}: data class {name!r} sends its dead letters to the unknown data "
                f"class {kind.dead_letters!r}; known: {known}"
            )
    for table, name in spec.tables.items():
        if name not in spec.data_classes:
            raise CatalogError(
                f"{path}: table {table!r} names the unknown data class {name!r}; known: {known}"
            )
