"""Dead-letter headers: what they say, and what a replay strips."""

from __future__ import annotations

from streams.errors import ContractViolation, InvalidJson, ProcessingFailed
from streams.runtime.dead_letters import (
    dlq_record_headers,
    error_headers,
    parse_error_headers,
    without_error_headers,
)


def test_headers_round_trip():
    error = ContractViolation(
        "priority: is not one of [low] [enum]",
        details={"field": "priority"},
    )
    headers = error_headers(
        error, processor="validate", topic="raw.t", partition=2, offset=41, now_ms=1234
    )
    names = [k for k, _ in headers]
    for part in ("processor", "stage", "class", "message", "topic", "partition", "offset", "ts"):
        assert f"sluice.error.{part}" in names
    info = parse_error_headers(headers)
    assert (info.processor, info.stage, info.error_class) == (
        "validate",
        "contract",
        "ContractViolation",
    )
    assert (info.topic, info.partition, info.offset, info.ts) == ("raw.t", 2, 41, 1234)
    assert info.details == {"field": "priority"}


def test_long_messages_are_cut():
    error = ProcessingFailed("x" * 5000)
    info = parse_error_headers(
        error_headers(error, processor="p", topic="t", partition=0, offset=0, max_message_chars=100)
    )
    assert len(info.message) == 100


def test_original_headers_kept_and_old_errors_replaced():
    original = [("traceparent", b"00-abc"), ("sluice.error.stage", b"old")]
    new = error_headers(InvalidJson("bad"), processor="p", topic="t", partition=0, offset=1)
    headers = dlq_record_headers(original, new)
    assert headers[0] == ("traceparent", b"00-abc")
    assert [v for k, v in headers if k == "sluice.error.stage"] == [b"parse"]
    assert without_error_headers(headers) == [("traceparent", b"00-abc")]


def test_none_header_values_survive():
    assert without_error_headers([("a", None)]) == [("a", b"")]


def test_forged_numbers_in_the_headers_do_not_break_the_reader():
    info = parse_error_headers(
        [
            ("sluice.error.topic", b"raw.t"),
            ("sluice.error.partition", b"[/bold]"),
            ("sluice.error.offset", b"\x1b[2J"),
            ("sluice.error.ts", None),
        ]
    )
    assert (info.topic, info.partition, info.offset, info.ts) == ("raw.t", -1, -1, 0)
