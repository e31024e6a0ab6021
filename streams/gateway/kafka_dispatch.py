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
* **Deadlines.** A request without an outcome by its deadline raises
  ``TimeoutError`` and is forgotten; a late outcome is then skipped.

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

from confluent_kafka import KafkaError, Message, TopicPartition

from streams.contracts.catalog import Catalog
from streams.contracts.records import InferenceRequest, InferenceResult
from streams.errors import ConfigurationError, RecordError
from streams.gateway.dispatch import Blocked, Completed, DispatchError, NoSigningKeyError, Reply
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
_POLL_S = 0.1


class _Producer(Protocol):
    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


class _Consumer(Protocol):
    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def poll(self, timeout: float) -> Message | None: ...

    def close(self) -> None: ...


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
        readers = {topic: catalog.value_schema(topic) for topic in OUTCOME_TOPICS}

        def decode(topic: str, value: bytes) -> dict[str, Any]:
            return dict(serde.decode(value, readers[topic], topic=topic))

        return cls(serde.encoder(REQUESTS_TOPIC), decode)


class KafkaDispatcher:
    """Produces requests to ``inference.requests`` and resolves them from their outcomes.

    ``start`` (from the event loop that will call ``send``) positions the outcome
    consumer at the current end of every partition and starts the thread that polls
    it and the producer; ``stop`` ends it. Until ``start`` has positioned the
    consumer, ``ready`` is False and ``send`` refuses, so no outcome can be missed.
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
    ) -> None:
        self.catalog = catalog
        self.producer = producer
        self.consumer = consumer
        self.codec = codec
        self.signers = signers
        self.end_offsets = end_offsets
        # physical topic name -> logical, for the outcomes this replica reads.
        self._outcomes = {catalog.physical(t): t for t in OUTCOME_TOPICS}
        self._requests_topic = catalog.physical(REQUESTS_TOPIC)
        # Changed on the event loop only; the polling thread only asks whether an id is in it
        # (a single dict lookup, atomic under the GIL) before handing an outcome over.
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False

    # -- life ------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read outcomes from now on, and poll in a background thread."""
        self._loop = loop
        ends = self.end_offsets(list(self._outcomes))
        missing = sorted(set(self._outcomes) - {tp.topic for tp in ends})
        if missing:
            raise ConfigurationError(
                f"the outcome topics {', '.join(missing)} do not exist: run `sluice schemas "
                "apply`, then start the gateway"
            )
        self.consumer.assign(
            [TopicPartition(tp.topic, tp.partition, off) for tp, off in ends.items()]
        )
        self._ready = True
        self._thread = threading.Thread(target=self._run, name="gateway-replies", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling, deliver what the producer holds, close the consumer."""
        self._ready = False
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.producer.flush(timeout_s)
        self.consumer.close()

    def ready(self) -> bool:
        """True once outcomes are being read (and until ``stop``)."""
        return self._ready and (self._thread is None or self._thread.is_alive())

    # -- sending ---------------------------------------------------------------------------
    async def send(self, request: InferenceRequest, deadline: float) -> Reply:
        """Produce ``request``, signed by its tenant; its outcome, or TimeoutError at ``deadline``.

        ``NoSigningKeyError`` when the gateway cannot sign for the request's tenant.
        """
        if not self.ready():
            raise DispatchError("the gateway is not reading outcomes (starting or stopping)")
        signer = self.signers(request.tenant_id)
        loop = asyncio.get_running_loop()
        value = self.codec.encode_request(request.to_avro())
        key = request.request_id.encode("utf-8")
        # Over the logical topic, the key and the exact bytes: what guard verifies.
        headers = signer.headers(REQUESTS_TOPIC, key, value)
        future: asyncio.Future[Reply] = loop.create_future()
        # Registered before it is produced, so that no outcome can arrive unexpected.
        self._pending[request.request_id] = future
        GATEWAY_PENDING.set(len(self._pending))
        try:
            self.producer.produce(
                self._requests_topic,
                value=value,
                key=key,
                headers=kafka.kafka_headers(headers),
                on_delivery=self._delivered(request.request_id),
            )
        except BufferError:
            self._forget(request.request_id)
            raise DispatchError("the producer's queue is full") from None
        except Exception:
            self._forget(request.request_id)
            raise
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        finally:
            self._forget(request.request_id)

    def _delivered(self, request_id: str) -> Callable[[KafkaError | None, Message | None], None]:
        def delivered(error: KafkaError | None, _message: Message | None) -> None:
            if error is not None:
                log.warning("a request was not delivered: %s", error.str())
                self._settle(request_id, DispatchError("Kafka did not accept the request"))

        return delivered

    def _forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)
        GATEWAY_PENDING.set(len(self._pending))

    # -- replies ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.producer.poll(0)  # delivery reports
                message = self.consumer.poll(_POLL_S)
                if message is not None:
                    self.handle(message)
            except Exception:  # one bad poll must not end every caller's wait
                log.exception("reading outcomes failed; continuing")
                time.sleep(_POLL_S)

    def handle(self, message: Message) -> None:
        """Resolve the pending request ``message`` is the outcome of, if it is one of ours."""
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("outcome consumer: %s", error.str())
            return
        raw_key = message.key()
        request_id = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else None
        # Most outcomes are other replicas' requests: skipped on the key, never decoded.
        if request_id is None or request_id not in self._pending:
            return
        topic = self._outcomes.get(message.topic() or "")
        value = message.value()
        if topic is None or not isinstance(value, bytes):
            return
        try:
            reply = self._reply(topic, value)
        except (RecordError, ValueError, KeyError, TypeError) as exc:
            # Its writer's problem (the pipeline dead-letters such records); this caller times out.
            log.warning("an outcome on %s could not be read: %s", topic, type(exc).__name__)
            return
        if self._request_id_of(reply) != request_id:
            log.warning("an outcome on %s has a key that is not its request id; skipped", topic)
            return
        self._settle(request_id, reply)

    def _reply(self, topic: str, value: bytes) -> Reply:
        record = self.codec.decode(topic, value)
        if topic == RESULTS_TOPIC:
            return Completed(InferenceResult.from_avro(record))
        return Blocked(InferenceRequest.from_avro(record))

    @staticmethod
    def _request_id_of(reply: Reply) -> str:
        return reply.result.request_id if isinstance(reply, Completed) else reply.request.request_id

    def _settle(self, request_id: str, outcome: Reply | BaseException) -> None:
        """Complete the request's future on its event loop (from the polling thread)."""
        loop = self._loop
        if loop is None:
            return

        def settle() -> None:
            future = self._pending.get(request_id)
            if future is None or future.done():
                return  # timed out or cancelled meanwhile, or already answered
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        loop.call_soon_threadsafe(settle)


def consumer_group(settings: Settings) -> str:
    """The outcome consumer's group: ``<group prefix>.gateway``, like a processor's."""
    return f"{settings.runner.group_prefix}.gateway"


def from_settings(
    settings: Settings, catalog: Catalog, signers: Callable[[str], Signer]
) -> KafkaDispatcher:
    """A dispatcher on the configured cluster and schema registry."""
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
    )
