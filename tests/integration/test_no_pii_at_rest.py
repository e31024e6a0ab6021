"""Personal data planted in every field of tickets and requests is found nowhere it must not be.

Tickets (valid and broken, as plain JSON on the raw topic, the way any Kafka
client writes them) go through validate; requests (personal data in the prompt,
user_id, source and metadata) go through guard → infer → guard → meter → sink.
Then every record (key, value, headers) of every topic, every row of every
ClickHouse table and every line the processes logged is searched for the planted
values. Allowed exceptions, by design:

* the input topics (``raw.*``, ``inference.requests``): what producers wrote;
* the values of dead-letter topics: the original bytes, kept for a replay (their
  headers, the reasons, are searched);
* ``support_tickets.validated`` values, for the valid ticket's free-text fields:
  validate checks a contract, it does not redact a dataset (its retention and
  data class govern it); the broken tickets' values must not be there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import orjson
import pytest

from streams.contracts.catalog import DLQ_SUFFIX
from streams.contracts.records import InferenceRequest
from streams.settings import Settings
from streams.warehouse import clickhouse
from tests.support import tenants
from tests.support.world import (
    World,
    make_world,
    process_log,
    produce,
    read_all,
    running_all,
    wait_for,
)

# Planted in the broken tickets and in the requests: allowed nowhere downstream.
EMAIL = "zelda.quixote7731@example.org"
NAME = "Zelda Quixote"
PHONE = "+1 415 555 0137"
FORBIDDEN = (EMAIL, "zelda.quixote7731", "Quixote", "415 555 0137")
# Planted in the valid ticket's free text: allowed in support_tickets.validated only.
TICKET_EMAIL = "yorick.vantablack4410@example.net"
TICKET_NAME = "Yorick Vantablack"
TICKET_ONLY = (TICKET_EMAIL, "yorick.vantablack4410", "Vantablack")

ENV = {
    "SLUICE_GUARD__EMBEDDER": "none",  # injection by patterns: this test is about PII
    "SLUICE_GUARD__HASH_SECRET": "no-pii-at-rest-secret-0123456789abcdef",
    "SLUICE_TELEMETRY__EXPORTER": "kafka",  # spans, and otel_traces, are searched too
    "SLUICE_TELEMETRY__ROOT_SAMPLE_RATIO": "1.0",
}
INPUT_TOPICS = ("inference.requests",)


@pytest.fixture
def world(triton: Settings, tmp_path) -> World:
    world = make_world(triton, tmp_path)
    url = f"chdb://{tmp_path / 'clickhouse'}"
    settings = world.settings.model_copy(
        update={"clickhouse": world.settings.clickhouse.model_copy(update={"url": url})}
    )
    world.sandbox = dataclasses.replace(world.sandbox, settings=settings)
    return world


def raw_tickets(good_ticket) -> tuple[list[bytes], list[bytes]]:
    """(valid, broken) raw JSON tickets; each broken one breaks a rule with personal data."""
    valid = [
        orjson.dumps(
            good_ticket(
                subject=f"Refund for {TICKET_NAME}",
                body=f"Please write to {TICKET_EMAIL}, {TICKET_NAME} here.",
            )
        )
    ]
    broken = [
        good_ticket(**{field: value})
        for field, value in [
            ("ticket_id", EMAIL),
            ("tenant_id", NAME),
            ("created_at", f"{NAME} {EMAIL}"),
            ("channel", EMAIL),
            ("priority", NAME),
            ("product", EMAIL),
            ("subject", f"{NAME} <{EMAIL}> " * 20),
            ("body", [EMAIL, NAME]),
            ("customer_tier", NAME),
            ("first_response_minutes", EMAIL),
            ("satisfaction", PHONE),
            ("order_value_usd", NAME),
            ("language", EMAIL),
        ]
    ]
    garbage = [
        b'{"subject": "' + NAME.encode() + b'", "body": ' + EMAIL.encode() + b"}",
        b'{"subject": "' + NAME.encode() + b"\xff" + EMAIL.encode() + b'"}',
        orjson.dumps({"ticket_id": EMAIL, "__op": "d", "__deleted": "true"}),
    ]
    return valid, [orjson.dumps(t) for t in broken] + garbage


def requests() -> list[InferenceRequest]:
    """One request that passes, and two whose user_id is personal data."""
    fields = {
        "max_tokens": 4,
        "temperature": 0.0,
        "source": f"sdk:crm {EMAIL}",
        "metadata": {"contact": EMAIL, "phone": PHONE, EMAIL: "vip"},
    }
    text = f"Hi, I am {NAME}, mail me at {EMAIL} or call {PHONE}."
    return [
        InferenceRequest.new("globex", "textgen", text, user_id="u-48151623", **fields),
        InferenceRequest.new("globex", "textgen", text, user_id=EMAIL, **fields),
        InferenceRequest.new("globex", "textgen", text, user_id=NAME, **fields),
    ]


def found(text: str | bytes, planted: Iterable[str]) -> list[str]:
    data = text if isinstance(text, str) else text.decode("utf-8", "replace")
    return [p for p in planted if p in data]


def search_topics(world: World) -> list[str]:
    """Every planted value in a record of a topic where none may be."""
    leaks = []
    for logical in sorted(world.catalog.topics):
        is_dlq = logical.endswith(DLQ_SUFFIX)
        if not is_dlq and (logical.startswith("raw.") or logical in INPUT_TOPICS):
            continue
        planted = FORBIDDEN if logical.endswith(".validated") else FORBIDDEN + TICKET_ONLY
        for message in read_all(world.settings, world.topic(logical), 0, timeout=15, settle=1):
            parts: list[tuple[str, bytes]] = [("key", message.key() or b"")]
            parts += [(f"header {k}", v or b"") for k, v in message.headers() or []]
            # A dead letter's value is the original record, by design, unless its data
            # class encrypts it (the dead letters of prompts): then it holds no plaintext.
            if not is_dlq or world.catalog.topic(logical).encrypted:
                parts.append(("value", message.value() or b""))
            leaks += [
                f"{logical} {where}: {p}" for where, data in parts for p in found(data, planted)
            ]
    return leaks


def search_tables(world: World) -> list[str]:
    """Every planted value in a row of a ClickHouse table."""
    db = clickhouse.open_warehouse(world.settings, database=world.settings.clickhouse.database)
    try:
        tables = db.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND engine LIKE '%MergeTree%' ORDER BY name"
        ).rows
        leaks = []
        for (table,) in tables:
            rows = db.query(f"SELECT * FROM `{table}`").rows
            leaks += [f"table {table}: {p}" for p in found(repr(rows), FORBIDDEN + TICKET_ONLY)]
        return leaks
    finally:
        db.close()


def count(world: World, sql: str) -> int:
    db = clickhouse.open_warehouse(world.settings, database=world.settings.clickhouse.database)
    try:
        return int(db.query(sql).scalar() or 0)
    finally:
        db.close()


def test_planted_personal_data_is_nowhere_at_rest(world: World, good_ticket) -> None:
    valid, broken = raw_tickets(good_ticket)
    sent = requests()
    with running_all(world, ["validate", "guard", "infer", "meter", "sink"], **ENV):
        produce(world.settings, world.raw, [*valid, *broken])
        produce(world.settings, world.topic("inference.requests"), [EMAIL.encode()])
        with tenants.client(
            world.settings, world.catalog, "globex", source="no-pii-test"
        ) as client:
            for request in sent:
                client.send_request(request)
        read_all(world.settings, world.validated, len(valid), settle=0.5)
        read_all(world.settings, world.dlq, len(broken), settle=0.5)
        results = read_all(world.settings, world.topic("inference.results"), 1, timeout=300)
        blocked = read_all(world.settings, world.topic("inference.requests.blocked"), 2)
        assert (len(results), len(blocked)) == (1, 2), process_log(world)[-3000:]
        dead_letters = len(broken) + 1  # the tickets, and the request that is not Avro

        def loaded() -> bool:
            return (
                count(world, "SELECT count() FROM dead_letters") >= dead_letters
                and count(world, "SELECT count() FROM requests") >= 2 * len(sent)
                and count(world, "SELECT count() FROM results") >= 1
                and count(world, "SELECT count() FROM pii_findings") >= 1
                and count(world, "SELECT count() FROM usage") >= 1
            )

        wait_for(loaded, 180, f"the sink's rows\n{process_log(world)[-3000:]}")
        assert count(world, "SELECT count() FROM requests WHERE user_id LIKE '%WITHHELD%'") == 2
        tables = search_tables(world)
    topics = search_topics(world)
    logs = [f"log: {p}" for p in found(process_log(world), FORBIDDEN + TICKET_ONLY)]
    assert topics + tables + logs == []
    # The search is not blind: the planted values are where they are allowed to be.
    validated = read_all(world.settings, world.validated, 1, settle=0.5)
    assert found(b"".join(m.value() or b"" for m in validated), TICKET_ONLY)
    dlq = read_all(world.settings, world.dlq, len(broken), settle=0.5)
    assert found(b"".join(m.value() or b"" for m in dlq), FORBIDDEN)
