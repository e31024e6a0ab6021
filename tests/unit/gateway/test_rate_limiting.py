"""Rate limits at the gateway: per key and per tenant, 429 with Retry-After, OpenAI's headers.

The app runs through Starlette's test client with the in-memory dispatcher of
``test_app`` and a limiter on a clock the tests move, so no test sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway's HTTP stack: pip install 'sluice[gateway]'")

from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from streams.contracts.records import InferenceRequest
from streams.gateway.app import create_app
from streams.gateway.dispatch import Completed, Reply
from streams.gateway.key_store import KeyStore, LiveKeys
from streams.gateway.rate_limiting import (
    SPECIAL_TOKENS,
    call_tokens,
    duration,
    prompt_tokens,
    retry_after,
)
from streams.gateway.settings import GatewaySettings
from streams.llm.model_catalog import load_models
from streams.llm.rate_limits import Rate, RateLimiter, RateLimits
from tests.unit.gateway.test_app import FakeDispatcher, _blocked, echo, ok_result

TEXTGEN = load_models().models["textgen"]
MINILM = load_models().models["minilm"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LimitedWorld:
    """A gateway with rate limits, tenants acme and globex, and a clock the test moves."""

    def __init__(self, tmp_path: Any, limits: RateLimits, **settings: Any) -> None:
        self.store = KeyStore(tmp_path / "secrets")
        self.default_key = self.key("acme")  # the first key makes the pepper LiveKeys reads
        self.clock = Clock()
        self.dispatcher = FakeDispatcher()
        app = create_app(
            load_models(),
            LiveKeys(self.store, check_every_s=0.0),
            self.dispatcher,
            GatewaySettings(**({"request_timeout_s": 5.0} | settings)),
            rate_limits=limits,
            limiter=RateLimiter(self.clock),
        )
        self.client = TestClient(app, raise_server_exceptions=False)

    def key(self, tenant: str, **limits: int) -> str:
        return self.store.create(tenant, {"acme", "globex"}, **limits).key

    def chat(self, key: str, max_tokens: int = 16, text: str = "hi") -> Any:
        body = {
            "model": "textgen",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
        }
        return self.client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )


def chat_cost(max_tokens: int, text: str = "hi") -> int:
    return call_tokens(TEXTGEN, [f"User: {text}\n\nAssistant:"], max_tokens)


def refused(response: Any, kind: str) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == kind
    assert error["param"] is None
    seconds = response.headers["retry-after"]
    assert seconds.isdigit() and int(seconds) >= 1
    return error


def rate_limited_count(**labels: str) -> float:
    return REGISTRY.get_sample_value("sluice_gateway_rate_limited_total", labels) or 0.0


def test_a_key_past_its_requests_per_minute_gets_429_with_retry_after_and_headers(tmp_path):
    world = LimitedWorld(tmp_path, RateLimits())
    key = world.key("acme", requests_per_minute=2)
    key_id = key.split("-")[2]
    before = rate_limited_count(limit="requests", scope="key", tenant="acme")

    first = world.chat(key)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "30s"  # one request back per 30 s
    assert "x-ratelimit-limit-tokens" not in first.headers  # no token limit applies
    second = world.chat(key)
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.headers["x-ratelimit-reset-requests"] == "1m0s"

    third = world.chat(key)
    error = refused(third, "requests")
    assert third.headers["retry-after"] == "30"
    assert third.headers["retry-after-ms"] == "30000"
    assert third.headers["x-ratelimit-limit-requests"] == "2"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert "API key" in error["message"] and "requests per minute" in error["message"]
    assert key_id not in third.text and key not in third.text
    assert len(world.dispatcher.sent) == 2, "a refused call produces nothing"
    assert rate_limited_count(limit="requests", scope="key", tenant="acme") == before + 1

    world.clock.now += 29.5
    assert refused(world.chat(key), "requests") and world.chat(key).headers["retry-after"] == "1"
    world.clock.now += 0.5
    assert world.chat(key).status_code == 200


def test_the_tenant_limit_is_shared_by_its_keys_and_spares_other_tenants(tmp_path):
    limits = RateLimits(tenants={"acme": Rate(requests_per_minute=3)})
    world = LimitedWorld(tmp_path, limits)
    one, two, other = world.key("acme"), world.key("acme"), world.key("globex")
    before = rate_limited_count(limit="requests", scope="tenant", tenant="acme")
    assert [world.chat(k).status_code for k in (one, two, one)] == [200, 200, 200]
    error = refused(world.chat(two), "requests")
    assert "tenant" in error["message"] and "acme" not in error["message"]
    assert rate_limited_count(limit="requests", scope="tenant", tenant="acme") == before + 1
    answered = world.chat(other)
    assert answered.status_code == 200
    assert "x-ratelimit-limit-requests" not in answered.headers  # globex is unlimited


def test_the_tighter_of_key_and_tenant_is_reported(tmp_path):
    limits = RateLimits(
        default=Rate(requests_per_minute=100), key_default=Rate(requests_per_minute=10)
    )
    world = LimitedWorld(tmp_path, limits)
    answered = world.chat(world.key("globex"))
    assert answered.headers["x-ratelimit-limit-requests"] == "10"
    assert answered.headers["x-ratelimit-remaining-requests"] == "9"


def test_a_key_without_limits_of_its_own_takes_the_key_default_limit_by_limit(tmp_path):
    limits = RateLimits(key_default=Rate(requests_per_minute=1, tokens_per_minute=10_000))
    world = LimitedWorld(tmp_path, limits)
    own = world.key("acme", requests_per_minute=5)
    answered = world.chat(own)
    assert answered.headers["x-ratelimit-limit-requests"] == "5"
    assert answered.headers["x-ratelimit-limit-tokens"] == "10000"
    plain = world.key("acme")
    assert world.chat(plain).status_code == 200
    refused(world.chat(plain), "requests")


def test_a_call_whose_max_tokens_exceeds_what_is_left_is_refused_on_tokens(tmp_path):
    def spends_it_all(request: InferenceRequest) -> Reply:
        output = request.max_tokens or 0
        return Completed(ok_result(request, output_text="x", output_tokens=output))

    world = LimitedWorld(tmp_path, RateLimits(tenants={"acme": Rate(tokens_per_minute=1000)}))
    world.dispatcher.answer = spends_it_all
    first = world.chat(world.default_key, max_tokens=500)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - chat_cost(500))
    left = 1000 - (3 + 500)  # after settling to what was used: 3 input tokens, 500 output

    big = world.chat(world.default_key, max_tokens=512)
    error = refused(big, "tokens")
    assert str(chat_cost(512)) in error["message"]
    assert big.headers["x-ratelimit-remaining-tokens"] == str(left)
    wait_s = (chat_cost(512) - left) * 60 / 1000
    assert big.headers["retry-after"] == str(retry_after(wait_s))
    assert world.chat(world.default_key, max_tokens=50).status_code == 200


def test_settling_returns_the_allowance_a_call_did_not_use(tmp_path):
    world = LimitedWorld(tmp_path, RateLimits(tenants={"acme": Rate(tokens_per_minute=600)}))
    assert chat_cost(512) > 300  # two such estimates never fit in 600 together
    first = world.chat(world.default_key, max_tokens=512)  # echo: 3 tokens in, 4 out
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining-tokens"] == str(600 - chat_cost(512))
    second = world.chat(world.default_key, max_tokens=512)
    assert second.status_code == 200, "the first call's unused tokens came back"
    assert second.headers["x-ratelimit-remaining-tokens"] == str(600 - 7 - chat_cost(512))


def test_a_blocked_request_gives_its_tokens_back_and_a_timed_out_one_keeps_them(tmp_path):
    limits = RateLimits(tenants={"acme": Rate(tokens_per_minute=600)})
    world = LimitedWorld(tmp_path, limits, request_timeout_s=0.05)
    world.dispatcher.answer = _blocked("prompt_injection")
    assert world.chat(world.default_key, max_tokens=512).status_code == 400
    world.dispatcher.answer = echo
    assert world.chat(world.default_key, max_tokens=512).status_code == 200, "nothing was kept"

    world.dispatcher.answer = lambda _request: None  # no outcome before the deadline
    timed_out = world.chat(world.default_key, max_tokens=512)
    assert timed_out.status_code == 504
    assert timed_out.headers["x-ratelimit-limit-tokens"] == "600"  # on errors too
    world.dispatcher.answer = echo
    refused(world.chat(world.default_key, max_tokens=512), "tokens")  # it may be served yet


def test_an_embeddings_call_is_one_request_and_the_sum_of_its_inputs_tokens(tmp_path):
    limits = RateLimits(key_default=Rate(requests_per_minute=2, tokens_per_minute=10_000))
    world = LimitedWorld(tmp_path, limits)
    texts = ["one", "two two", "three three three"]
    answered = world.client.post(
        "/v1/embeddings",
        json={"model": "minilm", "input": texts},
        headers={"Authorization": f"Bearer {world.default_key}"},
    )
    assert answered.status_code == 200, answered.text
    assert len(world.dispatcher.sent) == 3
    assert answered.headers["x-ratelimit-remaining-requests"] == "1"
    estimate = call_tokens(MINILM, texts, None)
    assert estimate == sum(len(t) + SPECIAL_TOKENS for t in texts)
    assert answered.headers["x-ratelimit-remaining-tokens"] == str(10_000 - estimate)


def test_a_streamed_answer_carries_the_headers_too(tmp_path):
    world = LimitedWorld(tmp_path, RateLimits(key_default=Rate(requests_per_minute=5)))
    body = {"model": "textgen", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    streamed = world.client.post(
        "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {world.default_key}"},
    )
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-ratelimit-remaining-requests"] == "4"


def test_a_call_refused_before_admission_is_not_charged(tmp_path):
    world = LimitedWorld(tmp_path, RateLimits(key_default=Rate(requests_per_minute=1)))
    bad = world.client.post(
        "/v1/chat/completions",
        json={"model": "textgen", "messages": []},
        headers={"Authorization": f"Bearer {world.default_key}"},
    )
    assert bad.status_code == 400
    assert world.chat(world.default_key).status_code == 200


def test_token_estimates_bound_the_input_and_add_the_output():
    assert prompt_tokens("héllo", TEXTGEN) == len("héllo".encode()) + SPECIAL_TOKENS
    assert prompt_tokens("x" * 100_000, TEXTGEN) == TEXTGEN.max_input_tokens
    assert call_tokens(TEXTGEN, ["a", "b"], 10) == 2 * (1 + SPECIAL_TOKENS) + 20


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.2501, "251ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (60.0, "1m0s"),
        (75.25, "1m15.25s"),
    ],
)
def test_resets_are_written_as_openai_writes_them(seconds, text):
    assert duration(seconds) == text


def test_retry_after_is_whole_seconds_rounded_up_and_never_zero():
    assert [retry_after(s) for s in (0.0, 0.001, 1.0, 1.01, 29.9)] == [1, 1, 1, 2, 30]
