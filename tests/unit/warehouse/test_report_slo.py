"""The report's SLO table, computed by ClickHouse (chdb) over known results.

Results go in the way production writes them (Avro records of inference.results through
the sink), and every number of the table is checked against what the rows say.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from processors.sink import processor as sink
from streams.cli import report as report_cli
from streams.contracts.records import InferenceResult
from streams.llm.model_catalog import load_models
from streams.runtime.spec import InputRecord
from streams.warehouse import clickhouse
from streams.warehouse.report import build
from streams.warehouse.report.page import slo_table
from streams.warehouse.report.slo import Objective, collect_slos, exhaustion

NOW = datetime.now(UTC).replace(microsecond=0)
MINILM = Objective("minilm", 30, 0.99, 0.95, 100.0)
TEXTGEN = Objective("textgen", 30, 0.995, 0.99, 2500.0)
BURNT = Objective("burnt", 7, 0.9, 0.9, 50.0)
IDLE = Objective("idle", 30, 0.999, 0.99, 100.0)


def result(n: int, model: str, ago: timedelta, *, ok: bool = True, ms: float = 50.0, batch=4):
    done = NOW - ago
    return InferenceResult(
        request_id=f"{model}-{n}",
        tenant_id="acme",
        model=model,
        status="ok" if ok else "error",
        error_code=None if ok else "triton_unavailable",
        request_created_at=done - timedelta(milliseconds=ms + 5),
        completed_at=done,
        inference_ms=ms if ok else 0.0,
        e2e_ms=ms + 5,
        batch_size=batch if ok else 0,
    )


def results() -> list[InferenceResult]:
    rows: list[InferenceResult] = []

    def add(count: int, model: str, ago: timedelta, **kwargs) -> None:
        rows.extend(result(len(rows), model, ago, **kwargs) for _ in range(count))

    old, recent, before = timedelta(days=20), timedelta(hours=2), timedelta(days=40)
    # minilm: 300 fast results 20 days ago; in the last 24 h 98 ok (87 fast, one of them
    # exactly at the threshold, 5 slow, 6 cache hits that made no Triton call) and 2 errors.
    add(300, "minilm", old)
    add(86, "minilm", recent)
    add(1, "minilm", recent, ms=100.0)
    add(5, "minilm", recent, ms=150.0)
    add(6, "minilm", recent, ms=0.0, batch=0)
    add(2, "minilm", recent, ok=False)
    # Outside the 30-day window: never counted.
    add(50, "minilm", before, ok=False)
    # textgen: healthy, nothing in the last 24 h.
    add(200, "textgen", timedelta(days=2), ms=900.0)
    # burnt: half its results failed in the last 24 h; older ones are past its 7-day window.
    add(5, "burnt", recent)
    add(5, "burnt", recent, ok=False)
    add(10, "burnt", timedelta(days=8), ok=False)
    # A model without an objective is not in the table.
    add(10, "gpt-4o-mini", recent, ok=False)
    return rows


@pytest.fixture
def loaded(ctx, serde):
    encode = serde.encoder("inference.results")
    encoded = [encode(r.to_avro()) for r in results()]
    records = [
        InputRecord("inference.results", 0, i, None, value, value, [], 0)
        for i, value in enumerate(encoded)
    ]
    for _ in range(2):  # a replayed batch collapses (FINAL)
        assert sink.process_batch(records, ctx) == [[]] * len(records)
    return ctx


def test_the_slo_table_counts_every_result_of_each_window_once(loaded):
    db = clickhouse.open_warehouse(loaded.settings, database="sluice")
    try:
        rows = collect_slos(db, [TEXTGEN, MINILM, IDLE, BURNT], NOW)
    finally:
        db.close()
    by_model = {row.objective.model: row for row in rows}
    assert [row.objective.model for row in rows] == ["burnt", "idle", "minilm", "textgen"]

    minilm = by_model["minilm"]
    assert (minilm.requests, minilm.ok, minilm.timed, minilm.fast) == (400, 398, 392, 387)
    assert minilm.first == NOW - timedelta(days=20)
    budget, latency_budget = Fraction(1, 100), Fraction(5, 100)
    availability = Fraction(398, 400)
    compliance = Fraction(387, 392)
    spent = (1 - availability) / budget
    latency_spent = (1 - compliance) / latency_budget
    burn = Fraction(2, 100) / budget
    latency_burn = Fraction(5, 92) / latency_budget
    assert minilm.availability == pytest.approx(float(availability), rel=1e-12)
    assert minilm.latency_compliance == pytest.approx(float(compliance), rel=1e-12)
    assert minilm.availability_budget_spent_pct == pytest.approx(50.0, rel=1e-12)
    assert minilm.latency_budget_spent_pct == pytest.approx(float(100 * latency_spent), rel=1e-12)
    assert minilm.availability_burn == pytest.approx(2.0, rel=1e-12)
    assert minilm.latency_burn == pytest.approx(float(latency_burn), rel=1e-12)
    # Half the budget is left; at twice the sustainable pace it lasts 720 h / 2 * 0.5.
    assert minilm.availability_hours_left == pytest.approx(float((1 - spent) * 720 / burn))
    assert minilm.availability_hours_left == pytest.approx(180.0, rel=1e-12)
    assert minilm.latency_hours_left == pytest.approx(
        float((1 - latency_spent) * 720 / latency_burn), rel=1e-12
    )
    assert exhaustion(minilm.availability_hours_left) == "in 7.5 days"

    textgen = by_model["textgen"]
    assert (textgen.requests, textgen.ok, textgen.timed, textgen.fast) == (200, 200, 200, 200)
    assert (textgen.availability, textgen.latency_compliance) == (1.0, 1.0)
    assert textgen.availability_budget_spent_pct == pytest.approx(0.0, abs=1e-9)
    assert (textgen.availability_burn, textgen.availability_hours_left) == (None, None)
    assert exhaustion(textgen.latency_hours_left) == "never"

    burnt = by_model["burnt"]
    assert (burnt.requests, burnt.ok, burnt.timed, burnt.fast) == (10, 5, 5, 5)
    assert burnt.availability_budget_spent_pct == pytest.approx(500.0, rel=1e-12)
    assert burnt.availability_burn == pytest.approx(5.0, rel=1e-12)
    assert burnt.availability_hours_left == 0.0
    assert exhaustion(burnt.availability_hours_left) == "exhausted"
    assert burnt.latency_budget_spent_pct == pytest.approx(0.0, abs=1e-9)

    idle = by_model["idle"]
    assert (idle.requests, idle.first, idle.availability, idle.latency_compliance) == (
        0,
        None,
        None,
        None,
    )
    assert idle.availability_hours_left is None


def test_the_page_shows_the_slo_table(loaded):
    db = clickhouse.open_warehouse(loaded.settings, database="sluice")
    try:
        data, page = build(db, hours=24, now=NOW, objectives=[MINILM, IDLE, BURNT])
    finally:
        db.close()
    assert [row.objective.model for row in data.slos] == ["burnt", "idle", "minilm"]
    table = slo_table(data.slos)
    assert table in page
    assert 'data-table="slo"' in table
    assert "99.5 %" in table and "target 99 %" in table  # minilm's availability
    assert "in 7.5 days" in table and "exhausted" in table and "never" in table
    assert "no results in its window" in table  # idle


def test_without_objectives_the_page_says_none_is_declared() -> None:
    assert "infra/triton/models.yaml" in slo_table([])


def test_the_cli_reads_the_objectives_from_the_model_catalog() -> None:
    objectives = report_cli.objectives(load_models())
    assert objectives == [
        Objective("minilm", 30, 0.999, 0.99, 100.0),
        Objective("textgen", 30, 0.995, 0.99, 2500.0),
    ]


@pytest.mark.parametrize(
    ("hours", "said"),
    [
        (None, "never"),
        (0.0, "exhausted"),
        (-1.0, "exhausted"),
        (12.25, "in 12.2 h"),
        (72, "in 3.0 days"),
    ],
)
def test_exhaustion_in_words(hours, said) -> None:
    assert exhaustion(hours) == said


def test_an_objective_that_is_no_model_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a model name"):
        Objective("x'); DROP TABLE results; --", 30, 0.99, 0.99, 100.0).literal()
