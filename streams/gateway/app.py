"""The gateway's HTTP application: OpenAI's routes on Starlette, the pipeline behind a Dispatcher.

Routes:

* ``GET /healthz`` (the process is up), ``GET /readyz`` (it can reach the pipeline),
  ``GET /metrics`` (Prometheus): no key;
* ``GET /v1/models``, ``GET /v1/models/{model}``, ``POST /v1/embeddings``,
  ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream`` included):
  ``Authorization: Bearer <API key>``.

Every refusal is in OpenAI's error format, with OpenAI's status codes: 400 (with
the parameter), 401, 404 (``model_not_found``), 413 (body over the limit), 429
(``rate_limit_exceeded``: a rate limit of the key or the tenant, or the tenant's queue
for pipeline slots is full, with ``Retry-After``;
``insufficient_quota``: the tenant's budget), 409 (``idempotency_key_reused``: an
``Idempotency-Key`` sent again with another body), 503 (pipeline unavailable), 504 (no
outcome before the deadline). Requests enter the pipeline in weighted fair order across
tenants (``streams.gateway.fair_queue``). Rate limits are checked before anything reaches Kafka
(``streams.gateway.rate_limiting``); every answer to a limited caller carries OpenAI's
``x-ratelimit-*`` headers. An unexpected error is a 500 whose message says nothing of
the request; the log has the traceback.

A chat completion or a (single-prompt) completion with ``stream`` is streamed token by
token: the request goes out with ``stream`` set, and the redacted deltas guard-stream
writes come back as they are made (``streams.gateway.streaming``), with an SSE comment
every ``stream_keepalive_s`` while a started stream is silent.

A call with an ``Idempotency-Key`` header may be retried, through any key of the
tenant and any replica, without being served or billed twice
(``streams.gateway.idempotency``).

``create_app`` builds the app from what it needs (catalog, keys, dispatcher,
settings); nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from streams.contracts.records import InferenceChunk, InferenceRequest, InferenceResult
from streams.gateway.dispatch import Blocked, Dispatcher, DispatchError, NoSigningKeyError, Reply
from streams.gateway.errors import (
    INVALID_REQUEST,
    NOT_FOUND,
    SERVER,
    TIMEOUT,
    OpenAIError,
    invalid,
    model_not_found,
    unauthorized,
)
from streams.gateway.fair_queue import FairScheduler, QueueFullError
from streams.gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from streams.gateway.idempotency import KeyMemory, fingerprint, parse_key, request_ids
from streams.gateway.keys import ApiKeyRecord
from streams.gateway.mapping import (
    CACHE_HEADER,
    Caller,
    cache_header,
    chat_prompt,
    chat_response,
    completions_response,
    embeddings_response,
    model_entry,
    model_for,
    models_response,
    requests_for,
    result_of,
    token_limit,
)
from streams.gateway.metrics import GATEWAY_AUTH_FAILURES, GATEWAY_LATENCY, GATEWAY_REQUESTS
from streams.gateway.openai_api import ChatBody, CompletionsBody, EmbeddingsBody, parse_body
from streams.gateway.rate_limiting import RATE_LIMIT_EXCEEDED, GatewayRateLimits, call_tokens
from streams.gateway.settings import GatewaySettings
from streams.gateway.stream_formats import ChatFormat, StreamFormat, TextFormat
from streams.gateway.streaming import first_event, relay
from streams.llm.model_catalog import ModelCatalog
from streams.llm.rate_limits import RateLimiter, RateLimits

log = logging.getLogger("sluice.gateway")

_BEARER = "bearer "
# Where a route leaves the x-ratelimit-* headers for whatever answer the call gets.
_RATE_HEADERS = "rate_limit_headers"


class Authenticator(Protocol):
    """Finds the live API key a client presented (``streams.gateway.key_store.LiveKeys``)."""

    def authenticate(self, presented: str) -> tuple[str, ApiKeyRecord] | None:
        """The key's id and record, or None when it is not a live key."""
        ...


@dataclass
class InFlight:
    """Requests this replica is waiting on (changed on the event loop only)."""

    count: int = 0


@dataclass(frozen=True)
class Gateway:
    """What the routes need, built once and handed in."""

    catalog: ModelCatalog
    keys: Authenticator
    dispatcher: Dispatcher
    settings: GatewaySettings
    rate_limits: GatewayRateLimits = field(
        default_factory=lambda: GatewayRateLimits(RateLimits(), RateLimiter())
    )
    in_flight: InFlight = field(default_factory=InFlight)
    idempotency_keys: KeyMemory = field(
        default_factory=lambda: KeyMemory(window_s=600.0, max_entries=100_000)
    )
    fair_queue: FairScheduler = field(
        default_factory=lambda: FairScheduler(concurrency=64, max_queued_per_tenant=1024)
    )

    # -- the routes ---------------------------------------------------------------------
    async def healthz(self, _request: Request) -> Response:
        """The process is up."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        """Ready when the dispatcher can reach the pipeline; 503 otherwise."""
        ready = self.dispatcher.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def metrics(self, _request: Request) -> Response:
        """Prometheus' text format, of every metric this process holds."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def list_models(self, request: Request) -> Response:
        """``GET /v1/models``."""
        self.caller(request)
        return JSONResponse(models_response(self.catalog))

    async def get_model(self, request: Request) -> Response:
        """``GET /v1/models/{model}``."""
        self.caller(request)
        name = str(request.path_params["model"])
        model = self.catalog.models.get(name)
        if model is None:
            raise model_not_found(name)
        return JSONResponse(model_entry(model))

    async def embeddings(self, request: Request) -> Response:
        """``POST /v1/embeddings``: one request per input, answered together."""
        caller = self.caller(request)
        raw = await self.json_body(request)
        body = parse_body(EmbeddingsBody, raw)
        model = model_for(self.catalog, body.model, "embeddings", "/v1/embeddings")
        self.check_count(body.input, "input")
        if body.dimensions is not None and body.dimensions != model.embedding_dims:
            raise invalid(
                f"The model `{model.name}` makes {model.embedding_dims}-dimensional embeddings "
                "only; leave dimensions out or set it to that.",
                "dimensions",
            )
        ids = self.idempotent_ids(request, caller, "/v1/embeddings", raw, len(body.input))
        requests = requests_for(caller, model, body.input, request_ids=ids)
        tokens = call_tokens(model, body.input, None)
        results = await self.serve(request, caller, requests, tokens, idempotent=ids is not None)
        return JSONResponse(
            embeddings_response(model.name, results, body.encoding_format),
            headers=cache_header(results),
        )

    async def completions(self, request: Request) -> Response:
        """``POST /v1/completions``: one request per prompt."""
        caller = self.caller(request)
        raw = await self.json_body(request)
        body = parse_body(CompletionsBody, raw)
        model = model_for(self.catalog, body.model, "text_completion", "/v1/completions")
        self.check_count(body.prompt, "prompt")
        if body.stream and len(body.prompt) > 1:
            # Each prompt is a request of its own, which guard may refuse after another
            # prompt's text has started streaming: that refusal could not be an HTTP error.
            raise invalid(
                "stream takes a single prompt; send one call per prompt, or call without stream.",
                "prompt",
            )
        limit = token_limit(model, body.max_tokens)
        ids = self.idempotent_ids(request, caller, "/v1/completions", raw, len(body.prompt))
        requests = requests_for(
            caller,
            model,
            body.prompt,
            max_tokens=limit,
            temperature=body.temperature,
            request_ids=ids,
        )
        tokens = call_tokens(model, body.prompt, limit)
        if body.stream:
            [record] = requests
            return await self.stream(
                request,
                caller,
                replace(record, stream=True),
                tokens,
                TextFormat(model.name, record.request_id, int(record.created_at.timestamp())),
                limit=limit,
                include_usage=_include_usage(body),
                idempotent=ids is not None,
            )
        results = await self.serve(request, caller, requests, tokens, idempotent=ids is not None)
        return JSONResponse(
            completions_response(model.name, results, limit), headers=cache_header(results)
        )

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions``: the conversation as one prompt; streamed on request."""
        caller = self.caller(request)
        raw = await self.json_body(request)
        body = parse_body(ChatBody, raw)
        model = model_for(self.catalog, body.model, "text_completion", "/v1/chat/completions")
        limit = token_limit(model, body.token_limit)
        prompt = chat_prompt(body.messages)
        ids = self.idempotent_ids(request, caller, "/v1/chat/completions", raw, 1)
        [request_record] = requests_for(
            caller, model, [prompt], max_tokens=limit, temperature=body.temperature, request_ids=ids
        )
        tokens = call_tokens(model, [prompt], limit)
        if body.stream:
            created = int(request_record.created_at.timestamp())
            return await self.stream(
                request,
                caller,
                replace(request_record, stream=True),
                tokens,
                ChatFormat(model.name, request_record.request_id, created),
                limit=limit,
                include_usage=_include_usage(body),
                idempotent=ids is not None,
            )
        [result] = await self.serve(
            request, caller, [request_record], tokens, idempotent=ids is not None
        )
        return JSONResponse(
            chat_response(model.name, result, limit), headers=cache_header([result])
        )

    async def stream(
        self,
        http: Request,
        caller: Caller,
        record: InferenceRequest,
        tokens: int,
        events: StreamFormat,
        *,
        limit: int,
        include_usage: bool,
        idempotent: bool,
    ) -> Response:
        """Stream a completion: its deltas as they come, closed by its stored result.

        ``events`` is the route's event format (chat's chunks, completions' text).

        The response starts with the first delta or with the outcome, whichever comes
        first. Deltas exist only for a request guard let through, and guard's refusal
        comes before any, so a refusal is still an HTTP error (which clients raise)
        rather than an event inside a stream; so is one of the gateway's own (429, 503).
        A model that does not stream gives no delta: its whole text comes with the
        outcome, in one delta, as for a non-streaming model. Once started, a silent
        stream gets a keep-alive comment every ``stream_keepalive_s``; before, nothing
        can be sent without committing the call to 200.
        """
        chunks: asyncio.Queue[InferenceChunk] = asyncio.Queue()

        async def outcome_of() -> InferenceResult:
            [result] = await self.serve(
                http, caller, [record], tokens, idempotent=idempotent, on_chunk=chunks.put_nowait
            )
            return result

        outcome = asyncio.ensure_future(outcome_of())
        try:
            first_chunk = await first_event(outcome, chunks)
        except BaseException:
            outcome.cancel()
            raise
        if first_chunk is None:
            result = outcome.result()
            whole = events.whole(result, limit, include_usage=include_usage)
            return StreamingResponse(
                _sse(whole), media_type="text/event-stream", headers=cache_header([result])
            )

        async def close() -> None:
            # The client went away mid-stream: stop waiting (serve releases what it holds).
            if not outcome.done():
                outcome.cancel()
                await asyncio.gather(outcome, return_exceptions=True)

        body = relay(
            events,
            limit,
            include_usage=include_usage,
            outcome=outcome,
            first_chunk=first_chunk,
            chunks=chunks,
            keepalive_s=self.settings.stream_keepalive_s,
            on_close=close,
        )
        # Deltas come only from a generation: the response cache answered nothing here.
        return StreamingResponse(
            body, media_type="text/event-stream", headers={CACHE_HEADER: "miss"}
        )

    # -- shared steps -------------------------------------------------------------------
    def caller(self, request: Request) -> Caller:
        """Who the Bearer key proves; 401 when there is none, or it is not live."""
        header = request.headers.get("authorization", "")
        if header[: len(_BEARER)].lower() != _BEARER:
            GATEWAY_AUTH_FAILURES.labels("missing").inc()
            raise unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'; "
                "`sluice keys create --tenant <tenant>` makes one."
            )
        found = self.keys.authenticate(header[len(_BEARER) :].strip())
        if found is None:
            GATEWAY_AUTH_FAILURES.labels("invalid").inc()
            # Never the key itself, nor which part of it was wrong.
            raise unauthorized("Incorrect API key provided, or the key was revoked.")
        key_id, record = found
        return Caller(key_id, record.tenant, record.user, record.priority, record.own_rate)

    async def json_body(self, request: Request) -> Any:
        """The JSON body, read up to ``max_body_bytes``; 413 beyond, 400 when not JSON."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise invalid("The Content-Length header is not a number.", None)
            if int(declared) > limit:
                raise _too_large(limit)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:  # a chunked body, or one longer than it declared
                raise _too_large(limit)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise invalid(
                "The request body is not valid JSON; send a JSON object with "
                "'Content-Type: application/json'.",
                None,
            ) from None

    def idempotent_ids(
        self, request: Request, caller: Caller, route: str, body: Any, count: int
    ) -> list[str] | None:
        """The call's request ids derived from its ``Idempotency-Key``; None without one.

        400 for a malformed key; 409 when this replica saw the key with another body.
        Called once the body is valid, so a refused first try does not bind the key.
        """
        key = parse_key(request.headers.get(IDEMPOTENCY_HEADER))
        if key is None:
            return None
        body_fingerprint = fingerprint(route, body)
        self.idempotency_keys.check(caller.tenant, key, body_fingerprint)
        return request_ids(caller.tenant, key, body_fingerprint, count)

    def check_count(self, texts: Sequence[str], param: str) -> None:
        """400 when a call carries more texts than ``max_inputs``."""
        if len(texts) > self.settings.max_inputs:
            raise invalid(
                f"{param} may hold at most {self.settings.max_inputs} items per call; split it.",
                param,
            )

    async def serve(
        self,
        http: Request,
        caller: Caller,
        requests: Sequence[InferenceRequest],
        tokens: int,
        *,
        idempotent: bool = False,
        on_chunk: Callable[[InferenceChunk], None] | None = None,
    ) -> list[InferenceResult]:
        """Admit the call under its rate limits, send every request and wait for all outcomes.

        ``on_chunk``: receives the redacted deltas of streamed requests (``stream``).
        ``tokens`` is the call's estimate (``rate_limiting.call_tokens``), corrected to
        the metered usage once the outcomes are in. ``idempotent``: the request ids come
        from an ``Idempotency-Key`` (a retry is answered by the first call's outcomes).
        Each request waits its turn for a pipeline slot (``fair_queue``). Past the
        deadline: 504; if none of the call's requests was produced by then, it costs no
        tokens.
        """
        if self.in_flight.count + len(requests) > self.settings.max_in_flight:
            raise OpenAIError(
                503,
                "The server is overloaded; retry shortly.",
                type=SERVER,
                code="overloaded",
            )
        # Before the rate limits: a call refused here is not charged.
        self.check_queue_room(caller, len(requests))
        # On the event loop, like every use of the limiter (it is not thread-safe).
        admission = self.rate_limits.admit(caller, tokens)
        setattr(http.state, _RATE_HEADERS, admission.headers)
        timeout = self.settings.request_timeout_s
        deadline = time.monotonic() + timeout
        produced = _Produced()
        self.in_flight.count += len(requests)
        waits = [
            asyncio.ensure_future(
                self.send_in_turn(caller, r, deadline, idempotent, produced, on_chunk=on_chunk)
            )
            for r in requests
        ]
        try:
            async with asyncio.timeout(timeout):
                replies = await asyncio.gather(*waits)
        except TimeoutError:
            if not produced.count:
                # Every request was still waiting for a slot: nothing reached Kafka.
                self.rate_limits.settle(admission, 0)
                raise OpenAIError(
                    504,
                    f"The server was too busy to start your request within {timeout:g}s; "
                    "retry later (nothing was served or billed).",
                    type=TIMEOUT,
                    code=TIMEOUT,
                ) from None
            # The requests may still be served and metered: the estimate stays charged.
            raise OpenAIError(
                504,
                f"No answer from the model within {timeout:g}s; retry later (the request may "
                "still be served and billed).",
                type=TIMEOUT,
                code=TIMEOUT,
            ) from None
        except NoSigningKeyError:
            self.rate_limits.settle(admission, 0)  # nothing was produced
            log.error("no signing key for a tenant with a live API key; see the gateway's settings")
            raise OpenAIError(
                500,
                "The gateway cannot sign requests for your tenant; tell its operator.",
                type=SERVER,
                code="tenant_not_served",
            ) from None
        except DispatchError:
            # The call failed as a whole: its requests are not waited on, and the client
            # is told to retry; charging their tokens too would count them twice.
            self.rate_limits.settle(admission, 0)
            raise OpenAIError(
                503,
                "The platform cannot take requests right now; retry shortly.",
                type=SERVER,
                code="service_unavailable",
            ) from None
        finally:
            # One failed send fails the call: the others stop waiting (and are forgotten,
            # or leave the fair queue unproduced).
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            self.in_flight.count -= len(requests)
        self.rate_limits.settle(admission, sum(_metered_tokens(reply) for reply in replies))
        return [result_of(reply) for reply in replies]

    def check_queue_room(self, caller: Caller, count: int) -> None:
        """429 when ``count`` more requests would overflow the tenant's queue on this replica.

        429 ``rate_limit_exceeded`` rather than 503: it is the tenant's own backlog that is
        full, not the server, and OpenAI's clients back off on a 429 by its Retry-After.
        """
        try:
            self.fair_queue.check_room(caller.tenant, count)
        except QueueFullError as full:
            raise OpenAIError(
                429,
                f"Your tenant already has {full.queued} requests waiting on this server "
                f"(at most {full.limit}); retry in {full.retry_after_s}s, or send fewer at once.",
                type="requests",  # as a requests-per-minute refusal is typed
                code=RATE_LIMIT_EXCEEDED,
                headers={
                    "retry-after": str(full.retry_after_s),
                    "retry-after-ms": str(full.retry_after_s * 1000),
                },
            ) from None

    async def send_in_turn(
        self,
        caller: Caller,
        request: InferenceRequest,
        deadline: float,
        idempotent: bool,
        produced: _Produced,
        *,
        on_chunk: Callable[[InferenceChunk], None] | None = None,
    ) -> Reply:
        """Send ``request`` once it has a pipeline slot; a retry that joins its original needs none.

        ``produces`` and ``send`` run on the same turn of the event loop (nothing is awaited
        between them), so the dispatcher's answer still holds when it sends.
        """
        if not self.dispatcher.produces(request, idempotent=idempotent):
            return await self._send(request, deadline, idempotent, on_chunk)
        await self.fair_queue.acquire(caller.tenant, caller.priority, deadline)
        held_from = time.monotonic()
        produced.count += 1
        try:
            return await self._send(request, deadline, idempotent, on_chunk)
        finally:
            self.fair_queue.release(time.monotonic() - held_from)

    async def _send(
        self,
        request: InferenceRequest,
        deadline: float,
        idempotent: bool,
        on_chunk: Callable[[InferenceChunk], None] | None,
    ) -> Reply:
        if on_chunk is None:
            return await self.dispatcher.send(request, deadline, idempotent=idempotent)
        return await self.dispatcher.send(
            request, deadline, idempotent=idempotent, on_chunk=on_chunk
        )


@dataclass
class _Produced:
    """How many of a call's requests got a pipeline slot (so were, or are being, produced)."""

    count: int = 0


def _metered_tokens(reply: Reply) -> int:
    """The tokens the pipeline metered for one outcome: none for a request guard blocked."""
    if isinstance(reply, Blocked):
        return 0
    return reply.result.input_tokens + reply.result.output_tokens


def _include_usage(body: ChatBody | CompletionsBody) -> bool:
    """Whether a streamed call asked for its usage (``stream_options.include_usage``)."""
    return body.stream_options is not None and body.stream_options.include_usage


def _too_large(limit: int) -> OpenAIError:
    return OpenAIError(
        413,
        f"The request body is larger than {limit} bytes; send less per call.",
        code="request_too_large",
    )


async def _sse(chunks: Sequence[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Server-sent events, as OpenAI streams them: one ``data:`` line each, then ``[DONE]``."""
    for chunk in chunks:
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


Handler = Callable[[Request], Awaitable[Response]]


def _answered(endpoint: str, handler: Handler) -> Handler:
    """``handler`` with OpenAI-format errors and the endpoint's metrics."""

    async def answer(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except OpenAIError as error:
            response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
        except Exception:
            log.exception("%s failed", endpoint)  # the traceback, never the body
            internal = OpenAIError(
                500, "The server had an error while processing your request.", type=SERVER
            )
            response = JSONResponse(internal.body(), status_code=500)
        # An admitted call's limits, on whatever its answer turned out to be.
        for name, value in getattr(request.state, _RATE_HEADERS, {}).items():
            response.headers.setdefault(name, value)
        GATEWAY_REQUESTS.labels(endpoint, str(response.status_code)).inc()
        GATEWAY_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        return response

    return answer


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods, in OpenAI's format."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "Unknown request URL; see GET /v1/models and the OpenAI API's routes."
    if status == 405:
        message = "This route does not take that HTTP method."
    error = OpenAIError(status, message, type=NOT_FOUND if status == 404 else INVALID_REQUEST)
    return JSONResponse(error.body(), status_code=status)


def create_app(
    catalog: ModelCatalog,
    keys: Authenticator,
    dispatcher: Dispatcher,
    settings: GatewaySettings,
    *,
    rate_limits: RateLimits | None = None,
    limiter: RateLimiter | None = None,
    lifespan: Callable[[Starlette], Any] | None = None,
) -> Starlette:
    """The gateway's ASGI application; ``lifespan`` starts and stops the dispatcher.

    ``rate_limits`` is ``rate_limits.yaml`` as loaded at start (None: no limits);
    ``limiter`` holds the buckets (a fresh one on the monotonic clock by default).
    """
    limits = GatewayRateLimits(rate_limits or RateLimits(), limiter or RateLimiter())
    key_memory = KeyMemory(
        window_s=settings.idempotency_window_s, max_entries=settings.idempotency_max_entries
    )
    fair_queue = FairScheduler(settings.pipeline_concurrency, settings.max_queued_per_tenant)
    gateway = Gateway(
        catalog,
        keys,
        dispatcher,
        settings,
        limits,
        idempotency_keys=key_memory,
        fair_queue=fair_queue,
    )
    routes = [
        ("/healthz", "healthz", gateway.healthz, "GET"),
        ("/readyz", "readyz", gateway.readyz, "GET"),
        ("/metrics", "metrics", gateway.metrics, "GET"),
        ("/v1/models", "models", gateway.list_models, "GET"),
        ("/v1/models/{model:path}", "models", gateway.get_model, "GET"),
        ("/v1/embeddings", "embeddings", gateway.embeddings, "POST"),
        ("/v1/completions", "completions", gateway.completions, "POST"),
        ("/v1/chat/completions", "chat_completions", gateway.chat_completions, "POST"),
    ]
    return Starlette(
        routes=[
            Route(path, _answered(name, handler), methods=[method])
            for path, name, handler, method in routes
        ],
        exception_handlers={404: _http_error, 405: _http_error},
        lifespan=lifespan,
    )
