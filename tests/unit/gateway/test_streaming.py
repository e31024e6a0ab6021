"""Streamed answers of both text routes, keep-alives, and OpenAI's own client reading them.

The app runs on Starlette's test client with ``test_app``'s in-memory dispatcher;
``openai.OpenAI`` is given that test client as its HTTP client, so its own SSE
parsing reads exactly the bytes the gateway wrote.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway's HTTP stack: pip install 'sluice[gateway]'")

from streams.contracts.records import GuardVerdict, InferenceChunk, InferenceResult
from streams.gateway.dispatch import Blocked, Completed
from streams.gateway.stream_formats import ChatFormat, TextFormat
from streams.gateway.streaming import KEEP_ALIVE, relay
from tests.unit.gateway.test_app import World, _chunk, assert_openai_error, ok_result

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

COMPLETION_BODY = {
    "model": "textgen",
    "prompt": "Once",
    "max_tokens": 8,
    "stream": True,
    "stream_options": {"include_usage": True},
}
CHAT_BODY = {
    "model": "textgen",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 8,
    "stream": True,
}


def _hello(world: World, *, pause_s: float = 0.0) -> None:
    """The model streams "Hello world" in three deltas, ``pause_s`` before each."""
    world.dispatcher.deltas = lambda r: [
        _chunk(r, 0, "Hel"),
        _chunk(r, 1, "lo"),
        _chunk(r, 2, " world", final=True, finish_reason="stop"),
    ]
    world.dispatcher.delta_pause_s = pause_s
    world.dispatcher.answer = lambda r: Completed(
        ok_result(r, output_text="Hello world", output_tokens=2)
    )


def _frames(body: str) -> list[Any]:
    """Each SSE frame: ``KEEP_ALIVE`` for a comment, the JSON of an event, or "[DONE]"."""
    out: list[Any] = []
    for frame in body.split("\n\n"):
        if not frame:
            continue
        if frame.startswith(":"):
            out.append(KEEP_ALIVE)
            continue
        data = frame.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path, stream_keepalive_s=0)


# -- /v1/completions, streamed ----------------------------------------------------------
def test_a_streamed_completion_is_text_completion_events_then_finish_usage_and_done(world):
    _hello(world)
    response = world.post("/v1/completions", COMPLETION_BODY)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    [(sent, _)] = world.dispatcher.sent
    assert sent.stream and sent.input_text == "Once"
    base = {
        "id": f"cmpl-{sent.request_id}",
        "object": "text_completion",
        "created": int(sent.created_at.timestamp()),
        "model": "textgen",
    }

    def text(piece: str, reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}
        return base | {"choices": [choice]}

    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert _frames(response.text) == [
        text("Hel"),
        text("lo"),
        text(" world"),
        text("", "stop"),
        base | {"choices": [], "usage": usage},
        "[DONE]",
    ]


def test_a_streamed_completion_without_include_usage_has_no_usage_event(world):
    _hello(world)
    frames = _frames(world.post("/v1/completions", COMPLETION_BODY | {"stream_options": None}).text)
    assert frames[-1] == "[DONE]"
    assert all("usage" not in f for f in frames[:-1])
    assert frames[-2]["choices"][0]["finish_reason"] == "stop"


def test_a_completion_from_a_model_that_does_not_stream_comes_whole_in_one_event(world):
    frames = _frames(world.post("/v1/completions", COMPLETION_BODY | {"prompt": ["Once"]}).text)
    assert [f["choices"][0]["text"] for f in frames[:2]] == ["<Once>", ""]
    assert [f["object"] for f in frames[:-1]] == ["text_completion"] * 3
    assert frames[1]["choices"][0]["finish_reason"] == "stop"


def test_a_streamed_completion_refused_by_guard_is_still_an_http_error(world):
    verdict = GuardVerdict(
        policy_version="1", action="block", redacted=False, checked_at=NOW, reason="pii_policy"
    )
    world.dispatcher.answer = lambda r: Blocked(dataclasses.replace(r, guard=verdict))
    response = world.post("/v1/completions", COMPLETION_BODY)
    assert_openai_error(response, 400, code="content_policy_violation")


def test_several_prompts_cannot_be_streamed_and_the_refusal_names_prompt(world):
    response = world.post("/v1/completions", COMPLETION_BODY | {"prompt": ["a", "b"]})
    error = assert_openai_error(response, 400, param="prompt")
    assert "single prompt" in error["message"]
    assert world.dispatcher.sent == []


# -- OpenAI's client reads what the gateway writes -------------------------------------
def _openai(world: World) -> Any:
    openai = pytest.importorskip("openai", reason="the gateway is checked with OpenAI's client")
    return openai.OpenAI(
        api_key=world.key, base_url="http://testserver/v1", http_client=world.client, max_retries=0
    )


def test_openais_client_reads_a_streamed_completion(world):
    _hello(world)
    stream = _openai(world).completions.create(
        model="textgen",
        prompt="Once",
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    events = list(stream)
    assert [e.choices[0].text for e in events if e.choices] == ["Hel", "lo", " world", ""]
    assert [e.choices[0].finish_reason for e in events if e.choices][-1] == "stop"
    assert all(e.object == "text_completion" for e in events)
    assert events[-1].choices == [] and events[-1].usage is not None
    assert events[-1].usage.completion_tokens == 2
    assert events[0].id == f"cmpl-{world.dispatcher.sent[0][0].request_id}"


def test_openais_client_skips_keep_alives_in_a_slow_chat_stream(tmp_path):
    world = World(tmp_path, stream_keepalive_s=0.02)
    _hello(world, pause_s=0.1)
    stream = _openai(world).chat.completions.create(
        model="textgen", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
    )
    chunks = list(stream)
    assert [c.choices[0].delta.content for c in chunks] == ["Hel", "lo", " world", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openais_client_raises_a_refusal_of_a_streamed_completion(world):
    openai = pytest.importorskip("openai")
    verdict = GuardVerdict(
        policy_version="1", action="block", redacted=False, checked_at=NOW, reason="pii_policy"
    )
    world.dispatcher.answer = lambda r: Blocked(dataclasses.replace(r, guard=verdict))
    with pytest.raises(openai.BadRequestError):
        _openai(world).completions.create(model="textgen", prompt="Once", stream=True)


# -- keep-alive ------------------------------------------------------------------------
def test_a_silent_stream_gets_keep_alive_comments_between_deltas_never_before(tmp_path):
    world = World(tmp_path, stream_keepalive_s=0.03)
    _hello(world, pause_s=0.15)
    response = world.post("/v1/chat/completions", CHAT_BODY)
    assert response.status_code == 200
    assert response.text.startswith("data: "), "the response starts with the first delta"
    frames = _frames(response.text)
    deltas = [i for i, f in enumerate(frames) if f is not KEEP_ALIVE and f != "[DONE]"]
    between = frames[deltas[0] : deltas[2]]
    # Each 0.15 s pause holds several 0.03 s intervals; at least one shows even on a
    # machine so loaded that the timers fire late.
    assert between.count(KEEP_ALIVE) >= 1
    assert b": keep-alive\n\n" in response.content
    assert [f for f in frames if f is not KEEP_ALIVE][-1] == "[DONE]"


def test_keep_alives_are_off_at_zero(world):
    _hello(world, pause_s=0.05)
    response = world.post("/v1/completions", COMPLETION_BODY)
    frames = _frames(response.text)
    assert KEEP_ALIVE not in frames and frames[-1] == "[DONE]"


def _result(**fields: Any) -> InferenceResult:
    values: dict[str, Any] = {
        "request_id": "r1",
        "tenant_id": "acme",
        "model": "textgen",
        "status": "ok",
        "request_created_at": NOW,
        "completed_at": NOW,
        "input_tokens": 3,
        "output_tokens": 2,
        "output_text": "ab",
    }
    return InferenceResult(**(values | fields))


def _raw_chunk(seq: int, text: str) -> InferenceChunk:
    return InferenceChunk(
        request_id="r1",
        tenant_id="acme",
        model="textgen",
        attempt="a1",
        seq=seq,
        text=text,
        final=False,
        created_at=NOW,
    )


async def _relayed(
    keepalive_s: float, script: list[tuple[float, InferenceChunk | InferenceResult]]
) -> list[bytes]:
    """The relay's frames while ``script`` plays (each step after its pause), one by one."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[InferenceResult] = loop.create_future()
    chunks: asyncio.Queue[InferenceChunk] = asyncio.Queue()

    async def play() -> None:
        for pause, step in script:
            await asyncio.sleep(pause)
            if isinstance(step, InferenceResult):
                outcome.set_result(step)
            else:
                chunks.put_nowait(step)

    player = asyncio.ensure_future(play())
    frames = [
        frame
        async for frame in relay(
            TextFormat("textgen", "r1", 0),
            8,
            include_usage=False,
            outcome=outcome,
            first_chunk=_raw_chunk(0, "a"),
            chunks=chunks,
            keepalive_s=keepalive_s,
        )
    ]
    await player
    return frames


def test_the_relay_sends_keep_alives_only_while_silent_and_restarts_after_a_delta():
    frames = asyncio.run(
        _relayed(0.04, [(0.1, _raw_chunk(1, "b")), (0.0, _result(output_text="ab"))])
    )
    assert frames[0].startswith(b"data: ")
    after_b = frames.index(next(f for f in frames if b'"text":"b"' in f))
    assert frames[1:after_b].count(KEEP_ALIVE) >= 2, frames  # 0.1 s of silence, 0.04 s apart
    assert set(frames[1:after_b]) == {KEEP_ALIVE}
    # The outcome follows the last delta at once: no interval passed in between.
    assert KEEP_ALIVE not in frames[after_b:]
    assert frames[-1] == b"data: [DONE]\n\n"


def test_the_relay_sends_no_keep_alive_at_zero():
    frames = asyncio.run(_relayed(0.0, [(0.1, _result(output_text="a"))]))
    assert KEEP_ALIVE not in frames
    assert frames[-1] == b"data: [DONE]\n\n"


# -- the two formats -------------------------------------------------------------------
def test_chat_and_text_formats_differ_only_in_the_shape_of_a_choice():
    result = _result(output_text="hi", request_id="r9")
    chat = ChatFormat("textgen", "r9", 7).whole(result, 8, include_usage=True)
    text = TextFormat("textgen", "r9", 7).whole(result, 8, include_usage=True)
    assert [c["choices"][0]["delta"] for c in chat[:2]] == [
        {"role": "assistant", "content": "hi"},
        {},
    ]
    assert [t["choices"][0]["text"] for t in text[:2]] == ["hi", ""]
    assert (chat[0]["id"], text[0]["id"]) == ("chatcmpl-r9", "cmpl-r9")
    assert (
        chat[2]["usage"]
        == text[2]["usage"]
        == {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "total_tokens": 5,
        }
    )
    assert ChatFormat("m", "r", 0).delta("x", first=False)["choices"][0]["delta"] == {
        "content": "x"
    }
