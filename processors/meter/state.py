"""meter's state: tumbling windows and budget periods, updated idempotently (pure).

The state is a key → JSON-able dict mapping (a faust table in production, a
dict in unit tests). Every usage event of a tenant arrives on one partition of
``metering.usage`` (keyed by tenant) and touches four keys of that partition:
its 1-minute and 1-hour windows, the tenant's budget, and the request id's
"seen" entry. Each value is written whole, so each key is updated atomically,
and each remembers the input offset it last counted (``o``). Together these
make counting exact under at-least-once delivery:

* an event replayed after a crash (same partition and offset) is counted only
  in the keys whose ``o`` is below its offset: the keys it had already reached
  before the crash are skipped, the others are completed;
* a repeated usage event (same request id at another offset: ``metering.usage``
  is written at-least-once) is recognised by the request's "seen" entry and
  not counted again. Seen entries are kept for a number of records (offsets),
  not for a time, so what is remembered does not depend on when meter ran.

Windows that ended more than the retention ago (wall clock) are final: they
are swept from the state, and an event that would fall into one is metered
(usage, budgets) but not added to windows (``Outputs.late``), instead of
starting the window again from zero.

Event time is bounded by meter's own clock. An event dated before 2000, or
more than ``max_future_ms`` (a day by default) ahead of meter's clock, is
absurd: ``apply`` raises ``ImplausibleTimestamp`` and the app dead-letters it
(year 9999 included), so no producer can open a billing period or a window
in the far future, which no sweep would ever reach. An event only somewhat
ahead (beyond the allowed clock skew, within ``max_future_ms``) is metered at
its arrival instead (``Outputs.clamped``): the timestamp of its
``metering.usage`` record, which meter's price agent wrote and which a replay
reads again unchanged, so a replayed event lands in the same windows.

Snapshots of every touched window and budget are emitted even when nothing
changed, so a snapshot lost in a crash is re-sent when the event is replayed;
snapshots carry a version (events counted) so the latest one wins downstream.
"""

from __future__ import annotations

import calendar
import dataclasses
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from processors.meter.usage import Usage
from streams.contracts import money
from streams.errors import ImplausibleTimestamp
from streams.llm.budgets import PERIODS, BudgetConfig, BudgetStatus, Period, PeriodSpend

State = MutableMapping[str, dict[str, Any]]
WINDOWS: dict[str, int] = {"1m": 60_000, "1h": 3_600_000}
#: Events dated before this are absurd: dead-lettered.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_MAX_CLOCK_SKEW_MS = 5 * 60_000
#: Events dated further ahead of meter's clock than this are absurd: dead-lettered.
DEFAULT_MAX_FUTURE_MS = 86_400_000


@dataclass
class Outputs:
    """What one usage event makes meter publish."""

    windows: list[dict[str, Any]] = field(default_factory=list)
    budget: BudgetStatus | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    duplicate: bool = False
    late: int = 0  # windows the event was too late for
    clamped: bool = False  # dated beyond the clock skew: metered at its arrival


def window_key(tenant: str, model: str, size: str, start_ms: int) -> str:
    """State key of one window."""
    return f"w|{tenant}|{model}|{size}|{start_ms}"


def budget_key(tenant: str) -> str:
    """State key of a tenant's budget periods."""
    return f"b|{tenant}"


def seen_key(tenant: str, request_id: str) -> str:
    """State key that remembers a counted request.

    Per tenant: request ids are unique within a tenant (guard blocks a reused one), so
    one tenant's id can never make another tenant's request look already counted.
    """
    return f"s|{tenant}|{request_id}"


def apply(
    state: State,
    usage: Usage,
    *,
    partition: int,
    offset: int,
    budgets: BudgetConfig,
    now: datetime,
    window_retention_ms: int = 2 * 86_400_000,
    arrived: datetime | None = None,
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> Outputs:
    """Count ``usage`` (read at ``partition``/``offset``) once; return the snapshots to emit.

    ``arrived`` is when the event reached meter (its record's timestamp); an
    event dated beyond ``max_clock_skew_ms`` ahead of ``now`` is counted at that
    time instead (at ``now`` when ``arrived`` is itself not plausible). An
    absurd date (see ``check_plausible``) raises ``ImplausibleTimestamp`` before
    the state is touched.
    """
    # Before any state is written: a dead-lettered event must leave no trace to replay.
    at = event_time(
        usage.completed_at,
        now,
        arrived=arrived,
        max_clock_skew_ms=max_clock_skew_ms,
        max_future_ms=max_future_ms,
    )
    seen = state.get(seen_key(usage.tenant_id, usage.request_id))
    if seen is not None and seen["o"] != offset:
        return Outputs(duplicate=True)
    if seen is None:
        state[seen_key(usage.tenant_id, usage.request_id)] = {"p": partition, "o": offset}
    outputs = Outputs()
    if at != usage.completed_at:
        outputs.clamped = True
        usage = dataclasses.replace(usage, completed_at=at)
    final_before = _ms(now) - window_retention_ms
    for size, length in WINDOWS.items():
        if usage.completed_ms // length * length + length < final_before:
            outputs.late += 1
            continue
        outputs.windows.append(
            _count_window(state, usage, size, partition=partition, offset=offset, now=now)
        )
    outputs.budget, outputs.alerts = _count_budget(
        state,
        usage,
        partition=partition,
        offset=offset,
        budgets=budgets,
        now=now,
        final_before_ms=final_before,
    )
    return outputs


def event_time(
    completed_at: datetime,
    now: datetime,
    *,
    arrived: datetime | None = None,
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> datetime:
    """The time an event is metered at: its own, unless ahead of meter's clock.

    An absurd date raises ``ImplausibleTimestamp`` (``check_plausible``). A date
    more than ``max_clock_skew_ms`` ahead of ``now`` gives the event's arrival
    instead, or ``now`` when the arrival is not plausible either: a result from
    the near future is metered, but never opens a future period.
    """
    at = check_plausible(completed_at, now, max_future_ms=max_future_ms)
    latest = now + timedelta(milliseconds=max_clock_skew_ms)
    if at <= latest:
        return at
    if arrived is not None:
        arrival = _aware(arrived)
        if EARLIEST <= arrival <= latest:
            return arrival
    return now


def check_plausible(
    completed_at: datetime, now: datetime, *, max_future_ms: int = DEFAULT_MAX_FUTURE_MS
) -> datetime:
    """``completed_at`` (timezone-aware) if meter may meter it; ``ImplausibleTimestamp`` if not.

    Plausible means from 2000-01-01 on and at most ``max_future_ms`` ahead of ``now``
    (meter's clock). The reason names the field and the bound; the timestamp is not
    personal data, and shown so that whoever replays the dead letter can fix its source.
    """
    at = _aware(completed_at)
    if at < EARLIEST:
        raise ImplausibleTimestamp(
            f"completed_at {at.isoformat()} is before {EARLIEST.date().isoformat()}: "
            "fix the producer's clock, then replay",
            details={"field": "completed_at", "bound": "earliest"},
        )
    latest = now + timedelta(milliseconds=max_future_ms)
    if at > latest:
        raise ImplausibleTimestamp(
            f"completed_at {at.isoformat()} is more than {max_future_ms / 1000:g} s "
            "(SLUICE_METER__MAX_FUTURE_S) ahead of meter's clock: fix the producer's clock, "
            "then replay",
            details={"field": "completed_at", "bound": "max_future_s"},
        )
    return at


def _aware(at: datetime) -> datetime:
    """``at`` with a timezone: a naive datetime is taken as UTC (as Avro's timestamps are)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def window_start(at: datetime, size: str) -> int:
    """Start (epoch milliseconds) of the ``size`` window holding ``at``."""
    length = WINDOWS[size]
    return _ms(at) // length * length


def sweep(
    state: State,
    *,
    partition: int,
    offset: int,
    now: datetime,
    dedup_records: int,
    retention_ms: int,
) -> list[str]:
    """Delete this partition's seen entries, final windows and finished budgets.

    A budget entry whose every period ended before the retention is finished: no
    event can count in those periods any more, and a tenant's next event opens
    new ones. So meter's state holds the tenants active within a month (plus
    retention), not every tenant id it was ever sent.
    """
    expired = []
    now_ms = _ms(now)
    final_before = now_ms - retention_ms
    for key, value in list(_items(state)):
        if value.get("p") != partition:
            continue
        stale_seen = key.startswith("s|") and value["o"] < offset - dedup_records
        stale_window = key.startswith("w|") and value["e"] < final_before
        stale_budget = key.startswith("b|") and all(
            p["e"] < final_before for p in value["periods"].values()
        )
        if stale_seen or stale_window or stale_budget:
            expired.append(key)
    for key in expired:
        del state[key]
    return expired


def _items(state: State) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from state.items()


# -- windows -------------------------------------------------------------------
def _count_window(
    state: State, usage: Usage, size: str, *, partition: int, offset: int, now: datetime
) -> dict[str, Any]:
    length = WINDOWS[size]
    start = usage.completed_ms // length * length
    key = window_key(usage.tenant_id, usage.model, size, start)
    window = state.get(key) or {
        "p": partition,
        "o": -1,
        "t": usage.tenant_id,
        "m": usage.model,
        "w": size,
        "s": start,
        "e": start + length,
        "req": 0,
        "err": 0,
        "in": 0,
        "cin": 0,
        "out": 0,
        "cost": "0",
        "v": 0,
        "u": _ms(now),
    }
    if window["o"] < offset:
        window = {
            **window,
            "o": offset,
            "req": window["req"] + 1,
            "err": window["err"] + int(usage.is_error),
            "in": window["in"] + usage.input_tokens,
            "cin": window["cin"] + usage.cached_input_tokens,
            "out": window["out"] + usage.output_tokens,
            "cost": str(money.to_scale(Decimal(window["cost"]) + usage.cost)),
            "v": window["v"] + 1,
            "u": _ms(now),
        }
        state[key] = window
    return window_record(window)


def window_record(window: dict[str, Any]) -> dict[str, Any]:
    """The sluice.v1.UsageWindow record of a window's state."""
    return {
        "tenant_id": window["t"],
        "model": window["m"],
        "window": window["w"],
        "window_start": _dt(window["s"]),
        "window_end": _dt(window["e"]),
        "requests": window["req"],
        "errors": window["err"],
        "input_tokens": window["in"],
        "cached_input_tokens": window["cin"],
        "output_tokens": window["out"],
        "cost": money.to_scale(Decimal(window["cost"])),
        "version": window["v"],
        "updated_at": _dt(window["u"]),
    }


# -- budgets -------------------------------------------------------------------
def period_bounds(period: Period, at: datetime) -> tuple[datetime, datetime]:
    """Start (inclusive) and end (exclusive) of the UTC day or month holding ``at``."""
    at = at.astimezone(UTC)
    if period == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + timedelta(days=days)


def _count_budget(
    state: State,
    usage: Usage,
    *,
    partition: int,
    offset: int,
    budgets: BudgetConfig,
    now: datetime,
    final_before_ms: int,
) -> tuple[BudgetStatus, list[dict[str, Any]]]:
    key = budget_key(usage.tenant_id)
    # A fresh entry (first event, or after ``sweep`` dropped a finished one) starts its
    # version at the input offset: a tenant's events share a partition, so that is above
    # any version an earlier entry of the tenant published, and BudgetView, which keeps
    # the highest version, never ignores the new statuses.
    budget = state.get(key) or {"p": partition, "o": -1, "v": offset, "periods": {}}
    config = budgets.for_tenant(usage.tenant_id)
    alerts: list[dict[str, Any]] = []
    if budget["o"] < offset:
        periods = dict(budget["periods"])
        for period in PERIODS:
            start, end = period_bounds(period, usage.completed_at)
            current = periods.get(period)
            if _ms(end) < final_before_ms:
                continue  # a period final by meter's retention: windows and budgets skip it
            if current is None or current["s"] < _ms(start):
                current = {"s": _ms(start), "e": _ms(end), "tok": 0, "cost": "0", "req": 0, "a": []}
            elif current["s"] > _ms(start):
                continue  # a late event of a period already closed: windows count it, not budgets
            limits = config.limits(period)
            before_tokens, before_cost = current["tok"], Decimal(current["cost"])
            current = {
                **current,
                "tok": before_tokens + usage.total_tokens,
                "cost": str(money.to_scale(before_cost + usage.cost)),
                "req": current["req"] + 1,
            }
            fired = set(current["a"])
            for metric, used, limit in (
                ("tokens", Decimal(current["tok"]), limits.tokens),
                ("usd", Decimal(current["cost"]), limits.usd),
            ):
                if limit is None:
                    continue
                for pct in budgets.alert_thresholds_pct:
                    name = f"{metric}:{pct}"
                    if name not in fired and used * 100 >= Decimal(limit) * pct:
                        fired.add(name)
                        alerts.append(
                            _alert(
                                usage,
                                hard=config.hard,
                                period=period,
                                period_start_ms=current["s"],
                                metric=metric,
                                pct=pct,
                                used=used,
                                limit=limit,
                            )
                        )
            current["a"] = sorted(fired)
            periods[period] = current
        budget = {**budget, "o": offset, "v": budget["v"] + 1, "periods": periods, "u": _ms(now)}
        state[key] = budget
    # The status settles this request, also when it is re-sent for a replayed event: the
    # first one may be lost with the crash, and guard's reservation would outlive it.
    return status_of(usage.tenant_id, budget, budgets, settled=(usage.request_id,)), alerts


def status_of(
    tenant: str, budget: dict[str, Any], budgets: BudgetConfig, *, settled: tuple[str, ...] = ()
) -> BudgetStatus:
    """The sluice.v1.BudgetStatus of a tenant's budget state (limits from the config).

    ``settled`` are the request ids this status counts (guard drops their reservations);
    meter emits one status per usage event, so it names that event's request.
    """
    config = budgets.for_tenant(tenant)
    spends = []
    for period in PERIODS:
        current = budget["periods"].get(period)
        if current is None:
            continue
        limits = config.limits(period)
        spends.append(
            PeriodSpend(
                period=period,
                period_start=_dt(current["s"]),
                period_end=_dt(current["e"]),
                tokens=current["tok"],
                cost=money.to_scale(Decimal(current["cost"])),
                token_limit=limits.tokens,
                cost_limit=limits.usd,
                requests=current["req"],
            )
        )
    return BudgetStatus(
        tenant_id=tenant,
        hard=config.hard,
        periods=tuple(spends),
        version=budget["v"],
        updated_at=_dt(budget.get("u", 0)),
        settled_request_ids=settled,
    )


def _alert(
    usage: Usage,
    *,
    hard: bool,
    period: str,
    period_start_ms: int,
    metric: str,
    pct: int,
    used: Decimal,
    limit: int | Decimal,
) -> dict[str, Any]:
    return {
        "alert_id": f"{usage.tenant_id}|{period}|{period_start_ms}|{metric}|{pct}",
        "tenant_id": usage.tenant_id,
        "period": period,
        "period_start": _dt(period_start_ms),
        "metric": metric,
        "threshold_pct": pct,
        "used": money.to_scale(used),
        "budget_limit": money.to_scale(Decimal(limit)),
        "hard": hard,
        "request_id": usage.request_id,
        "raised_at": usage.completed_at,
    }


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
