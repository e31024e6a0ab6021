"""A streamed completion: guard-stream's deltas as they come, closed by the stored result.

The pipeline streams a generation twice: its deltas, redacted by guard-stream, on
``inference.chunks`` (a live preview, at least once, possibly from several infer
attempts), and its whole result, exactly once, on ``inference.results``. The caller
sees the first: one event per delta (a ``chat.completion.chunk`` or a
``text_completion``, as ``streams.gateway.stream_formats`` writes them), from the
first attempt seen, each delta once and in order (``ChunkRelay``). The second ends the
stream: whatever of the stored text the deltas did not carry (a stream guard-stream
dropped, or a model that does not stream at all), the finish reason
(``content_filter`` when guard withheld the output), the usage when asked for, then
``[DONE]``.

Refusals stay HTTP errors: chunks exist only for requests guard let through, and a
refusal (``inference.requests.blocked``) comes before any of them, so the response
starts only once the first delta or the outcome is in (``first_event``). An error
after the first byte is an OpenAI error event inside the stream.

Once the response has started, a stream that stays silent (a slow model between two
deltas, guard-stream holding text back) gets an SSE comment every ``keepalive_s``,
so that a proxy or load balancer does not close it as idle. Before the first event
nothing can be sent: the status line would commit the call to 200 before guard's
verdict is known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from streams.contracts.records import InferenceChunk, InferenceResult
from streams.gateway.errors import SERVER, OpenAIError
from streams.gateway.mapping import finish_reason
from streams.gateway.stream_formats import StreamFormat

log = logging.getLogger("sluice.gateway.streaming")

#: Chunks past a gap held while waiting for the missing one (a redelivery reorders them).
MAX_HELD_CHUNKS = 256

DONE = b"data: [DONE]\n\n"
#: An SSE comment: clients skip it, proxies see bytes move (``relay``'s ``keepalive_s``).
KEEP_ALIVE = b": keep-alive\n\n"


class ChunkRelay:
    """One call's deltas, once each and in order, from the first attempt that reached it."""

    def __init__(self, max_held: int = MAX_HELD_CHUNKS) -> None:
        self.attempt: str | None = None
        self._next = 0
        self._held: dict[int, str] = {}
        self._max_held = max_held
        self.sent = ""  # the text relayed so far

    def accept(self, chunk: InferenceChunk) -> list[str]:
        """The deltas ``chunk`` lets through now, in order (none: a repeat, another attempt)."""
        if self.attempt is None:
            self.attempt = chunk.attempt
        if chunk.attempt != self.attempt or chunk.seq < self._next:
            return []
        if chunk.seq > self._next:
            if len(self._held) < self._max_held:
                self._held.setdefault(chunk.seq, chunk.text)
            return []
        out = [chunk.text]
        self._next += 1
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        texts = [t for t in out if t]
        self.sent += "".join(texts)
        return texts


def _either(*futures: asyncio.Future[Any]) -> set[asyncio.Future[Any]]:
    """Futures of different results, as ``asyncio.wait`` takes them."""
    return set(futures)


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event, as OpenAI writes them."""
    return b"data: " + orjson.dumps(event) + b"\n\n"


def error_event(error: OpenAIError) -> dict[str, Any]:
    """An error after the stream started, in OpenAI's format (its clients raise on it)."""
    return error.body()


async def first_event(
    outcome: asyncio.Future[InferenceResult], chunks: asyncio.Queue[InferenceChunk]
) -> InferenceChunk | None:
    """Wait for the first delta or the outcome: the delta, or None when the outcome came first.

    The outcome's exception (a refusal, a timeout) propagates: the caller answers it
    with an HTTP error, as nothing was sent yet.
    """
    if not chunks.empty():
        return chunks.get_nowait()
    getting = asyncio.ensure_future(chunks.get())
    try:
        await asyncio.wait(_either(outcome, getting), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        getting.cancel()
        raise
    if getting.done() and not getting.cancelled():
        return getting.result()
    getting.cancel()
    outcome.result()  # raises the refusal
    return None


async def relay(
    events: StreamFormat,
    max_tokens: int,
    *,
    include_usage: bool,
    outcome: asyncio.Future[InferenceResult],
    first_chunk: InferenceChunk,
    chunks: asyncio.Queue[InferenceChunk],
    keepalive_s: float = 0.0,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body of a streamed call: ``first_chunk``, the rest of ``chunks``, the end.

    ``events`` says how the route writes an event (chat's chunks, completions' text).
    ``keepalive_s``: after that long without sending anything, an SSE comment
    (``KEEP_ALIVE``, which clients skip) keeps proxies from closing an idle stream;
    0: none.
    """
    relay = ChunkRelay()
    first = True
    loop = asyncio.get_running_loop()
    last_sent = loop.time()
    getting: asyncio.Future[InferenceChunk] | None = None

    def delta_event(text: str) -> bytes:
        nonlocal first, last_sent
        event = events.delta(text, first=first)
        first = False
        last_sent = loop.time()
        return sse(event)

    def silence_left() -> float | None:
        return max(0.0, last_sent + keepalive_s - loop.time()) if keepalive_s > 0 else None

    try:
        for text in relay.accept(first_chunk):
            yield delta_event(text)
        while not outcome.done():
            if getting is None:
                getting = asyncio.ensure_future(chunks.get())
            await asyncio.wait(
                _either(outcome, getting),
                timeout=silence_left(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getting.done():
                chunk, getting = getting.result(), None
                for text in relay.accept(chunk):
                    yield delta_event(text)
            elif not outcome.done():  # silent for keepalive_s
                last_sent = loop.time()
                yield KEEP_ALIVE
        if getting is not None:
            getting.cancel()
            getting = None
        while not chunks.empty():  # what arrived with the outcome
            for text in relay.accept(chunks.get_nowait()):
                yield delta_event(text)
        try:
            result = outcome.result()
        except OpenAIError as error:
            yield sse(error_event(error))
            return
        except Exception:
            log.exception("a streamed call failed after its first byte")
            yield sse(
                error_event(
                    OpenAIError(500, "The server failed while streaming; retry.", type=SERVER)
                )
            )
            return
        stored = result.output_text or ""
        if stored.startswith(relay.sent) and len(stored) > len(relay.sent):
            # Text the deltas did not carry (a dropped stream): the stored result's rest.
            yield delta_event(stored[len(relay.sent) :])
        elif not stored.startswith(relay.sent):
            log.info("a streamed text differs from its stored result; the stream ends as it is")
        yield sse(events.finish(finish_reason(result, max_tokens)))
        if include_usage:
            yield sse(events.usage(result))
        yield DONE
    finally:
        if getting is not None:  # the client went away while the relay waited
            getting.cancel()
        if on_close is not None:
            await on_close()
