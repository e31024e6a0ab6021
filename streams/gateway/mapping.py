"""From an OpenAI call to Sluice's ``InferenceRequest`` records, and from their outcomes back.

Identity comes from the API key and nothing else: the tenant, the end-user id and
the priority are the key's (``Caller``); OpenAI's ``user`` field in the body is
ignored. The pipeline's records carry one text each, so an embeddings call with N
inputs (or a completions call with N prompts) is N requests, answered together.

Chat messages become one prompt (``chat_prompt``): the infer processor sends a
request's ``input_text`` to the model as it is, so the transcript format is made
here. It is a plain role-labelled transcript ending with the assistant's turn,
which any completion model continues; a model that needs its own chat template
will declare it in the model catalog (see docs/explanation/gateway.md).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from streams.contracts.records import InferenceRequest, InferenceResult
from streams.gateway.dispatch import Blocked, Reply
from streams.gateway.errors import (
    INSUFFICIENT_QUOTA,
    SERVER,
    OpenAIError,
    invalid,
    model_not_found,
)
from streams.gateway.keys import Priority
from streams.gateway.openai_api import ChatMessage
from streams.llm.model_catalog import ModelCatalog, ModelSpec
from streams.llm.rate_limits import UNLIMITED, Rate

#: ``source`` of every request the gateway produces.
SOURCE = "gateway"
#: Request metadata the gateway sets (names, never personal data): the key that made the
#: request and its scheduling priority, for metering by key and for fair scheduling.
API_KEY_ID = "sluice.api_key_id"
PRIORITY = "sluice.priority"

_ROLE_LABELS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
ASSISTANT_TURN = "Assistant:"

# guard's reasons for blocking a request, as OpenAI's clients understand them.
_BUDGET_EXCEEDED = "budget_exceeded"
_RATE_LIMITED = "rate_limited"
#: What a caller guard rate-limited is told to wait: guard's verdict carries no wait, and
#: its buckets refill continuously, so a short pause is the honest hint.
GUARD_RATE_LIMIT_RETRY_S = 1
_INPUT_TOO_LONG = "input_too_long"
_RETRYABLE_BLOCKS = frozenset({"analyzer_error", "analyzer_timeout"})
# The gateway signed for a tenant guard does not know, or its clock is off: its fault.
_GATEWAY_FAULTS = frozenset({"tenant_mismatch", "unknown_tenant", "stale_request"})
_DUPLICATE = "duplicate_request"
# infer's error codes (processors/infer/planning.py) and what they mean to a client.
_UNKNOWN_MODEL = "unknown_model"
_CLIENT_ERRORS = frozenset({"input_too_long", "invalid_request"})


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the API key proves it."""

    key_id: str
    tenant: str
    user: str | None
    priority: Priority
    #: The key's own rate limits; a limit it leaves out is the registry's key default.
    key_rate: Rate = UNLIMITED


def model_for(catalog: ModelCatalog, name: str, task: str, endpoint: str) -> ModelSpec:
    """The catalog's model ``name``, which must serve ``task``; 404 or 400 otherwise."""
    model = catalog.models.get(name)
    if model is None:
        raise model_not_found(name)
    if model.task != task:
        raise invalid(
            f"The model `{name}` is a {model.task} model and cannot serve {endpoint}; GET "
            "/v1/models lists each model's task.",
            "model",
        )
    return model


def token_limit(model: ModelSpec, asked: int | None) -> int:
    """The completion's token limit: the one asked for, within the model's bounds."""
    limit = model.max_output_tokens or 0
    chosen = asked if asked is not None else model.default_max_tokens
    if chosen is None or not 1 <= chosen <= limit:
        raise invalid(
            f"max_tokens must be between 1 and {limit} for the model `{model.name}`.",
            "max_tokens",
        )
    return chosen


def chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """One prompt from a conversation: each message on its role's label, then the assistant's."""
    turns = [f"{_ROLE_LABELS[m.role]}: {m.text}" for m in messages]
    return "\n\n".join([*turns, ASSISTANT_TURN])


def requests_for(
    caller: Caller,
    model: ModelSpec,
    texts: Sequence[str],
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    request_ids: Sequence[str] | None = None,
) -> list[InferenceRequest]:
    """One request per text, for the caller's tenant and user (never the body's).

    ``request_ids``: one per text, derived from an ``Idempotency-Key``; fresh ones
    otherwise. ``created_at`` is always now, a retry's included: guard refuses a retry's
    copy on its id (``duplicate_request``), whatever its date.
    """
    metadata = {API_KEY_ID: caller.key_id, PRIORITY: caller.priority}
    requests = [
        InferenceRequest.new(
            caller.tenant,
            model.name,
            text,
            operation=model.operation,
            max_tokens=max_tokens,
            temperature=temperature,
            user_id=caller.user,
            source=SOURCE,
            metadata=dict(metadata),
        )
        for text in texts
    ]
    if request_ids is None:
        return requests
    if len(request_ids) != len(requests):
        raise ValueError("one request id per text is needed")
    return [replace(r, request_id=i) for r, i in zip(requests, request_ids, strict=True)]


def result_of(reply: Reply) -> InferenceResult:
    """The ok result of ``reply``; an ``OpenAIError`` saying why there is none."""
    if isinstance(reply, Blocked):
        raise _blocked(reply)
    result = reply.result
    if result.status == "ok":
        return result
    code = result.error_code or "error"
    if code == _UNKNOWN_MODEL:
        raise model_not_found(result.model)
    if code in _CLIENT_ERRORS:
        raise OpenAIError(
            400,
            f"The model side refused the request ({code}); shorten the input or change the "
            "parameters.",
            code="context_length_exceeded" if code == _INPUT_TOO_LONG else code,
        )
    raise OpenAIError(
        502,
        f"The model side failed to serve the request ({code}); retry later.",
        type=SERVER,
        code=code,
    )


def _blocked(reply: Blocked) -> OpenAIError:
    verdict = reply.request.guard
    reason = (verdict.reason if verdict is not None else None) or "blocked"
    if reason == _BUDGET_EXCEEDED:
        return OpenAIError(
            429,
            "Your tenant's budget is spent; ask its administrator to raise it, or wait for "
            "the next budget window.",
            type=INSUFFICIENT_QUOTA,
            code=INSUFFICIENT_QUOTA,
        )
    if reason == _RATE_LIMITED:
        # guard's limit (the tenant's, over every producer and every gateway replica):
        # reached past the gateway's own buckets, e.g. when other producers share it.
        return OpenAIError(
            429,
            "Rate limit reached for your tenant across all its producers; retry shortly.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": str(GUARD_RATE_LIMIT_RETRY_S)},
        )
    if reason in _RETRYABLE_BLOCKS:
        return OpenAIError(
            503,
            "The request could not be checked right now and was not served; retry.",
            type=SERVER,
            code=reason,
        )
    if reason in _GATEWAY_FAULTS:
        return OpenAIError(
            500,
            "The platform did not accept the gateway's request (its signing or its clock); "
            "tell the gateway's operator.",
            type=SERVER,
            code=reason,
        )
    if reason == _DUPLICATE:
        # guard serves a tenant's request id once; the gateway makes a fresh one per call
        # without an Idempotency-Key (with one, the dispatcher waits for the original's).
        return OpenAIError(
            409,
            "This request was already made once and is not served again.",
            code=reason,
        )
    return OpenAIError(
        400,
        f"The request was blocked by the platform's content policy ({reason}).",
        code="context_length_exceeded" if reason == _INPUT_TOO_LONG else "content_policy_violation",
    )


# -- responses ----------------------------------------------------------------------------
#: Response header saying whether infer's response cache answered the call.
CACHE_HEADER = "x-sluice-cache"


def cache_header(results: Sequence[InferenceResult]) -> dict[str, str]:
    """``x-sluice-cache: hit`` when the cache answered every request of the call, else miss.

    A call of several inputs is a hit only if all were: a partial hit still waited for
    the model, and ``usage.prompt_tokens_details.cached_tokens`` says how many tokens hit.
    """
    hit = bool(results) and all(r.cache_hit for r in results)
    return {CACHE_HEADER: "hit" if hit else "miss"}


def _usage(results: Sequence[InferenceResult], *, completion: bool) -> dict[str, Any]:
    prompt = sum(r.input_tokens for r in results)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": prompt}
    if completion:
        generated = sum(r.output_tokens for r in results)
        usage |= {"completion_tokens": generated, "total_tokens": prompt + generated}
        cached = sum(r.input_tokens for r in results if r.cache_hit)
        if cached:
            # OpenAI's own field for prompt tokens served from its cache.
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def completion_usage(results: Sequence[InferenceResult]) -> dict[str, Any]:
    """The ``usage`` of a completion (or chat) call over ``results``."""
    return _usage(results, completion=True)


def _vector(values: Sequence[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        # What OpenAI sends: little-endian float32, base64 (its Python client asks for it).
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return list(values)


def embeddings_response(
    model: str, results: Sequence[InferenceResult], encoding: str
) -> dict[str, Any]:
    """``/v1/embeddings``'s answer: one vector per input, in input order."""
    data = []
    for index, result in enumerate(results):
        if result.embedding is None:
            raise OpenAIError(502, "The model returned no embedding; retry later.", type=SERVER)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": _vector(result.embedding, encoding),
            }
        )
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": _usage(results, completion=False),
    }


def finish_reason(result: InferenceResult, max_tokens: int) -> str:
    """Why the text ended: ``content_filter`` (guard withheld it), ``length`` or ``stop``."""
    if result.output_guard is not None and result.output_guard.action == "block":
        return "content_filter"
    return "length" if result.output_tokens >= max_tokens else "stop"


def created_at(result: InferenceResult) -> int:
    """OpenAI's ``created``: seconds since the epoch, when the request was made."""
    return int(result.request_created_at.timestamp())


def completions_response(
    model: str, results: Sequence[InferenceResult], max_tokens: int
) -> dict[str, Any]:
    """``/v1/completions``'s answer: one choice per prompt, in prompt order."""
    first = results[0]
    return {
        "id": f"cmpl-{first.request_id}",
        "object": "text_completion",
        "created": created_at(first),
        "model": model,
        "choices": [
            {
                "index": index,
                "text": result.output_text or "",
                "logprobs": None,
                "finish_reason": finish_reason(result, max_tokens),
            }
            for index, result in enumerate(results)
        ],
        "usage": _usage(results, completion=True),
    }


def chat_response(model: str, result: InferenceResult, max_tokens: int) -> dict[str, Any]:
    """``/v1/chat/completions``'s answer: the assistant's message."""
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": created_at(result),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.output_text or ""},
                "logprobs": None,
                "finish_reason": finish_reason(result, max_tokens),
            }
        ],
        "usage": _usage([result], completion=True),
    }


def models_response(catalog: ModelCatalog) -> dict[str, Any]:
    """``/v1/models``: every model of the catalog, in OpenAI's list format."""
    return {"object": "list", "data": [model_entry(m) for m in catalog.models.values()]}


def model_entry(model: ModelSpec) -> dict[str, Any]:
    """One model as OpenAI lists it, owned by the platform."""
    return {"id": model.name, "object": "model", "created": 0, "owned_by": "sluice"}
