"""Dead-letter records: the original bytes plus ``sluice.error.*`` headers.

Modelled on Kafka Connect's ``__connect.errors.*`` headers: a person (or
``sluice dlq show``) can tell which processor refused a record, at which stage,
why, and where it came from, and ``sluice dlq replay`` can send the untouched
original back to its topic once the cause is fixed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from streams.errors import RecordError
from streams.runtime.spec import Headers

PREFIX = "sluice.error."
REPLAY_COUNT = "sluice.replay.count"
#: Headers of an encrypted dead letter (``streams.runtime.sealing``): they describe the
#: dead letter's value, so they are dropped with the error headers.
SEALING_PREFIX = "sluice.dlq."


@dataclass(frozen=True)
class DlqInfo:
    """The error headers of one dead-letter record, decoded."""

    processor: str
    stage: str
    error_class: str
    message: str
    topic: str
    partition: int
    offset: int
    ts: int
    details: dict[str, str] = field(default_factory=dict)


def error_headers(
    error: RecordError,
    *,
    processor: str,
    topic: str,
    partition: int,
    offset: int,
    max_message_chars: int = 1000,
    now_ms: int | None = None,
) -> Headers:
    """The ``sluice.error.*`` headers describing why a record was dead-lettered."""
    message = error.message
    if len(message) > max_message_chars:
        message = message[: max_message_chars - 1] + "…"
    values = {
        "processor": processor,
        "stage": error.stage,
        "class": error.error_class,
        "message": message,
        "topic": topic,
        "partition": str(partition),
        "offset": str(offset),
        "ts": str(now_ms if now_ms is not None else int(time.time() * 1000)),
    }
    headers = [(PREFIX + k, v.encode("utf-8")) for k, v in values.items()]
    headers += [(PREFIX + "detail." + k, v.encode("utf-8")) for k, v in error.details.items()]
    return headers


def dlq_record_headers(
    original: Sequence[tuple[str, bytes | None]] | None, error: Headers
) -> Headers:
    """Original headers (minus any earlier error headers) followed by the new error headers."""
    return without_error_headers(original) + error


def without_error_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> Headers:
    """Headers without ``sluice.error.*`` and ``sluice.dlq.*`` entries (what a replay sends)."""
    return [
        (k, v or b"")
        for k, v in (headers or ())
        if not k.startswith(PREFIX) and not k.startswith(SEALING_PREFIX)
    ]


def parse_error_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> DlqInfo:
    """Decode the error headers of a dead-letter record.

    Any writer of the topic can set these headers, so a number that is not one
    reads as ``-1`` (``0`` for the time) instead of failing the reader.
    """
    values: dict[str, str] = {}
    details: dict[str, str] = {}
    for key, raw in headers or ():
        if not key.startswith(PREFIX):
            continue
        text = (raw or b"").decode("utf-8", errors="replace")
        name = key[len(PREFIX) :]
        if name.startswith("detail."):
            details[name[len("detail.") :]] = text
        else:
            values[name] = text
    return DlqInfo(
        processor=values.get("processor", "?"),
        stage=values.get("stage", "?"),
        error_class=values.get("class", "?"),
        message=values.get("message", ""),
        topic=values.get("topic", ""),
        partition=_int(values.get("partition"), -1),
        offset=_int(values.get("offset"), -1),
        ts=_int(values.get("ts"), 0),
        details=details,
    )


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
