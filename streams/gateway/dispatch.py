"""What the HTTP side asks of the pipeline: send a request, get its one outcome.

The app depends on this protocol only, so its unit tests use an in-memory
dispatcher and the Kafka one (``streams.gateway.kafka_dispatch``) can change
without touching the HTTP side.

A request's outcome is one of two records the pipeline writes:

* ``Completed``: its ``InferenceResult`` (``inference.results``, after guard's
  output side), ok or error;
* ``Blocked``: guard refused it on the way in (``inference.requests.blocked``,
  with the verdict that blocked it); it never reached a model and has no result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from streams.contracts.records import InferenceChunk, InferenceRequest, InferenceResult
from streams.errors import SluiceError


class DispatchError(SluiceError):
    """A request could not be handed to the pipeline (Kafka refused it); the caller may retry."""


class NoSigningKeyError(DispatchError):
    """The gateway holds no signing key for a tenant it has an API key for (a deployment fault)."""


@dataclass(frozen=True)
class Completed:
    """The request reached the model side: its result (status ok or error)."""

    result: InferenceResult


@dataclass(frozen=True)
class Blocked:
    """guard refused the request before any model saw it (``request.guard`` says why)."""

    request: InferenceRequest


Reply = Completed | Blocked


class Dispatcher(Protocol):
    """Sends requests into the pipeline and waits for their outcomes."""

    async def send(
        self,
        request: InferenceRequest,
        deadline: float,
        *,
        idempotent: bool = False,
        on_chunk: Callable[[InferenceChunk], None] | None = None,
    ) -> Reply:
        """Produce ``request`` and wait for its outcome until ``deadline``.

        ``on_chunk``: called on the event loop with each redacted delta of the request
        (``inference.chunks``) that arrives while it waits; chunks may repeat.

        ``idempotent``: its id comes from an ``Idempotency-Key`` and it may be a retry,
        answered by the first call's outcome (``streams.gateway.idempotency``).

        ``deadline`` is on ``time.monotonic()``'s clock. Past it, raise
        ``TimeoutError`` (the caller answers 504); a caller that gives up earlier
        cancels the wait, and the dispatcher forgets the request. A request that
        could not be produced at all raises ``DispatchError``.
        """
        ...

    def produces(self, request: InferenceRequest, *, idempotent: bool = False) -> bool:
        """Whether ``send`` would produce ``request`` now, rather than join what is there.

        False for an idempotent retry whose original this dispatcher still waits on, or
        whose outcome it holds: such a send takes no pipeline slot. True when unsure.
        """
        ...

    def ready(self) -> bool:
        """True when requests can be sent and their outcomes received (``/readyz``)."""
        ...
