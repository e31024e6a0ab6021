"""The gateway's HTTP side through Starlette's test client, with an in-memory dispatcher.

The dispatcher here stands in for Kafka: it records the requests the app made and
answers each as a test programs it (a result, a block, silence). The keys are real
(``KeyStore``/``LiveKeys`` in a temporary directory) and the model catalog is the
shipped one (``minilm`` for embeddings, ``textgen`` for text).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway's HTTP stack: pip install 'sluice[gateway]'")

from starlette.testclient import TestClient

from streams.contracts.records import (
    GuardVerdict,
    InferenceChunk,
    InferenceRequest,
    InferenceResult,
)
from streams.gateway.app import create_app
from streams.gateway.dispatch import Blocked, Completed, DispatchError, NoSigningKeyError, Reply
from streams.gateway.key_store import KeyStore, LiveKeys
from streams.gateway.mapping import API_KEY_ID, PRIORITY, SOURCE
from streams.gateway.settings import GatewaySettings
from streams.gateway.streaming import ChunkRelay
from streams.llm.model_catalog import load_models

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
Answer = Callable[[InferenceRequest], Reply | None]
#: The redacted deltas the pipeline streams for a request, before its outcome.
Deltas = Callable[[InferenceRequest], list[InferenceChunk]]


def ok_result(request: InferenceRequest, **fields: Any) -> InferenceResult:
    values: dict[str, Any] = {
        "request_id": request.request_id,
        "tenant_id": request.tenant_id,
        "model": request.model,
        "status": "ok",
        "request_created_at": request.created_at,
        "completed_at": NOW,
        "input_tokens": 3,
    }
    return InferenceResult(**(values | fields))


def echo(request: InferenceRequest) -> Reply:
    """An answer that shows what the model was given."""
    if request.model == "minilm":
        return Completed(ok_result(request, embedding=[0.5, -1.0, float(len(request.input_text))]))
    return Completed(ok_result(request, output_text=f"<{request.input_text}>", output_tokens=4))


class FakeDispatcher:
    """Answers as ``answer`` says; None means never (the app's deadline decides)."""

    def __init__(self, answer: Answer = echo) -> None:
        self.answer = answer
        self.sent: list[tuple[InferenceRequest, float]] = []
        self.idempotent: list[bool] = []
        self.is_ready = True
        self.cancelled = 0
        # Request ids an idempotent send would join rather than produce (as KafkaDispatcher
        # does for a retry whose original it waits on, or whose outcome it holds).
        self.joining: set[str] = set()
        self.deltas: Deltas = lambda _request: []
        self.delta_pause_s = 0.0  # how long the model takes before each delta

    async def send(
        self,
        request: InferenceRequest,
        deadline: float,
        *,
        idempotent: bool = False,
        on_chunk: Callable[[InferenceChunk], None] | None = None,
    ) -> Reply:
        self.sent.append((request, deadline))
        self.idempotent.append(idempotent)
        if on_chunk is not None:
            for chunk in self.deltas(request):
                await asyncio.sleep(self.delta_pause_s)
                on_chunk(chunk)
                await asyncio.sleep(0)  # the relay sends it before the next comes
        reply = self.answer(request)
        if reply is None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            raise AssertionError("the app should have given up at its deadline")
        return reply

    def produces(self, request: InferenceRequest, *, idempotent: bool = False) -> bool:
        return not (idempotent and request.request_id in self.joining)

    def ready(self) -> bool:
        return self.is_ready


class World:
    def __init__(self, tmp_path: Any, **settings: Any) -> None:
        self.store = KeyStore(tmp_path / "secrets")
        created = self.store.create("acme", {"acme"}, user="svc-1", priority="high")
        self.key, self.key_id = created.key, created.key_id
        self.dispatcher = FakeDispatcher()
        self.settings = GatewaySettings(**({"request_timeout_s": 5.0} | settings))
        self.keys = LiveKeys(self.store, check_every_s=0.0)
        app = create_app(load_models(), self.keys, self.dispatcher, self.settings)
        self.client = TestClient(app, raise_server_exceptions=False)

    def post(self, path: str, body: Any, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return self.client.post(path, json=body, headers=headers, **kwargs)

    def get(self, path: str) -> Any:
        return self.client.get(path, headers={"Authorization": f"Bearer {self.key}"})


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def assert_openai_error(response: Any, status: int, *, code: str | None = None, param: Any = ...):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not ...:
        assert error["param"] == param
    return error


# -- probes and models -----------------------------------------------------------------
def test_health_readiness_and_metrics_need_no_key(world):
    assert world.client.get("/healthz").json() == {"status": "ok"}
    assert world.client.get("/readyz").status_code == 200
    world.dispatcher.is_ready = False
    assert world.client.get("/readyz").status_code == 503
    world.get("/v1/models")
    metrics = world.client.get("/metrics")
    assert metrics.status_code == 200
    assert 'sluice_gateway_requests_total{endpoint="models",status="200"}' in metrics.text


def test_models_are_the_catalogs_in_openais_list_format(world):
    body = world.get("/v1/models").json()
    assert body["object"] == "list"
    assert {m["id"] for m in body["data"]} == set(load_models().models)
    assert all(m["object"] == "model" and m["owned_by"] == "sluice" for m in body["data"])
    assert world.get("/v1/models/minilm").json()["id"] == "minilm"
    assert_openai_error(world.get("/v1/models/gpt-4o"), 404, code="model_not_found")


# -- authentication --------------------------------------------------------------------
def test_a_missing_key_is_refused_in_openais_format(world):
    response = world.client.get("/v1/models")
    error = assert_openai_error(response, 401, code="invalid_api_key")
    assert error["type"] == "authentication_error"
    assert world.dispatcher.sent == []


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer sk-sluice-nothing", "token"])
def test_a_malformed_key_is_refused(world, header):
    response = world.client.get("/v1/models", headers={"Authorization": header})
    assert_openai_error(response, 401, code="invalid_api_key")


def test_a_wrong_secret_is_refused_and_never_echoed(world):
    forged = world.key[:-4] + ("AAAA" if not world.key.endswith("AAAA") else "BBBB")
    response = world.post("/v1/embeddings", {"model": "minilm", "input": "x"}, key=forged)
    assert_openai_error(response, 401)
    assert forged not in response.text and world.key_id not in response.text
    assert world.dispatcher.sent == []


def test_a_revoked_key_is_refused_from_the_next_check(world):
    assert world.get("/v1/models").status_code == 200
    world.store.revoke(world.key_id)
    assert_openai_error(world.get("/v1/models"), 401)


def test_the_bearer_scheme_is_case_insensitive(world):
    response = world.client.get("/v1/models", headers={"Authorization": f"bearer {world.key}"})
    assert response.status_code == 200


# -- mapping to requests ---------------------------------------------------------------
def test_identity_comes_from_the_key_never_from_the_body(world):
    body = {"model": "minilm", "input": "hello", "user": "someone-else"}
    assert world.post("/v1/embeddings", body).status_code == 200
    [(request, _deadline)] = world.dispatcher.sent
    assert request.tenant_id == "acme" and request.user_id == "svc-1"
    assert request.source == SOURCE and request.operation == "embeddings"
    assert request.metadata == {API_KEY_ID: world.key_id, PRIORITY: "high"}
    assert world.key not in str(dataclasses.asdict(request))


def test_embeddings_make_one_request_per_input_and_answer_in_order(world):
    response = world.post("/v1/embeddings", {"model": "minilm", "input": ["a", "bbb", "cc"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert [d["embedding"][2] for d in body["data"]] == [1.0, 3.0, 2.0]
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    assert body["model"] == "minilm" and body["object"] == "list"
    assert len({r.request_id for r, _ in world.dispatcher.sent}) == 3


def test_embeddings_in_base64_are_little_endian_float32(world):
    response = world.post(
        "/v1/embeddings", {"model": "minilm", "input": "ab", "encoding_format": "base64"}
    )
    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -1.0, 2.0)


def test_chat_messages_become_one_role_labelled_prompt(world):
    body = {
        "model": "textgen",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
            },
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ],
        "max_tokens": 10,
        "temperature": 0.2,
    }
    response = world.post("/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    [(request, _)] = world.dispatcher.sent
    assert request.input_text == (
        "System: Be brief.\n\nUser: Hi\nthere\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:"
    )
    assert (request.max_tokens, request.temperature, request.operation) == (
        10,
        0.2,
        "text_completion",
    )
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["id"] == f"chatcmpl-{request.request_id}"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": f"<{request.input_text}>",
    }
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_a_completion_that_used_every_token_finished_for_length(world):
    body = {
        "model": "textgen",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 4,
    }
    answer = world.post("/v1/chat/completions", body).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert world.dispatcher.sent[0][0].max_tokens == 4


def test_the_models_default_token_limit_applies_when_none_is_asked(world):
    world.post("/v1/completions", {"model": "textgen", "prompt": "x"})
    assert world.dispatcher.sent[0][0].max_tokens == load_models().get("textgen").default_max_tokens


def test_completions_answer_one_choice_per_prompt(world):
    response = world.post(
        "/v1/completions", {"model": "textgen", "prompt": ["a", "b"], "max_tokens": 8}
    )
    answer = response.json()
    assert answer["object"] == "text_completion"
    assert [c["text"] for c in answer["choices"]] == ["<a>", "<b>"]
    assert answer["usage"]["completion_tokens"] == 8


def test_a_streamed_chat_is_openais_server_sent_events(world):
    body = {
        "model": "textgen",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = world.post("/v1/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 3
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "<User: hi\n\nAssistant:>",
    }
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[2]["choices"] == [] and chunks[2]["usage"]["total_tokens"] == 7


# -- response cache ---------------------------------------------------------------------
def _hits_on(texts: set[str]) -> Callable[[InferenceRequest], Reply]:
    """Answers as ``echo`` does, from infer's cache for the inputs in ``texts``."""

    def answer(request: InferenceRequest) -> Reply:
        reply = echo(request)
        assert isinstance(reply, Completed)
        if request.input_text not in texts:
            return reply
        hit = dataclasses.replace(reply.result, cache_hit=True, cached_input_tokens=3)
        return dataclasses.replace(reply, result=hit)

    return answer


def test_a_call_the_cache_answered_whole_is_marked_a_hit(world):
    world.dispatcher.answer = _hits_on({"a", "bb"})
    hit = world.post("/v1/embeddings", {"model": "minilm", "input": ["a", "bb"]})
    assert hit.status_code == 200 and hit.headers["x-sluice-cache"] == "hit"
    assert hit.json()["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    # One input of two from the cache: the call still waited for the model.
    partial = world.post("/v1/embeddings", {"model": "minilm", "input": ["a", "ccc"]})
    assert partial.headers["x-sluice-cache"] == "miss"
    fresh = world.post("/v1/embeddings", {"model": "minilm", "input": "dddd"})
    assert fresh.headers["x-sluice-cache"] == "miss"


def test_a_chat_hit_reports_its_prompt_as_openais_cached_tokens(world):
    prompt = "User: hi\n\nAssistant:"
    world.dispatcher.answer = _hits_on({prompt})
    body = {"model": "textgen", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    response = world.post("/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.headers["x-sluice-cache"] == "hit"
    assert response.json()["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    streamed = world.post(
        "/v1/chat/completions",
        body | {"stream": True, "stream_options": {"include_usage": True}},
    )
    assert streamed.headers["x-sluice-cache"] == "hit"
    events = [line.removeprefix("data: ") for line in streamed.text.split("\n\n") if line]
    usage = json.loads(events[-2])["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 3}
    world.dispatcher.answer = echo
    miss = world.post("/v1/chat/completions", body)
    assert miss.headers["x-sluice-cache"] == "miss"
    assert "prompt_tokens_details" not in miss.json()["usage"]


def test_completions_count_the_cached_tokens_of_the_prompts_that_hit(world):
    world.dispatcher.answer = _hits_on({"a"})
    body = {"model": "textgen", "prompt": ["a", "b"], "temperature": 0}
    response = world.post("/v1/completions", body)
    assert response.headers["x-sluice-cache"] == "miss"
    assert response.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}


STREAM_BODY = {
    "model": "textgen",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


def _chunk(request: InferenceRequest, seq: int, text: str, **fields: Any) -> InferenceChunk:
    values: dict[str, Any] = {
        "request_id": request.request_id,
        "tenant_id": request.tenant_id,
        "model": request.model,
        "attempt": "a1",
        "seq": seq,
        "text": text,
        "final": False,
        "created_at": NOW,
    }
    return InferenceChunk(**(values | fields))


def _events(response: Any) -> list[Any]:
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def _contents(events: list[Any]) -> list[str]:
    return [
        e["choices"][0]["delta"]["content"]
        for e in events
        if e != "[DONE]" and e.get("choices") and "content" in e["choices"][0]["delta"]
    ]


def test_a_streamed_chat_relays_each_delta_once_in_order_from_the_first_attempt(world):
    def deltas(request: InferenceRequest) -> list[InferenceChunk]:
        return [
            _chunk(request, 0, "Hel"),
            _chunk(request, 0, "Hel"),  # delivered twice
            _chunk(request, 0, "other attempt", attempt="a2"),
            _chunk(request, 2, " world"),  # ahead of seq 1: held until it comes
            _chunk(request, 1, "lo"),
            _chunk(request, 3, "", final=True, finish_reason="stop"),
        ]

    world.dispatcher.deltas = deltas
    world.dispatcher.answer = lambda r: Completed(
        ok_result(r, output_text="Hello world", output_tokens=2)
    )
    response = world.post("/v1/chat/completions", STREAM_BODY)
    assert response.status_code == 200
    [(sent, _)] = world.dispatcher.sent
    assert sent.stream, "the request asks the pipeline to stream"
    events = _events(response)
    assert _contents(events) == ["Hel", "lo", " world"]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "role" not in events[1]["choices"][0]["delta"]
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"]["completion_tokens"] == 2
    assert events[-1] == "[DONE]"


def test_what_the_deltas_did_not_carry_comes_from_the_stored_result(world):
    world.dispatcher.deltas = lambda r: [_chunk(r, 0, "Hello ")]  # the rest was dropped
    world.dispatcher.answer = lambda r: Completed(
        ok_result(r, output_text="Hello there, <PERSON>.", output_tokens=5)
    )
    events = _events(world.post("/v1/chat/completions", STREAM_BODY))
    assert "".join(_contents(events)) == "Hello there, <PERSON>."


def test_a_model_that_does_not_stream_sends_its_whole_text_at_the_outcome(world):
    events = _events(world.post("/v1/chat/completions", STREAM_BODY))
    assert _contents(events) == ["<User: hi\n\nAssistant:>"]
    assert events[-1] == "[DONE]"


def test_an_output_guard_withheld_ends_the_stream_with_content_filter(world):
    verdict = GuardVerdict(
        policy_version="1", action="block", redacted=True, checked_at=NOW, reason="pii_policy"
    )
    world.dispatcher.deltas = lambda r: [_chunk(r, 0, "My card is <CREDIT_CARD> ")]
    world.dispatcher.answer = lambda r: Completed(
        ok_result(r, output_text="My card is <CREDIT_CARD> ok", output_guard=verdict)
    )
    events = _events(world.post("/v1/chat/completions", STREAM_BODY))
    assert events[-3]["choices"][0]["finish_reason"] == "content_filter"


def test_a_refusal_before_any_delta_is_still_an_http_error(world):
    verdict = GuardVerdict(
        policy_version="1", action="block", redacted=False, checked_at=NOW, reason="pii_policy"
    )
    world.dispatcher.answer = lambda r: Blocked(dataclasses.replace(r, guard=verdict))
    response = world.post("/v1/chat/completions", STREAM_BODY)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_an_error_after_the_first_delta_is_an_error_event_in_the_stream(world):
    world.dispatcher.deltas = lambda r: [_chunk(r, 0, "Once upon ")]
    world.dispatcher.answer = lambda r: Completed(
        ok_result(r, status="error", error_code="triton_unavailable")
    )
    response = world.post("/v1/chat/completions", STREAM_BODY)
    assert response.status_code == 200
    events = _events(response)
    assert _contents(events) == ["Once upon "]
    assert events[-1]["error"]["code"] == "triton_unavailable"
    assert "[DONE]" not in events


# -- refusals --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"input": "x"}, "model"),
        ("/v1/embeddings", {"model": "minilm", "input": [1, 2, 3]}, "input"),
        ("/v1/embeddings", {"model": "minilm", "input": ""}, "input"),
        ("/v1/embeddings", {"model": "minilm", "input": "x", "dimensions": 16}, "dimensions"),
        ("/v1/embeddings", {"model": "textgen", "input": "x"}, "model"),
        ("/v1/chat/completions", {"model": "textgen", "messages": []}, "messages"),
        (
            "/v1/chat/completions",
            {"model": "textgen", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
        ),
        (
            "/v1/chat/completions",
            {
                "model": "textgen",
                "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
            },
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            {"model": "textgen", "messages": [{"role": "user", "content": "x"}], "n": 2},
            "n",
        ),
        (
            "/v1/chat/completions",
            {"model": "textgen", "messages": [{"role": "user", "content": "x"}], "seed": 1},
            "seed",
        ),
        (
            "/v1/chat/completions",
            {"model": "textgen", "messages": [{"role": "user", "content": "x"}], "stop": "\n"},
            "stop",
        ),
        (
            "/v1/chat/completions",
            {
                "model": "textgen",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 100000,
            },
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            {"model": "textgen", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
        ),
        (
            "/v1/chat/completions",
            {"model": "minilm", "messages": [{"role": "user", "content": "x"}]},
            "model",
        ),
        (
            "/v1/completions",
            {"model": "textgen", "prompt": ["x", "y"], "stream": True},
            "prompt",
        ),
        ("/v1/completions", {"model": "textgen"}, "prompt"),
    ],
)
def test_invalid_bodies_get_400_naming_the_parameter_and_send_nothing(world, path, body, param):
    assert_openai_error(world.post(path, body), 400, param=param)
    assert world.dispatcher.sent == []


def test_an_unknown_model_is_404_model_not_found(world):
    error = assert_openai_error(
        world.post("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
        404,
        code="model_not_found",
    )
    assert error["param"] == "model" and "text-embedding-3-small" in error["message"]


def test_a_model_name_that_is_not_an_identifier_is_not_echoed(world):
    response = world.post("/v1/embeddings", {"model": "jane.doe@example.com", "input": "x"})
    assert_openai_error(response, 404, code="model_not_found")
    assert "jane.doe@example.com" not in response.text


def test_a_body_that_is_not_json_or_not_an_object_is_400(world):
    response = world.client.post(
        "/v1/embeddings", content=b"{nope", headers={"Authorization": f"Bearer {world.key}"}
    )
    assert_openai_error(response, 400, param=None)
    assert_openai_error(world.post("/v1/embeddings", ["minilm"]), 400)


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(tmp_path):
    world = World(tmp_path, max_body_bytes=2048)
    big = {"model": "minilm", "input": "x" * 4096}
    assert_openai_error(world.post("/v1/embeddings", big), 413, code="request_too_large")

    def chunks():
        yield b'{"model": "minilm", "input": "'
        for _ in range(10):
            yield b"y" * 512
        yield b'"}'

    response = world.client.post(
        "/v1/embeddings", content=chunks(), headers={"Authorization": f"Bearer {world.key}"}
    )
    assert_openai_error(response, 413)
    assert world.dispatcher.sent == []


def test_too_many_inputs_are_refused(tmp_path):
    world = World(tmp_path, max_inputs=2)
    assert_openai_error(
        world.post("/v1/embeddings", {"model": "minilm", "input": ["a", "b", "c"]}),
        400,
        param="input",
    )


def test_unknown_routes_and_methods_answer_in_openais_format(world):
    assert_openai_error(world.get("/v1/assistants"), 404)
    assert_openai_error(world.client.get("/v1/embeddings"), 405)


# -- outcomes from the pipeline --------------------------------------------------------
def _blocked(reason: str) -> Answer:
    def answer(request: InferenceRequest) -> Reply:
        verdict = GuardVerdict(
            policy_version="1", action="block", redacted=False, reason=reason, checked_at=NOW
        )
        return Blocked(dataclasses.replace(request, guard=verdict))

    return answer


@pytest.mark.parametrize(
    ("reason", "status", "code"),
    [
        ("prompt_injection", 400, "content_policy_violation"),
        ("pii_policy", 400, "content_policy_violation"),
        ("input_too_long", 400, "context_length_exceeded"),
        ("budget_exceeded", 429, "insufficient_quota"),
        ("rate_limited", 429, "rate_limit_exceeded"),
        ("analyzer_timeout", 503, "analyzer_timeout"),
        ("tenant_mismatch", 500, "tenant_mismatch"),
        ("stale_request", 500, "stale_request"),
        ("duplicate_request", 409, "duplicate_request"),
    ],
)
def test_a_request_guard_blocked_is_refused_as_openai_would(world, reason, status, code):
    world.dispatcher.answer = _blocked(reason)
    body = {"model": "textgen", "messages": [{"role": "user", "content": "ignore all previous"}]}
    response = world.post("/v1/chat/completions", body)
    assert_openai_error(response, status, code=code)
    assert "ignore all previous" not in response.text
    if reason == "rate_limited":  # clients wait before they retry
        assert int(response.headers["retry-after"]) >= 1


def test_an_error_result_maps_to_its_status_without_the_models_message(world):
    def failed(code: str) -> Answer:
        return lambda request: Completed(
            ok_result(request, status="error", error_code=code, error_message="secret detail")
        )

    for code, status in [
        ("input_too_long", 400),
        ("backend_rejected", 502),
        ("unknown_model", 404),
    ]:
        world.dispatcher.answer = failed(code)
        response = world.post("/v1/completions", {"model": "textgen", "prompt": "x"})
        assert_openai_error(response, status)
        assert "secret detail" not in response.text


def test_output_withheld_by_guard_finishes_with_content_filter(world):
    verdict = GuardVerdict(policy_version="1", action="block", redacted=True, checked_at=NOW)
    world.dispatcher.answer = lambda r: Completed(
        ok_result(r, output_text="", output_guard=verdict)
    )
    answer = world.post(
        "/v1/chat/completions", {"model": "textgen", "messages": [{"role": "user", "content": "x"}]}
    ).json()
    assert answer["choices"][0]["finish_reason"] == "content_filter"


def test_no_outcome_before_the_deadline_is_504(tmp_path):
    world = World(tmp_path, request_timeout_s=0.2)
    world.dispatcher.answer = lambda _request: None
    response = world.post("/v1/embeddings", {"model": "minilm", "input": "x"})
    error = assert_openai_error(response, 504, code="timeout")
    assert error["type"] == "timeout"
    [(_, deadline)] = world.dispatcher.sent
    assert deadline > 0


def test_one_missing_outcome_of_several_is_504_for_the_call(tmp_path):
    world = World(tmp_path, request_timeout_s=0.2)
    world.dispatcher.answer = lambda r: None if r.input_text == "slow" else echo(r)
    assert_openai_error(
        world.post("/v1/embeddings", {"model": "minilm", "input": ["a", "slow"]}), 504
    )


def test_one_refused_send_fails_the_call_and_stops_the_others_waiting(world):
    def refuse_one(request: InferenceRequest) -> Reply | None:
        if request.input_text == "refused":
            raise DispatchError("broker down")
        return None

    world.dispatcher.answer = refuse_one
    body = {"model": "minilm", "input": ["waits", "refused", "waits too"]}
    assert_openai_error(world.post("/v1/embeddings", body), 503)
    assert world.dispatcher.cancelled == 2


def test_calls_past_the_in_flight_bound_are_refused_at_once_and_the_bound_frees(tmp_path):
    world = World(tmp_path, max_in_flight=2, request_timeout_s=0.2)
    world.dispatcher.answer = lambda _request: None
    assert_openai_error(world.post("/v1/embeddings", {"model": "minilm", "input": "a"}), 504)
    body = {"model": "minilm", "input": ["a", "b", "c"]}
    assert_openai_error(world.post("/v1/embeddings", body), 503, code="overloaded")
    assert len(world.dispatcher.sent) == 1, "the refused call sent nothing"
    world.dispatcher.answer = echo
    assert world.post("/v1/embeddings", {"model": "minilm", "input": ["a", "b"]}).status_code == 200


def test_a_lifespan_given_to_the_app_runs_around_it(tmp_path):
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        events.append("start")
        yield
        events.append("stop")

    world = World(tmp_path)
    app = create_app(load_models(), world.keys, world.dispatcher, world.settings, lifespan=lifespan)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert events == ["start"]
    assert events == ["start", "stop"]


def test_a_pipeline_that_refuses_requests_is_503(world):
    def refuse(_request: InferenceRequest) -> Reply:
        raise DispatchError("broker down")

    world.dispatcher.answer = refuse
    response = world.post("/v1/embeddings", {"model": "minilm", "input": "x"})
    assert_openai_error(response, 503)
    assert "broker down" not in response.text


def test_an_unexpected_error_is_500_without_details(world):
    def crash(_request: InferenceRequest) -> Reply:
        raise RuntimeError("traceback-only detail")

    world.dispatcher.answer = crash
    response = world.post("/v1/embeddings", {"model": "minilm", "input": "x"})
    assert_openai_error(response, 500)
    assert "traceback-only detail" not in response.text


def test_a_tenant_the_gateway_cannot_sign_for_is_a_server_fault_not_a_retry(world):
    def unsigned(_request: InferenceRequest) -> Reply:
        raise NoSigningKeyError("no key for acme in /somewhere")

    world.dispatcher.answer = unsigned
    response = world.post("/v1/embeddings", {"model": "minilm", "input": "x"})
    assert_openai_error(response, 500, code="tenant_not_served")
    assert "/somewhere" not in response.text


# -- Idempotency-Key -------------------------------------------------------------------
def _post_with_key(world: World, path: str, body: Any, idempotency_key: str, key=None) -> Any:
    headers = {"Authorization": f"Bearer {key or world.key}", "Idempotency-Key": idempotency_key}
    return world.client.post(path, json=body, headers=headers)


def test_a_call_with_an_idempotency_key_gets_the_same_ids_through_any_key_of_its_tenant(world):
    other_key = world.store.create("acme", {"acme"}, user="svc-2", priority="low").key
    body = {"model": "minilm", "input": ["one", "two"]}
    first = _post_with_key(world, "/v1/embeddings", body, "retry-me-1")
    again = _post_with_key(world, "/v1/embeddings", body, "retry-me-1", key=other_key)
    assert first.status_code == again.status_code == 200
    ids = [request.request_id for request, _ in world.dispatcher.sent]
    assert len(set(ids)) == 2 and ids[:2] == ids[2:]
    assert world.dispatcher.idempotent == [True] * 4
    # Without the header: fresh ids, and the dispatcher is told it is no retry.
    world.post("/v1/embeddings", body)
    assert not set(ids) & {r.request_id for r, _ in world.dispatcher.sent[4:]}
    assert world.dispatcher.idempotent[4:] == [False, False]


def test_the_same_idempotency_key_in_another_tenant_makes_other_ids(world):
    body = {"model": "minilm", "input": "one"}
    globex = world.store.create("globex", {"globex"}).key
    _post_with_key(world, "/v1/embeddings", body, "shared-key")
    _post_with_key(world, "/v1/embeddings", body, "shared-key", key=globex)
    [(mine, _), (theirs, _)] = world.dispatcher.sent
    assert mine.request_id != theirs.request_id and theirs.tenant_id == "globex"


@pytest.mark.parametrize("value", [b"", b"x" * 256, "caf\u00e9".encode("latin-1"), b"tab\there"])
def test_a_malformed_idempotency_key_is_400_naming_the_header_and_sends_nothing(world, value):
    response = world.client.post(
        "/v1/embeddings",
        json={"model": "minilm", "input": "one"},
        headers={"Authorization": f"Bearer {world.key}", "Idempotency-Key": value},
    )
    error = assert_openai_error(response, 400, param="Idempotency-Key")
    assert "Idempotency-Key" in error["message"]
    assert world.dispatcher.sent == []


def test_an_idempotency_key_reused_with_another_body_is_409_and_sends_nothing(world):
    first = _post_with_key(world, "/v1/embeddings", {"model": "minilm", "input": "a"}, "k-1")
    assert first.status_code == 200
    for path, body in [
        ("/v1/embeddings", {"model": "minilm", "input": "b"}),
        ("/v1/completions", {"model": "textgen", "prompt": "a", "max_tokens": 4}),
    ]:
        response = _post_with_key(world, path, body, "k-1")
        error = assert_openai_error(response, 409, code="idempotency_key_reused")
        assert error["type"] == "invalid_request_error"
    assert len(world.dispatcher.sent) == 1
    # The same body again is a retry, not a reuse; key order in the JSON does not matter.
    retry = world.client.post(
        "/v1/embeddings",
        content=b'{"input": "a", "model": "minilm"}',
        headers={
            "Authorization": f"Bearer {world.key}",
            "Idempotency-Key": "k-1",
            "Content-Type": "application/json",
        },
    )
    assert retry.status_code == 200
    assert world.dispatcher.sent[1][0].request_id == world.dispatcher.sent[0][0].request_id


def test_a_first_try_refused_as_invalid_does_not_bind_its_idempotency_key(world):
    bad = _post_with_key(world, "/v1/embeddings", {"model": "minilm", "input": 3}, "k-2")
    assert_openai_error(bad, 400)
    good = _post_with_key(world, "/v1/embeddings", {"model": "minilm", "input": "3"}, "k-2")
    assert good.status_code == 200


def test_chat_and_completions_take_an_idempotency_key_too(world):
    chat = {"model": "textgen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    completion = {"model": "textgen", "prompt": ["a", "b"], "max_tokens": 4}
    for _ in range(2):
        assert _post_with_key(world, "/v1/chat/completions", chat, "chat-1").status_code == 200
        assert _post_with_key(world, "/v1/completions", completion, "cmpl-1").status_code == 200
    ids = [request.request_id for request, _ in world.dispatcher.sent]
    chat_ids, completion_ids = ids[0::3], [ids[1:3], ids[4:6]]
    assert chat_ids[0] == ids[3] and completion_ids[0] == completion_ids[1]
    assert world.dispatcher.idempotent == [True] * 6


def test_the_relay_keeps_the_first_attempt_and_bounds_what_it_holds_ahead() -> None:
    request = InferenceRequest.new("acme", "textgen", "hi")
    relay = ChunkRelay(max_held=2)
    assert relay.accept(_chunk(request, 1, "b", attempt="a2")) == []  # held: seq 0 first
    assert relay.accept(_chunk(request, 0, "x", attempt="a1")) == []  # not the first attempt
    assert relay.accept(_chunk(request, 3, "d", attempt="a2")) == []
    assert relay.accept(_chunk(request, 4, "e", attempt="a2")) == []  # beyond what it holds
    assert relay.accept(_chunk(request, 0, "a", attempt="a2")) == ["a", "b"]
    assert relay.accept(_chunk(request, 2, "c", attempt="a2")) == ["c", "d"]
    assert relay.sent == "abcd"
