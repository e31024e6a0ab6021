"""No dead-letter header and no log line of validate quotes a value of the record it refuses.

A producer can write personal data into any field; a ticket carrying a planted
address and name breaks each rule of the support_tickets contract in turn (and
every decoding step before it), and the values must appear nowhere but in the
dead letter's original bytes.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from processors.validate.processor import PROCESSOR
from processors.validate.settings import ValidateSettings
from streams.runtime.testing import BatchResult, Harness
from streams.settings import Settings
from tests.support.tickets import TicketFactory

RAW = "raw.support_tickets"
EMAIL = "zelda.quixote7731@example.org"
NAME = "Zelda Quixote"
#: Pieces of the planted values that must not survive anywhere.
PLANTED = (EMAIL, "zelda.quixote7731", NAME, "Quixote")


def broken_tickets(good: TicketFactory) -> dict[str, Any]:
    """One ticket per rule of the contract, each breaking it with personal data."""
    long_text = f"{NAME} <{EMAIL}> " * 300
    return {
        "ticket_id regex": good(ticket_id=EMAIL),
        "tenant_id regex": good(tenant_id=NAME),
        "created_at timestamp": good(created_at=f"{NAME} {EMAIL}"),
        "created_at timestamp-like": good(created_at=f"2026-10-01T12:00:00 {EMAIL}"),
        "channel enum": good(channel=EMAIL),
        "priority enum": good(priority=NAME),
        "product enum": good(product=EMAIL),
        "subject max_length": good(subject=long_text[:300]),
        "subject type": good(subject={EMAIL: NAME}),
        "body max_length": good(body=long_text),
        "body type": good(body=[EMAIL, NAME]),
        "customer_tier enum": good(customer_tier=NAME),
        "first_response_minutes type": good(first_response_minutes=EMAIL),
        "satisfaction type": good(satisfaction=NAME),
        "order_value_usd type": good(order_value_usd=f"{EMAIL} 12.00"),
        "language regex": good(language=NAME),
        "every field": good(
            ticket_id=EMAIL,
            tenant_id=NAME,
            created_at=EMAIL,
            channel=NAME,
            priority=EMAIL,
            product=NAME,
            subject=EMAIL * 10,
            body=True,
            customer_tier=EMAIL,
            first_response_minutes=NAME,
            satisfaction=EMAIL,
            order_value_usd=NAME,
            language=EMAIL,
        ),
    }


def undecodable(good: TicketFactory, harness: Harness[ValidateSettings, Any]) -> list[bytes]:
    """Raw values refused before the contract, each carrying the planted values."""
    ticket = orjson.dumps(good(subject=NAME, body=EMAIL))
    envelope = {
        "event_id": EMAIL,
        "dataset": NAME,
        "source": EMAIL,
        "produced_at": 1_700_000_000_000,
        "payload": ticket.decode(),
        "attributes": {EMAIL: NAME},
    }
    return [
        ticket[:-1] + b', "oops": ' + EMAIL.encode() + b"}",  # not JSON after the value
        b'{"subject": "' + NAME.encode() + b' \\q", "body": "x"}',  # a bad escape
        b'{"subject": "' + NAME.encode() + b"\xff\xfe" + EMAIL.encode() + b'"}',  # not UTF-8
        orjson.dumps([EMAIL, NAME]),  # not an object
        orjson.dumps(EMAIL),
        b"\x01" + EMAIL.encode(),  # neither Avro nor JSON
        b"\x00\x00\x00\x00\x63" + EMAIL.encode(),  # Avro of no schema of the topic
        harness.encode(RAW, envelope),  # another dataset named by personal data
        harness.encode(RAW, {**envelope, "dataset": "support_tickets", "payload": EMAIL}),
        # A CDC delete keyed by an address, without the row's other fields.
        orjson.dumps({"ticket_id": EMAIL, "tenant_id": NAME, "__op": "d", "__deleted": "true"}),
    ]


def leaks(out: BatchResult, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Where a planted value shows outside the dead letters' original bytes."""
    found = []
    for letter in out.dead_letters:
        for name, value in letter.headers:
            text = (value or b"").decode("utf-8", "replace")
            found += [f"{letter.info.error_class} {name}" for p in PLANTED if p in text]
        message = letter.info.message + " " + orjson.dumps(letter.info.details).decode()
        found += [f"{letter.info.error_class} reason" for p in PLANTED if p in message]
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        found += [f"log {record.name}" for p in PLANTED if p in text]
    return found


@pytest.fixture
def harness() -> Any:
    with Harness(PROCESSOR, settings=Settings(), config=ValidateSettings()) as harness:
        yield harness


def test_broken_rules_are_named_without_the_values(
    harness: Harness[ValidateSettings, Any],
    good_ticket: TicketFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tickets = broken_tickets(good_ticket)
    with caplog.at_level(logging.DEBUG):
        out = harness.run([harness.record(RAW, orjson.dumps(t)) for t in tickets.values()])
    assert out.kinds() == ["ContractViolation"] * len(tickets)
    assert leaks(out, caplog) == []
    # Still useful: each reason names the field and the rule it broke.
    for case, letter in zip(tickets, out.dead_letters, strict=True):
        if case != "every field":
            field = case.split()[0]
            assert f"{field}: " in letter.info.message, case
            assert letter.info.details["field"] == field
    assert "13 rule(s) failed" in out.dead_letters[-1].info.message  # one per field
    timestamp = out.dead_letters[2].info.message
    assert f"not an ISO-8601 timestamp ({len(f'{NAME} {EMAIL}')} characters)" in timestamp


def test_records_refused_before_the_contract_quote_nothing(
    harness: Harness[ValidateSettings, Any],
    good_ticket: TicketFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raws = undecodable(good_ticket, harness)
    with caplog.at_level(logging.DEBUG):
        out = harness.run([harness.record(RAW, raw) for raw in raws])
    assert out.kinds() == [
        "InvalidJson",
        "InvalidJson",
        "InvalidUtf8",
        "InvalidJson",
        "InvalidJson",
        "UnknownMagicByte",
        "UnknownSchemaId",
        "WrongDataset",
        "InvalidJson",
        "IncompleteDelete",
    ]
    assert [d.raw for d in out.dead_letters] == raws  # the original bytes, for a replay
    assert leaks(out, caplog) == []
    assert "line 1, column" in out.dead_letters[0].info.message
    assert "byte " in out.dead_letters[2].info.message


def test_the_check_itself_can_fail(
    harness: Harness[ValidateSettings, Any],
    good_ticket: TicketFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A reason that did quote the value is found (the search is not vacuous).
    out = harness.run([harness.record(RAW, orjson.dumps(good_ticket(priority=NAME)))])
    letter = out.dead_letters[0]
    quoted = letter.info.__class__(**{**letter.info.__dict__, "message": f"bad {NAME}"})
    out.dead_letters[0] = letter.__class__(
        letter.topic, letter.key, letter.raw, [("sluice.error.message", NAME.encode())], quoted
    )
    assert leaks(out, caplog) != []
