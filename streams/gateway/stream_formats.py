"""The events of a streamed answer, as each OpenAI route writes them.

Chat and completions stream the same way (deltas, then the finish reason, then the
usage when asked for, then ``[DONE]``) and differ only in how one event looks:

* ``/v1/chat/completions``: ``chat.completion.chunk`` events, the text in
  ``choices[0].delta.content`` (the first delta also carries ``role``);
* ``/v1/completions``: ``text_completion`` events, the text in ``choices[0].text``
  with ``logprobs: null``.

A ``StreamFormat`` says how one call's events look; ``streams.gateway.streaming``
relays any of them, so both routes share one relay.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from streams.contracts.records import InferenceResult
from streams.gateway.mapping import completion_usage, finish_reason

Event = dict[str, Any]


class StreamFormat(ABC):
    """How the events of one streamed call look: its id, date and model on each."""

    object: ClassVar[str]
    id_prefix: ClassVar[str]

    def __init__(self, model: str, request_id: str, created: int) -> None:
        self.model = model
        self.id = f"{self.id_prefix}{request_id}"
        self.created = created

    def delta(self, text: str, *, first: bool) -> Event:
        """One piece of the text; ``first``: the stream's first piece."""
        return self._event([self._choice(text, None, first=first)])

    def finish(self, reason: str) -> Event:
        """The event that says why the text ended (``stop``, ``length``, ``content_filter``)."""
        return self._event([self._choice(None, reason, first=False)])

    def usage(self, result: InferenceResult) -> Event:
        """The usage event (``stream_options.include_usage``): no choices, the call's usage."""
        return self._event([]) | {"usage": completion_usage([result])}

    def whole(
        self, result: InferenceResult, max_tokens: int, *, include_usage: bool
    ) -> list[Event]:
        """The events of a stream that had no delta: the whole text in one, then the end.

        The answer of a model that does not stream, or of infer's response cache.
        """
        events = [
            self.delta(result.output_text or "", first=True),
            self.finish(finish_reason(result, max_tokens)),
        ]
        if include_usage:
            events.append(self.usage(result))
        return events

    def _event(self, choices: list[Event]) -> Event:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    @abstractmethod
    def _choice(self, text: str | None, reason: str | None, *, first: bool) -> Event:
        """The one choice of an event: a piece of text, or (``text`` None) the finish."""


class ChatFormat(StreamFormat):
    """``/v1/chat/completions``' ``chat.completion.chunk`` events."""

    object = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def _choice(self, text: str | None, reason: str | None, *, first: bool) -> Event:
        if text is None:
            delta: Event = {}
        elif first:
            delta = {"role": "assistant", "content": text}
        else:
            delta = {"content": text}
        return {"index": 0, "delta": delta, "finish_reason": reason}


class TextFormat(StreamFormat):
    """``/v1/completions``' ``text_completion`` events."""

    object = "text_completion"
    id_prefix = "cmpl-"

    def _choice(self, text: str | None, reason: str | None, *, first: bool) -> Event:
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
