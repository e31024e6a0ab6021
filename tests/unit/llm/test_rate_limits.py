"""Token buckets per subject: admitted while allowance is left, refilled at the declared rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.llm.rate_limits import (
    UNLIMITED,
    Rate,
    RateLimitConfigError,
    RateLimiter,
    describe,
    load_rate_limits,
)

ROOT = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_subject_may_burst_its_minute_then_waits_for_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(requests_per_minute=60)
    assert all(limiter.acquire([("acme", rate)], 0).admitted for _ in range(60))
    refused = limiter.acquire([("acme", rate)], 0)
    assert not refused.admitted
    assert refused.limit == "requests"
    assert refused.retry_after_s == pytest.approx(1.0, abs=1e-6)  # one request per second
    clock.now += 1.0
    assert limiter.acquire([("acme", rate)], 0).admitted
    assert not limiter.acquire([("acme", rate)], 0).admitted


def test_subjects_do_not_share_a_bucket() -> None:
    limiter = RateLimiter(Clock())
    rate = Rate(requests_per_minute=1)
    assert limiter.acquire([("acme", rate)], 0).admitted
    assert not limiter.acquire([("acme", rate)], 0).admitted
    assert limiter.acquire([("globex", rate)], 0).admitted


def test_a_refused_call_charges_no_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    key, tenant = Rate(requests_per_minute=1), Rate(requests_per_minute=100)
    both = [("key", key), ("tenant", tenant)]
    assert limiter.acquire(both, 0).admitted
    for _ in range(50):
        assert not limiter.acquire(both, 0).admitted
    # The tenant's bucket paid only for the admitted call: 99 left for its other keys.
    assert sum(limiter.acquire([("tenant", tenant)], 0).admitted for _ in range(200)) == 99


def test_tokens_are_charged_in_full_and_a_large_request_passes_once_into_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(tokens_per_minute=600)  # 10 tokens per second
    assert limiter.acquire([("acme", rate)], 1500).admitted  # more than a minute: once
    refused = limiter.acquire([("acme", rate)], 1)
    assert refused.limit == "tokens"
    assert refused.retry_after_s == pytest.approx(90.1, abs=1e-6)  # 900 of debt + 1, at 10/s
    clock.now += 90.1
    assert limiter.acquire([("acme", rate)], 1).admitted


def test_settle_returns_an_overestimate_and_charges_an_underestimate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(tokens_per_minute=100)
    assert limiter.acquire([("acme", rate)], 100).admitted
    assert not limiter.acquire([("acme", rate)], 1).admitted
    limiter.settle([("acme", rate)], -40)  # it used 60 of the 100 estimated
    assert limiter.acquire([("acme", rate)], 1).admitted
    limiter.settle([("acme", rate)], 500)
    assert limiter.acquire([("acme", rate)], 1).retry_after_s > 60


def test_settle_never_fills_a_bucket_beyond_its_minute() -> None:
    limiter = RateLimiter(Clock())
    rate = Rate(tokens_per_minute=100)
    limiter.settle([("acme", rate)], -10_000)
    assert limiter.acquire([("acme", rate)], 100).admitted
    assert not limiter.acquire([("acme", rate)], 1).admitted


def test_unlimited_subjects_are_always_admitted() -> None:
    limiter = RateLimiter(Clock())
    assert all(limiter.acquire([("acme", UNLIMITED)], 10**9).admitted for _ in range(1000))


def test_memory_is_bounded_by_forgetting_the_least_recent_subject() -> None:
    limiter = RateLimiter(Clock(), max_subjects=2)
    rate = Rate(requests_per_minute=1)
    for subject in ("a", "b", "c"):
        assert limiter.acquire([(subject, rate)], 0).admitted
    assert not limiter.acquire([("c", rate)], 0).admitted
    assert limiter.acquire([("a", rate)], 0).admitted  # forgotten: a fresh minute


def test_the_shipped_declaration_loads_and_resolves_tenants() -> None:
    limits = load_rate_limits(ROOT / "schemas" / "rate_limits.yaml")
    assert limits.for_tenant("acme").requests_per_minute == 3000
    assert limits.for_tenant("a-tenant-not-listed") == limits.default
    assert describe(limits.for_tenant("acme")) == "3000 requests/min, 5000000 tokens/min"
    assert describe(limits.default) == "unlimited"
    assert describe(limits.key_default) == "unlimited"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default: {requests_per_minute: 0}", "default.requests_per_minute"),
        ("tenants: {acme: {rpm: 5}}", "tenants.acme.rpm"),
        ("default: [", "not valid YAML"),
    ],
)
def test_a_malformed_declaration_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "rate_limits.yaml"
    path.write_text(text)
    with pytest.raises(RateLimitConfigError, match=expected):
        load_rate_limits(path)


def test_a_missing_declaration_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RateLimitConfigError, match="cannot read"):
        load_rate_limits(tmp_path / "absent.yaml")


def test_remaining_tells_the_allowance_left_without_charging_it() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(requests_per_minute=60, tokens_per_minute=600)
    assert limiter.remaining("acme", "tokens", 600) == 600.0
    assert limiter.acquire([("acme", rate)], 100).admitted
    assert limiter.remaining("acme", "requests", 60) == pytest.approx(59.0)
    assert limiter.remaining("acme", "tokens", 600) == pytest.approx(500.0)
    assert limiter.remaining("acme", "tokens", 600) == pytest.approx(500.0), "charges nothing"
    clock.now += 1.0
    assert limiter.remaining("acme", "tokens", 600) == pytest.approx(510.0)
