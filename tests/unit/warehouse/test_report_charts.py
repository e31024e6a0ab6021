"""The report's SVG charts as pure functions: scaling, escaping, the empty state."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from streams.warehouse.report import charts, page
from streams.warehouse.report.charts import BarSeries, Event, Gauge, LegendItem, Series
from streams.warehouse.report.queries import BudgetRow, CostRow, ReportData, Window

NS = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
STEP = timedelta(minutes=10)
HOSTILE = '<script>alert("x")</script>&amp;'


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 (our own output) well-formed XML, or this raises


def marks(root: ET.Element, tag: str) -> list[ET.Element]:
    return [e for e in root.iter(NS + tag) if "mark" in e.get("class", "").split()]


def viewbox(root: ET.Element) -> tuple[float, float]:
    _, _, width, height = (float(v) for v in root.get("viewBox", "").split())
    return width, height


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(NS + "text")]


def bars(series, **kwargs):
    return charts.time_bars(
        "cost",
        "Cost",
        start=T0,
        end=T0 + 6 * STEP,
        step=STEP,
        series=series,
        y_label="USD",
        **kwargs,
    )


# -- scaling ----------------------------------------------------------------------------
def test_time_bars_are_scaled_into_the_viewbox_and_stack():
    a = Series("a", [(T0, 1.0), (T0 + STEP, 2.0)], "#111")
    b = Series("b", [(T0, 1.0)], "#222")
    root = parse(bars([a, b]))
    width, height = viewbox(root)
    rects = marks(root, "rect")
    assert len(rects) == 3
    for rect in rects:
        x, y, w, h = (float(rect.get(k)) for k in ("x", "y", "width", "height"))
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height
        assert w > 0 and h > 0
    first_a, second_a, first_b = rects
    # Equal values, equal heights; b sits on a; twice the value, twice the height.
    assert float(first_a.get("height")) == pytest.approx(float(first_b.get("height")), abs=0.02)
    assert float(first_b.get("y")) + float(first_b.get("height")) == pytest.approx(
        float(first_a.get("y")), abs=0.02
    )
    assert float(second_a.get("height")) == pytest.approx(
        2 * float(first_a.get("height")), abs=0.05
    )
    # The stacked total (2) and the single bar (2) reach the same height.
    assert float(first_b.get("y")) == pytest.approx(float(second_a.get("y")), abs=0.02)
    # Bars are in time order, left to right, inside their bucket.
    assert float(first_a.get("x")) < float(second_a.get("x"))
    assert root.get("data-chart") == "cost" and root.get("data-empty") == "false"
    assert {"a", "b"} <= set(texts(root))  # the legend, since there are two series


def test_time_lines_put_the_largest_value_on_the_top_tick_and_break_at_gaps():
    points = [
        (T0, 0.0),
        (T0 + STEP, 50.0),
        (T0 + 2 * STEP, 100.0),
        (T0 + 4 * STEP, 100.0),
        (T0 + 5 * STEP, 100.0),
    ]
    root = parse(
        charts.time_lines(
            "latency",
            "Latency",
            start=T0,
            end=T0 + 6 * STEP,
            series=[Series("m", points, "#123")],
            y_label="ms",
            gap=STEP * 1.5,
        )
    )
    paths = marks(root, "path")
    dots = marks(root, "circle")
    assert len(paths) == 2  # the gap between +2 and +4 steps breaks the line
    assert len(dots) == 5
    ys = [float(d.get("cy")) for d in dots]
    xs = [float(d.get("cx")) for d in dots]
    assert xs == sorted(xs)
    assert ys[0] > ys[1] > ys[2] == ys[3] == ys[4]  # SVG y grows downwards
    assert (ys[0] - ys[1]) == pytest.approx(ys[1] - ys[2], abs=0.02)  # linear
    width, height = viewbox(root)
    assert all(0 <= x <= width for x in xs) and all(0 <= y <= height for y in ys)
    assert paths[0].get("d").startswith("M") and " L" in paths[0].get("d")
    assert len(root.findall(f".//{NS}g[@class='legend-item']")) == 0  # one series: no legend


def test_log_scale_spaces_decades_evenly():
    points = [(T0 + i * STEP, v) for i, v in enumerate((1.0, 10.0, 100.0, 1000.0))]
    root = parse(
        charts.time_lines(
            "latency",
            "Latency",
            start=T0,
            end=T0 + 4 * STEP,
            series=[Series("m", points, "#123")],
            y_label="ms",
            log_y=True,
        )
    )
    ys = [float(d.get("cy")) for d in marks(root, "circle")]
    gaps = [a - b for a, b in itertools.pairwise(ys)]
    assert all(g > 0 for g in gaps)
    assert max(gaps) - min(gaps) < 0.05


def test_hbars_widths_are_proportional_and_stacked():
    root = parse(
        charts.hbars(
            "pii",
            "PII",
            categories=["EMAIL", "PHONE"],
            series=[BarSeries("hash", [30, 10], "#111"), BarSeries("mask", [10, 0], "#222")],
            x_label="findings",
        )
    )
    rects = marks(root, "rect")
    assert len(rects) == 3  # a zero value draws nothing
    email_hash, email_mask, phone_hash = rects
    w = [float(r.get("width")) for r in rects]
    assert w[0] == pytest.approx(3 * w[1], abs=0.05) and w[0] == pytest.approx(3 * w[2], abs=0.05)
    assert float(email_mask.get("x")) == pytest.approx(float(email_hash.get("x")) + w[0], abs=0.02)
    assert float(phone_hash.get("y")) > float(email_hash.get("y"))
    assert "40" in texts(root) and "10" in texts(root)  # totals at the end of the rows
    width, _ = viewbox(root)
    assert max(float(r.get("x")) + float(r.get("width")) for r in rects) < width


def test_timeline_places_events_on_their_rows_and_drops_the_rest():
    events = [
        Event(T0 + STEP, "a", "#f00", "one"),
        Event(T0 + 3 * STEP, "b", "#f00", "two"),
        Event(T0 - STEP, "a", "#f00", "before the window"),
        Event(T0 + STEP, "not shown", "#f00", "row left out"),
    ]
    root = parse(
        charts.timeline(
            "drift",
            "Drift",
            start=T0,
            end=T0 + 6 * STEP,
            rows=["a", "b"],
            events=events,
            legend=[LegendItem("critical", "#f00"), LegendItem("warning", "#fa0")],
        )
    )
    dots = marks(root, "circle")
    assert len(dots) == 2
    assert float(dots[0].get("cx")) < float(dots[1].get("cx"))
    assert float(dots[0].get("cy")) < float(dots[1].get("cy"))
    assert [t.text for d in dots for t in d.iter(NS + "title")] == ["one", "two"]


def test_gauges_colour_by_share_and_draw_the_limit():
    root = parse(
        charts.gauges(
            "budget",
            "Budgets",
            rows=[
                Gauge("a", 50, "$5 of $10"),
                Gauge("b", 120, "$12 of $10"),
                Gauge("c", None, "x"),
            ],
        )
    )
    a, b = marks(root, "rect")
    assert a.get("fill") == charts.OK_COLOR and b.get("fill") == charts.ERROR_COLOR
    assert float(b.get("width")) == pytest.approx(2.4 * float(a.get("width")), abs=0.05)
    (limit,) = [e for e in root.iter(NS + "line") if e.get("class") == "limit"]
    assert float(limit.get("x1")) == pytest.approx(
        float(a.get("x")) + 2 * float(a.get("width")), abs=0.05
    )
    assert "x" in texts(root)  # the row without a limit says so instead of drawing a bar


# -- escaping ---------------------------------------------------------------------------
def test_hostile_names_stay_text_everywhere():
    svgs = [
        bars([Series(HOSTILE, [(T0, 1.0)], "#111"), Series("b", [(T0, 1.0)], "#222")]),
        charts.hbars(
            "blocked",
            HOSTILE,
            categories=[HOSTILE],
            series=[BarSeries(HOSTILE, [3], "#111"), BarSeries("x", [1], "#222")],
            x_label=HOSTILE,
        ),
        charts.timeline(
            "drift",
            "Drift",
            start=T0,
            end=T0 + STEP,
            rows=[HOSTILE],
            events=[Event(T0, HOSTILE, '"><script>', HOSTILE)],
            legend=[LegendItem(HOSTILE, "#f00"), LegendItem("b", "#0f0")],
        ),
        charts.gauges("budget", "Budgets", rows=[Gauge(HOSTILE, 10, HOSTILE)]),
    ]
    for svg in svgs:
        assert "<script" not in svg
        root = parse(svg)
        assert not list(root.iter(NS + "script")) and not list(root.iter("script"))
        shown = set(texts(root)) | {t.text for t in root.iter(NS + "title")}
        assert HOSTILE in shown  # displayed exactly as given, never interpreted
    # An attribute value cannot be closed early either.
    assert '"><script>' not in svgs[2] and "&quot;&gt;&lt;script&gt;" in svgs[2]


def test_chart_name_and_title_are_escaped_too():
    svg = charts.time_bars(
        'x" onload="alert(1)',
        HOSTILE,
        start=T0,
        end=T0 + STEP,
        step=STEP,
        series=[],
        y_label="USD",
    )
    root = parse(svg)
    assert root.get("data-chart") == 'x" onload="alert(1)'
    assert root.get("onload") is None
    assert root.get("aria-label") == HOSTILE


# -- empty data -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "svg",
    [
        bars([]),
        bars([Series("a", [(T0, 0.0)], "#111")]),  # only zeros
        charts.time_lines("latency", "L", start=T0, end=T0 + STEP, series=[], y_label="ms"),
        charts.hbars("pii", "P", categories=[], series=[], x_label="findings"),
        charts.timeline("drift", "D", start=T0, end=T0 + STEP, rows=[], events=[], legend=[]),
        charts.gauges("budget", "B", rows=[]),
    ],
)
def test_no_data_is_said_not_drawn(svg):
    root = parse(svg)
    assert root.get("data-empty") == "true"
    assert charts.NO_DATA in texts(root)
    assert not [e for e in root.iter() if "mark" in e.get("class", "").split()]
    title = root.find(f"{NS}text[@class='chart-title']")
    assert title is not None and title.text


def test_an_empty_report_has_every_chart_in_its_empty_state():
    data = ReportData(window=Window.last(24, T0), source="chdb:///x")
    html = page.render(data, generated_at=T0)
    # Eight charts, the traces table and the SLO table (which says that no SLO is declared).
    assert html.count('data-empty="true"') == 10
    assert html.count(charts.NO_DATA) == 9
    assert "No model declares an SLO" in html
    assert "<script" not in html


# -- formatting -------------------------------------------------------------------------
def test_ticks_and_numbers():
    assert charts.nice_ticks(0, 0.0057) == [0, 0.002, 0.004, 0.006]
    assert charts.nice_ticks(0, 0.0057, 10) == [0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006]
    assert charts.nice_ticks(0, 97, 4) == [0, 25, 50, 75, 100]
    assert charts.nice_ticks(0, 0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert charts.log_ticks(3, 700) == [2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert charts.number(0.004, 0.001) == "0.004"
    assert charts.number(0.0025, 0.0025) == "0.0025"
    assert charts.number(2500, 500) == "2,500" and charts.number(25000, 5000) == "25k"
    assert charts.number(2_000_000) == "2M"
    assert charts.number(1_834_000) == "1.83M"
    assert charts.number(42) == "42" and charts.number(0.000123) == "0.000123"
    assert charts.usd(0.000123) == "$0.000123"
    assert charts.usd(8.4) == "$8.40"
    assert charts.millis(4630) == "4.63 s" and charts.millis(12.0) == "12 ms"
    assert charts.short("abcdefghijklmnopqrstuvwxyz", 10) == "abcdef…xyz"
    ticks = charts.time_ticks(T0, T0 + timedelta(hours=6))
    assert ticks[0] == T0 and all(t.minute == 0 for t in ticks) and len(ticks) <= 9


def test_budget_gauge_uses_the_tightest_limit():
    row = BudgetRow("acme", "month", True, 10, 1_800_000, 2_000_000, Decimal("10"), Decimal("50"))
    gauge = page.budget_gauge(row)
    assert gauge.share_pct == pytest.approx(90.0)
    assert gauge.text == "1.8M of 2M tokens · 90 % · hard"
    free = page.budget_gauge(BudgetRow("x", "day", False, 1, 5, None, Decimal("1.5"), None))
    assert free.share_pct is None and "no limit" in free.text


def test_cost_chart_keeps_the_top_series_and_sums_the_rest():
    window = Window.last(1, T0)
    rows = [
        CostRow(window.axis_start, f"t{i}", "m", 1, 10, Decimal(i + 1))
        for i in range(page.TOP_SERIES + 3)
    ]
    root = parse(page.cost_chart(ReportData(window=window, source="", cost=rows)))
    labels = ["".join(g.itertext()) for g in root.iter(NS + "g") if g.get("class") == "legend-item"]
    assert len(labels) == page.TOP_SERIES
    assert labels[0] == f"t{page.TOP_SERIES + 2} · m"  # the largest first
    assert labels[-1] == "4 other tenant · model pairs"
    heights = sum(float(r.get("height")) for r in marks(root, "rect"))
    assert heights > 0
