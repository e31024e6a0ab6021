"""validate and the runner's decoder against hostile producers, through the real batch path.

Records framed with a foreign or recursive schema, and JSON nested 100,000 deep,
go to the dead-letter topic with their original bytes and a clear kind; the other
records of the batch are validated as usual, and nothing is processed twice.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
import pytest

from processors.validate.processor import PROCESSOR
from processors.validate.settings import ValidateSettings
from streams.contracts.catalog import Catalog, catalog_for
from streams.contracts.datasets import Contract
from streams.runtime.spec import Context, InputRecord, Outcome, Output, ProcessorSpec
from streams.runtime.testing import Harness, MemoryRegistry
from streams.settings import Settings
from tests.support.tickets import TicketFactory

RAW = "raw.support_tickets"
VALIDATED = "support_tickets.validated"
RECURSIVE = json.dumps(
    {
        "type": "record",
        "name": "Node",
        "namespace": "evil",
        "fields": [{"name": "next", "type": ["null", "Node"]}],
    }
)
DEEP_VALUE = b"\x02" * 100_000 + b"\x00"  # a Node nested 100,000 deep (fastavro: SIGSEGV)
DEEP_LIST = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


def framed(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def catalog(settings: Settings) -> Catalog:
    """The catalog, with support_tickets taking records up to the default 1 MiB.

    Its own contract caps raw records at 64 KiB, which would refuse JSON nested
    100,000 deep (200 KB) as too large before its depth is ever looked at.
    """
    catalog = catalog_for(settings)
    dataset = catalog.datasets["support_tickets"]
    contract = Contract(
        dataset.contract.spec.model_copy(update={"max_record_bytes": 1_048_576}),
        dataset.contract.schema,
    )
    datasets = {**catalog.datasets, "support_tickets": replace(dataset, contract=contract)}
    return replace(catalog, datasets=datasets)


@pytest.fixture
def registry(catalog: Catalog) -> MemoryRegistry:
    registry = MemoryRegistry.for_catalog(catalog)
    registry.register("somebody-else-value", RECURSIVE.replace("evil", "elsewhere"))
    return registry


def test_foreign_and_recursive_schemas_and_deep_json_are_dead_lettered_alone(
    settings: Settings, catalog: Catalog, registry: MemoryRegistry, good_ticket: TicketFactory
) -> None:
    foreign = registry.versions["somebody-else-value"][0]
    own_recursive = registry.register(f"{RAW}-value", RECURSIVE)  # a hostile version 2
    with Harness(
        PROCESSOR, settings=settings, config=ValidateSettings(), catalog=catalog, registry=registry
    ) as harness:
        deep_payload = harness.encode(
            RAW,
            {
                "event_id": "e-deep",
                "dataset": "support_tickets",
                "source": "test",
                "produced_at": 1_700_000_000_000,
                "payload": DEEP_OBJECT.decode(),
                "attributes": {},
            },
        )
        hostile = [
            framed(foreign, DEEP_VALUE),
            framed(own_recursive, DEEP_VALUE),
            DEEP_LIST,
            DEEP_OBJECT,
            deep_payload,
        ]
        records = [
            harness.record(RAW, orjson.dumps(good_ticket(ticket_id="TCK-00000001"))),
            *[harness.record(RAW, raw) for raw in hostile],
            harness.record(RAW, orjson.dumps(good_ticket(ticket_id="TCK-00000002"))),
        ]
        out = harness.run(records)
    assert [v["ticket_id"] for v in out.values(VALIDATED)] == ["TCK-00000001", "TCK-00000002"]
    assert out.kinds() == [
        "UnknownSchemaId",
        "SchemaTooComplex",
        "InvalidJson",
        "InvalidJson",
        "InvalidJson",
    ]
    assert [d.raw for d in out.dead_letters] == hostile  # the original bytes, untouched
    assert {d.topic for d in out.dead_letters} == {"raw.support_tickets.dlq"}
    for letter in out.dead_letters[2:]:
        assert "deeper than 64 levels" in letter.info.message
        assert "[[[" not in letter.info.message  # the limit is named, the data never quoted
    assert "RawEvent.payload" in out.dead_letters[4].info.message


def test_deep_json_is_not_processed_twice(
    settings: Settings, catalog: Catalog, good_ticket: TicketFactory
) -> None:
    # A RecursionError escaping parse_raw made the batch run again record by record,
    # so the records before it were observed twice by the null-rate monitor.
    with Harness(
        PROCESSOR, settings=settings, config=ValidateSettings(), catalog=catalog
    ) as harness:
        records = [
            harness.record(
                RAW, orjson.dumps(good_ticket(ticket_id="TCK-00000001", satisfaction=None))
            ),
            harness.record(RAW, DEEP_LIST),
            harness.record(RAW, orjson.dumps(good_ticket(ticket_id="TCK-00000002"))),
            harness.record(RAW, DEEP_OBJECT),
            harness.record(RAW, orjson.dumps(good_ticket(ticket_id="TCK-00000003"))),
        ]
        out = harness.run(records)
        monitor = harness.ctx.resources.null_rates[RAW]
        # Three valid records, one of them without satisfaction: 1/3, not 2/4 or 2/5.
        assert monitor.rates() == {"satisfaction": pytest.approx(1 / 3)}
    assert out.kinds() == ["InvalidJson", "InvalidJson"]
    assert len(out.values(VALIDATED)) == 3


def test_the_json_depth_limit_is_a_setting(settings: Settings, good_ticket: TicketFactory) -> None:
    nested = good_ticket() | {"subject": "x"}
    raw = orjson.dumps(nested).replace(b'"x"', b'"' + b"x" * 3 + b'"')
    shallow = b'{"k":' * 5 + raw + b"}" * 5  # an object 6 deep around the ticket
    with Harness(
        PROCESSOR, settings=settings, config=ValidateSettings(max_json_depth=4)
    ) as harness:
        out = harness.run([harness.record(RAW, shallow), harness.record(RAW, raw)])
    assert out.kinds() == ["InvalidJson"]
    assert "deeper than 4 levels" in out.dead_letters[0].info.message
    assert len(out.values(VALIDATED)) == 1


# -- a processor that takes decoded inputs: the runner's own decoder ------------------------
IN = "inference.requests"
OUT = "inference.requests.safe"


def _forward(records: Sequence[InputRecord], ctx: Context[Any, Any]) -> list[Outcome]:
    return [[Output(OUT, r.value, key=r.value["request_id"])] for r in records]


FORWARD: ProcessorSpec[Any, Any] = ProcessorSpec(
    name="forward",
    description="forwards decoded requests",
    inputs=lambda catalog, settings: [IN],
    outputs=lambda catalog, settings: [OUT],
    process_batch=_forward,
)


def test_the_runner_decoder_refuses_foreign_and_recursive_schemas(
    settings: Settings, registry: MemoryRegistry
) -> None:
    foreign = registry.versions["somebody-else-value"][0]
    own_recursive = registry.register(f"{IN}-value", RECURSIVE)
    request = {
        "request_id": "r1",
        "tenant_id": "acme",
        "model": "minilm",
        "input_text": "hello",
        "created_at": 1_700_000_000_000,
    }
    with Harness(FORWARD, settings=settings, registry=registry) as harness:
        hostile = [framed(foreign, DEEP_VALUE), framed(own_recursive, DEEP_VALUE)]
        out = harness.run(
            [
                harness.record(IN, hostile[0]),
                harness.record(IN, request),
                harness.record(IN, hostile[1]),
            ]
        )
    assert out.kinds() == ["UnknownSchemaId", "SchemaTooComplex"]
    assert [d.raw for d in out.dead_letters] == hostile
    assert {d.info.stage for d in out.dead_letters} == {"deserialize"}
    assert [v["request_id"] for v in out.values(OUT)] == ["r1"]
