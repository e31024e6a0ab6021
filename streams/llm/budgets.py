"""Tenants' budgets: the config file (``schemas/budgets.yaml``) and ``BudgetView``.

``meter`` adds every request's tokens and cost to the tenant's day and month
spend and publishes the tenant's status to the compacted topic
``metering.budgets`` (key = tenant), each record signed with meter's budget key.
``BudgetView`` follows that topic from the beginning in a background thread,
keeps the latest status per tenant, and answers ``is_over_hard_budget(tenant)``
from memory, so guard can ask it for every request at no cost.

How guard uses it::

    view = BudgetView(settings, catalog, verifier=meter_keys, budgets=config)  # in setup
    view.start()
    view.wait_ready(timeout=30)              # caught up with the topic's end at start
    ...
    reason = view.is_over_hard_budget(request.tenant_id)
    if reason is not None:                   # e.g. "day usd budget of 50 reached (51.2)"
        block(request, reason="budget_exceeded", detail=reason)
    ...
    view.close()                             # in teardown

Anyone who can write to the topic could otherwise lift a tenant's block (one
record with a huge version and no spend, kept by compaction), so the view
trusts nothing a record says that meter did not sign:

* a record that is unsigned, signed by a key the view does not hold, or whose
  signature does not verify (``streams.runtime.signing``, scheme ``METER_BUDGET``)
  is ignored, counted in ``sluice_budget_records_rejected_total{reason}`` and
  logged (partition, offset and reason, never the value);
* a status whose version is not above the one held is ignored;
* whether a tenant's budget is enforced (hard) is the reader's own decision, from
  its budget config: the ``hard`` field of a record switches nothing on or off.

A status only counts while its period lasts: a tenant over its daily budget
is allowed again when the UTC day changes, even before meter writes a new
status. Enforcement is as fresh as ``metering.budgets`` (meter writes it after
every request); guard covers the requests in flight with reservations
(``processors.guard.reservations``), which meter settles: every status lists the
request ids it counted (``settled_request_ids``), and the view hands those of a
verified record to ``on_settled``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.contracts import money
from streams.contracts.catalog import Catalog
from streams.contracts.serde import AvroSerde
from streams.errors import ConfigurationError, RecordError
from streams.runtime import kafka, metrics
from streams.runtime.follower import TopicFollower
from streams.runtime.signing import UnverifiedError, Verifier
from streams.runtime.spec import Headers
from streams.settings import Settings

log = logging.getLogger(__name__)

BUDGETS_TOPIC = "metering.budgets"
Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
#: Most request ids one status settles. meter writes one status per usage event, so it
#: lists one; a reader takes no more than this many from any record.
MAX_SETTLED_PER_STATUS = 64
#: After the first of each reason, one warning per this many rejected records (a flood
#: of forged records must not flood guard's log as well; the counter counts them all).
REJECTION_LOG_EVERY = 1000


class BudgetConfigError(ConfigurationError, ValueError):
    """``budgets.yaml`` is malformed; the message names the tenant and field."""


class Limits(BaseModel):
    """Budget of one period; None means unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tokens: int | None = Field(None, ge=0)
    usd: Decimal | None = None

    @field_validator("usd", mode="before")
    @classmethod
    def _usd(cls, value: Any) -> Decimal | None:
        return None if value is None else money.non_negative(value, what="usd")


class TenantBudget(BaseModel):
    """A tenant's budgets per period, and whether they are enforced."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hard: bool = False
    day: Limits = Limits()
    month: Limits = Limits()

    def limits(self, period: Period) -> Limits:
        """The limits of ``period``."""
        return self.day if period == "day" else self.month


class BudgetConfig(BaseModel):
    """The whole ``budgets.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    alert_thresholds_pct: tuple[int, ...] = (80, 100)
    default: TenantBudget | None = None
    tenants: dict[str, TenantBudget] = Field(default_factory=dict)

    @field_validator("alert_thresholds_pct")
    @classmethod
    def _thresholds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(t <= 0 for t in value):
            raise ValueError("thresholds are percentages above 0")
        return tuple(sorted(set(value)))

    def for_tenant(self, tenant: str) -> TenantBudget:
        """The tenant's budget, the default one, or no budget at all."""
        return self.tenants.get(tenant) or self.default or TenantBudget()


def load_budgets(path: Path) -> BudgetConfig:
    """Load and validate ``budgets.yaml``."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return BudgetConfig.model_validate(raw)
    except OSError as exc:
        raise BudgetConfigError(f"cannot read the budgets file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise BudgetConfigError(f"{path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise BudgetConfigError(f"{path} is not a valid budgets file:\n{problems}") from exc


@dataclass(frozen=True, slots=True)
class PeriodSpend:
    """Spend of one period, as published on ``metering.budgets``."""

    period: str
    period_start: datetime
    period_end: datetime
    tokens: int
    cost: Decimal
    token_limit: int | None
    cost_limit: Decimal | None
    requests: int

    def over(self) -> str | None:
        """Why this period's budget is reached, or None."""
        if self.token_limit is not None and self.tokens >= self.token_limit:
            return f"{self.period} token budget of {self.token_limit} reached ({self.tokens})"
        if self.cost_limit is not None and self.cost >= self.cost_limit:
            return (
                f"{self.period} usd budget of {money.plain(self.cost_limit)} reached "
                f"({money.plain(self.cost)})"
            )
        return None


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """sluice.v1.BudgetStatus: a tenant's current spend against its budgets."""

    tenant_id: str
    hard: bool
    periods: tuple[PeriodSpend, ...]
    version: int
    updated_at: datetime
    #: The requests whose usage this status is the first to count (guard drops their
    #: reservations: their real cost is in the spend now).
    settled_request_ids: tuple[str, ...] = ()

    @classmethod
    def from_avro(cls, value: dict[str, Any]) -> BudgetStatus:
        """From the decoded Avro record (a status written before settlements settles none)."""
        settled = value.get("settled_request_ids") or []
        return cls(
            tenant_id=value["tenant_id"],
            hard=value["hard"],
            periods=tuple(PeriodSpend(**p) for p in value["periods"]),
            version=value["version"],
            updated_at=value["updated_at"],
            settled_request_ids=tuple(str(r) for r in settled[:MAX_SETTLED_PER_STATUS]),
        )

    def to_avro(self) -> dict[str, Any]:
        """The dict the Avro encoder takes."""
        return {
            "tenant_id": self.tenant_id,
            "hard": self.hard,
            "periods": [
                {
                    "period": p.period,
                    "period_start": p.period_start,
                    "period_end": p.period_end,
                    "tokens": p.tokens,
                    "cost": p.cost,
                    "token_limit": p.token_limit,
                    "cost_limit": p.cost_limit,
                    "requests": p.requests,
                }
                for p in self.periods
            ],
            "version": self.version,
            "updated_at": self.updated_at,
            "settled_request_ids": list(self.settled_request_ids),
        }

    def spend(self, period: str, now: datetime) -> tuple[int, Decimal]:
        """Tokens and cost spent in ``period`` if it is still running at ``now``, else none."""
        for spent in self.periods:
            if spent.period == period and spent.period_start <= now < spent.period_end:
                return spent.tokens, spent.cost
        return 0, money.ZERO

    def over_budget(self, now: datetime) -> str | None:
        """Why the tenant is over a budget whose period is still running, or None."""
        for period in self.periods:
            if period.period_start <= now < period.period_end:
                reason = period.over()
                if reason is not None:
                    return reason
        return None


@dataclass(frozen=True, slots=True)
class BudgetRecord:
    """One record of ``metering.budgets`` as read: where it was, and its raw bytes."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


class BudgetView(TopicFollower):
    """The latest ``BudgetStatus`` per tenant, kept current by a background consumer.

    The consumer is assigned every partition of ``metering.budgets`` from the
    beginning (no consumer group: each view reads the whole topic), reads only
    committed records, and keeps, for each tenant ``budgets`` enforces, the
    meter-signed status with the highest version. ``wait_ready`` returns once it
    has read up to the end offsets the topic had when the view started.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        verifier: Verifier,
        budgets: BudgetConfig,
        topic: str = BUDGETS_TOPIC,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_settled: Callable[[str, Sequence[str]], object] | None = None,
    ) -> None:
        super().__init__(settings, catalog, (topic,), "budget-view")
        self.verifier = verifier
        self.budgets = budgets
        self.topic = topic
        self._clock = clock
        self._on_settled = on_settled
        self._statuses: dict[str, BudgetStatus] = {}
        self._lock = threading.Lock()
        self._decode: Callable[[bytes], BudgetStatus] | None = None
        self.records_read = 0
        self.rejected: dict[str, int] = {}

    # -- what guard calls -------------------------------------------------------
    def is_over_hard_budget(self, tenant: str) -> str | None:
        """The reason the tenant must be blocked (an enforced budget is reached), or None."""
        if not self.enforced(tenant):
            return None
        status = self.status(tenant)
        if status is None:
            return None
        return status.over_budget(self._clock())

    def spend(self, tenant: str, period: str) -> tuple[int, Decimal]:
        """The tenant's tokens and cost in the running ``period`` (none without a status)."""
        status = self.status(tenant)
        if status is None:
            return 0, money.ZERO
        return status.spend(period, self._clock())

    def enforced(self, tenant: str) -> bool:
        """Whether the budget config (not a record) says the tenant's budget is hard."""
        return self.budgets.for_tenant(tenant).hard

    def receive(self, record: BudgetRecord, decode: Callable[[bytes], BudgetStatus]) -> bool:
        """Apply one record of the topic if meter signed it; True when the view kept it.

        ``decode`` turns the value's bytes into a status; it runs only on verified bytes.
        """
        if record.value is None:
            # meter never deletes a status: a tombstone was written by someone else.
            self._reject(record, "tombstone", "a tombstone (meter never writes one)")
            return False
        try:
            self.verifier.verify(self.topic, record.key, record.value, record.headers)
        except UnverifiedError as error:
            self._reject(record, error.reason, str(error))
            return False
        try:
            status = decode(record.value)
        except (RecordError, KeyError, TypeError, ValueError) as error:
            self._reject(record, "unreadable", f"signed but not a status ({type(error).__name__})")
            return False
        if record.key is None or record.key != status.tenant_id.encode("utf-8"):
            self._reject(record, "key_mismatch", "the record's key is not its tenant")
            return False
        self.records_read += 1
        kept = self._keep(status)
        # After the spend is kept, never before: between the two a request is counted
        # twice (spend and reservation), never not at all. An older status settles too:
        # the status held is newer, so its spend includes those requests already.
        if status.settled_request_ids and self._on_settled is not None:
            self._on_settled(status.tenant_id, status.settled_request_ids)
        return kept

    def _keep(self, status: BudgetStatus) -> bool:
        """Keep ``status`` if its tenant is enforced and it is newer than the one held.

        Only enforced tenants are kept: they are all guard asks about, and they are the
        ones the budget config names, while meter publishes a status for every tenant
        it meters, a set that any tenant id sent grows.
        """
        if not self.enforced(status.tenant_id):
            return False
        with self._lock:
            current = self._statuses.get(status.tenant_id)
            if current is not None and status.version <= current.version:
                return False  # a replayed or older status: never moves the view backwards
            self._statuses[status.tenant_id] = status
            return True

    def _reject(self, record: BudgetRecord, reason: str, detail: str) -> None:
        metrics.BUDGET_RECORDS_REJECTED.labels(reason).inc()
        count = self.rejected.get(reason, 0) + 1
        self.rejected[reason] = count
        if count == 1 or count % REJECTION_LOG_EVERY == 0:
            # Where (the cluster's topic name) and why only: the value is whatever its
            # writer chose.
            log.warning(
                "budget view: ignored %s[%d]@%d: %s (%s; %d such records so far)",
                self.shown_topics(),
                record.partition,
                record.offset,
                reason,
                detail,
                count,
            )

    def status(self, tenant: str) -> BudgetStatus | None:
        """The tenant's latest status if its budget is enforced, otherwise None."""
        with self._lock:
            return self._statuses.get(tenant)

    def tenants(self) -> list[str]:
        """Every tenant with an enforced budget's status."""
        with self._lock:
            return sorted(self._statuses)

    # -- the consumer (streams.runtime.follower runs it) ---------------------------
    def _prepare(self) -> None:
        catalog = self.followed_catalog()
        serde = AvroSerde(kafka.registry(self.settings), catalog, self.settings.registry)
        schema = catalog.value_schema(self.topic)

        def decode(raw: bytes) -> BudgetStatus:
            return BudgetStatus.from_avro(serde.decode(raw, schema, topic=self.topic))

        self._decode = decode

    def _assignment(
        self, consumer: Consumer, ends: dict[TopicPartition, int]
    ) -> list[TopicPartition]:
        # From the beginning: the compacted topic holds every tenant's latest status.
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in ends]

    def _on_message(self, message: Message) -> None:
        if self._decode is None:
            raise RuntimeError("budget view: a record arrived before the view was prepared")
        record = BudgetRecord(
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            headers=kafka.headers_of(message),
        )
        self.receive(record, self._decode)
