"""guard's rate limits through the runner's batch path: per tenant, before analysis, no Kafka."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from processors.guard.engine import GuardEngine
from processors.guard.identity import TenantIdentity
from processors.guard.processor import BLOCKED, PROCESSOR, SAFE, GuardResources
from processors.guard.rate_gate import RATE_LIMITED, RateGate
from processors.guard.replay import RequestIdGate
from processors.guard.settings import GuardSettings
from processors.guard.worst_case import worst_case, worst_case_tokens
from streams.contracts.records import InferenceRequest
from streams.errors import ConfigurationError
from streams.llm.model_catalog import ModelCatalog, load_models
from streams.llm.pricing import load_prices
from streams.llm.rate_limits import Rate, RateLimiter, RateLimits
from streams.runtime.spec import InputRecord
from streams.runtime.testing import BatchResult, Harness
from streams.settings import PROJECT_ROOT, Settings
from tests.support.guard import MemoryView
from tests.support.tenants import UnitTenants
from tests.support.verdicts import unit_keypair

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
#: A prompt whose words must never show up in what guard writes for a rate-limited request.
PROMPT = "Summarise the quarterly report of Maria Garcia for the board"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingSpan:
    def __init__(self) -> None:
        self.attributes: dict[str, object] = {}

    def set_attribute(self, name: str, value: object) -> None:
        self.attributes[name] = value

    def set_attributes(self, attributes: dict[str, object]) -> None:
        self.attributes.update(attributes)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> UnitTenants:
    return UnitTenants(tmp_path_factory.mktemp("tenants")).add("acme", "globex")


@pytest.fixture(scope="module")
def models() -> ModelCatalog:
    return load_models(Settings().triton.models_file)


def config(tenants: UnitTenants, **overrides: Any) -> GuardSettings:
    return GuardSettings(
        embedder="none",
        budgets="off",
        request_ids="off",
        hash_secret=SecretStr("s" * 32),
        verdict_signing_key=SecretStr(unit_keypair()[0]),
        tenants_path=tenants.path,
        **overrides,
    )


class Guarded:
    """guard with a rate gate on an injected clock (and, if asked, an in-memory request-id view)."""

    def __init__(
        self,
        tenants: UnitTenants,
        models: ModelCatalog,
        limits: RateLimits,
        *,
        request_ids: bool = False,
    ) -> None:
        self.tenants = tenants
        self.clock = Clock()
        self.view = MemoryView()
        settings = config(tenants)
        engine = GuardEngine.from_settings(
            settings, pseudonym_key_ids=tenants.registry.pseudonym_key_id
        )
        gate = (
            RequestIdGate(
                lambda: self.view,
                window_s=settings.request_id_window_s,
                max_skew_s=settings.max_clock_skew_s,
                ready_timeout_s=0,
                clock=lambda: NOW,
            )
            if request_ids
            else None
        )
        resources = GuardResources(
            engine=engine,
            over_budget=None,
            identity=TenantIdentity.of(tenants.registry, engine.policy),
            request_ids=gate,
            rate_limits=RateGate(limits, models, RateLimiter(self.clock)),
        )
        self.harness = Harness(PROCESSOR, settings=Settings(), config=settings, resources=resources)

    def records(self, *values: dict[str, Any]) -> list[InputRecord]:
        return [self.tenants.record(self.harness, value) for value in values]

    def run(self, *values: dict[str, Any]) -> BatchResult:
        return self.harness.run(self.records(*values))


ids = itertools.count()


def request(tenant: str = "acme", text: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": f"{tenant}-{next(ids)}",
        "tenant_id": tenant,
        "model": "textgen",
        "input_text": text,
        "created_at": NOW - timedelta(seconds=1),
        **extra,
    }


def rate_limited(out: BatchResult) -> list[str]:
    return [v["tenant_id"] for v in out.values(BLOCKED) if v["guard"]["reason"] == RATE_LIMITED]


def passed(out: BatchResult) -> list[str]:
    return [v["tenant_id"] for v in out.values(SAFE)]


def blocks_of(tenant: str, limit: str) -> float:
    value = REGISTRY.get_sample_value(
        "sluice_guard_rate_limited_total", {"tenant": tenant, "limit": limit}
    )
    return value or 0.0


def per_minute(requests: int | None = None, tokens: int | None = None) -> Rate:
    return Rate(requests_per_minute=requests, tokens_per_minute=tokens)


def test_a_tenant_over_its_requests_per_minute_is_rate_limited_until_its_bucket_refills(
    tenants: UnitTenants, models: ModelCatalog
) -> None:
    guarded = Guarded(tenants, models, RateLimits(tenants={"acme": per_minute(requests=3)}))
    before = blocks_of("acme", "requests")

    out = guarded.run(*(request("acme") for _ in range(5)), request("globex"), request("globex"))

    assert passed(out) == ["acme"] * 3 + ["globex"] * 2, "globex has no limit of its own"
    assert rate_limited(out) == ["acme", "acme"]
    assert blocks_of("acme", "requests") - before == 2
    guarded.clock.now += 20  # a third of a minute: one request back
    again = guarded.run(request("acme"), request("acme"))
    assert (passed(again), rate_limited(again)) == (["acme"], ["acme"])


def test_one_tenants_flood_leaves_another_tenants_allowance_whole(
    tenants: UnitTenants, models: ModelCatalog
) -> None:
    # Both under the same default: each must get its own bucket.
    guarded = Guarded(tenants, models, RateLimits(default=per_minute(requests=4)))

    flood = guarded.run(*(request("globex") for _ in range(20)))
    after = guarded.run(*(request("acme") for _ in range(4)), request("globex"))

    assert (passed(flood), len(rate_limited(flood))) == (["globex"] * 4, 16)
    assert passed(after) == ["acme"] * 4
    assert rate_limited(after) == ["globex"]


def test_the_tokens_per_minute_counts_the_worst_case_output_a_request_may_ask_for(
    tenants: UnitTenants, models: ModelCatalog
) -> None:
    guarded = Guarded(tenants, models, RateLimits(default=per_minute(tokens=1000)))
    large = request("acme", "Write a long story", max_tokens=500)
    small = request("acme", "Hi", max_tokens=10)
    assert worst_case_tokens(InferenceRequest.from_avro(large), models) > 500

    out = guarded.run(large, dict(large, request_id="acme-large-2"), small)

    # 1000 tokens admit one large request (~535 tokens) and the small one, not two large.
    assert [v["request_id"] for v in out.values(SAFE)] == [large["request_id"], small["request_id"]]
    assert [v["request_id"] for v in out.values(BLOCKED)] == ["acme-large-2"]
    assert blocks_of("acme", "tokens") >= 1


def test_the_token_count_is_the_budget_reservations_worst_case(models: ModelCatalog) -> None:
    prices = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
    for max_tokens in (None, 1, 300, 10_000):
        value = InferenceRequest.new("acme", "textgen", PROMPT * 40, max_tokens=max_tokens)
        assert worst_case_tokens(value, models) == worst_case(value, models, prices).tokens
    unknown = InferenceRequest.new("acme", "no-such-model", PROMPT)
    assert worst_case_tokens(unknown, models) == 0


def test_a_rate_limited_request_keeps_no_prompt_text_and_says_which_limit_and_how_long(
    tenants: UnitTenants, models: ModelCatalog
) -> None:
    guarded = Guarded(tenants, models, RateLimits(default=per_minute(requests=1)))
    first, second = guarded.records(request("acme"), request("acme", user_id="maria.garcia"))
    span = RecordingSpan()

    out = guarded.harness.run([first, dataclasses.replace(second, span=span)])

    [blocked] = out.values(BLOCKED)
    assert blocked["guard"]["reason"] == RATE_LIMITED
    assert blocked["tenant_id"] == "acme"
    assert span.attributes["sluice.guard.reason"] == RATE_LIMITED
    detail = str(span.attributes["sluice.guard.rate_limit_detail"])
    assert detail == "requests per minute limit of 1 reached: retry in 60.0 s"
    blocked_bytes = b"".join(p.raw for p in out.produced if p.topic.endswith("blocked"))
    for word in ("Maria", "Garcia", "quarterly", "maria.garcia"):
        assert word not in blocked_bytes.decode("utf-8", "replace")
        assert word not in detail


def test_a_duplicate_copy_is_blocked_as_a_duplicate_and_not_charged(
    tenants: UnitTenants, models: ModelCatalog
) -> None:
    guarded = Guarded(tenants, models, RateLimits(default=per_minute(requests=2)), request_ids=True)
    original = request("acme")

    first = guarded.run(original, original)  # a copy in the same batch
    later = guarded.run(original, request("acme"))  # a copy in a later batch, then a new one

    assert passed(first) == ["acme"]
    assert [v["guard"]["reason"] for v in first.values(BLOCKED)] == ["duplicate_request"]
    assert passed(later) == ["acme"], "the copies did not use the second request of the minute"
    assert [v["guard"]["reason"] for v in later.values(BLOCKED)] == ["duplicate_request"]


def test_a_rate_limited_request_uses_its_id(tenants: UnitTenants, models: ModelCatalog) -> None:
    guarded = Guarded(tenants, models, RateLimits(default=per_minute(requests=1)), request_ids=True)
    limited = request("acme")
    out = guarded.run(request("acme"), limited)
    guarded.clock.now += 60
    again = guarded.run(limited)

    assert rate_limited(out) == ["acme"]
    assert [v["guard"]["reason"] for v in again.values(BLOCKED)] == ["duplicate_request"]


def test_the_retry_of_a_rolled_back_batch_is_not_charged_again(
    tenants: UnitTenants, models: ModelCatalog
) -> None:
    guarded = Guarded(tenants, models, RateLimits(default=per_minute(requests=2)))
    batch = guarded.records(request("acme"), request("acme"))

    guarded.harness.run_aborted(batch)
    guarded.harness.abort()
    retried = guarded.harness.run(batch)
    next_one = guarded.run(request("acme"))

    assert passed(retried) == ["acme", "acme"]
    assert rate_limited(next_one) == ["acme"], "the retry was charged once, as the batch was"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rate_limits.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_setup_enforces_the_rate_limits_file(tenants: UnitTenants, tmp_path: Path) -> None:
    path = write(tmp_path, "tenants:\n  acme: {requests_per_minute: 1}\n")
    with Harness(
        PROCESSOR, settings=Settings(), config=config(tenants, rate_limits_file=path)
    ) as harness:
        out = harness.run([tenants.record(harness, request("acme")) for _ in range(3)])
    assert (passed(out), rate_limited(out)) == (["acme"], ["acme", "acme"])


def test_off_never_limits(tenants: UnitTenants, tmp_path: Path) -> None:
    path = write(tmp_path, "default: {requests_per_minute: 1}\n")
    settings = config(tenants, rate_limits="off", rate_limits_file=path)
    with Harness(PROCESSOR, settings=Settings(), config=settings) as harness:
        assert harness.ctx.resources.rate_limits is None
        out = harness.run([tenants.record(harness, request("acme")) for _ in range(3)])
    assert (passed(out), rate_limited(out)) == (["acme"] * 3, [])


def test_the_default_file_is_the_schemas_one(tmp_path: Path) -> None:
    assert GuardSettings().rate_limits_path(tmp_path) == tmp_path / "rate_limits.yaml"
    assert GuardSettings(rate_limits_file=tmp_path / "x.yaml").rate_limits_path(PROJECT_ROOT) == (
        tmp_path / "x.yaml"
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("tenants:\n  acme: {requests_per_minute: 0}\n", "tenants.acme.requests_per_minute"),
        ("default: {requests_per_mintue: 5}\n", "default.requests_per_mintue"),
        ("tenants: [\n", "not valid YAML"),
    ],
)
def test_a_malformed_file_stops_guard_at_start(
    tenants: UnitTenants, tmp_path: Path, text: str, named: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=named.replace(".", r"\.")):
        Harness(PROCESSOR, settings=Settings(), config=config(tenants, rate_limits_file=path))


def test_a_missing_file_stops_guard_at_start(tenants: UnitTenants, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the rate limits file"):
        Harness(
            PROCESSOR,
            settings=Settings(),
            config=config(tenants, rate_limits_file=tmp_path / "missing.yaml"),
        )
