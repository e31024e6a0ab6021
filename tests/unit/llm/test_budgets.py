import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from streams.contracts.catalog import load_catalog
from streams.llm.budgets import (
    MAX_SETTLED_PER_STATUS,
    BudgetConfig,
    BudgetConfigError,
    BudgetRecord,
    BudgetStatus,
    BudgetView,
    PeriodSpend,
    load_budgets,
)
from streams.runtime.signing import GUARD_VERDICT, METER_BUDGET, Signer, Verifier, new_keypair
from streams.settings import PROJECT_ROOT, Settings
from tests.support.warehouse import memory_serde

DAY = (datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC))
MONTH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
NOON = datetime(2026, 3, 5, 12, tzinfo=UTC)
TOPIC = "metering.budgets"
CATALOG = load_catalog(PROJECT_ROOT / "schemas")
SERDE = memory_serde(CATALOG, [TOPIC])
ENCODE = SERDE.encoder(TOPIC)
SCHEMA = CATALOG.value_schema(TOPIC)
METER_PRIVATE, METER_PUBLIC = new_keypair()
METER = Signer.from_secret(METER_PRIVATE, "SLUICE_METER__BUDGET_SIGNING_KEY", METER_BUDGET)
#: guard's config: which tenants are enforced is its decision, never a record's.
CONFIG = BudgetConfig.model_validate(
    {
        "tenants": {
            "acme": {"hard": True},
            "tokens": {"hard": True},
            "soft": {"hard": False},
        }
    }
)


def status(tenant="acme", *, hard=True, cost="10", cost_limit="50", tokens=0, version=1):
    return BudgetStatus(
        tenant_id=tenant,
        hard=hard,
        periods=(
            PeriodSpend("day", *DAY, tokens, Decimal(cost), None, Decimal(cost_limit), 1),
            PeriodSpend("month", *MONTH, tokens, Decimal(cost), 1000, None, 1),
        ),
        version=version,
        updated_at=DAY[0],
    )


def decode(raw: bytes) -> BudgetStatus:
    return BudgetStatus.from_avro(SERDE.decode(raw, SCHEMA, topic=TOPIC))


def signed(st, *, signer=METER, key=None, offset=0, headers=None) -> BudgetRecord:
    """A record of metering.budgets as meter writes it (key = tenant, value signed)."""
    record_key = st.tenant_id.encode() if key is None else key
    value = ENCODE(st.to_avro())
    return BudgetRecord(
        partition=0,
        offset=offset,
        key=record_key,
        value=value,
        headers=signer.headers(TOPIC, record_key, value) if headers is None else headers,
    )


def view(now=NOON, budgets=CONFIG):
    verifier = Verifier.from_settings(
        [METER_PUBLIC], "SLUICE_GUARD__BUDGET_PUBLIC_KEYS", METER_BUDGET
    )
    return BudgetView(
        Settings(),
        catalog=None,  # type: ignore[arg-type]
        verifier=verifier,
        budgets=budgets,
        clock=lambda: now,
    )


def feed(v: BudgetView, st: BudgetStatus, **kw) -> bool:
    return v.receive(signed(st, **kw), decode)


def rejected(reason: str) -> float:
    value = REGISTRY.get_sample_value("sluice_budget_records_rejected_total", {"reason": reason})
    return value or 0.0


def test_the_shipped_budgets_load():
    config = load_budgets(PROJECT_ROOT / "schemas" / "budgets.yaml")
    assert config.alert_thresholds_pct == (80, 100)
    assert config.for_tenant("acme").hard
    assert config.for_tenant("acme").day.usd == Decimal("50")
    assert config.for_tenant("someone-else") == config.default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants:\n  a:\n    day: {usd: -1}\n", "negative"),
        ("tenants:\n  a:\n    day: {tokens: 1.5}\n", "tokens"),
        ("tenants:\n  a:\n    week: {usd: 1}\n", "week"),
        ("alert_thresholds_pct: [0]\n", "above 0"),
    ],
)
def test_invalid_budgets_are_clear(tmp_path, text, message):
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    with pytest.raises(BudgetConfigError, match=message):
        load_budgets(path)


def test_over_hard_budget_only_while_the_period_lasts():
    during = view(NOON)
    assert feed(during, status(cost="50.000000001"))
    assert "day usd budget of 50 reached" in (during.is_over_hard_budget("acme") or "")
    assert during.is_over_hard_budget("unknown") is None
    next_day = view(datetime(2026, 3, 6, 0, 0, 1, tzinfo=UTC))
    feed(next_day, status(cost="50.000000001"))
    assert next_day.is_over_hard_budget("acme") is None


def test_under_budget_soft_budget_and_token_budget():
    v = view()
    feed(v, status(cost="49.999999999"))
    assert v.is_over_hard_budget("acme") is None
    feed(v, status("soft", hard=False, cost="60"))
    assert v.is_over_hard_budget("soft") is None
    feed(v, status("tokens", tokens=1000))
    assert "month token budget of 1000 reached" in (v.is_over_hard_budget("tokens") or "")


def test_older_or_equal_versions_never_replace_newer_ones():
    v = view()
    assert feed(v, status(cost="60", version=5))
    assert not feed(v, status(cost="1", version=4))
    assert not feed(v, status(cost="1", version=5)), "a version not above the held one"
    assert v.is_over_hard_budget("acme") is not None
    assert feed(v, status(cost="1", version=6))
    assert v.is_over_hard_budget("acme") is None


def test_the_view_keeps_only_tenants_the_config_enforces():
    """meter publishes every metered tenant; guard only needs tenants with a hard budget."""
    v = view()
    for i in range(500):
        feed(v, status(f"made-up-{i}", hard=True, cost="60", version=1))
    feed(v, status("acme", cost="60"))
    assert v.tenants() == ["acme"]
    assert v.is_over_hard_budget("made-up-1") is None


# -- only meter's signed records count ----------------------------------------------------
FORGED = {"hard": False, "cost": "0", "version": 2**62}


def over_budget_view() -> BudgetView:
    v = view()
    assert feed(v, status(cost="60", version=7))
    assert v.is_over_hard_budget("acme") is not None
    return v


def test_an_unsigned_record_changes_nothing():
    v = over_budget_view()
    before = rejected("unsigned")
    assert not feed(v, status(**FORGED), headers=[])
    assert v.is_over_hard_budget("acme") is not None
    assert v.status("acme").version == 7
    assert rejected("unsigned") == before + 1 and v.rejected == {"unsigned": 1}


def test_a_record_signed_by_an_unknown_key_changes_nothing():
    v = over_budget_view()
    stranger = Signer.from_secret(new_keypair()[0], "k", METER_BUDGET)
    before = rejected("unknown_key")
    assert not feed(v, status(**FORGED), signer=stranger)
    assert v.is_over_hard_budget("acme") is not None
    assert rejected("unknown_key") == before + 1


def test_a_forged_signature_changes_nothing():
    v = over_budget_view()
    genuine = signed(status(cost="60", version=8))
    forged_value = ENCODE(status(**FORGED).to_avro())
    forged = BudgetRecord(0, 9, genuine.key, forged_value, genuine.headers)  # headers copied
    before = rejected("bad_signature")
    assert not v.receive(forged, decode)
    # meter's key under another scheme (guard's verdicts) does not verify either.
    other_domain = Signer.from_secret(METER_PRIVATE, "k", GUARD_VERDICT)
    assert not feed(v, status(**FORGED), signer=other_domain)  # its headers are not meter's
    assert v.is_over_hard_budget("acme") is not None
    assert rejected("bad_signature") == before + 1
    assert v.rejected == {"bad_signature": 1, "unsigned": 1}


def test_a_signed_status_under_another_tenants_key_changes_nothing():
    v = over_budget_view()
    other = status("soft", **FORGED)
    # Re-keyed after signing: the signature covers the key.
    record = signed(other)
    moved = BudgetRecord(0, 10, b"acme", record.value, record.headers)
    assert not v.receive(moved, decode)
    # Signed under acme's key but carrying another tenant's status: refused as well.
    assert not feed(v, other, key=b"acme")
    assert v.is_over_hard_budget("acme") is not None
    assert v.rejected == {"bad_signature": 1, "key_mismatch": 1}


def test_a_tombstone_changes_nothing():
    v = over_budget_view()
    assert not v.receive(BudgetRecord(0, 11, b"acme", None, []), decode)
    assert v.is_over_hard_budget("acme") is not None
    assert v.rejected == {"tombstone": 1}


def test_the_hard_field_of_a_record_switches_nothing():
    """Enforcement is guard's config: even meter's own hard=false leaves acme enforced."""
    v = over_budget_view()
    assert feed(v, status(hard=False, cost="70", version=8))  # signed by meter
    assert "day usd budget of 50 reached (70)" in (v.is_over_hard_budget("acme") or "")
    assert not feed(v, status("soft", hard=True, cost="70", version=1))
    assert v.is_over_hard_budget("soft") is None, "a record cannot switch enforcement on"


def test_rejections_are_logged_once_per_reason_with_place_and_reason_only(caplog):
    v = over_budget_view()
    with caplog.at_level(logging.WARNING, logger="streams.llm.budgets"):
        for offset in range(5):
            feed(v, status("acme-secret-tenant-value", **FORGED), headers=[], offset=offset)
        feed(v, status(**FORGED), signer=Signer.from_secret(new_keypair()[0], "k", METER_BUDGET))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "metering.budgets[0]@0: unsigned" in lines[0]
    assert "unknown_key" in lines[1]
    assert not any("acme-secret-tenant-value" in line for line in lines)
    assert v.rejected == {"unsigned": 5, "unknown_key": 1}


def test_settled_request_ids_round_trip_through_the_contract():
    st = replace(status(), settled_request_ids=("r1",))
    assert decode(ENCODE(st.to_avro())).settled_request_ids == ("r1",)


def test_a_status_written_before_settlements_decodes_with_none_settled():
    import io

    import fastavro

    new = json.loads((PROJECT_ROOT / "schemas" / "avro" / "budget_status.avsc").read_text())
    old = {**new, "fields": [f for f in new["fields"] if f["name"] != "settled_request_ids"]}
    value = {k: v for k, v in status().to_avro().items() if k != "settled_request_ids"}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), value)
    buffer.seek(0)
    read = fastavro.schemaless_reader(
        buffer, fastavro.parse_schema(old), fastavro.parse_schema(new)
    )
    assert read["settled_request_ids"] == []
    assert BudgetStatus.from_avro(read).settled_request_ids == ()


def test_a_reader_takes_a_bounded_number_of_settled_ids():
    value = {**status().to_avro(), "settled_request_ids": [f"r{i}" for i in range(10_000)]}
    assert len(BudgetStatus.from_avro(value).settled_request_ids) == MAX_SETTLED_PER_STATUS


def test_only_a_verified_status_hands_its_settled_ids_on():
    settled: list[tuple[str, tuple[str, ...]]] = []
    v = view()
    v._on_settled = lambda tenant, ids: settled.append((tenant, tuple(ids)))
    st = replace(status(version=3), settled_request_ids=("r1",))
    assert not v.receive(signed(st, headers=[]), decode)  # unsigned
    assert settled == []
    assert v.receive(signed(st), decode)
    assert settled == [("acme", ("r1",))]


def test_spend_is_the_running_periods_only():
    v = view()
    feed(v, status(cost="12.5", tokens=7))
    assert v.spend("acme", "day") == (7, Decimal("12.5"))
    assert v.spend("nobody", "day") == (0, Decimal(0))
    after = view(now=DAY[1])  # the day is over; the month runs on
    feed(after, status(cost="12.5", tokens=7))
    assert after.spend("acme", "day") == (0, Decimal(0))
    assert after.spend("acme", "month") == (7, Decimal("12.5"))
