"""What a processor declares, and what it is given: the contract between processors and the runner.

A processor module exposes pure functions over records plus one
``ProcessorSpec``. The runner owns every Kafka call, transaction, retry,
dead-letter write, span and metric; the processor only maps input records to
output records (or to a ``RecordError``). Unit tests call the functions
directly, without Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.catalog import Catalog
from streams.errors import RecordError
from streams.settings import Settings

Headers = list[tuple[str, bytes]]


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

    def header(self, name: str) -> bytes | None:
        """Last value of header ``name``, or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce. ``value`` is an Avro-ready dict, or bytes for byte topics."""

    topic: str
    value: Any
    key: str | bytes | None = None
    headers: Headers = field(default_factory=list)


#: What processing one input record yields: records to produce, or a reason to dead-letter it.
Outcome = Sequence[Output] | RecordError


@dataclass
class Context:
    """What a processor may use: settings, the catalog, a logger and its own resources."""

    processor: str
    settings: Settings
    catalog: Catalog
    logger: logging.Logger
    instance_id: str = ""
    # Processor-owned resources built by ``setup`` (engines, clients, caches).
    resources: dict[str, Any] = field(default_factory=dict)
    # Helpers the runner lends (the Avro serde for processors that decode themselves).
    services: dict[str, Any] = field(default_factory=dict)


ProcessBatch = Callable[[Sequence[InputRecord], Context], Sequence[Outcome]]
ProcessOne = Callable[[InputRecord, Context], Sequence[Output]]


@dataclass(frozen=True)
class ProcessorSpec:
    """Everything the runner needs to execute a processor."""

    name: str
    description: str
    inputs: Callable[[Catalog], list[str]]
    # Topics the processor may write (besides the inputs' dead-letter topics); checked at start.
    outputs: Callable[[Catalog], list[str]]
    process_batch: ProcessBatch
    # False: ``InputRecord.value`` is the raw bytes (the processor decodes itself).
    decode_inputs: bool = True
    setup: Callable[[Context], None] | None = None
    teardown: Callable[[Context], None] | None = None
    # Called after each committed batch, e.g. to export processor-specific metrics.
    after_commit: Callable[[Context], None] | None = None
    # This processor's batching defaults, used unless SLUICE_RUNNER__BATCH_SIZE /
    # __BATCH_TIMEOUT_MS are set (a sink wants larger, slower batches than a hop).
    batch_size: int | None = None
    batch_timeout_ms: int | None = None


def per_record(process: ProcessOne) -> ProcessBatch:
    """Adapt a one-record function to ``process_batch``, isolating failures per record."""

    def process_batch(records: Sequence[InputRecord], ctx: Context) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for record in records:
            try:
                outcomes.append(process(record, ctx))
            except RecordError as error:
                outcomes.append(error)
        return outcomes

    process_batch.__doc__ = process.__doc__
    return process_batch
