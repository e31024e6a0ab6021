"""Poison records in the sink: a row ClickHouse refuses is dead-lettered alone, the rest loads.

Through the runner's real batch path (the harness) into an embedded ClickHouse, the
real engine: what it and its client refuse is refused here as on a server.
"""

from __future__ import annotations

import math
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from processors.meter.usage import usage_of
from processors.sink import processor as sink
from streams.errors import ContractViolation, TransientError
from streams.llm.pricing import load_prices
from streams.runtime.dead_letters import error_headers
from streams.runtime.spec import Headers, InputRecord, NoSettings
from streams.runtime.testing import Harness
from streams.settings import PROJECT_ROOT, Settings
from streams.warehouse.clickhouse import DirectWarehouse
from tests.support.metering import synthetic_results, tenants
from tests.support.warehouse import embedded_settings

PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
T0 = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
# Within pii_findings' TTL: test_a_missing_table_... attaches the table anew, and an
# attached table's TTL merges run (tests/support/warehouse.py stops them at migration).
RECENT_MS = int(time.time() * 1000) - 3_600_000


def finding(i: int, **changes: Any) -> dict[str, Any]:
    return {
        "request_id": f"r{i}",
        "tenant_id": "acme",
        "field": "input_text",
        "entity_type": "EMAIL_ADDRESS",
        "start": 10 * i,
        "end": 10 * i + 5,
        "score": 1.0,
        "recognizer": "EmailRecognizer",
        "action": "hash",
        "policy_version": "7",
        "detected_at": RECENT_MS,
        **changes,
    }


def sink_harness(settings: Settings) -> Harness[NoSettings, sink.SinkResources]:
    return Harness(sink.PROCESSOR, settings=settings, config=NoSettings())


def warehouse_of(harness: Harness[NoSettings, sink.SinkResources]) -> DirectWarehouse:
    warehouse = harness.ctx.resources.warehouse
    assert warehouse is not None
    return warehouse


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


def test_a_finding_with_a_negative_offset_is_dead_lettered_alone(tmp_path: Path) -> None:
    with sink_harness(embedded_settings(tmp_path)) as harness:
        records = [
            harness.record("pii.findings", finding(i, start=-7 if i == 5 else 10 * i), key=f"r{i}")
            for i in range(8)
        ]
        out = harness.run(records)
        rows = warehouse_of(harness).query("SELECT request_id FROM pii_findings ORDER BY start")
        resources = harness.ctx.resources
    assert out.kinds() == ["RowRejected"]
    letter = out.dead_letters[0]
    assert letter.topic == "pii.findings.dlq"
    assert letter.raw == records[5].raw and letter.key == b"r5"  # the original bytes
    assert letter.info.offset == records[5].offset
    assert letter.info.stage == "load"
    assert (
        "pii_findings" in letter.info.message and "column `start` (UInt32)" in letter.info.message
    )
    assert letter.info.details == {"table": "pii_findings", "exception": "DataError"}
    # Neither the value nor the row is copied into the headers.
    assert not any(b"-7" in value or b"acme" in value for _, value in letter.headers)
    # The seven others, once each (no FINAL: a duplicate would show).
    assert rows.rows == [(f"r{i}",) for i in range(8) if i != 5]
    assert resources.inserted == {"pii_findings": 7} and resources.refused == {"pii_findings": 1}
    # 8 rows, 1 refused: the batch, then two halves at each of 3 levels = 1 + 2·log2(8).
    assert resources.inserts == {"pii_findings": 7}


def test_bisection_costs_about_two_log_n_inserts_per_refused_row(tmp_path: Path) -> None:
    n, bad = 256, {3, 200}
    with sink_harness(embedded_settings(tmp_path)) as harness:
        records = [
            harness.record("pii.findings", finding(i, end=-1 if i in bad else 10 * i + 5))
            for i in range(n)
        ]
        out = harness.run(records)
        count = warehouse_of(harness).query("SELECT count() FROM pii_findings").scalar()
        resources = harness.ctx.resources
    assert [d.info.offset for d in out.dead_letters] == sorted(bad)
    assert count == n - len(bad)
    # The whole batch, its two halves (one refused row in each), then each refused half of
    # 128 is split down to its row: 2 INSERTs a level for 7 levels. 1 + 2 + 2·2·7 = 31,
    # within 1 + 2·k·log2(n) = 33, against 256 INSERTs for one a row.
    assert resources.inserts["pii_findings"] == 31
    assert resources.inserts["pii_findings"] <= 1 + 2 * len(bad) * math.log2(n)


def test_a_mixed_batch_with_two_poison_records_loads_everything_else_once(
    tmp_path: Path,
) -> None:
    results = synthetic_results(tenants(3), 12, start=T0)
    with sink_harness(embedded_settings(tmp_path)) as harness:
        records: list[InputRecord] = []
        for i, result in enumerate(results):
            usage = usage_of(result, PRICES).to_avro()
            if i == 4:
                usage["output_tokens"] = -3  # usage.output_tokens is UInt64
            records.append(harness.record("inference.results", result.to_avro()))
            records.append(harness.record("metering.usage", usage))
            records.append(
                harness.record("pii.findings", finding(i, start=-1 if i == 9 else 10 * i))
            )
        out = harness.run(records)
        warehouse = warehouse_of(harness)
        counts = {
            table: warehouse.query(f"SELECT count(), uniqExact(request_id) FROM {table}").rows[0]
            for table in ("results", "usage", "pii_findings")
        }
        resources = harness.ctx.resources
    assert out.kinds() == ["RowRejected", "RowRejected"]
    poisoned = {(d.topic, d.raw) for d in out.dead_letters}
    assert poisoned == {
        ("metering.usage.dlq", records[3 * 4 + 1].raw),
        ("pii.findings.dlq", records[3 * 9 + 2].raw),
    }
    usage_letter = next(d for d in out.dead_letters if d.topic == "metering.usage.dlq")
    assert "table usage" in usage_letter.info.message
    assert "`output_tokens` (UInt64)" in usage_letter.info.message
    # Every other record exactly once: as many rows as distinct ids, no more.
    assert counts == {"results": (12, 12), "usage": (11, 11), "pii_findings": (11, 11)}
    assert resources.inserted == {"results": 12, "usage": 11, "pii_findings": 11}
    assert resources.inserts["results"] == 1  # a table without refusals: one INSERT


def test_a_clickhouse_that_is_down_is_transient_and_dead_letters_nothing(
    tmp_path: Path,
) -> None:
    down = Settings(
        clickhouse={
            "url": f"http://127.0.0.1:{closed_port()}",
            "database": "sluice",
            "avro_ingest": False,
            "connect_timeout_s": 1.0,
        }
    )
    produced: list[tuple[str, bytes]] = []

    class Sent:
        def produce(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
            produced.append((topic, value))

    with sink_harness(down) as harness:
        records = [harness.record("pii.findings", finding(i, start=-1)) for i in range(3)]
        with pytest.raises(TransientError, match="ClickHouse unavailable"):
            harness.pipeline.run(records, Sent())
    assert produced == []


def test_a_missing_table_is_transient_not_the_rows_fault(tmp_path: Path) -> None:
    with sink_harness(embedded_settings(tmp_path)) as harness:
        harness.run([harness.record("pii.findings", finding(0))])
        warehouse = warehouse_of(harness)
        warehouse.command("DETACH TABLE pii_findings")
        batch = [harness.record("pii.findings", finding(i)) for i in (1, 2)]
        with pytest.raises(TransientError, match=r"UNKNOWN_TABLE|does not exist"):
            harness.run(batch)
        assert harness.ctx.resources.refused == {}
        warehouse.command("ATTACH TABLE pii_findings")
        out = harness.run(batch)  # the runner's retry, once the table is back
        count = warehouse.query("SELECT count() FROM pii_findings").scalar()
    assert out.dead_letters == [] and count == 3


def test_a_poison_record_on_the_avro_path_ends_in_a_dead_letter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # ClickHouse cannot reach this registry, so it takes nothing as Avro: the records go
    # the Python way, which dead-letters the poison one, as when ClickHouse refuses it.
    settings = Settings(
        clickhouse={
            "url": f"chdb://{tmp_path}",
            "database": "sluice",
            "avro_ingest": True,
            "avro_registry_url": f"http://127.0.0.1:{closed_port()}",
        }
    )
    results = synthetic_results(tenants(1), 4, start=T0)
    with sink_harness(settings) as harness:
        usages = [usage_of(r, PRICES).to_avro() for r in results]
        usages[2]["total_tokens"] = -1
        out = harness.run([harness.record("metering.usage", u) for u in usages])
        count = warehouse_of(harness).query("SELECT count() FROM usage").scalar()
    assert "did not take 4 metering.usage records as Avro" in caplog.text
    assert out.kinds() == ["RowRejected"] and out.dead_letters[0].info.offset == 2
    assert count == 3


def test_a_dead_letter_that_cannot_become_a_row_is_skipped_not_looped(tmp_path: Path) -> None:
    headers = error_headers(
        ContractViolation("x"),  # any kind: only its headers are read
        processor="validate",
        topic="pii.findings",
        partition=0,
        offset=1,
        max_message_chars=200,
        now_ms=10**20,  # a timestamp no DateTime64 holds
    )
    with sink_harness(embedded_settings(tmp_path)) as harness:
        out = harness.run(
            [
                harness.record("pii.findings.dlq", b"payload", headers=headers),
                harness.record("pii.findings", finding(0)),
            ]
        )
        assert harness.ctx.resources.inserted == {"pii_findings": 1}
    assert out.dead_letters == [] and out.produced == []
