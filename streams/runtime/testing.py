"""Run a processor in process, without Kafka: the runner's real batch path over a list of records.

For people who write processors (and for Sluice's own unit tests)::

    from processors.validate.processor import PROCESSOR
    from streams.runtime.testing import Harness

    with Harness(PROCESSOR) as harness:
        out = harness.run([harness.record("raw.support_tickets", {"ticket_id": "T-1", ...})])
    assert out.values("support_tickets.validated")[0]["ticket_id"] == "T-1"
    assert out.dead_letters == []

What runs is ``streams.runtime.pipeline``, exactly as under the runner: each
record is decoded from the Confluent wire format with its topic's value
schema, the processor's ``setup`` builds its resources once from its settings
class, a batch that raises is re-run record by record (with the ``rollback``
hook for stateful processors), outputs are encoded with their topics' schemas,
and refusals become dead letters with the original bytes and ``sluice.error.*``
headers. What the runner adds on top (the consumer group, the transaction,
retries of a ``TransientError``, metrics) needs a broker and is covered by the
integration tests.

Schemas live in an in-memory registry that knows every Avro topic of the
catalog, so no Schema Registry is needed either.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic

import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from pydantic import SecretStr

from streams.contracts.catalog import Catalog, catalog_for
from streams.contracts.serde import AvroSerde
from streams.runtime.dead_letters import PREFIX as ERROR_HEADER_PREFIX
from streams.runtime.dead_letters import DlqInfo, parse_error_headers
from streams.runtime.pipeline import BatchPipeline
from streams.runtime.sealing import Keyring, new_key, sealed_key_id
from streams.runtime.spec import C, Context, Headers, InputRecord, ProcessorSpec, R
from streams.settings import DeadLetterSettings, Settings


@dataclass
class _Registered:
    schema_id: int
    schema_str: str
    schema_type: str = "AVRO"
    version: int = 1
    subject: str | None = None


class MemoryRegistry:
    """Just enough of confluent-kafka's ``SchemaRegistryClient`` for the serde, in memory.

    As in a real registry, a subject has versions (1, 2, ...), each pointing at a
    schema id, and an identical document has one id across subjects.
    """

    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.versions: dict[str, list[int]] = {}  # subject -> schema id of version 1, 2, ...

    def register(self, subject: str, document: str) -> int:
        """Register ``document`` under ``subject`` (a new version unless it is one); its id."""
        versions = self.versions.setdefault(subject, [])
        for schema_id in versions:
            if _same(self.by_id[schema_id], document):
                return schema_id
        schema_id = next(
            (i for i, known in self.by_id.items() if _same(known, document)),
            len(self.by_id) + 1,
        )
        self.by_id[schema_id] = document
        versions.append(schema_id)
        return schema_id

    def lookup_schema(self, subject: str, schema: Any) -> _Registered:
        """The version of ``subject`` that is ``schema`` (the serde's lookup before encoding)."""
        versions = self.versions.get(subject)
        if not versions:
            raise SchemaRegistryError(404, 40401, f"subject {subject} not found")
        for version, schema_id in enumerate(versions, start=1):
            if _same(self.by_id[schema_id], schema.schema_str):
                document = self.by_id[schema_id]
                return _Registered(schema_id, document, version=version, subject=subject)
        raise SchemaRegistryError(404, 40403, f"schema not found under subject {subject}")

    def get_schema(self, schema_id: int) -> _Registered:
        """The schema with ``schema_id`` (the serde's lookup when decoding)."""
        if schema_id not in self.by_id:
            raise SchemaRegistryError(404, 40403, f"schema {schema_id} not found")
        return _Registered(schema_id, self.by_id[schema_id])

    def get_versions(self, subject: str, deleted: bool = False) -> list[int]:
        """The version numbers of ``subject`` (which ids a topic's records may carry)."""
        if not self.versions.get(subject):
            raise SchemaRegistryError(404, 40401, f"subject {subject} not found")
        return list(range(1, len(self.versions[subject]) + 1))

    def get_version(self, subject: str, version: int, deleted: bool = False) -> _Registered:
        """Version ``version`` of ``subject``, with its schema id."""
        versions = self.versions.get(subject)
        if not versions:
            raise SchemaRegistryError(404, 40401, f"subject {subject} not found")
        if not 1 <= version <= len(versions):
            raise SchemaRegistryError(404, 40402, f"version {version} not found")
        schema_id = versions[version - 1]
        return _Registered(schema_id, self.by_id[schema_id], version=version, subject=subject)

    @classmethod
    def for_catalog(cls, catalog: Catalog) -> MemoryRegistry:
        """A registry with the value schema of every Avro topic of ``catalog`` registered."""
        registry = cls()
        for name, spec in sorted(catalog.topics.items()):
            if spec.is_avro:
                registry.register(spec.subject, catalog.value_schema(name).document)
        return registry


@dataclass(frozen=True)
class Produced:
    """One record the processor would have produced, decoded back for assertions."""

    topic: str
    key: bytes | None
    raw: bytes
    headers: Headers
    value: Any  # decoded with the topic's schema (bytes for byte topics and dead letters)


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: the original bytes and key, and why (the ``sluice.error.*`` headers).

    ``raw`` is the original record's bytes; ``stored`` what the dead-letter topic would
    hold: the same bytes, or, for a topic whose data class is encrypted, their ciphertext.
    """

    topic: str
    key: bytes | None
    raw: bytes
    headers: Headers
    info: DlqInfo
    stored: bytes = b""
    key_id: str | None = None  # the encryption key's id, for an encrypted dead letter


@dataclass
class BatchResult:
    """What one batch produced, in order, split into outputs and dead letters."""

    produced: list[Produced] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def on(self, topic: str) -> list[Produced]:
        """The outputs produced to ``topic`` (its logical name)."""
        return [p for p in self.produced if p.topic == topic]

    def values(self, topic: str) -> list[Any]:
        """The decoded values produced to ``topic``."""
        return [p.value for p in self.on(topic)]

    def kinds(self) -> list[str]:
        """The dead-letter kind (``sluice.error.class``) of each dead letter, in order."""
        return [d.info.error_class for d in self.dead_letters]


class _Collector:
    """The pipeline's destination: keeps what would have gone to Kafka."""

    def __init__(self, catalog: Catalog, serde: AvroSerde, keyring: Keyring) -> None:
        self.catalog = catalog
        self.serde = serde
        self.keyring = keyring
        self.result = BatchResult()

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        logical = self.catalog.logical(topic)
        if any(name.startswith(ERROR_HEADER_PREFIX) for name, _ in headers):
            info = parse_error_headers(headers)
            ident = sealed_key_id(headers)
            raw = value if ident is None else self.keyring.open(value, headers)
            self.result.dead_letters.append(
                DeadLetter(logical, key, raw, headers, info, stored=value, key_id=ident)
            )
            return
        spec = self.catalog.topic(logical)
        decoded = (
            self.serde.decode(value, self.catalog.value_schema(logical), topic=logical)
            if spec.is_avro
            else value
        )
        self.result.produced.append(Produced(logical, key, value, headers, decoded))


class Harness(Generic[C, R]):
    """One processor set up in process; feed it batches with ``run``.

    ``settings`` default to ``Settings()`` (the environment); ``config`` to the
    spec's own settings class read from the environment; ``catalog`` to the
    catalog of ``settings``. ``resources`` replaces what ``setup`` would build,
    for a processor whose setup needs a service (drift reads its checkpoints from
    Kafka): the test builds the engine itself. Use it as a context manager so
    ``teardown`` runs.
    """

    def __init__(
        self,
        spec: ProcessorSpec[C, R],
        *,
        settings: Settings | None = None,
        config: C | None = None,
        catalog: Catalog | None = None,
        registry: MemoryRegistry | SchemaRegistryClient | None = None,
        resources: R | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings if settings is not None else Settings()
        self.catalog = catalog if catalog is not None else catalog_for(self.settings)
        if self.settings.dead_letters.encryption_key is None:
            # Processors of prompt topics need a dead-letter key; a test gets a throwaway one
            # (and sees the original bytes, decrypted, in ``DeadLetter.raw``).
            self.settings = self.settings.model_copy(
                update={"dead_letters": DeadLetterSettings(encryption_key=SecretStr(new_key()))}
            )
        self.registry = (
            registry if registry is not None else MemoryRegistry.for_catalog(self.catalog)
        )
        self.serde = AvroSerde(self.registry, self.catalog, self.settings.registry)  # type: ignore[arg-type]
        bare: Context[C, None] = Context(
            processor=spec.name,
            settings=self.settings,
            config=config if config is not None else spec.build_settings(),
            catalog=self.catalog,
            logger=logging.getLogger(f"sluice.{spec.name}"),
            serde=self.serde,
            resources=None,
            instance_id="harness",
        )
        self.pipeline = BatchPipeline(
            spec, bare, group_id=f"harness.{spec.group_name(bare.config)}"
        )
        self.pipeline.check_output_schemas()
        if resources is None and spec.setup is not None:
            resources = spec.setup(bare)
        self.ctx: Context[C, R] = dataclasses.replace(bare, resources=resources)  # type: ignore[assignment, arg-type]
        self.pipeline.ctx = self.ctx
        self._offsets: dict[tuple[str, int], Iterator[int]] = {}

    # -- making input records ------------------------------------------------------------
    def encode(self, topic: str, value: Mapping[str, Any]) -> bytes:
        """``value`` in the Confluent wire format with ``topic``'s registered value schema."""
        return self.serde.encoder(topic)(value)

    def record(
        self,
        topic: str,
        value: Mapping[str, Any] | bytes | None,
        *,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        partition: int = 0,
        timestamp_ms: int = 1_700_000_000_000,
    ) -> InputRecord:
        """An input record as the runner would consume it: a dict is Avro-encoded, bytes stay."""
        raw = value if isinstance(value, bytes) or value is None else self.encode(topic, value)
        offsets = self._offsets.setdefault((topic, partition), itertools.count())
        return InputRecord(
            topic=topic,
            partition=partition,
            offset=next(offsets),
            key=key.encode() if isinstance(key, str) else key,
            value=raw,
            raw=raw,
            headers=list(headers or []),
            timestamp_ms=timestamp_ms,
        )

    # -- running -------------------------------------------------------------------------
    def run(self, records: Sequence[InputRecord]) -> BatchResult:
        """Process ``records`` as one batch that commits: ``after_commit`` runs afterwards."""
        result = self.run_aborted(records)
        if self.spec.after_commit is not None:
            self.spec.after_commit(self.ctx)
        return result

    def run_aborted(self, records: Sequence[InputRecord]) -> BatchResult:
        """Process ``records`` as one batch but do not commit it (nor call ``after_commit``).

        Follow with ``abort()`` to see what the runner does when the transaction fails.
        """
        collector = _Collector(self.catalog, self.serde, self.pipeline.keyring)
        self.pipeline.run(records, collector)
        return collector.result

    def abort(self) -> None:
        """The batch in hand was not committed: run the ``rollback`` hook, as the runner does."""
        self.pipeline.rollback()

    def close(self) -> None:
        """Run the spec's ``teardown``."""
        if self.spec.teardown is not None:
            self.spec.teardown(self.ctx)

    def __enter__(self) -> Harness[C, R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _same(one: str, other: str) -> bool:
    """Whether two schema documents are the same JSON (the registry ignores whitespace)."""
    if one == other:
        return True
    try:
        return bool(orjson.loads(one) == orjson.loads(other))
    except orjson.JSONDecodeError:  # not JSON, or nested past what orjson parses
        return False


def run_processor(
    spec: ProcessorSpec[C, R],
    inputs: Iterable[tuple[str, Mapping[str, Any] | bytes]],
    **kwargs: Any,
) -> BatchResult:
    """One batch of (topic, value) pairs through ``spec``, set up and torn down around it."""
    with Harness(spec, **kwargs) as harness:
        return harness.run([harness.record(topic, value) for topic, value in inputs])
