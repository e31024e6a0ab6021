"""The Kafka dispatcher: produce a signed request, wait for its outcome on the pipeline's topics.

What this slice does (docs/explanation/gateway.md has the whole design):

* **Identity.** Each request is signed with its tenant's Ed25519 key (scheme
  ``TENANT_REQUEST``, exactly as ``SluiceClient`` signs), so today's guard
  authenticates it like any producer's. The gateway holds the signing keys of the
  tenants it serves (``TenantSigners``: one file per tenant); the tenant comes from
  the API key, never from the body.
* **Correlation.** The correlation id is the request id: a fresh UUID the gateway
  makes, the record key on ``inference.requests`` and on every record guard writes
  for it. A reply is recognised by its key alone, so the records of other replicas'
  requests are skipped without being decoded.
* **Replies.** A request ends on one of two topics, both written by guard: its
  result on ``inference.results`` or its refusal on ``inference.requests.blocked``.
  Each replica reads both (its own consumer, every partition, from the end offsets
  taken at start, ``read_committed``) and resolves the futures of its own requests.
  The scaled design, a ``gateway.replies`` topic with one partition per replica that
  guard writes in the same transaction, is described in the design page and is not
  built yet; the ``Dispatcher`` protocol does not change with it.
* **Streamed deltas.** A call that asked for ``stream`` passes ``on_chunk``: the same
  consumer reads ``inference.chunks`` (guard-stream's redacted deltas, every partition),
  and each chunk of a request this replica waits on, of the caller's tenant, is handed
  to that callback on the event loop, in the order read. Dropping repeated and other
  attempts' chunks is the caller's (``streams.gateway.streaming``). Chunks are never
  kept for retries: a retry is answered from the outcome.
* **Deadlines.** A request without an outcome by its deadline raises
  ``TimeoutError`` and is forgotten; a late outcome is then skipped.
* **Retries** (``Idempotency-Key``, ``streams.gateway.idempotency``). The outcome
  records of derived request ids are kept undecoded in an ``OutcomeCache`` for the
  idempotency window; a retry is answered from it without producing anything. Else
  the retry is produced again and waits for the original's outcome: guard refuses the
  retry's own copy as ``duplicate_request``, and that block does not answer an
  idempotent request. With a window, the consumer starts at ``now - window``
  (``offsets_for_times``) rather than at the end, and the dispatcher is ready only
  once it has read up to the end offsets taken at start: a replica restarted while a
  call was in flight can still answer its retry.

Not yet verified against a running stack: this module's Kafka round trip is covered
by unit tests with in-memory clients only (tests/integration/test_gateway.py is
written for the stack, and not yet run).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message, TopicPartition

from streams.contracts.catalog import Catalog
from streams.contracts.records import InferenceChunk, InferenceRequest, InferenceResult
from streams.errors import ConfigurationError, RecordError
from streams.gateway.dispatch import Blocked, Completed, DispatchError, NoSigningKeyError, Reply
from streams.gateway.idempotency import OutcomeCache, is_derived
from streams.gateway.metrics import GATEWAY_PENDING
from streams.runtime import kafka
from streams.runtime.signing import TENANT_REQUEST, Signer
from streams.runtime.tenants import TenantRegistryError, check_tenant_id
from streams.settings import Settings

log = logging.getLogger("sluice.gateway.kafka")

REQUESTS_TOPIC = "inference.requests"
RESULTS_TOPIC = "inference.results"
BLOCKED_TOPIC = "inference.requests.blocked"
OUTCOME_TOPICS = (RESULTS_TOPIC, BLOCKED_TOPIC)
# guard-stream's redacted deltas of streamed generations (a live preview, at least once).
CHUNKS_TOPIC = "inference.chunks"
#: Everything the gateway reads: the outcomes and the deltas.
READ_TOPICS = (*OUTCOME_TOPICS, CHUNKS_TOPIC)
#: Receives the chunks of one streamed call, on the event loop.
ChunkListener = Callable[[InferenceChunk], None]
_POLL_S = 0.1
_OFFSETS_TIMEOUT_S = 10.0
_POSITION_CHECK_S = 0.5
# guard's refusal of a request id it already decided (processors.guard.replay).
DUPLICATE_REQUEST = "duplicate_request"


class _Producer(Protocol):
    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


class _Consumer(Protocol):
    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def poll(self, timeout: float) -> Message | None: ...

    def close(self) -> None: ...

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float
    ) -> list[TopicPartition]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...


@dataclass(eq=False)
class _Waiter:
    """One call waiting on a request id (several when a caller retries while it is in flight)."""

    future: asyncio.Future[Reply]
    tenant: str
    idempotent: bool
    on_chunk: ChunkListener | None = None


class TenantSigners:
    """The signing key of each tenant the gateway serves, read once from ``<dir>/<tenant>.key``.

    That is the local stack's layout (``<state dir>/secrets/tenants/``); a deployment
    mounts the same files from its secret store. A key file holds base64 of the raw
    32-byte Ed25519 private key, as ``SLUICE_TENANT__SIGNING_KEY`` does.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._signers: dict[str, Signer] = {}
        self._lock = threading.Lock()

    def __call__(self, tenant: str) -> Signer:
        """``tenant``'s signer; ``NoSigningKeyError`` when the gateway has no key for it."""
        with self._lock:
            signer = self._signers.get(tenant)
            if signer is None:
                signer = self._signers[tenant] = self._load(tenant)
            return signer

    def _load(self, tenant: str) -> Signer:
        try:
            path = self.directory / f"{check_tenant_id(tenant)}.key"
            secret = path.read_text(encoding="ascii")
        except (TenantRegistryError, OSError, UnicodeDecodeError):
            raise NoSigningKeyError(
                f"the gateway holds no signing key for tenant {tenant[:128]} in "
                f"{self.directory}; give it the tenant's key file (`sluice tenants add` makes "
                "one on the local stack)"
            ) from None
        return Signer.from_secret(secret, str(path), TENANT_REQUEST)


@dataclass(frozen=True)
class Codec:
    """How requests are written and outcomes read (the registry's Avro, or a test's)."""

    encode_request: Callable[[Mapping[str, Any]], bytes]
    decode: Callable[[str, bytes], dict[str, Any]]  # (logical topic, value) -> record

    @classmethod
    def avro(cls, serde: Any, catalog: Catalog) -> Codec:
        """Avro in the Confluent wire format, checked against each topic's schema."""
        readers = {topic: catalog.value_schema(topic) for topic in READ_TOPICS}

        def decode(topic: str, value: bytes) -> dict[str, Any]:
            return dict(serde.decode(value, readers[topic], topic=topic))

        return cls(serde.encoder(REQUESTS_TOPIC), decode)


class KafkaDispatcher:
    """Produces requests to ``inference.requests`` and resolves them from their outcomes.

    ``start`` (from the event loop that will call ``send``) positions the outcome
    consumer at the current end of every partition, or at ``now - window`` when
    ``cache`` keeps outcomes for retries, and starts the thread that polls it and the
    producer; ``stop`` ends it. Until the consumer is positioned and has read up to
    the end offsets taken at start, ``ready`` is False and ``send`` refuses, so no
    outcome can be missed.
    """

    def __init__(
        self,
        catalog: Catalog,
        producer: _Producer,
        consumer: _Consumer,
        codec: Codec,
        signers: Callable[[str], Signer],
        *,
        end_offsets: Callable[[list[str]], Mapping[TopicPartition, int]],
        cache: OutcomeCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.producer = producer
        self.consumer = consumer
        self.codec = codec
        self.signers = signers
        self.end_offsets = end_offsets
        # physical topic name -> logical, for the outcomes (and deltas) this replica reads.
        self._outcomes = {catalog.physical(t): t for t in READ_TOPICS}
        self._requests_topic = catalog.physical(REQUESTS_TOPIC)
        # Changed on the event loop only; the polling thread only asks whether an id is in it
        # (a single dict lookup, atomic under the GIL) before handing an outcome over.
        self._pending: dict[str, list[_Waiter]] = {}
        self.cache = cache
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False
        # (topic, partition) -> the end offset taken at start, while not read up to it yet.
        self._catching_up: dict[tuple[str, int], int] = {}
        self._next_position_check = 0.0

    # -- life ------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read outcomes from now on (or the window's), and poll in a background thread."""
        self._loop = loop
        ends = {
            (tp.topic, tp.partition): offset
            for tp, offset in self.end_offsets(list(self._outcomes)).items()
        }
        missing = sorted(set(self._outcomes) - {topic for topic, _ in ends})
        if missing:
            raise ConfigurationError(
                f"the outcome topics {', '.join(missing)} do not exist: run `sluice schemas "
                "apply`, then start the gateway"
            )
        assignment = self._assignment(ends)
        self.consumer.assign(assignment)
        self._catching_up = {
            (tp.topic, tp.partition): ends[(tp.topic, tp.partition)]
            for tp in assignment
            if tp.offset < ends[(tp.topic, tp.partition)]
        }
        self._ready = not self._catching_up
        if self._catching_up:
            log.info("reading the outcomes of the last %.0f s before serving", self._window_s())
        self._thread = threading.Thread(target=self._run, name="gateway-replies", daemon=True)
        self._thread.start()

    def _window_s(self) -> float:
        return self.cache.window_ms / 1000 if self.cache is not None else 0.0

    def _assignment(self, ends: Mapping[tuple[str, int], int]) -> list[TopicPartition]:
        """Every partition at its end offset, or at the offset of ``now - window``."""
        if self.cache is None or self.cache.window_ms <= 0:
            return [TopicPartition(topic, p, offset) for (topic, p), offset in ends.items()]
        since_ms = int(self._clock() * 1000) - self.cache.window_ms
        found = self.consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for topic, p in ends], _OFFSETS_TIMEOUT_S
        )
        failed = [tp for tp in found if tp.error is not None]
        if failed:
            raise DispatchError(
                f"cannot find the offsets of the last {self._window_s():.0f} s on "
                f"{failed[0].topic}: {failed[0].error}; check the cluster, then start again"
            )
        return [_start_at(tp, ends[(tp.topic, tp.partition)]) for tp in found]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling, deliver what the producer holds, close the consumer."""
        self._ready = False
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.producer.flush(timeout_s)
        self.consumer.close()

    def ready(self) -> bool:
        """True once outcomes are read up to the end offsets taken at start (until ``stop``)."""
        return self._ready and (self._thread is None or self._thread.is_alive())

    # -- sending ---------------------------------------------------------------------------
    async def send(
        self,
        request: InferenceRequest,
        deadline: float,
        *,
        idempotent: bool = False,
        on_chunk: ChunkListener | None = None,
    ) -> Reply:
        """Produce ``request``, signed by its tenant; its outcome, or TimeoutError at ``deadline``.

        ``idempotent``: the request id is derived from an ``Idempotency-Key``, so it may be
        a retry. Its outcome is then taken from the cache when there, and a
        ``duplicate_request`` block (the retry's own copy, refused) never answers it.
        ``NoSigningKeyError`` when the gateway cannot sign for the request's tenant.
        ``on_chunk``: called with each chunk of the request read on ``inference.chunks``
        while it waits (a request with ``stream`` set).
        """
        if not self.ready():
            raise DispatchError("the gateway is not reading outcomes (starting or stopping)")
        signer = self.signers(request.tenant_id)
        loop = asyncio.get_running_loop()
        request_id = request.request_id
        waiter = _Waiter(loop.create_future(), request.tenant_id, idempotent, on_chunk)
        waiters = self._pending.setdefault(request_id, [])
        # A retry while this replica still waits on the same id: the first copy is enough.
        produced_already = idempotent and bool(waiters)
        # Registered before the cache is looked at and before producing, so that an outcome
        # read meanwhile is either in the cache or handed to this waiter.
        waiters.append(waiter)
        GATEWAY_PENDING.set(len(self._pending))
        try:
            cached = self._cached_reply(request) if idempotent else None
            if cached is not None:
                return cached
            if not produced_already:
                self._produce(request, signer)
            return await asyncio.wait_for(waiter.future, max(0.0, deadline - time.monotonic()))
        finally:
            self._forget(request_id, waiter)

    def produces(self, request: InferenceRequest, *, idempotent: bool = False) -> bool:
        """Whether ``send`` would produce ``request``: not a retry joining its original.

        Answered as ``send`` decides, so it holds when ``send`` starts on the same turn of
        the event loop: a retry whose id this replica waits on, or whose outcome is cached.
        """
        if not idempotent:
            return True
        if self._pending.get(request.request_id):
            return False
        return self._cached_reply(request) is None

    def _produce(self, request: InferenceRequest, signer: Signer) -> None:
        value = self.codec.encode_request(request.to_avro())
        key = request.request_id.encode("utf-8")
        # Over the logical topic, the key and the exact bytes: what guard verifies.
        headers = signer.headers(REQUESTS_TOPIC, key, value)
        try:
            self.producer.produce(
                self._requests_topic,
                value=value,
                key=key,
                headers=kafka.kafka_headers(headers),
                on_delivery=self._delivered(request.request_id),
            )
        except BufferError:
            raise DispatchError("the producer's queue is full") from None

    def _cached_reply(self, request: InferenceRequest) -> Reply | None:
        """The original's outcome of ``request`` from the cache, if this replica read it."""
        if self.cache is None:
            return None
        for record in self.cache.get(request.request_id):
            try:
                reply = self._reply(record.topic, record.value)
            except (RecordError, ValueError, KeyError, TypeError):
                continue  # logged when it was read, if it was someone's request
            if _answers(reply, request.request_id, request.tenant_id, idempotent=True):
                return reply
        return None

    def _delivered(self, request_id: str) -> Callable[[KafkaError | None, Message | None], None]:
        def delivered(error: KafkaError | None, _message: Message | None) -> None:
            if error is not None:
                log.warning("a request was not delivered: %s", error.str())
                self._settle(request_id, DispatchError("Kafka did not accept the request"))

        return delivered

    def _forget(self, request_id: str, waiter: _Waiter) -> None:
        waiters = self._pending.get(request_id)
        if waiters is not None:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                del self._pending[request_id]
        GATEWAY_PENDING.set(len(self._pending))

    # -- replies ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.producer.poll(0)  # delivery reports
                message = self.consumer.poll(_POLL_S)
                if message is not None:
                    self.handle(message)
                if self._catching_up:
                    self._caught_up(message)
            except Exception:  # one bad poll must not end every caller's wait
                log.exception("reading outcomes failed; continuing")
                time.sleep(_POLL_S)

    def _caught_up(self, message: Message | None) -> None:
        """Strike off the partitions read up to their end offset taken at start."""
        if message is not None:
            partition = (message.topic() or "", message.partition() or 0)
            if _reaches(message, self._catching_up.get(partition, 0)):
                self._catching_up.pop(partition, None)
        now = time.monotonic()
        if self._catching_up and (message is None or now >= self._next_position_check):
            # The position tells, past transaction markers included (the end offset counts
            # them); asked when idle, and now and then under a steady flow of records.
            self._next_position_check = now + _POSITION_CHECK_S
            positions = self.consumer.position(
                [TopicPartition(topic, p) for topic, p in self._catching_up]
            )
            for tp in positions:
                end = self._catching_up.get((tp.topic, tp.partition))
                if end is not None and (tp.offset or 0) >= end:
                    self._catching_up.pop((tp.topic, tp.partition), None)
        if not self._catching_up:
            log.info("outcomes of the window read; serving")
            self._ready = True

    def handle(self, message: Message) -> None:
        """Keep ``message`` for retries if it may be one's; resolve its pending request, if ours."""
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("outcome consumer: %s", error.str())
            return
        raw_key = message.key()
        request_id = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else None
        if request_id is None:
            return
        topic = self._outcomes.get(message.topic() or "")
        value = message.value()
        if topic is None or not isinstance(value, bytes):
            return
        if topic == CHUNKS_TOPIC:
            self._chunk(request_id, value)
            return
        if self.cache is not None and is_derived(request_id):
            self.cache.put(request_id, topic, value, _timestamp_ms(message))
        # Most outcomes are other replicas' requests: skipped on the key, never decoded.
        if not self._pending.get(request_id):
            return
        try:
            reply = self._reply(topic, value)
        except (RecordError, ValueError, KeyError, TypeError) as exc:
            # Its writer's problem (the pipeline dead-letters such records); this caller times out.
            log.warning("an outcome on %s could not be read: %s", topic, type(exc).__name__)
            return
        if _request_id_of(reply) != request_id:
            log.warning("an outcome on %s has a key that is not its request id; skipped", topic)
            return
        self._settle(request_id, reply)

    def _chunk(self, request_id: str, value: bytes) -> None:
        """Hand a delta to the calls streaming its request (skipped undecoded when none)."""
        if not any(w.on_chunk is not None for w in self._pending.get(request_id, ())):
            return
        try:
            chunk = InferenceChunk.from_avro(self.codec.decode(CHUNKS_TOPIC, value))
        except (RecordError, ValueError, KeyError, TypeError) as exc:
            log.warning("a chunk could not be read: %s", type(exc).__name__)
            return
        if chunk.request_id != request_id:
            log.warning("a chunk has a key that is not its request id; skipped")
            return
        loop = self._loop
        if loop is None:
            return

        def deliver() -> None:
            for waiter in list(self._pending.get(request_id, ())):
                # Another tenant's chunk under the same id is not the caller's.
                if (
                    waiter.on_chunk is not None
                    and waiter.tenant == chunk.tenant_id
                    and not waiter.future.done()
                ):
                    waiter.on_chunk(chunk)

        loop.call_soon_threadsafe(deliver)

    def _reply(self, topic: str, value: bytes) -> Reply:
        record = self.codec.decode(topic, value)
        if topic == RESULTS_TOPIC:
            return Completed(InferenceResult.from_avro(record))
        return Blocked(InferenceRequest.from_avro(record))

    def _settle(self, request_id: str, outcome: Reply | BaseException) -> None:
        """Complete the futures waiting on the request on their event loop (from the thread)."""
        loop = self._loop
        if loop is None:
            return

        def settle() -> None:
            for waiter in list(self._pending.get(request_id, ())):
                if waiter.future.done():
                    continue  # timed out or cancelled meanwhile, or already answered
                if isinstance(outcome, BaseException):
                    waiter.future.set_exception(outcome)
                elif _answers(outcome, request_id, waiter.tenant, idempotent=waiter.idempotent):
                    waiter.future.set_result(outcome)

        loop.call_soon_threadsafe(settle)


def consumer_group(settings: Settings) -> str:
    """The outcome consumer's group: ``<group prefix>.gateway``, like a processor's."""
    return f"{settings.runner.group_prefix}.gateway"


def _request_id_of(reply: Reply) -> str:
    return reply.result.request_id if isinstance(reply, Completed) else reply.request.request_id


def _answers(reply: Reply, request_id: str, tenant: str, *, idempotent: bool) -> bool:
    """Whether ``reply`` is the outcome of the caller's request.

    Another tenant's record under the same id is not (ids are chosen by producers).
    For an idempotent request, a ``duplicate_request`` block is the refusal of a retry's
    copy, not the outcome: the original's result or block is.
    """
    if isinstance(reply, Completed):
        return reply.result.request_id == request_id and reply.result.tenant_id == tenant
    if reply.request.request_id != request_id or reply.request.tenant_id != tenant:
        return False
    guard = reply.request.guard
    return not (idempotent and guard is not None and guard.reason == DUPLICATE_REQUEST)


def _reaches(message: Message, end: int) -> bool:
    """Whether ``message`` is its partition's end of file, or its record before ``end``."""
    error = message.error()
    if error is not None:
        return bool(error.code() == KafkaError._PARTITION_EOF)
    return (message.offset() or 0) + 1 >= end


def _timestamp_ms(message: Message) -> int | None:
    kind, timestamp = message.timestamp()
    return timestamp if kind != TIMESTAMP_NOT_AVAILABLE and timestamp > 0 else None


def _start_at(found: TopicPartition, end: int) -> TopicPartition:
    """Where to start a partition: the offset found for ``now - window``, else its end.

    ``offsets_for_times`` answers -1 when no record is that recent.
    """
    offset = found.offset if found.offset >= 0 else end
    return TopicPartition(found.topic, found.partition, min(offset, end))


def from_settings(
    settings: Settings,
    catalog: Catalog,
    signers: Callable[[str], Signer],
    *,
    idempotency_window_s: float = 0.0,
    idempotency_max_entries: int = 100_000,
) -> KafkaDispatcher:
    """A dispatcher on the configured cluster and schema registry.

    With an idempotency window, it keeps the outcomes of retryable requests that long
    and reads that much of the outcome topics at start (``KafkaDispatcher.start``).
    """
    from streams.contracts.serde import AvroSerde  # noqa: PLC0415 (only when serving)

    serde = AvroSerde(kafka.registry(settings), catalog)
    consumer = kafka.consumer(
        settings,
        # Partitions are assigned, never subscribed, and nothing is committed: each replica
        # reads from the end at start. The group id is required by librdkafka only; it is
        # the one schemas/acls.yaml grants the gateway (`{group}.gateway`).
        consumer_group(settings),
        **{"enable.partition.eof": False, "auto.offset.reset": "latest"},
    )
    producer = kafka.producer(settings, **{"linger.ms": 1})
    return KafkaDispatcher(
        catalog,
        producer,
        consumer,
        Codec.avro(serde, catalog),
        signers,
        end_offsets=lambda topics: kafka.end_offsets(consumer, topics),
        cache=OutcomeCache(window_s=idempotency_window_s, max_entries=idempotency_max_entries),
    )
