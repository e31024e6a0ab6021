"""``sluice report``: the key analytics of a period as one self-contained HTML page.

``queries`` holds the SQL (one query per chart, over ``FINAL`` tables), ``charts``
renders inline SVG (pure), ``page`` assembles the document.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from streams.warehouse.clickhouse import Warehouse
from streams.warehouse.report.page import render
from streams.warehouse.report.queries import Query, ReportData, Window, collect


def build(
    warehouse: Warehouse,
    *,
    hours: float = 24,
    now: datetime | None = None,
    on_query: Callable[[Query], None] | None = None,
) -> tuple[ReportData, str]:
    """Query the last ``hours`` hours and render them: the data and the HTML."""
    data = collect(warehouse, Window.last(hours, now), on_query=on_query)
    return data, render(data, generated_at=now)


__all__ = ["Query", "ReportData", "Window", "build", "collect", "render"]
