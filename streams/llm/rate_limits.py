"""Rate limits: the declaration (``schemas/rate_limits.yaml``) and the buckets that enforce it.

The same file holds each tenant's **share**: its weight when tenants compete for guard
and infer (``streams.runtime.fair_window``). Limits cap what a tenant may send; shares
divide what the processors can do among the tenants that have work waiting.

A limit is a number of requests and of tokens per minute. The gateway applies it per
API key and per tenant before a call reaches Kafka (429 with ``Retry-After``); guard
applies the tenant's to every request, Kafka-native producers included (blocked with
reason ``rate_limited``). Both use ``RateLimiter``.

Each limit is a token bucket holding at most one minute of allowance and refilled
continuously (``limit / 60`` per second): a tenant idle for a minute may burst its
whole minute at once, and a steady caller gets exactly its rate. A request is admitted
when each bucket holds its cost, and is charged in full. A request larger than a whole
minute is admitted when the bucket is full and leaves it in debt, which the subject then
waits out: it may pass, but not more often than its rate allows.
Tokens are charged from an estimate when the request is admitted (its input plus the
output it may produce) and corrected with ``settle`` once the actual usage is known.

Buckets live in the memory of one process: with several replicas, each enforces the
whole limit on the traffic it sees. ``schemas/rate_limits.yaml`` says how to size
limits for that.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.errors import ConfigurationError
from streams.runtime.spec import Share

SECONDS_PER_MINUTE = 60.0
# Refills are sums of float products: a wait computed exactly may leave a hair's worth
# of allowance missing. Below this, a bucket counts as holding the cost.
_ROUNDING = 1e-6


class RateLimitConfigError(ConfigurationError, ValueError):
    """``rate_limits.yaml`` is malformed; the message names the entry and field."""


class Rate(BaseModel):
    """Requests and tokens per minute; None is no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)

    @property
    def unlimited(self) -> bool:
        """True when neither requests nor tokens are limited."""
        return self.requests_per_minute is None and self.tokens_per_minute is None


UNLIMITED = Rate()
#: The share key of records no tenant is known to own (a tenant id is never empty).
UNATTRIBUTED = ""
#: The largest share: a tenant may be given at most 64 times another's turns.
MAX_SHARE = 64


class Shares(BaseModel):
    """Each tenant's weight in fair scheduling: ``default`` for every tenant not listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    default: int = Field(1, ge=1, le=MAX_SHARE)
    tenants: dict[str, Annotated[int, Field(ge=1, le=MAX_SHARE)]] = Field(default_factory=dict)

    def of(self, tenant: str) -> int:
        """The tenant's share, else the default."""
        return self.tenants.get(tenant, self.default)

    def share(self, tenant: str | None) -> Share:
        """The scheduling share of a record of ``tenant``.

        None: a record nobody is known to own, which waits in the unattributed share (it
        is refused or dead-lettered, fast).
        """
        if tenant is None:
            return Share(UNATTRIBUTED)
        return Share(tenant, self.of(tenant))


class RateLimits(BaseModel):
    """The whole ``rate_limits.yaml``: per tenant, with a default, and a default per API key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    default: Rate = UNLIMITED
    tenants: dict[str, Rate] = Field(default_factory=dict)
    key_default: Rate = UNLIMITED
    shares: Shares = Shares()

    def for_tenant(self, tenant: str) -> Rate:
        """The tenant's own limits, else the default."""
        return self.tenants.get(tenant, self.default)


def load_rate_limits(path: Path) -> RateLimits:
    """Load and validate ``rate_limits.yaml``; a missing file is an error, not "unlimited"."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return RateLimits.model_validate(raw)
    except OSError as exc:
        raise RateLimitConfigError(f"cannot read the rate limits file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RateLimitConfigError(f"{path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RateLimitConfigError(f"{path} is not a valid rate limits file:\n{problems}") from exc


def load_shares(path: Path) -> Shares:
    """The shares in ``path``; equal shares when there is no such file (one is optional)."""
    if not path.exists():
        return Shares()
    return load_rate_limits(path).shares


@dataclass(slots=True)
class _Bucket:
    level: float
    updated: float


@dataclass(frozen=True, slots=True)
class Charge:
    """What a limited call is told: wait ``retry_after_s`` (0 when admitted), and why."""

    retry_after_s: float
    limit: str | None = None  # "requests" or "tokens": the limit that refused it

    @property
    def admitted(self) -> bool:
        """True when the call was admitted (and charged)."""
        return self.retry_after_s == 0.0


ADMITTED = Charge(0.0)


class RateLimiter:
    """Token buckets per subject (a tenant, an API key), in memory, for one process.

    Not thread-safe: call it from one thread or event loop. At most ``max_subjects``
    subjects are kept, the least recently used forgotten first (a forgotten subject
    starts again with a full minute); subjects are authenticated identities, so
    their number is bounded by the registries, and the bound only caps memory.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, max_subjects: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_subjects = max_subjects
        self._buckets: OrderedDict[tuple[str, str, int], _Bucket] = OrderedDict()

    def acquire(self, limits: Sequence[tuple[str, Rate]], tokens: int) -> Charge:
        """Admit one request of ``tokens`` under every ``(subject, rate)`` pair, or none.

        Admitted: every bucket is charged. Refused: nothing is charged, and the charge
        says how long until every bucket that refused holds allowance again.
        """
        now = self._clock()
        wait, refused_by = 0.0, None
        buckets: list[tuple[_Bucket, float]] = []
        for subject, rate in limits:
            for kind, per_minute, cost in (
                ("requests", rate.requests_per_minute, 1.0),
                ("tokens", rate.tokens_per_minute, float(max(tokens, 0))),
            ):
                if per_minute is None:
                    continue
                bucket = self._bucket(subject, kind, per_minute, now)
                needed = min(cost, float(per_minute)) - bucket.level
                if needed > _ROUNDING:
                    # Allowance comes back at per_minute / 60 per second.
                    seconds = needed * SECONDS_PER_MINUTE / per_minute
                    if seconds > wait:
                        wait, refused_by = seconds, kind
                buckets.append((bucket, cost))
        if refused_by is not None:
            return Charge(wait, refused_by)
        for bucket, cost in buckets:
            bucket.level -= cost
        return ADMITTED

    def settle(self, limits: Sequence[tuple[str, Rate]], token_delta: int) -> None:
        """Correct the tokens charged at admission by ``actual - estimated`` (either sign)."""
        now = self._clock()
        for subject, rate in limits:
            if rate.tokens_per_minute is None:
                continue
            bucket = self._bucket(subject, "tokens", rate.tokens_per_minute, now)
            bucket.level = min(float(rate.tokens_per_minute), bucket.level - token_delta)

    def remaining(self, subject: str, kind: str, per_minute: int) -> float:
        """The allowance ``subject``'s ``kind`` bucket holds now; negative while in debt.

        For what a caller is told (OpenAI's ``x-ratelimit-remaining-*`` headers); it
        charges nothing. ``kind`` is "requests" or "tokens".
        """
        return self._bucket(subject, kind, per_minute, self._clock()).level

    def _bucket(self, subject: str, kind: str, per_minute: int, now: float) -> _Bucket:
        # The limit is part of the key: a changed limit starts a fresh bucket.
        key = (subject, kind, per_minute)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(level=float(per_minute), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_subjects:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            refill = elapsed * per_minute / SECONDS_PER_MINUTE
            bucket.level = min(float(per_minute), bucket.level + refill)
            bucket.updated = now
        return bucket


def describe(rate: Rate) -> str:
    """A one-line summary of a rate for logs and errors (no subject names)."""
    parts = [
        f"{value} {what}/min"
        for what, value in (
            ("requests", rate.requests_per_minute),
            ("tokens", rate.tokens_per_minute),
        )
        if value is not None
    ]
    return ", ".join(parts) or "unlimited"
