"""validate on Kafka Connect input: Debezium change events, deletes, the source header."""

from __future__ import annotations

import json

import pytest

from processors.validate.processor import Change, pop_change, validate_record
from streams.contracts.catalog import load_catalog
from streams.errors import RecordError
from streams.runtime.spec import InputRecord
from streams.settings import PROJECT_ROOT


@pytest.fixture(scope="module")
def dataset():
    return load_catalog(PROJECT_ROOT / "schemas").dataset("support_tickets")


def no_avro(data: bytes) -> None:
    raise AssertionError("plain JSON must not reach the Avro decoder")


@pytest.fixture
def change_event(good_ticket):
    """Builds a row as Debezium's ExtractNewRecordState writes it (delete rewrite, add.fields)."""

    def build(op: str, deleted: bool, **changes) -> bytes:
        row = good_ticket(**changes)
        row.update(
            {"__op": op, "__deleted": "true" if deleted else "false", "__source_ts_ms": 1_700_000}
        )
        return json.dumps(row).encode()

    return build


def record(raw: bytes, headers=()) -> InputRecord:
    return InputRecord("raw.support_tickets", 0, 3, b"TCK-12345678", raw, raw, list(headers), 0)


@pytest.mark.parametrize(("op", "deleted"), [("r", False), ("c", False), ("u", False)])
def test_change_events_become_typed_records_with_their_operation(
    dataset, change_event, op, deleted
):
    output = validate_record(record(change_event(op, deleted)), dataset, no_avro)
    assert output.key == "TCK-12345678"
    assert output.value["meta"]["op"] == op
    assert output.value["meta"]["deleted"] is False
    assert not any(name.startswith("__") for name in output.value), "metadata is not data"


def test_a_delete_is_a_validated_record_that_says_so(dataset, change_event):
    output = validate_record(record(change_event("d", True)), dataset, no_avro)
    assert output.value["meta"] == output.value["meta"] | {"op": "d", "deleted": True}
    assert output.value["subject"] == "Charged twice", "the deleted row's last state"


def test_a_key_only_delete_goes_to_the_dlq_saying_what_to_fix(dataset):
    key_only = {"ticket_id": "TCK-12345678", "__op": "d", "__deleted": "true"}
    with pytest.raises(RecordError) as error:
        validate_record(record(json.dumps(key_only).encode()), dataset, no_avro)
    assert error.value.error_class == "IncompleteDelete"
    assert "REPLICA IDENTITY FULL" in error.value.message
    # Named, not quoted: a key can be personal data; the dead letter keeps the record.
    assert "delete by ticket_id" in error.value.message
    assert "TCK-12345678" not in error.value.message


def test_a_broken_change_event_is_an_ordinary_contract_violation(dataset, change_event):
    with pytest.raises(RecordError) as error:
        validate_record(record(change_event("c", False, priority="critical")), dataset, no_avro)
    assert error.value.error_class == "ContractViolation"


def test_pop_change_reads_debezium_fields_and_leaves_the_row():
    row = {"ticket_id": "x", "__op": "u", "__deleted": "false", "__source_ts_ms": 5}
    assert pop_change(row) == Change(op="u", deleted=False)
    assert row == {"ticket_id": "x"}
    assert pop_change({"ticket_id": "x"}) == Change()
    assert pop_change({"__deleted": "TRUE"}).deleted is True


def test_the_source_header_names_the_connector(dataset, good_ticket):
    raw = json.dumps(good_ticket()).encode()
    plain = validate_record(record(raw), dataset, no_avro)
    assert plain.value["meta"]["source"] == "kafka"
    tagged = validate_record(
        record(raw, [("sluice.source", b"connect:support-tickets-file")]), dataset, no_avro
    )
    assert tagged.value["meta"]["source"] == "connect:support-tickets-file"
    assert tagged.value["meta"]["op"] is None
