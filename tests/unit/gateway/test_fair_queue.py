"""Weighted fair admission: which tenant's request enters the pipeline next, and the bounds.

The gateway's ``serve`` runs here on a dispatcher whose answers the test releases by
hand, one at a time, so the order in which requests reach it is exactly the order in
which slots were handed out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway's HTTP stack: pip install 'sluice[gateway]'")

from streams.contracts.records import InferenceRequest
from streams.gateway.app import Gateway
from streams.gateway.dispatch import Completed, Reply
from streams.gateway.errors import OpenAIError
from streams.gateway.fair_queue import PRIORITY_WEIGHTS, FairScheduler, QueueFullError
from streams.gateway.keys import Priority
from streams.gateway.mapping import Caller, requests_for
from streams.gateway.rate_limiting import GatewayRateLimits
from streams.gateway.settings import GatewaySettings
from streams.llm.model_catalog import load_models
from streams.llm.rate_limits import Rate, RateLimiter, RateLimits
from tests.unit.gateway.test_app import World, assert_openai_error, ok_result

CATALOG = load_models()
MINILM = CATALOG.models["minilm"]


class HandDispatcher:
    """Records each request it is sent and answers only when the test releases it."""

    def __init__(self) -> None:
        self.sent: list[InferenceRequest] = []
        self.waiting: list[tuple[InferenceRequest, asyncio.Future[Reply]]] = []
        self.joining: set[str] = set()
        self.open = 0
        self.peak = 0

    def produces(self, request: InferenceRequest, *, idempotent: bool = False) -> bool:
        return not (idempotent and request.request_id in self.joining)

    async def send(
        self, request: InferenceRequest, deadline: float, *, idempotent: bool = False
    ) -> Reply:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.sent.append(request)
        self.waiting.append((request, future))
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            return await future
        finally:
            self.open -= 1
            if (request, future) in self.waiting:
                self.waiting.remove((request, future))  # its caller gave up

    def release(self, index: int = 0) -> None:
        request, future = self.waiting.pop(index)
        future.set_result(Completed(ok_result(request)))

    def ready(self) -> bool:
        return True


class Rig:
    def __init__(
        self,
        *,
        concurrency: int,
        max_queued: int = 10_000,
        timeout_s: float = 30.0,
        limits: RateLimits | None = None,
    ) -> None:
        self.dispatcher = HandDispatcher()
        self.scheduler = FairScheduler(concurrency, max_queued)
        self.limiter = RateLimiter()
        self.gateway = Gateway(
            CATALOG,
            keys=None,  # type: ignore[arg-type]  # serve never authenticates
            dispatcher=self.dispatcher,
            settings=GatewaySettings(request_timeout_s=timeout_s, max_in_flight=100_000),
            rate_limits=GatewayRateLimits(limits or RateLimits(), self.limiter),
            fair_queue=self.scheduler,
        )

    def call(
        self, tenant: str, count: int, priority: Priority = "normal", **kwargs: Any
    ) -> asyncio.Task[Any]:
        """One embeddings call of ``count`` inputs, as its own task (as a route would be)."""
        caller = Caller(f"key-{tenant}-{priority}", tenant, None, priority)
        requests = requests_for(caller, MINILM, [f"text {i}" for i in range(count)])
        http = SimpleNamespace(state=SimpleNamespace())
        return asyncio.ensure_future(
            self.gateway.serve(http, caller, requests, 10 * count, **kwargs)  # type: ignore[arg-type]
        )

    def tenants_sent(self, start: int = 0) -> list[str]:
        return [r.tenant_id for r in self.dispatcher.sent[start:]]

    async def release(self, index: int = 0) -> None:
        """Answer one outstanding request and let the freed slot be handed on."""
        self.dispatcher.release(index)
        await settle()


async def settle() -> None:
    """Let every task that can run do so (a slot handed on takes a few turns of the loop)."""
    for _ in range(20):
        await asyncio.sleep(0)


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())


# -- fairness ---------------------------------------------------------------------------
def test_a_small_tenant_behind_a_flood_is_served_within_twice_its_own_count():
    # Equal weights, concurrency C: a tenant that arrives with an empty queue while
    # another is backlogged has its k-th request dispatched within 2k dispatches.
    rig = Rig(concurrency=4)

    async def scenario() -> list[str]:
        flood = [rig.call("acme", 100) for _ in range(5)]  # 500 requests
        await settle()
        assert len(rig.dispatcher.sent) == 4 and rig.scheduler.queued("acme") == 496
        small = rig.call("globex", 10)
        await settle()
        queued_at = len(rig.dispatcher.sent)
        while not small.done():
            await rig.release()
        order = rig.tenants_sent(queued_at)
        for call in flood:
            call.cancel()
        await asyncio.gather(*flood, return_exceptions=True)
        return order

    order = run(scenario)
    positions = [i + 1 for i, tenant in enumerate(order) if tenant == "globex"]
    assert len(positions) == 10
    for k, position in enumerate(positions, start=1):
        assert position <= 2 * k, (k, position, order[:25])
    assert positions[-1] <= 20  # all ten within the next twenty dispatches


def test_without_fair_admission_the_small_tenant_would_wait_for_the_whole_flood():
    # The same arrival with concurrency above the flood: no queue, no reordering, so the
    # test above measures the scheduler, not the order of arrival.
    rig = Rig(concurrency=1000)

    async def scenario() -> list[str]:
        flood = [rig.call("acme", 100) for _ in range(5)]
        await settle()
        small = rig.call("globex", 10)
        await settle()
        order = rig.tenants_sent()
        small.cancel()
        for call in flood:
            call.cancel()
        await asyncio.gather(small, *flood, return_exceptions=True)
        return order

    order = run(scenario)
    assert order.index("globex") == 500


def test_priorities_weight_the_shares_high_gets_twice_normal():
    rig = Rig(concurrency=1)

    async def scenario() -> list[str]:
        blocker = rig.call("init", 1)
        await settle()
        calls = [rig.call("acme", 200, "high"), rig.call("globex", 200, "normal")]
        await settle()
        start = len(rig.dispatcher.sent)
        for _ in range(150):
            await rig.release()
        order = rig.tenants_sent(start)
        for call in [blocker, *calls]:
            call.cancel()
        await asyncio.gather(blocker, *calls, return_exceptions=True)
        return order

    order = run(scenario)
    assert PRIORITY_WEIGHTS["high"] == 2 * PRIORITY_WEIGHTS["normal"]
    # 150 dispatches, 2:1 by weight: 100 and 50, give or take the first turn's tie.
    assert abs(order.count("acme") - 100) <= 1
    assert abs(order.count("globex") - 50) <= 1


def test_within_a_tenant_higher_priority_goes_first_and_fifo_otherwise():
    rig = Rig(concurrency=1)

    async def scenario() -> list[InferenceRequest]:
        blocker = rig.call("acme", 1, "low")
        await settle()
        normal = rig.call("acme", 3, "normal")
        high = rig.call("acme", 2, "high")
        await settle()
        start = len(rig.dispatcher.sent)
        for _ in range(6):  # the blocker, then the five
            await rig.release()
        await asyncio.gather(blocker, normal, high)
        return rig.dispatcher.sent[start:]

    sent = run(scenario)
    priorities = [r.metadata["sluice.priority"] for r in sent]
    assert priorities == ["high", "high", "normal", "normal", "normal"]
    normal_texts = [r.input_text for r in sent if r.metadata["sluice.priority"] == "normal"]
    assert normal_texts == ["text 0", "text 1", "text 2"]


# -- bounds -----------------------------------------------------------------------------
def test_concurrency_is_never_exceeded_under_random_load():
    rig = Rig(concurrency=5)
    chance = random.Random(7)

    async def scenario() -> None:
        calls: list[asyncio.Task[Any]] = []
        for _ in range(200):
            if chance.random() < 0.3:
                tenant = chance.choice(["acme", "globex", "initech"])
                priority = chance.choice(["high", "normal", "low"])
                calls.append(rig.call(tenant, chance.randint(1, 8), priority))
            await settle()
            assert rig.dispatcher.open <= 5 and rig.scheduler.outstanding <= 5
            if rig.dispatcher.waiting and chance.random() < 0.6:
                await rig.release(chance.randrange(len(rig.dispatcher.waiting)))
        while rig.dispatcher.waiting:
            await rig.release()
            assert rig.dispatcher.open <= 5
        await asyncio.gather(*calls)

    run(scenario)
    assert rig.dispatcher.peak == 5
    assert rig.scheduler.outstanding == 0 and rig.scheduler.queued() == 0


def test_a_tenant_over_its_queue_bound_gets_429_with_retry_after_and_others_do_not():
    rig = Rig(concurrency=2, max_queued=150)

    async def scenario() -> tuple[BaseException | None, BaseException | None]:
        first = rig.call("acme", 100)  # 2 produced, 98 queued
        await settle()
        over = rig.call("acme", 100)  # 198 would wait: over 150
        await settle()
        other = rig.call("globex", 100)  # its own queue: let in
        await settle()
        refused = over.exception()
        assert not other.done()
        for call in (first, other):
            call.cancel()
        await asyncio.gather(first, other, return_exceptions=True)
        return refused, None

    refused, _ = run(scenario)
    assert isinstance(refused, OpenAIError)
    assert refused.status == 429 and refused.code == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert "150" in refused.message
    # Nothing of the refused call reached the pipeline.
    assert len(rig.dispatcher.sent) == 2


def test_room_counts_the_free_slots_and_retry_after_grows_with_the_backlog():
    scheduler = FairScheduler(concurrency=10, max_queued_per_tenant=5)
    scheduler.check_room("acme", 15)  # 10 take a slot at once, 5 wait
    with pytest.raises(QueueFullError) as full:
        scheduler.check_room("acme", 16)
    assert full.value.limit == 5 and full.value.retry_after_s >= 1


# -- deadlines and callers that leave --------------------------------------------------
def test_a_request_still_queued_at_its_deadline_is_504_never_produced_and_costs_nothing():
    limits = RateLimits(tenants={"globex": Rate(tokens_per_minute=10_000)})
    rig = Rig(concurrency=1, timeout_s=0.2, limits=limits)

    async def scenario() -> BaseException | None:
        # The one slot, held past globex's deadline.
        await rig.scheduler.acquire("acme", "normal", time.monotonic() + 60)
        late = rig.call("globex", 3)
        await asyncio.gather(late, return_exceptions=True)
        assert rig.scheduler.queued() == 0
        rig.scheduler.release()  # the slot frees after globex gave up: nothing of it goes in
        await settle()
        assert rig.scheduler.outstanding == 0
        return late.exception()

    error = run(scenario)
    assert isinstance(error, OpenAIError) and error.status == 504
    assert "nothing was served or billed" in error.message
    assert rig.dispatcher.sent == []
    # Its 30 tokens were given back: the tenant's bucket is full again.
    assert rig.limiter.remaining("tenant:globex", "tokens", 10_000) == pytest.approx(10_000)


def test_a_cancelled_caller_leaves_the_queue_and_is_never_produced():
    rig = Rig(concurrency=1)

    async def scenario() -> None:
        blocker = rig.call("acme", 1)
        await settle()
        gone = rig.call("globex", 4)
        await settle()
        assert rig.scheduler.queued("globex") == 4
        gone.cancel()
        await settle()
        assert rig.scheduler.queued() == 0
        after = rig.call("initech", 1)
        await rig.release()
        await rig.release()
        await asyncio.gather(blocker, after)

    run(scenario)
    assert rig.tenants_sent() == ["acme", "initech"]
    assert rig.scheduler.outstanding == 0


def test_a_slot_handed_to_a_caller_cancelled_in_the_same_turn_is_passed_on():
    async def scenario() -> None:
        scheduler = FairScheduler(concurrency=1, max_queued_per_tenant=10)
        deadline = time.monotonic() + 60
        await scheduler.acquire("acme", "normal", deadline)
        waiting = asyncio.ensure_future(scheduler.acquire("globex", "normal", deadline))
        other = asyncio.ensure_future(scheduler.acquire("initech", "normal", deadline))
        await settle()
        waiting.cancel()  # cancelled, and not yet run, when the slot frees
        scheduler.release()
        await settle()
        assert waiting.cancelled() and other.done() and not other.cancelled()
        assert scheduler.outstanding == 1 and scheduler.queued() == 0

    run(scenario)


def test_an_idempotent_retry_that_joins_its_original_takes_no_slot():
    rig = Rig(concurrency=1)

    async def scenario() -> None:
        blocker = rig.call("acme", 1)
        await settle()
        caller = Caller("key-globex", "globex", None, "normal")
        [retry] = requests_for(caller, MINILM, ["again"])
        rig.dispatcher.joining.add(retry.request_id)
        http = SimpleNamespace(state=SimpleNamespace())
        joined = asyncio.ensure_future(
            rig.gateway.serve(http, caller, [retry], 10, idempotent=True)  # type: ignore[arg-type]
        )
        await settle()
        # Sent at once, past the full slot, and no slot taken.
        assert rig.tenants_sent() == ["acme", "globex"]
        assert rig.scheduler.outstanding == 1 and rig.scheduler.queued() == 0
        await rig.release(1)
        await rig.release()
        await asyncio.gather(blocker, joined)

    run(scenario)
    assert rig.scheduler.outstanding == 0


def test_the_settings_size_the_scheduler_and_a_full_queue_is_openais_rate_limit_error(tmp_path):
    # Through the HTTP app: one slot and no room to wait, so a call of two inputs would
    # have to queue one of them.
    world = World(tmp_path, pipeline_concurrency=1, max_queued_per_tenant=0)
    refused = world.post("/v1/embeddings", {"model": "minilm", "input": ["a", "b"]})
    error = assert_openai_error(refused, 429, code="rate_limit_exceeded")
    assert error["type"] == "requests"
    assert int(refused.headers["retry-after"]) >= 1
    assert world.dispatcher.sent == []
    served = world.post("/v1/embeddings", {"model": "minilm", "input": ["a"]})
    assert served.status_code == 200, served.text
