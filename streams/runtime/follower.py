"""A view that follows Kafka topics in a background thread and answers from memory.

Guard keeps two such views: the budgets meter publishes (``streams.llm.budgets``) and
the request ids it decided (``processors.guard.replay``). Both read every partition
(no consumer group: each replica reads everything), committed records only, from
offsets of their own choosing; both are *ready* once they have read up to the end
offsets the topics had when they started, and both must fail closed: an error in
the thread is kept in ``error`` for the caller to see, never swallowed.

A subclass says where to start (``_assignment``), what a record does
(``_on_message``), what to build in the thread before reading (``_prepare``: its
failures surface through ``error`` too) and what to do on every poll (``_tick``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from abc import ABC, abstractmethod
from typing import Self

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams.contracts.catalog import Catalog
from streams.runtime import kafka
from streams.settings import Settings

log = logging.getLogger(__name__)


class TopicFollower(ABC):
    """Follows ``topics`` (logical names) in a daemon thread named ``label``."""

    def __init__(
        self, settings: Settings, catalog: Catalog | None, topics: tuple[str, ...], label: str
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.topics = topics
        self.label = label
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> Self:
        """Start following the topics in a daemon thread."""
        self._thread = threading.Thread(target=self._follow, name=self.label, daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        """Block until the view has caught up with the topics as they were at start."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        """Stop the background consumer."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def shown_topics(self) -> str:
        """The topics as the cluster names them (a view fed by hand has no catalog)."""
        if self.catalog is None:
            return ", ".join(self.topics)
        return ", ".join(self.catalog.physical(t) for t in self.topics)

    def followed_catalog(self) -> Catalog:
        """The catalog of a view that reads Kafka (a view fed by hand may have none)."""
        if self.catalog is None:
            raise RuntimeError(f"{self.label} follows Kafka only with the topic catalog")
        return self.catalog

    # -- what a subclass gives --------------------------------------------------
    def _prepare(self) -> None:  # noqa: B027 (optional hook)
        """Build what reading needs (serde, schemas), in the thread."""

    @abstractmethod
    def _assignment(
        self, consumer: Consumer, ends: dict[TopicPartition, int]
    ) -> list[TopicPartition]:
        """Every partition in ``ends`` with the offset to start reading it at."""

    @abstractmethod
    def _on_message(self, message: Message) -> None:
        """Take one record in."""

    def _tick(self) -> None:  # noqa: B027 (optional hook)
        """Called after every poll (expiry and the like)."""

    # -- the consumer -----------------------------------------------------------
    def _follow(self) -> None:
        try:
            self._prepare()
            self._consume()
        except BaseException as exc:  # surfaced through .error; callers must fail closed on it
            self.error = exc
            log.exception("%s stopped following %s", self.label, self.shown_topics())
            raise

    def _consume(self) -> None:
        catalog = self.followed_catalog()
        consumer = kafka.consumer(
            self.settings,
            f"{self.settings.runner.group_prefix}.{self.label}.{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True},
        )
        try:
            ends = kafka.end_offsets(consumer, [catalog.physical(t) for t in self.topics])
            assignment = self._assignment(consumer, ends)
            consumer.assign(assignment)
            # TopicPartitions compare by topic and partition only, so ``ends[tp]`` finds them.
            pending = {(tp.topic, tp.partition) for tp in assignment if tp.offset < ends[tp]}
            if not pending:
                self._ready.set()
            while not self._stopping.is_set():
                for message in consumer.consume(500, 0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard((message.topic(), message.partition()))
                        else:
                            log.warning("%s: %s", self.label, error.str())
                        continue
                    self._on_message(message)
                if pending and not self._ready.is_set():
                    positions = consumer.position([TopicPartition(t, p) for t, p in pending])
                    for tp in positions:
                        if (tp.offset or 0) >= ends[TopicPartition(tp.topic, tp.partition)]:
                            pending.discard((tp.topic, tp.partition))
                if not pending:
                    self._ready.set()
                self._tick()
        finally:
            consumer.close()
