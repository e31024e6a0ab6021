"""Weighted fair admission into the pipeline: which tenant's request is produced next.

Whatever enters ``inference.requests`` is consumed in arrival order by guard and infer,
so the gateway decides the order in which its online requests enter. Each replica
keeps at most ``concurrency`` pipeline requests outstanding (produced and not yet
answered); the others wait here, in one queue per tenant, and when a slot frees the
next request is chosen across tenants by **self-clocked fair queuing** (SCFQ, Golestani
1994), a weighted fair queuing by virtual finish time:

* a tenant's head request gets the tag ``start + 1 / weight``, where ``start`` is its
  previous request's tag while the tenant stays backlogged, or the virtual time ``V``
  (the tag of the request dispatched last) when it arrives with an empty queue;
* the smallest tag is dispatched next (ties: the earlier arrival), and ``V`` becomes it.

A tenant's backlog therefore delays another tenant by its share only. With equal
weights, a tenant that arrives with an empty queue while one other tenant is backlogged
(and was dispatched last) has its k-th request dispatched within the next ``2k``
dispatches: its tags are ``V + 1/w .. V + k/w``, the backlogged tenant's pending tags
are above ``V`` and ``1/w`` apart, so at most ``k`` of them come first. With weights
``wa`` (backlogged) and ``wb`` (newcomer), within ``k + ceil(k * wa / wb)``. With several
backlogged tenants, each adds at most its own ``k * wi / wb``, plus one on a tie in
virtual time.

The weight is the priority of the API key that made the request (``PRIORITY_WEIGHTS``).
Within a tenant, a higher priority goes first, arrival order otherwise; the weight of a
tenant's turn is that of its head request.

Bounded: a tenant may have ``max_queued_per_tenant`` requests waiting; a call that would
queue more is refused whole (``QueueFullError``), before it is charged anything. A request
still waiting at its deadline, or whose caller went away, leaves the queue and is never
produced.

Everything here runs on the app's event loop (no locks): the routes are coroutines.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.errors import SluiceError
from streams.gateway.keys import PRIORITIES, Priority
from streams.gateway.metrics import GATEWAY_OUTSTANDING, GATEWAY_QUEUE_WAIT, GATEWAY_QUEUED
from streams.gateway.rate_limiting import retry_after

#: Each priority's share of the pipeline when tenants compete: a high key's requests get
#: twice a normal key's share and four times a low one's. Shares rather than strict
#: priority so that low traffic is slowed under contention, never starved; powers of two
#: so that one step of priority is worth the same everywhere.
PRIORITY_WEIGHTS: dict[Priority, int] = {"high": 4, "normal": 2, "low": 1}
#: The longest ``Retry-After`` a refused call is told, in seconds: past it the estimate
#: (a backlog drained at the recent pace) says little, and clients should come back.
MAX_RETRY_AFTER_S = 60.0
#: How fast the mean slot hold time follows new samples (an exponential moving average).
_HOLD_SMOOTHING = 0.05


class QueueFullError(SluiceError):
    """The tenant already has as many requests waiting as it may; ``retry_after_s`` is a guess."""

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(f"{queued} requests of the tenant are queued; the limit is {limit}")
        self.queued = queued
        self.limit = limit
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Entry:
    """One request waiting for a slot."""

    tenant: str
    priority: Priority
    sequence: int
    future: asyncio.Future[None]
    queued_at: float
    live: bool = True  # False once it left the queue (granted, expired or cancelled)
    granted: bool = False


@dataclass(eq=False)
class _TenantQueue:
    """A tenant's waiting requests, one FIFO per priority, and its place in virtual time."""

    by_priority: dict[Priority, deque[_Entry]] = field(
        default_factory=lambda: {p: deque() for p in PRIORITIES}
    )
    queued: int = 0  # live entries
    start: float = 0.0  # virtual start of its head request

    def head(self) -> _Entry | None:
        """Its next request: the highest priority first, arrival order within one."""
        for priority in PRIORITIES:  # declared high to low
            waiting = self.by_priority[priority]
            while waiting and not waiting[0].live:
                waiting.popleft()  # left the queue earlier: dropped lazily, in O(1)
            if waiting:
                return waiting[0]
        return None


class FairScheduler:
    """Slots into the pipeline, handed out fairly across tenants (see the module's doc)."""

    def __init__(
        self,
        concurrency: int,
        max_queued_per_tenant: int,
        *,
        weights: dict[Priority, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1 or max_queued_per_tenant < 0:
            raise ValueError("concurrency must be at least 1 and the queue bound not negative")
        self.concurrency = concurrency
        self.max_queued_per_tenant = max_queued_per_tenant
        self.weights = weights or PRIORITY_WEIGHTS
        self._clock = clock
        self.outstanding = 0
        self._virtual_time = 0.0
        self._sequence = 0
        self._tenants: dict[str, _TenantQueue] = {}
        self._queued = 0
        # Mean seconds a slot is held, for Retry-After; 1 s until anything was measured.
        self._mean_hold_s = 1.0

    # -- what callers use ------------------------------------------------------------------
    def queued(self, tenant: str | None = None) -> int:
        """Requests waiting for a slot: of ``tenant``, or of every tenant."""
        if tenant is None:
            return self._queued
        queue = self._tenants.get(tenant)
        return 0 if queue is None else queue.queued

    def check_room(self, tenant: str, count: int) -> None:
        """``QueueFullError`` when ``count`` more requests would overflow ``tenant``'s queue.

        The slots free now (when nobody waits) take their share at once. A call is refused
        whole or not at all, before it is charged to the rate limits.
        """
        queued = self.queued(tenant)
        if queued + count <= self.max_queued_per_tenant:
            return
        free = self.concurrency - self.outstanding if self._queued == 0 else 0
        if queued + count - free <= self.max_queued_per_tenant:
            return  # the free slots take the excess at once
        raise QueueFullError(queued, self.max_queued_per_tenant, self._retry_after(queued + count))

    async def acquire(self, tenant: str, priority: Priority, deadline: float) -> None:
        """Wait for a slot until ``deadline`` (on ``clock``); ``TimeoutError`` past it.

        Cancelled while waiting, the request leaves the queue. The slot is the caller's
        until it calls ``release``.
        """
        if self._queued == 0 and self.outstanding < self.concurrency:
            self.outstanding += 1
            GATEWAY_OUTSTANDING.set(self.outstanding)
            GATEWAY_QUEUE_WAIT.observe(0.0)
            return
        entry = self._enqueue(tenant, priority)
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock())):
                await entry.future
        except BaseException:
            if entry.granted:
                self.release()  # handed over as the caller gave up: pass it on
            else:
                self._leave(entry)
            raise
        if self._clock() >= deadline:  # granted as the deadline passed: too late to produce
            self.release()
            raise TimeoutError

    def release(self, held_s: float | None = None) -> None:
        """Give a slot back (its request was answered or abandoned), and hand it on."""
        self.outstanding -= 1
        if held_s is not None:
            self._mean_hold_s += _HOLD_SMOOTHING * (held_s - self._mean_hold_s)
        self._dispatch()
        GATEWAY_OUTSTANDING.set(self.outstanding)

    # -- the queue -----------------------------------------------------------------------
    def _enqueue(self, tenant: str, priority: Priority) -> _Entry:
        queue = self._tenants.get(tenant)
        if queue is None:
            queue = self._tenants[tenant] = _TenantQueue()
        if queue.queued == 0:
            # Arriving idle: it starts at the present, not owed for the time it was away
            # (its last tag, if any, is <= V: every tag dispatched so far is).
            queue.start = self._virtual_time
        self._sequence += 1
        entry = _Entry(
            tenant,
            priority,
            self._sequence,
            asyncio.get_running_loop().create_future(),
            self._clock(),
        )
        queue.by_priority[priority].append(entry)
        queue.queued += 1
        self._queued += 1
        GATEWAY_QUEUED.labels(tenant).set(queue.queued)
        self._dispatch()
        return entry

    def _leave(self, entry: _Entry) -> None:
        """Take a waiting request out of the queue (its deadline passed or its caller left)."""
        if not entry.live:
            return
        entry.live = False
        queue = self._tenants[entry.tenant]
        queue.queued -= 1
        self._queued -= 1
        GATEWAY_QUEUED.labels(entry.tenant).set(queue.queued)
        if queue.queued == 0:
            del self._tenants[entry.tenant]  # its tags are <= V: nothing to remember

    def _tag(self, queue: _TenantQueue, head: _Entry) -> float:
        return queue.start + 1.0 / self.weights[head.priority]

    def _dispatch(self) -> None:
        """Hand free slots to the waiting requests with the smallest virtual finish tags."""
        while self.outstanding < self.concurrency and self._queued:
            best: tuple[float, int, str, _Entry] | None = None
            # A scan over the tenants with waiting requests: bounded by the tenant
            # registry, and cheaper than keeping a heap in step with cancellations.
            for tenant, queue in self._tenants.items():
                head = queue.head()
                if head is None:
                    continue
                candidate = (self._tag(queue, head), head.sequence, tenant, head)
                if best is None or candidate[:2] < best[:2]:
                    best = candidate
            if best is None:
                break
            tag, _, tenant, entry = best
            if entry.future.done():
                self._leave(entry)  # its caller was cancelled and has not run yet
                continue
            self._virtual_time = tag
            self._tenants[tenant].start = tag  # a backlogged tenant's next request starts here
            self._leave(entry)
            entry.granted = True
            self.outstanding += 1
            GATEWAY_QUEUE_WAIT.observe(max(0.0, self._clock() - entry.queued_at))
            entry.future.set_result(None)
        GATEWAY_OUTSTANDING.set(self.outstanding)

    def _retry_after(self, backlog: int) -> int:
        """Seconds until ``backlog`` requests could drain, were every slot theirs (a floor)."""
        estimate = backlog * self._mean_hold_s / self.concurrency
        return retry_after(min(MAX_RETRY_AFTER_S, estimate)) if math.isfinite(estimate) else 1
