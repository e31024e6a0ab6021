"""Rate limits at the gateway: each call is admitted under its key's and its tenant's limits.

A call is charged, before anything is produced to Kafka, on two subjects of one
``RateLimiter`` (``streams.llm.rate_limits``): ``key:<key id>`` (the key's own limits
from the API-key registry, else ``key_default`` of ``rate_limits.yaml``) and
``tenant:<tenant>`` (the tenant's limits, else ``default``). Refused, it is a 429 in
OpenAI's format (``code: rate_limit_exceeded``, ``type`` the limit: ``requests`` or
``tokens``) with ``Retry-After``; admitted or refused, the answer carries OpenAI's
``x-ratelimit-*`` headers for each kind of limit that applies, of the tighter subject.

What a call costs:

* requests: one per HTTP call, as OpenAI counts them: an embeddings call of N inputs
  (or a completions call of N prompts) is one request (``max_inputs`` bounds N, and
  ``max_in_flight`` the pipeline requests a replica waits on);
* tokens: an upper bound of the input plus the most output the call may produce,
  summed over its texts. The gateway holds no tokenizer (they live in the Triton
  environment), so a text counts its UTF-8 bytes plus ``SPECIAL_TOKENS``, capped at
  the model's ``max_input_tokens`` (the tokenizers Sluice loads emit at most one token
  per byte, plus their special tokens; infer refuses a longer input). That is the
  bound guard reserves budgets with. Output: the call's ``max_tokens`` (or the model's
  default) per text; none for embeddings.

Once the outcome is in, the estimate is corrected (``settle``) to what the pipeline
metered: the results' input and output tokens. A request guard blocked reached no model
and costs no tokens; a call that could not be produced costs none either, nor one that
timed out (504) while all its requests still waited for a pipeline slot
(``streams.gateway.fair_queue``). A call that timed out once a request was produced may
still be served, so it keeps its estimate. The request itself stays counted in every
case: it was made.

The limiter is not thread-safe: every call here happens on the app's event loop (the
routes are coroutines and nothing here is handed to a thread).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from streams.gateway.errors import OpenAIError
from streams.gateway.mapping import Caller
from streams.gateway.metrics import GATEWAY_RATE_LIMITED
from streams.llm.model_catalog import ModelSpec
from streams.llm.rate_limits import SECONDS_PER_MINUTE, Rate, RateLimiter, RateLimits

RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
#: Tokens a tokenizer may add to a text besides one per byte (its special tokens, a word
#: marker); generous, since an estimate too large is corrected once the usage is known.
SPECIAL_TOKENS = 16
_KINDS = ("requests", "tokens")
_SCOPE_WORDS = {"key": "API key", "tenant": "tenant"}


def prompt_tokens(text: str, model: ModelSpec) -> int:
    """An upper bound of the tokens the pipeline meters for ``text`` as ``model``'s input."""
    return min(len(text.encode("utf-8")) + SPECIAL_TOKENS, model.max_input_tokens)


def call_tokens(model: ModelSpec, texts: Sequence[str], max_tokens: int | None) -> int:
    """The tokens a call is charged at admission: its inputs plus its most output."""
    return sum(prompt_tokens(text, model) for text in texts) + len(texts) * (max_tokens or 0)


def with_default(own: Rate, default: Rate) -> Rate:
    """``own``, each limit it leaves out taken from ``default``."""
    return Rate(
        requests_per_minute=own.requests_per_minute or default.requests_per_minute,
        tokens_per_minute=own.tokens_per_minute or default.tokens_per_minute,
    )


@dataclass(frozen=True)
class Subject:
    """One rate-limited identity: a key or a tenant, and its limits."""

    scope: str  # "key" or "tenant"
    name: str  # what the limiter keys it by
    rate: Rate


@dataclass(frozen=True)
class Admission:
    """A call let through: what it was charged on, its estimate, and the headers to answer."""

    subjects: tuple[Subject, ...] = ()
    estimate: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def limits(self) -> list[tuple[str, Rate]]:
        """The ``(subject, rate)`` pairs the limiter charged."""
        return [(s.name, s.rate) for s in self.subjects]


class GatewayRateLimits:
    """The declared limits and the buckets of this replica (used on the event loop only)."""

    def __init__(self, limits: RateLimits, limiter: RateLimiter) -> None:
        self.limits = limits
        self.limiter = limiter

    def subjects(self, caller: Caller) -> tuple[Subject, ...]:
        """The key's and the tenant's limits for ``caller``; an unlimited one is left out."""
        candidates = (
            Subject(
                "key",
                f"key:{caller.key_id}",
                with_default(caller.key_rate, self.limits.key_default),
            ),
            Subject("tenant", f"tenant:{caller.tenant}", self.limits.for_tenant(caller.tenant)),
        )
        return tuple(s for s in candidates if not s.rate.unlimited)

    def admit(self, caller: Caller, tokens: int) -> Admission:
        """Charge one request of ``tokens`` on the caller's key and tenant, or raise a 429."""
        subjects = self.subjects(caller)
        if not subjects:
            return Admission(estimate=tokens)
        charge = self.limiter.acquire([(s.name, s.rate) for s in subjects], tokens)
        if charge.admitted:
            return Admission(subjects, tokens, self._headers(subjects))
        kind = charge.limit or "requests"
        refusing = self._refusing(subjects, kind, tokens)
        GATEWAY_RATE_LIMITED.labels(kind, refusing.scope, caller.tenant).inc()
        raise _rate_limited(refusing, kind, tokens, charge.retry_after_s, self._headers(subjects))

    def settle(self, admission: Admission, used_tokens: int) -> None:
        """Correct the tokens charged at admission to ``used_tokens`` (what was metered)."""
        if admission.subjects:
            self.limiter.settle(admission.limits, used_tokens - admission.estimate)

    def _refusing(self, subjects: Sequence[Subject], kind: str, tokens: int) -> Subject:
        # The subject with the longest wait for `kind`: the limiter refused on its account.
        cost = 1 if kind == "requests" else max(tokens, 0)

        def wait(subject: Subject) -> float:
            per_minute = _per_minute(subject.rate, kind)
            if per_minute is None:
                return -math.inf
            level = self.limiter.remaining(subject.name, kind, per_minute)
            return (min(cost, per_minute) - level) * SECONDS_PER_MINUTE / per_minute

        return max(subjects, key=wait)

    def _headers(self, subjects: Iterable[Subject]) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers, of the subject with the least left per kind."""
        headers: dict[str, str] = {}
        for kind in _KINDS:
            states = [
                (self.limiter.remaining(s.name, kind, per_minute), per_minute)
                for s in subjects
                if (per_minute := _per_minute(s.rate, kind)) is not None
            ]
            if not states:
                continue
            level, per_minute = min(states)
            until_full = max(0.0, per_minute - level) * SECONDS_PER_MINUTE / per_minute
            headers[f"x-ratelimit-limit-{kind}"] = str(per_minute)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
            headers[f"x-ratelimit-reset-{kind}"] = duration(until_full)
        return headers


def _per_minute(rate: Rate, kind: str) -> int | None:
    return rate.requests_per_minute if kind == "requests" else rate.tokens_per_minute


def retry_after(seconds: float) -> int:
    """``Retry-After`` in whole seconds: rounded up, at least 1 (0 would invite a hot loop)."""
    return max(1, math.ceil(seconds))


def duration(seconds: float) -> str:
    """A wait as OpenAI's reset headers write it: ``250ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def _rate_limited(
    subject: Subject, kind: str, tokens: int, wait_s: float, headers: dict[str, str]
) -> OpenAIError:
    per_minute = _per_minute(subject.rate, kind)
    whose = _SCOPE_WORDS[subject.scope]
    wait = retry_after(wait_s)
    message = f"Rate limit reached for your {whose} on {kind} per minute: limit {per_minute}."
    if kind == "tokens":
        message += (
            f" This call counts {tokens} tokens (its input and its max_tokens); a smaller "
            "max_tokens or input costs less."
        )
    message += f" Retry in {wait}s, or ask your administrator for a higher limit."
    return OpenAIError(
        429,
        message,
        type=kind,
        code=RATE_LIMIT_EXCEEDED,
        headers={
            **headers,
            "retry-after": str(wait),
            "retry-after-ms": str(max(1, math.ceil(wait_s * 1000))),
        },
    )
