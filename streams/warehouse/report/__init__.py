"""``sluice report``: the key analytics of a period as one self-contained HTML page.

``queries`` holds the SQL (one query per chart, over ``FINAL`` tables), ``slo`` the
models' SLO status, ``charts`` renders inline SVG (pure), ``page`` assembles the document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from streams.warehouse.clickhouse import Warehouse
from streams.warehouse.report.page import render
from streams.warehouse.report.queries import Query, ReportData, Window, collect
from streams.warehouse.report.slo import Objective, collect_slos


def build(
    warehouse: Warehouse,
    *,
    hours: float = 24,
    now: datetime | None = None,
    on_query: Callable[[Query], None] | None = None,
    objectives: Sequence[Objective] = (),
) -> tuple[ReportData, str]:
    """Query the last ``hours`` hours and render them: the data and the HTML.

    The models' ``objectives`` are measured over their own SLO windows, up to the same end.
    """
    window = Window.last(hours, now)
    data = collect(warehouse, window, on_query=on_query)
    data = replace(data, slos=collect_slos(warehouse, objectives, window.end))
    return data, render(data, generated_at=now)


__all__ = ["Objective", "Query", "ReportData", "Window", "build", "collect", "render"]
