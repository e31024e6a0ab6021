"""What a processor declares, and what it is given: the contract between processors and the runner.

A processor package exposes pure functions over records plus one
``ProcessorSpec``. The runner owns every Kafka call, transaction, retry,
dead-letter write, span and metric; the processor only maps input records to
output records (or to a ``RecordError``). Unit tests call the functions
directly, or run the whole spec in process with ``streams.runtime.testing``.

Settings and resources are typed and built once: the spec names its settings
class (``SLUICE_<NAME>__*``), the runner builds it once per process, ``setup``
receives it in the context and returns the processor's resources object (a
dataclass of its engines, clients and caches), and every later call gets both
through ``Context.config`` and ``Context.resources``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contracts.catalog import Catalog
from streams.errors import RecordError
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.contracts.serde import AvroSerde

#: Kafka record headers as the runner hands them around: (name, value) pairs, in order.
Headers = list[tuple[str, bytes]]


class NoSettings(BaseSettings):
    """The settings of a processor that has none of its own."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")


#: A processor's own settings class (pydantic-settings, env prefix ``SLUICE_<NAME>__``).
C = TypeVar("C", bound=BaseSettings)
#: A processor's resources: whatever ``setup`` returns (a dataclass per processor).
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed record. ``value`` is decoded unless the spec asked for raw bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    raw: bytes | None
    headers: Headers
    timestamp_ms: int
    # The runner's span for this record when tracing is on: processors may add
    # attributes to it or start child spans under it (infer's Triton call).
    span: Any = None

    def header(self, name: str) -> bytes | None:
        """Last value of header ``name``, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Share:
    """Whose a record is, for fair scheduling, and that owner's weight (at least 1)."""

    key: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce. ``value`` is an Avro-ready dict, or bytes for byte topics."""

    topic: str
    value: Any
    key: str | bytes | None = None
    headers: Headers = field(default_factory=list)


class RecordSigner(Protocol):
    """Computes the headers that authenticate one serialised output record."""

    def headers(self, topic: str, key: bytes | None, value: bytes) -> Headers:
        """Headers for the record of ``topic`` (logical name) with these exact bytes."""


#: What processing one input record yields: records to produce, or a reason to dead-letter it.
Outcome = Sequence[Output] | RecordError


@dataclass(frozen=True)
class Context(Generic[C, R]):
    """What a processor may use, built once per process by the runner (or the harness).

    ``settings`` are Sluice's shared settings (Kafka, registry, ClickHouse, ...);
    ``config`` the processor's own; ``resources`` what its ``setup`` returned
    (None for a processor without setup, and inside ``setup`` itself).
    """

    processor: str
    settings: Settings
    config: C
    catalog: Catalog
    logger: logging.Logger
    # The Avro serde over the Schema Registry, for processors that decode themselves.
    serde: AvroSerde
    resources: R
    instance_id: str = ""


ProcessBatch = Callable[[Sequence[InputRecord], Context[C, R]], Sequence[Outcome]]
ProcessOne = Callable[[InputRecord, Context[C, R]], Sequence[Output]]


@dataclass(frozen=True)
class ProcessorSpec(Generic[C, R]):
    """Everything the runner needs to execute a processor."""

    name: str
    description: str
    inputs: Callable[[Catalog, C], list[str]]
    # Topics the processor may write (besides the inputs' dead-letter topics); checked at start.
    outputs: Callable[[Catalog, C], list[str]]
    process_batch: ProcessBatch[C, R]
    # The processor's own settings class; the runner builds it once and hands it in.
    settings: type[C] = NoSettings  # type: ignore[assignment]
    # False: ``InputRecord.value`` is the raw bytes (the processor decodes itself).
    decode_inputs: bool = True
    # Builds the resources object (engines, clients, caches) once, before the first poll.
    setup: Callable[[Context[C, None]], R] | None = None
    teardown: Callable[[Context[C, R]], None] | None = None
    # Called after each committed batch: in-memory state is now durable.
    after_commit: Callable[[Context[C, R]], None] | None = None
    # Called when a batch was processed but not committed (its transaction aborted, or it
    # raised and is about to be re-run record by record): restore in-memory state to what
    # it was at the last commit. Processors that keep no state between batches leave it out.
    rollback: Callable[[Context[C, R]], None] | None = None
    # (records per poll, longest wait in ms) when the processor knows better than the
    # runner's defaults; SLUICE_RUNNER__BATCH_SIZE/_TIMEOUT_MS set explicitly still win.
    batching: Callable[[C], tuple[int, int]] | None = None
    # Outputs the runner signs: topic -> signer, built from the processor's settings when
    # the pipeline is made, so a missing key fails start-up. The runner signs rather than
    # the processor because a signature must cover the exact bytes produced, and only the
    # pipeline sees them (after serialisation, with the registry's schema id); a header
    # added after encoding changes nothing the processor or the schema sees.
    signers: Callable[[C], Mapping[str, RecordSigner]] | None = None
    # The consumer group of an instance with these settings, after the group prefix, when
    # it is not the processor's name: infer's lanes (``infer-<lane>``), each with its own
    # group and transactional ids, so that one lane commits without waiting for another.
    group: Callable[[C], str] | None = None
    # True: no transaction. Outputs go through an idempotent producer, are flushed, and only
    # then are the input offsets committed: at least once, with a batch's latency bounded by
    # a flush rather than a transaction commit (guard-stream's live previews). Consumers of
    # its outputs must tolerate duplicates; it uses no transactional id.
    at_least_once: bool = False
    # Whose a raw input record is, for weighted fair scheduling across tenants
    # (``streams.runtime.fair_window``): the runner then reads ahead and takes each batch
    # fairly, so one tenant's backlog does not delay another's records. Called on every
    # record before it is decoded, so it must be cheap and must not trust what a producer
    # could forge (guard: the tenant whose key signed it). None: batches in offset order.
    share_of: Callable[[Context[C, R], InputRecord], Share] | None = None

    def build_settings(self) -> C:
        """The processor's settings, read from the environment (once per process)."""
        return self.settings()

    def group_name(self, config: C) -> str:
        """The consumer group (and transactional id prefix) of an instance, less the prefix."""
        return self.group(config) if self.group is not None else self.name


@dataclass(frozen=True)
class EngineSpec(Generic[C]):
    """A processor that brings its own stream engine (meter on faust-streaming).

    It is configured, started and stopped through the same path as a runner
    processor (``sluice run NAME``, ``Settings`` plus its own settings class,
    tracing and metrics registration); ``run`` blocks until the engine stops.
    """

    name: str
    description: str
    settings: type[C]
    # run(shared settings, own settings, metrics port or None for the default)
    run: Callable[[Settings, C, int | None], None]

    def build_settings(self) -> C:
        """The processor's settings, read from the environment (once per process)."""
        return self.settings()


def per_record(process: ProcessOne[C, R]) -> ProcessBatch[C, R]:
    """Adapt a one-record function to ``process_batch``, isolating failures per record."""

    def process_batch(records: Sequence[InputRecord], ctx: Context[C, R]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for record in records:
            try:
                outcomes.append(process(record, ctx))
            except RecordError as error:
                outcomes.append(error)
        return outcomes

    process_batch.__doc__ = process.__doc__
    return process_batch
