"""The Sluice SDK: produce dataset records and inference requests with the right contract.

    from streams.sdk.client import SluiceClient
    from streams.contracts.records import InferenceRequest

    with SluiceClient(tenant="acme", signing_key=key) as client:
        client.send_record("support_tickets", {"ticket_id": "TCK-00000001", ...})
        client.send_request(InferenceRequest.new("acme", "minilm", "hello"))

Records go out as Avro in the Confluent wire format with the schema registered
for the topic, from an idempotent producer (acks=all), with a W3C
``traceparent`` header when tracing is configured, so the request's trace
starts here.

Inference requests are signed with the tenant's Ed25519 private key (scheme
``TENANT_REQUEST``: the logical topic, the record key and the exact value bytes):
guard takes the tenant from the key that signed a request, never from its
``tenant_id``, and dead-letters what no registered tenant signed. The tenant and key
come from the constructor or from ``SLUICE_TENANT__ID`` and
``SLUICE_TENANT__SIGNING_KEY``; a client sends requests for its own tenant only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, Message
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from pydantic import SecretStr

from streams.contracts.catalog import Catalog, catalog_for
from streams.contracts.records import InferenceRequest, RawEvent, new_id, utcnow
from streams.contracts.serde import AvroSerde
from streams.errors import ConfigurationError, SluiceError
from streams.runtime import kafka, tracing
from streams.runtime.signing import TENANT_REQUEST, Signer
from streams.runtime.tracing import setup_tracing
from streams.settings import Settings, get_settings

REQUESTS_TOPIC = "inference.requests"


class DeliveryError(SluiceError):
    """Kafka did not accept some records; the message says how many and why."""


SIGNING_KEY_SETTING = "SLUICE_TENANT__SIGNING_KEY"


class TenantMismatchError(ConfigurationError):
    """A request names another tenant than the one this client signs for."""


class SluiceClient:
    """Produces to Sluice topics; thread-safe, flushes on ``close``.

    ``tenant`` and ``signing_key`` (default: ``SLUICE_TENANT__ID`` and
    ``SLUICE_TENANT__SIGNING_KEY``) are needed only to send inference requests.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        catalog: Catalog | None = None,
        *,
        source: str = "sdk",
        tenant: str | None = None,
        signing_key: SecretStr | str | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.settings = settings or get_settings()
        self.tenant = tenant if tenant is not None else self.settings.tenant.id
        key = signing_key if signing_key is not None else self.settings.tenant.signing_key
        secret = key.get_secret_value() if isinstance(key, SecretStr) else key
        # Built now, so a malformed key fails here rather than at the first request.
        self._signer = (
            Signer.from_secret(secret, SIGNING_KEY_SETTING, TENANT_REQUEST) if secret else None
        )
        # With SLUICE_TELEMETRY__EXPORTER set, requests start their traces here (an
        # application that configured OpenTelemetry itself keeps its own provider).
        setup_tracing("sluice-sdk", self.settings)
        self.catalog = catalog or catalog_for(self.settings)
        self.serde = AvroSerde(kafka.registry(self.settings), self.catalog)
        self.producer = kafka.producer(self.settings, **producer_overrides)
        self.source = source
        self._encoders: dict[str, Callable[[Mapping[str, Any]], bytes]] = {}
        self._tracer = trace.get_tracer("sluice.client")
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None

    def _encode(self, topic: str, value: Mapping[str, Any]) -> bytes:
        encoder = self._encoders.get(topic)
        if encoder is None:
            encoder = self._encoders[topic] = self.serde.encoder(topic)
        return encoder(value)

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        with self._lock:
            if error is None:
                self.delivered += 1
            else:
                self.failed += 1
                self.last_error = error.str()

    def _send(
        self, topic: str, value: bytes, key: str | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """Produce to logical ``topic`` (its cluster name carries the deployment's prefix)."""
        topic = self.catalog.physical(topic)
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=kafka.kafka_headers(headers),
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self.producer.poll(0.1)  # queue full: wait for deliveries, never drop
        self.producer.poll(0)

    def _traced_headers(self, topic: str, attributes: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        span = self._tracer.start_span(
            f"send {topic}",
            kind=SpanKind.PRODUCER,
            attributes=tracing.kafka_attributes(operation="send", destination=topic, **attributes),
        )
        headers = tracing.span_context_headers(span) if span.get_span_context().is_valid else []
        span.end()
        return headers

    def send_record(
        self,
        dataset: str,
        record: Mapping[str, Any],
        *,
        key: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Produce one record (a JSON-able dict) to ``raw.<dataset>``; returns its event id."""
        if key is None:
            value = record.get(self.catalog.dataset(dataset).contract.key_field)
            key = None if value is None else str(value)
        payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
        return self.send_payload(dataset, payload, key=key, attributes=attributes)

    def send_payload(
        self,
        dataset: str,
        payload: str,
        *,
        key: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Produce a record given as JSON text, unparsed: validate judges it, the DLQ keeps it."""
        spec = self.catalog.dataset(dataset)
        event = RawEvent(
            event_id=new_id(),
            dataset=dataset,
            source=self.source,
            produced_at=utcnow(),
            payload=payload,
            attributes=dict(attributes or {}),
        )
        headers = self._traced_headers(spec.raw_topic, {"sluice.event_id": event.event_id})
        self._send(spec.raw_topic, self._encode(spec.raw_topic, event.to_avro()), key, headers)
        return event.event_id

    def send_bytes(self, topic: str, value: bytes, *, key: str | None = None) -> None:
        """Produce bytes as they are (what a generic producer or Kafka Connect writes)."""
        self.catalog.topic(topic)
        self._send(topic, value, key, self._traced_headers(topic, {}))

    def send_request(self, request: InferenceRequest) -> str:
        """Produce one inference request to ``inference.requests``, signed; returns its id."""
        signer = self._request_signer(request)
        value = self._encode(REQUESTS_TOPIC, request.to_avro())
        headers = self._traced_headers(
            REQUESTS_TOPIC,
            {"gen_ai.request.model": request.model, "sluice.request_id": request.request_id},
        )
        # Over the logical topic, the key and the exact bytes sent: guard checks the same.
        headers += signer.headers(REQUESTS_TOPIC, request.request_id.encode("utf-8"), value)
        self._send(REQUESTS_TOPIC, value, request.request_id, headers)
        return request.request_id

    def _request_signer(self, request: InferenceRequest) -> Signer:
        """The signer of this client's tenant, which must be the request's."""
        if self.tenant is None or self._signer is None:
            raise ConfigurationError(
                "inference requests are signed with their tenant's key: set SLUICE_TENANT__ID "
                f"and {SIGNING_KEY_SETTING} (or pass tenant= and signing_key= to SluiceClient); "
                "`sluice tenants add <id>` makes a key for the local stack"
            )
        if request.tenant_id != self.tenant:
            raise TenantMismatchError(
                f"this client signs for tenant {self.tenant!r}, not for the request's tenant: "
                "use a client with that tenant's own key (guard would block the request as "
                "tenant_mismatch)"
            )
        return self._signer

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until everything sent so far is acknowledged; raise if any record failed."""
        remaining = self.producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} records still unacknowledged after {timeout:.0f}s")
        if self.failed:
            raise DeliveryError(f"{self.failed} records were not delivered: {self.last_error}")

    def close(self) -> None:
        """Flush the producer, and the spans this process recorded (they may be Sluice's)."""
        self.flush()
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            provider.force_flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.producer.flush(10)
