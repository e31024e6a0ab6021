"""Data-contract rules: typing, each rule, null rates and contract loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.contracts.avro_schemas import load_schemas
from streams.contracts.catalog import load_catalog
from streams.contracts.datasets import (
    ContractError,
    NullRateMonitor,
    load_contract,
    parse_timestamp_millis,
)
from streams.settings import PROJECT_ROOT

SCHEMAS = PROJECT_ROOT / "schemas"


@pytest.fixture(scope="module")
def contract():
    return load_catalog(SCHEMAS).dataset("support_tickets").contract


def rules_broken(contract, document):
    _, violations = contract.check(document)
    return {(v.field, v.rule) for v in violations}


def test_valid_record_is_typed(good_ticket, contract):
    record, violations = contract.check(good_ticket())
    assert violations == []
    assert record["created_at"] == 1790856000000
    assert record["first_response_minutes"] == 12.5
    assert record["satisfaction"] == 4


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"ticket_id": "TKT-12345678"}, {("ticket_id", "regex")}),
        ({"priority": "critical"}, {("priority", "enum")}),
        ({"tenant_id": ...}, {("tenant_id", "required")}),
        ({"tenant_id": None}, {("tenant_id", "required")}),
        ({"satisfaction": 0}, {("satisfaction", "min")}),
        ({"satisfaction": 6}, {("satisfaction", "max")}),
        ({"subject": "x"}, {("subject", "min_length")}),
        ({"body": "y" * 5001}, {("body", "max_length")}),
        ({"first_response_minutes": "about an hour"}, {("first_response_minutes", "type")}),
        ({"satisfaction": 4.5}, {("satisfaction", "type")}),
        ({"satisfaction": True}, {("satisfaction", "type")}),
        ({"created_at": "2026-10-01T12:00:00"}, {("created_at", "type")}),
        ({"created_at": "2014-12-31T23:59:59Z"}, {("created_at", "min")}),
        ({"order_value_usd": -1}, {("order_value_usd", "min")}),
        ({"language": "eng"}, {("language", "regex")}),
        ({"channel": 3}, {("channel", "type")}),
    ],
)
def test_each_rule(good_ticket, contract, changes, expected):
    assert rules_broken(contract, good_ticket(**changes)) == expected


def test_every_violation_is_reported(good_ticket, contract):
    broken = rules_broken(contract, good_ticket(priority="P1", satisfaction=9, subject=...))
    assert broken == {("priority", "enum"), ("satisfaction", "max"), ("subject", "required")}


def test_messages_never_echo_values(good_ticket, contract):
    secret = "jane.doe@example.com"
    _, violations = contract.check(
        good_ticket(tenant_id=secret, channel=secret, subject=secret * 20)
    )
    assert violations
    assert all(secret not in str(v) for v in violations)


def test_optional_fields_default(good_ticket, contract):
    record, violations = contract.check(
        good_ticket(
            customer_tier=...,
            satisfaction=...,
            language=...,
            first_response_minutes=...,
            order_value_usd=...,
        )
    )
    assert violations == []
    assert record["customer_tier"] is None
    assert record["language"] == "en"  # the Avro default


def test_integral_float_is_accepted_for_int(good_ticket, contract):
    record, violations = contract.check(good_ticket(satisfaction=5.0))
    assert violations == []
    assert record["satisfaction"] == 5


def test_epoch_millis_timestamp(good_ticket, contract):
    record, violations = contract.check(good_ticket(created_at=1790856000000))
    assert violations == []
    assert record["created_at"] == 1790856000000


def test_unknown_fields_rejected_when_strict(good_ticket, tmp_path):
    schemas = load_schemas(SCHEMAS / "avro")
    spec = yaml.safe_load((SCHEMAS / "contracts" / "support_tickets.yaml").read_text())
    spec["unknown_fields"] = "reject"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(spec))
    strict = load_contract(path, schemas)
    assert ("surprise", "unknown_fields") in rules_broken(strict, good_ticket(surprise=1))


def write_contract(tmp_path: Path, **changes) -> Path:
    spec = yaml.safe_load((SCHEMAS / "contracts" / "support_tickets.yaml").read_text())
    for field, rules in changes.pop("fields", {}).items():
        spec["fields"][field] = {**spec["fields"].get(field, {}), **rules}
    for key, value in changes.items():
        if value is ...:
            spec.pop(key)
        else:
            spec[key] = value
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fields": {"nope": {"required": True}}}, "does not have: nope"),
        ({"fields": {"subject": {"min": 3}}}, "numbers and timestamps only"),
        ({"fields": {"satisfaction": {"regex": "^a"}}}, "strings only"),
        ({"fields": {"subject": {"regex": "("}}}, "does not compile"),
        ({"fields": {"ticket_id": {"required": False}}}, "neither nullable nor defaulted"),
        ({"key": "nope"}, "key field"),
        ({"schema": "sluice.v1.Missing"}, "not in schemas/avro"),
        ({"version": ...}, "version"),
        ({"fields": {"subject": {"max_lenght": 3}}}, "max_lenght"),
    ],
)
def test_bad_contracts_are_refused_clearly(tmp_path, changes, message):
    with pytest.raises(ContractError, match=message):
        load_contract(write_contract(tmp_path, **changes), load_schemas(SCHEMAS / "avro"))


def test_null_rate_monitor_window():
    monitor = NullRateMonitor({"a": 0.5}, window=10)
    for i in range(10):
        monitor.observe({"a": None if i < 8 else 1})
    assert monitor.rates()["a"] == pytest.approx(0.8)
    assert monitor.breaches(min_records=10) == {"a": pytest.approx(0.8)}
    for _ in range(10):
        monitor.observe({"a": 1})
    assert monitor.rates()["a"] == 0.0
    assert monitor.breaches(min_records=10) == {}


def test_null_rate_needs_enough_records():
    monitor = NullRateMonitor({"a": 0.1}, window=100)
    monitor.observe({"a": None})
    assert monitor.breaches(min_records=50) == {}


def test_parse_timestamp_zones():
    assert parse_timestamp_millis("1970-01-01T00:00:01Z") == 1000
    assert parse_timestamp_millis("1970-01-01T01:00:01+01:00") == 1000
    with pytest.raises(ValueError, match="time zone"):
        parse_timestamp_millis("1970-01-01T00:00:01")
    with pytest.raises(ValueError):
        parse_timestamp_millis(True)
