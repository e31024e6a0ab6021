"""The report page: the charts of ``report.charts`` in one self-contained HTML file.

No script, stylesheet, font or image is fetched: the CSS is inline, the charts are
inline SVG and every mark carries its exact value as a tooltip (``<title>``), so the
file opens the same offline, attached to a ticket or years later.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from streams.warehouse.report.charts import (
    ERROR_COLOR,
    NO_DATA,
    OK_COLOR,
    OTHER_COLOR,
    WARN_COLOR,
    BarSeries,
    Event,
    Gauge,
    LegendItem,
    Series,
    color,
    esc,
    gauges,
    hbars,
    millis,
    number,
    time_bars,
    time_lines,
    timeline,
    usd,
)
from streams.warehouse.report.queries import SLOWEST_TRACES, BudgetRow, ReportData, TraceRow
from streams.warehouse.report.slo import BURN_HOURS, SloRow, exhaustion

WIDE = 1240
HALF = 600
TOP_SERIES = 8  # series drawn in their own colour; the rest are summed as "other"
TOP_CATEGORIES = 12
DRIFT_ROWS = 16
QUANTILES = (("p50", ""), ("p95", "7 4"), ("p99", "2 3"))
SEVERITY_COLORS = {"critical": ERROR_COLOR, "warning": WARN_COLOR}


def step_text(step: timedelta) -> str:
    """A bucket width in words: 30 min, 1 h, 1 day."""
    seconds = int(step.total_seconds())
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day" + ("s" if days > 1 else "")
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


def _top(totals: dict[str, float], most: int) -> list[str]:
    """The ``most`` keys with the largest totals (ties by name); the rest become "other"."""
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    return ranked if len(ranked) <= most else ranked[: most - 1]


# -- charts from rows -------------------------------------------------------------------
def cost_chart(data: ReportData) -> str:
    """Spend per time bucket, stacked by tenant and model."""
    window = data.window
    per_key: dict[str, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
    for row in data.cost:
        per_key[f"{row.tenant_id} · {row.model}"][row.bucket] += float(row.cost)
    totals = {k: sum(v.values()) for k, v in per_key.items()}
    top = _top(totals, TOP_SERIES)
    series = [Series(key, sorted(per_key[key].items()), color(i)) for i, key in enumerate(top)]
    rest: dict[datetime, float] = defaultdict(float)
    for key, points in per_key.items():
        if key not in top:
            for ts, value in points.items():
                rest[ts] += value
    if rest:
        others = len(per_key) - len(top)
        series.append(
            Series(f"{others} other tenant · model pairs", sorted(rest.items()), OTHER_COLOR)
        )
    return time_bars(
        "cost",
        "Cost per tenant and model",
        start=window.axis_start,
        end=window.axis_end,
        step=window.step,
        series=series,
        y_label=f"USD per {step_text(window.step)}",
        tooltip=usd,
        width=WIDE,
    )


def latency_chart(data: ReportData) -> str:
    """p50, p95 and p99 end-to-end latency per model: a colour per model, a dash per quantile."""
    window = data.window
    requests: dict[str, float] = defaultdict(float)
    for row in data.latency:
        requests[row.model] += row.requests
    busiest = sorted(requests, key=lambda m: (-requests[m], m))[:TOP_SERIES]
    models = sorted(busiest)
    series: list[Series] = []
    for i, model in enumerate(models):
        rows = [row for row in data.latency if row.model == model]
        for name, dash in QUANTILES:
            points = [(row.bucket, float(getattr(row, f"{name}_ms"))) for row in rows]
            series.append(Series(f"{model} {name}", points, color(i), dash))
    legend = [LegendItem(model, color(i), line=True) for i, model in enumerate(models)]
    legend += [LegendItem(name, "#555", dash, line=True) for name, dash in QUANTILES]
    values = [v for s in series for _, v in s.points if v > 0 and math.isfinite(v)]
    log_y = bool(values) and max(values) / min(values) > 50
    middle = timedelta(seconds=window.step.total_seconds() / 2)
    title = "End-to-end latency per model (p50, p95, p99)"
    if len(requests) > len(models):
        title += f": the {len(models)} busiest of {len(requests)} models"
    return time_lines(
        "latency",
        title,
        start=window.axis_start,
        end=window.axis_end,
        series=[
            Series(s.label, [(t + middle, v) for t, v in s.points], s.color, s.dash) for s in series
        ],
        y_label="latency (ms" + (", log scale)" if log_y else ")"),
        tooltip=millis,
        gap=window.step * 1.5,
        log_y=log_y,
        legend=legend,
        width=WIDE,
    )


def throughput_chart(data: ReportData) -> str:
    """Results per minute, the failed ones stacked on top in red."""
    window = data.window

    def minutes(bucket: datetime) -> float:
        """Minutes of the bucket inside the window (the first and last may be partial)."""
        covered = min(bucket + window.step, window.end) - max(bucket, window.start)
        return max(covered.total_seconds(), 1.0) / 60

    ok = [(r.bucket, (r.results - r.errors) / minutes(r.bucket)) for r in data.throughput]
    errors = [(r.bucket, r.errors / minutes(r.bucket)) for r in data.throughput]
    return time_bars(
        "throughput",
        "Throughput and errors",
        start=window.axis_start,
        end=window.axis_end,
        step=window.step,
        series=[Series("ok", ok, OK_COLOR), Series("errors", errors, ERROR_COLOR)],
        y_label=f"results per minute ({step_text(window.step)} average)",
        tooltip=lambda v: f"{number(v)} results/min",
        width=WIDE,
    )


def _stacked(
    rows: Iterable[tuple[str, str, float]], *, other_series: str
) -> tuple[list[str], list[BarSeries]]:
    """(category, series, value) rows as categories by total and top series (+ the rest)."""
    cells: dict[tuple[str, str], float] = defaultdict(float)
    for category, name, value in rows:
        cells[category, name] += value
    by_category: dict[str, float] = defaultdict(float)
    by_series: dict[str, float] = defaultdict(float)
    for (category, name), value in cells.items():
        by_category[category] += value
        by_series[name] += value
    categories = sorted(by_category, key=lambda c: (-by_category[c], c))[:TOP_CATEGORIES]
    top = _top(by_series, TOP_SERIES)
    series = [
        BarSeries(name, [cells.get((c, name), 0.0) for c in categories], color(i))
        for i, name in enumerate(top)
    ]
    rest = [name for name in by_series if name not in top]
    if rest:
        values = [sum(cells.get((c, name), 0.0) for name in rest) for c in categories]
        series.append(BarSeries(f"{len(rest)} {other_series}", values, OTHER_COLOR))
    return categories, series


def dead_letters_chart(data: ReportData) -> str:
    """Dead-lettered records per source topic, stacked by reason."""
    categories, series = _stacked(
        ((r.topic, r.reason, r.records) for r in data.dead_letters), other_series="other reasons"
    )
    return hbars(
        "dead-letters",
        "Dead letters by topic and reason",
        categories=categories,
        series=series,
        x_label="records dead-lettered",
        width=HALF,
    )


def blocked_chart(data: ReportData) -> str:
    """Requests guard blocked, per reason, stacked by tenant."""
    categories, series = _stacked(
        ((r.reason, r.tenant_id, r.requests) for r in data.blocked), other_series="other tenants"
    )
    return hbars(
        "blocked",
        "Blocked requests by reason",
        categories=categories,
        series=series,
        x_label="requests blocked (stacked by tenant)",
        width=HALF,
    )


def pii_chart(data: ReportData) -> str:
    """PII findings per entity type, stacked by the action the policy took."""
    categories, series = _stacked(
        ((r.entity_type, r.action, r.findings) for r in data.pii), other_series="other actions"
    )
    return hbars(
        "pii",
        "PII findings by entity type",
        categories=categories,
        series=series,
        x_label="findings (stacked by action)",
        width=HALF,
    )


def drift_chart(data: ReportData) -> str:
    """Each drift alert as a dot on its signal's row, coloured by severity."""
    window = data.window
    last: dict[str, datetime] = {}
    first: dict[str, datetime] = {}
    for row in data.drift:
        last[row.signal] = max(last.get(row.signal, row.at), row.at)
        first[row.signal] = min(first.get(row.signal, row.at), row.at)
    recent = sorted(last, key=lambda s: (-last[s].timestamp(), s))[:DRIFT_ROWS]
    rows = sorted(recent, key=lambda s: (first[s], s))
    severities = sorted({row.severity for row in data.drift}, key=lambda s: (s != "critical", s))
    events = [
        Event(
            row.at,
            row.signal,
            SEVERITY_COLORS.get(row.severity, OTHER_COLOR),
            f"{row.at:%Y-%m-%d %H:%M:%S} UTC · {row.subject_kind} {row.subject} · "
            f"{row.signal_name}: {row.severity} ({row.detector}), mean "
            f"{_mean(row.reference_mean)} → {_mean(row.current_mean)}",
        )
        for row in data.drift
    ]
    title = "Drift alerts"
    if len(last) > len(rows):
        title += f" (the {len(rows)} most recently alerted of {len(last)} signals)"
    return timeline(
        "drift",
        title,
        start=window.axis_start,
        end=window.axis_end,
        rows=rows,
        events=events,
        legend=[LegendItem(s, SEVERITY_COLORS.get(s, OTHER_COLOR)) for s in severities],
        width=WIDE,
    )


def _mean(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def budget_gauge(row: BudgetRow) -> Gauge:
    """A tenant's period as a share of its tightest limit, with the amounts in words."""
    label = f"{row.tenant_id} · {row.period}"
    shares: list[tuple[float, str]] = []
    if row.cost_limit is not None and row.cost_limit > 0:
        shares.append(
            (
                float(row.cost * 100 / row.cost_limit),
                f"{usd(float(row.cost))} of {usd(float(row.cost_limit))}",
            )
        )
    if row.token_limit:
        shares.append(
            (
                100 * row.tokens / row.token_limit,
                f"{number(row.tokens)} of {number(row.token_limit)} tokens",
            )
        )
    hard = " · hard" if row.hard else ""
    if not shares:
        return Gauge(label, None, f"no limit · {usd(float(row.cost))}, {number(row.tokens)} tokens")
    share, text = max(shares)
    return Gauge(label, share, f"{text} · {share:.0f} %{hard}")


def budget_chart(data: ReportData) -> str:
    """Every tenant's current day and month against its budget, the closest to it first."""
    gauges_ = [budget_gauge(row) for row in data.budgets]
    gauges_.sort(key=lambda g: (g.share_pct is None, -(g.share_pct or 0.0), g.label))
    return gauges(
        "budget",
        "Budget status per tenant (current day and month)",
        rows=gauges_[: TOP_CATEGORIES * 2],
        width=HALF,
    )


def traces_table(traces: Sequence[TraceRow]) -> str:
    """The slowest traces of the period, with a bar for the duration."""
    if not traces:
        return f'<p class="no-data" data-table="traces" data-empty="true">{esc(NO_DATA)}</p>'
    longest = max(t.duration_ms for t in traces) or 1.0
    rows = []
    for trace in traces:
        share = max(1.0, 100 * trace.duration_ms / longest)
        errors = (
            f'<span class="bad">{trace.errors}</span>'
            if trace.errors
            else '<span class="muted">0</span>'
        )
        rows.append(
            "<tr>"
            f"<td>{esc(f'{trace.start:%Y-%m-%d %H:%M:%S}')}</td>"
            f'<td class="num"><div class="duration"><span class="track"><span class="bar" '
            f'style="width:{share:.1f}%"></span></span>'
            f"<span>{esc(millis(trace.duration_ms))}</span></div></td>"
            f"<td>{esc(trace.root_span)}</td>"
            f"<td>{esc(', '.join(trace.services))}</td>"
            f'<td class="num">{trace.spans}</td>'
            f'<td class="num">{errors}</td>'
            f'<td class="mono">{esc(trace.trace_id)}</td>'
            "</tr>"
        )
    head = "".join(
        f"<th{' class=num' if n in ('duration', 'spans', 'errors') else ''}>{n}</th>"
        for n in (
            "started (UTC)",
            "duration",
            "first span",
            "services",
            "spans",
            "errors",
            "trace id",
        )
    )
    return (
        f'<table class="traces" data-table="traces"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _share(share: float | None) -> str:
    """``0.995`` as ``99.5 %``; no measurement as a dash."""
    if share is None:
        return "-"
    return f"{100 * share:.2f}".rstrip("0").rstrip(".") + " %"


def _budget(spent_pct: float | None, hours_left: float | None) -> str:
    if spent_pct is None:
        return '<td class="num muted">-</td><td class="muted">-</td>'
    cls = "bad" if spent_pct >= 100 else ""
    return (
        f'<td class="num"><span class="{cls}">{spent_pct:.1f} %</span></td>'
        f"<td>{esc(exhaustion(hours_left))}</td>"
    )


def slo_table(rows: Sequence[SloRow]) -> str:
    """Each model's SLOs: achieved against target, budget spent, when it runs out."""
    if not rows:
        return (
            '<p class="no-data" data-table="slo" data-empty="true">No model declares an SLO '
            "(the <code>slo:</code> blocks of <code>infra/triton/models.yaml</code>).</p>"
        )
    body = []
    for row in rows:
        o = row.objective
        since = f"since {row.first:%Y-%m-%d %H:%M}" if row.first else "no results in its window"
        body.append(
            "<tr>"
            f"<td>{esc(o.model)}</td>"
            f'<td class="num">{row.requests:,}<br><span class="muted">{o.window_days} days, '
            f"{esc(since)}</span></td>"
            f'<td class="num">{esc(_share(row.availability))}<br><span class="muted">target '
            f"{esc(_share(o.availability))}</span></td>"
            f"{_budget(row.availability_budget_spent_pct, row.availability_hours_left)}"
            f'<td class="num">{esc(_share(row.latency_compliance))}<br><span class="muted">'
            f"target {esc(_share(o.latency_target))} ≤ {esc(millis(o.latency_threshold_ms))}"
            "</span></td>"
            f"{_budget(row.latency_budget_spent_pct, row.latency_hours_left)}"
            "</tr>"
        )
    head = "".join(
        f"<th{' class=num' if n not in ('model', 'runs out') else ''}>{n}</th>"
        for n in (
            "model",
            "results",
            "availability",
            "budget spent",
            "runs out",
            "within latency",
            "budget spent",
            "runs out",
        )
    )
    return (
        f'<table class="traces" data-table="slo"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


# -- the page ---------------------------------------------------------------------------
def _tiles(data: ReportData) -> list[tuple[str, str, str]]:
    """(label, value, detail) of the headline numbers."""
    results = sum(r.results for r in data.throughput)
    errors = sum(r.errors for r in data.throughput)
    cost = sum((r.cost for r in data.cost), Decimal(0))
    tenants = len({r.tenant_id for r in data.cost})
    error_rate = f"{100 * errors / results:.2f} % of results" if results else "no results"
    return [
        ("results", f"{results:,}", f"{len({r.model for r in data.latency})} models"),
        ("errors", f"{errors:,}", error_rate),
        ("spend", usd(float(cost)), f"{tenants} tenants"),
        ("dead letters", f"{sum(r.records for r in data.dead_letters):,}", "records"),
        ("blocked", f"{sum(r.requests for r in data.blocked):,}", "requests"),
        ("PII findings", f"{sum(r.findings for r in data.pii):,}", "entities found"),
        ("drift alerts", f"{len(data.drift):,}", f"{len({r.signal for r in data.drift})} signals"),
    ]


def _figure(svg: str, note: str, *, wide: bool) -> str:
    cls = "card wide" if wide else "card"
    return f'<figure class="{cls}">{svg}<figcaption>{note}</figcaption></figure>'


def render(data: ReportData, *, generated_at: datetime | None = None) -> str:
    """The whole report as one HTML document."""
    window = data.window
    generated = (generated_at or datetime.now(UTC)).astimezone(UTC)
    hours = (window.end - window.start).total_seconds() / 3600
    period = (
        f"{window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC "
        f"(last {number(hours)} h, {step_text(window.step)} buckets)"
    )
    tiles = "".join(
        f'<div class="tile"><div class="tile-label">{esc(label)}</div>'
        f'<div class="tile-value">{esc(value)}</div><div class="tile-detail">{esc(detail)}</div>'
        "</div>"
        for label, value, detail in _tiles(data)
    )
    sections: list[tuple[str, list[tuple[Callable[[ReportData], str], str, bool]]]] = [
        (
            "Cost",
            [
                (cost_chart, "<code>usage FINAL</code>: exact cost of each metered result", True),
                (
                    budget_chart,
                    "<code>budget_status FINAL</code>: periods running at the end of the report",
                    False,
                ),
                (
                    blocked_chart,
                    "<code>requests FINAL</code>, stage <code>blocked</code>: guard's reasons",
                    False,
                ),
            ],
        ),
        (
            "Performance",
            [
                (
                    latency_chart,
                    "<code>results FINAL</code>, successful results: exact quantiles per bucket",
                    True,
                ),
                (throughput_chart, "<code>results FINAL</code>: every result and its status", True),
            ],
        ),
        (
            "Data quality and safety",
            [
                (
                    dead_letters_chart,
                    "<code>dead_letters FINAL</code>: every <code>*.dlq</code> by source topic",
                    False,
                ),
                (
                    pii_chart,
                    "<code>pii_findings FINAL</code>: what guard found (never values)",
                    False,
                ),
                (drift_chart, "<code>drift_alerts FINAL</code>: one dot per alert", True),
            ],
        ),
    ]
    body = []
    for heading, charts in sections:
        figures = "".join(_figure(chart(data), note, wide=wide) for chart, note, wide in charts)
        body.append(f'<section><h2>{esc(heading)}</h2><div class="grid">{figures}</div></section>')
    body.append(
        "<section><h2>Service-level objectives</h2>"
        '<div class="card wide"><p class="caption"><code>results FINAL</code> over each '
        "model's SLO window up to the end of the report: availability is the share of results "
        "that are ok, latency the share of successful Triton calls within the threshold (cache "
        "hits made none). A budget runs out at the pace of the last "
        f"{BURN_HOURS} h; never when nothing failed then.</p>{slo_table(data.slos)}</div>"
        "</section>"
    )
    body.append(
        "<section><h2>Slowest traces</h2>"
        '<div class="card wide"><p class="caption"><code>otel_traces FINAL</code>: the '
        f"{SLOWEST_TRACES} longest traces that started in the period (duration: first span's "
        f"start to last span's end)</p>{traces_table(data.traces)}</div></section>"
    )
    return _TEMPLATE.format(
        title=esc(f"Sluice report · {window.end:%Y-%m-%d %H:%M} UTC"),
        period=esc(period),
        source=esc(data.source),
        generated=esc(f"{generated:%Y-%m-%d %H:%M:%S} UTC"),
        tiles=tiles,
        body="".join(body),
        css=_CSS,
    )


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#F3F5F8;color:#1F2933;
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
header,main,footer{max-width:1320px;margin:0 auto;padding:0 20px}
header{padding-top:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px;color:#334E68}
.period{color:#52606D;margin:0}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
  margin:18px 0 0}
.tile{background:#FFF;border:1px solid #E1E5EA;border-radius:8px;padding:10px 14px}
.tile-label{color:#52606D;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.tile-value{font-size:22px;font-weight:600;margin:2px 0}
.tile-detail{color:#7B8794;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
.card{background:#FFF;border:1px solid #E1E5EA;border-radius:8px;padding:16px;margin:0}
.wide{grid-column:1/-1}
figcaption,.caption{color:#7B8794;font-size:12px;margin:6px 0 0}
.caption{margin:0 0 10px}
svg.chart{display:block;width:100%;height:auto;overflow:visible}
svg.chart text{font-family:inherit;font-size:12px;fill:#3E4C59}
svg.chart .chart-title{font-size:15px;font-weight:600;fill:#1F2933}
svg.chart .tick{fill:#616E7C;font-size:11px}
svg.chart .axis-label{fill:#3E4C59}
svg.chart .no-data{fill:#7B8794;font-size:14px;font-style:italic}
svg.chart .muted{fill:#7B8794}
svg.chart .mark:hover{opacity:.75}
table.traces{width:100%;border-collapse:collapse;font-size:13px}
.traces th{text-align:left;color:#52606D;font-weight:600;border-bottom:2px solid #E1E5EA;
  padding:6px 8px}
.traces td{border-bottom:1px solid #EEF1F4;padding:6px 8px;vertical-align:middle}
.traces .num{text-align:right;white-space:nowrap}
.traces .mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
.duration{display:flex;align-items:center;gap:8px;justify-content:flex-end}
.duration .track{display:inline-block;width:110px;height:10px;background:#EEF1F4;
  border-radius:2px;flex:none}
.duration .bar{display:block;height:100%;background:#0072B2;border-radius:2px}
.bad{color:#C62828;font-weight:600}
.muted{color:#9AA5B1}
p.no-data{color:#7B8794;font-style:italic;margin:8px 0}
footer{color:#7B8794;font-size:12px;padding:24px 20px 32px}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>Sluice report</h1>
<p class="period">{period}</p>
<div class="tiles">{tiles}</div>
</header>
<main>{body}</main>
<footer>Generated by <code>sluice report</code> at {generated} from {source}.
Every mark shows its exact value on hover.</footer>
</body>
</html>
"""
