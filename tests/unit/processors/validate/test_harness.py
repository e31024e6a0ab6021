"""validate run in process through the runner's real batch path (``streams.runtime.testing``)."""

from __future__ import annotations

import json

import orjson
import pytest

from processors.validate.processor import PROCESSOR
from processors.validate.settings import ValidateSettings
from streams.runtime.testing import Harness
from streams.settings import Settings
from tests.support.tickets import TicketFactory

RAW = "raw.support_tickets"
VALIDATED = "support_tickets.validated"


@pytest.fixture
def harness() -> Harness[ValidateSettings, object]:
    with Harness(PROCESSOR, settings=Settings(), config=ValidateSettings()) as harness:
        yield harness


def test_valid_tickets_become_typed_records_and_broken_ones_dead_letters(
    harness: Harness[ValidateSettings, object], good_ticket: TicketFactory
) -> None:
    good = orjson.dumps(good_ticket())
    wrong_priority = orjson.dumps(good_ticket(ticket_id="TCK-87654321", priority="urgent!"))
    records = [
        harness.record(RAW, good, key=b"k1"),
        harness.record(RAW, wrong_priority),
        harness.record(RAW, b"{not json"),
        harness.record(RAW, None),
    ]
    out = harness.run(records)
    [validated] = out.values(VALIDATED)
    assert validated["ticket_id"] == "TCK-12345678"
    assert validated["meta"]["raw_topic"] == RAW and validated["meta"]["raw_offset"] == 0
    assert out.on(VALIDATED)[0].key == b"TCK-12345678"
    assert out.kinds() == ["ContractViolation", "InvalidJson", "EmptyRecord"]
    violation = out.dead_letters[0]
    assert violation.raw == wrong_priority and violation.topic == "raw.support_tickets.dlq"
    assert json.loads(violation.info.details["violations"])[0]["field"] == "priority"
    assert [d.info.offset for d in out.dead_letters] == [1, 2, 3]


def test_only_the_configured_datasets_are_read(good_ticket: TicketFactory) -> None:
    config = ValidateSettings(datasets=["support_tickets"])
    with Harness(PROCESSOR, settings=Settings(), config=config) as harness:
        assert harness.pipeline.inputs == [RAW]
        assert harness.pipeline.outputs == [VALIDATED]
        out = harness.run([harness.record(RAW, orjson.dumps(good_ticket()))])
    assert len(out.values(VALIDATED)) == 1
