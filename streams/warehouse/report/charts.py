"""Charts as inline SVG, rendered in Python (pure functions: data in, markup out).

Every chart is one ``<svg class="chart" data-chart="NAME">`` with a title, labelled
axes, a legend when it has several series, and a ``<title>`` tooltip on each mark.
A chart without data says so (``data-empty="true"`` and a "no data in this period"
line) instead of drawing empty axes. Every piece of text that reaches the markup
goes through :func:`esc`: tenant, model and topic names are user data.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

#: Okabe-Ito and Tableau hues: distinguishable, also for most colour-blind readers.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
    "#8C564B",
    "#9467BD",
    "#F0E442",
)
OTHER_COLOR = "#B0B0B0"
ERROR_COLOR = "#C62828"
OK_COLOR = "#2E7D32"
WARN_COLOR = "#EF8A00"
NO_DATA = "no data in this period"

FONT = 12  # px, ticks and legends
TITLE_FONT = 15
CHAR_W = 6.9  # px per character at FONT, generous for the default sans-serif
LEGEND_ROW = 20
EMPTY_HEIGHT = 150  # height of a categorical chart with nothing to show
LABEL_CHARS = 40  # longest label drawn in full; the tooltip keeps the whole text

Format = Callable[[float], str]


def esc(value: object) -> str:
    """Text or attribute value, escaped for HTML and SVG."""
    return html.escape(str(value), quote=True)


def color(index: int) -> str:
    """The palette's ``index``-th colour (cycling)."""
    return PALETTE[index % len(PALETTE)]


# -- data -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    """Values of one series over time: ``points`` are (time, value)."""

    label: str
    points: Sequence[tuple[datetime, float]]
    color: str
    dash: str = ""  # SVG stroke-dasharray; "" is a solid line


@dataclass(frozen=True)
class BarSeries:
    """One stack of a bar chart: a value per category, in the categories' order."""

    label: str
    values: Sequence[float]
    color: str


@dataclass(frozen=True)
class LegendItem:
    """A legend entry: a swatch (or a line, when ``line``) and its label."""

    label: str
    color: str
    dash: str = ""
    line: bool = False


@dataclass(frozen=True)
class Event:
    """A mark on a timeline: when, on which row, of which kind (a legend entry)."""

    ts: datetime
    row: str
    color: str
    tooltip: str


@dataclass(frozen=True)
class Gauge:
    """A share of a limit: ``share_pct`` None means there is no limit to compare with."""

    label: str
    share_pct: float | None
    text: str


# -- formatting -------------------------------------------------------------------------
_SUFFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))


def number(value: float, step: float | None = None) -> str:
    """A value (three significant digits) or a tick (the decimals its ``step`` needs).

    Large numbers get k/M/G: 2.5k, 1.8M.
    """
    if step is None:
        return _significant(value)
    for factor, suffix in _SUFFIXES:
        if abs(step) >= factor:
            return _decimals(value / factor, step / factor) + suffix
    return _decimals(value, step)


def _significant(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    for factor, suffix in _SUFFIXES:
        if abs(value) >= factor:
            return _significant(value / factor) + suffix
    places = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _decimals(value: float, step: float) -> str:
    """``value`` with the decimals of ``step`` (2.5 needs one, 0.002 three, 50 none)."""
    places = 0
    step = abs(round(step, 9))
    if step and not float(step).is_integer():
        exponent = Decimal(repr(step)).normalize().as_tuple().exponent
        places = min(9, max(0, -int(exponent)))
    text = f"{value:,.{places}f}"
    return "0" if text.lstrip("-").strip("0.,") == "" else text


def usd(value: float) -> str:
    """An amount in USD, with enough decimals for small amounts."""
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value:,.0f}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    places = min(9, -math.floor(math.log10(abs(value))) + 2)
    return f"${value:.{places}f}"


def millis(value: float) -> str:
    """A duration given in milliseconds, in its natural unit."""
    if value >= 60_000:
        return f"{value / 60_000:.1f} min"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.2f} ms" if value < 1 else f"{value:.1f} ms"


def short(text: str, chars: int = LABEL_CHARS) -> str:
    """``text`` cut to ``chars`` characters, the middle elided: both ends stay readable."""
    if len(text) <= chars:
        return text
    tail = (chars - 1) * 2 // 5
    return text[: chars - 1 - tail] + "…" + text[len(text) - tail :]


def text_width(text: str, font: float = FONT) -> float:
    """Estimated width of ``text`` in px (no font metrics offline: an upper estimate)."""
    return len(text) * CHAR_W * font / FONT


# -- scales -----------------------------------------------------------------------------
def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (about ``count`` of them)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    start = math.floor(low / step + 1e-9) * step
    ticks = []
    value = start
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks for a log axis covering [low, high] (low > 0)."""
    low, high = max(low, 1e-9), max(high, low * 10)
    start, end = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks = [m * 10.0**e for e in range(start, end + 1) for m in (1, 2, 5)]
    inside = [t for t in ticks if low / 1.0001 <= t <= high * 1.0001]
    below = [t for t in ticks if t < low]
    above = [t for t in ticks if t > high]
    return ([below[-1]] if below else []) + inside + ([above[0]] if above else [])


@dataclass(frozen=True)
class Linear:
    """Maps [d0, d1] onto [r0, r1]."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        """The position of ``value``."""
        span = self.d1 - self.d0 or 1.0
        return self.r0 + (value - self.d0) / span * (self.r1 - self.r0)


@dataclass(frozen=True)
class Log:
    """Maps [d0, d1] (both > 0) onto [r0, r1] logarithmically."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        """The position of ``value`` (values <= 0 sit at the bottom)."""
        low, high = math.log10(self.d0), math.log10(self.d1)
        value = math.log10(max(value, self.d0))
        return self.r0 + (value - low) / ((high - low) or 1.0) * (self.r1 - self.r0)


_TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800)


def time_ticks(start: datetime, end: datetime, most: int = 9) -> list[datetime]:
    """Round UTC times between ``start`` and ``end`` (at most ``most`` of them)."""
    span = (end - start).total_seconds()
    step = next((s for s in _TIME_STEPS if span / s <= most), None)
    if step is None:
        days = math.ceil(span / 86400 / most)
        step = 86400 * days
    first = math.ceil(start.timestamp() / step) * step
    return [
        datetime.fromtimestamp(t, UTC) for t in range(int(first), int(end.timestamp()) + 1, step)
    ]


# -- pieces -----------------------------------------------------------------------------
def _f(value: float) -> str:
    """A coordinate: two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


class _Svg:
    """Collects the elements of one chart."""

    def __init__(self, chart: str, title: str, width: int, height: int) -> None:
        self.chart = chart
        self.title = title
        self.width = width
        self.height = height
        self.parts: list[str] = []

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        cls: str = "",
        anchor: str = "start",
        tooltip: str | None = None,
        extra: str = "",
    ) -> None:
        tip = f"<title>{esc(tooltip)}</title>" if tooltip and tooltip != content else ""
        cls_attr = f' class="{esc(cls)}"' if cls else ""
        self.add(
            f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"{cls_attr}{extra}>'
            f"{tip}{esc(content)}</text>"
        )

    def render(self, *, empty: bool = False) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{esc(self.chart)}"'
            f' data-empty="{"true" if empty else "false"}" viewBox="0 0 {self.width} {self.height}"'
            f' width="{self.width}" height="{self.height}" role="img"'
            f' aria-label="{esc(self.title)}">'
        )
        title = (
            f'<text class="chart-title" x="0" y="{TITLE_FONT + 2}" '
            f'font-size="{TITLE_FONT}" font-weight="600">{esc(self.title)}</text>'
        )
        return head + title + "".join(self.parts) + "</svg>"


def _legend(svg: _Svg, items: Sequence[LegendItem], top: float, left: float = 0) -> float:
    """Legend entries flowing in rows under the title; the y below them."""
    if not items:
        return top
    x, y = left, top
    for item in items:
        label = short(item.label)
        width = 22 + text_width(label) + 18
        if x > left and x + width > svg.width:
            x, y = left, y + LEGEND_ROW
        if item.line:
            dash = f' stroke-dasharray="{esc(item.dash)}"' if item.dash else ""
            swatch = (
                f'<line class="legend-swatch" x1="{_f(x)}" y1="{_f(y - 4)}" x2="{_f(x + 16)}" '
                f'y2="{_f(y - 4)}" stroke="{esc(item.color)}" stroke-width="2.5"{dash}/>'
            )
        else:
            swatch = (
                f'<rect class="legend-swatch" x="{_f(x)}" y="{_f(y - 10)}" width="12" '
                f'height="12" rx="2" fill="{esc(item.color)}"/>'
            )
        svg.add(f'<g class="legend-item">{swatch}')
        svg.text(x + (22 if item.line else 17), y, label, cls="legend", tooltip=item.label)
        svg.add("</g>")
        x += width
    return y + LEGEND_ROW - 6


def _empty(svg: _Svg, message: str = NO_DATA) -> str:
    """The chart's title over a framed "no data in this period" (no axes, no legend)."""
    svg.height = EMPTY_HEIGHT
    top, height = TITLE_FONT + 16.0, svg.height
    svg.add(
        f'<rect class="empty-frame" x="0.5" y="{_f(top)}" width="{svg.width - 1}" '
        f'height="{_f(height - top - 1)}" fill="#FAFAFA" stroke="#DDD" stroke-dasharray="4 4"/>'
    )
    svg.text(svg.width / 2, (top + height) / 2 + 5, message, cls="no-data", anchor="middle")
    return svg.render(empty=True)


def _y_axis(
    svg: _Svg,
    *,
    ticks: Sequence[float],
    scale: Linear | Log,
    left: float,
    right: float,
    label: str,
    fmt: Format | None,
    top: float,
    bottom: float,
) -> None:
    step = (ticks[1] - ticks[0]) if len(ticks) > 1 else None
    for tick in ticks:
        y = scale(tick)
        svg.add(
            f'<line class="grid" x1="{_f(left)}" y1="{_f(y)}" x2="{_f(right)}" y2="{_f(y)}" '
            'stroke="#E6E6E6"/>'
        )
        text = fmt(tick) if fmt else number(tick, step if isinstance(scale, Linear) else None)
        svg.text(left - 6, y + 4, text, cls="tick", anchor="end")
    svg.add(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(top)}" x2="{_f(left)}" y2="{_f(bottom)}" '
        'stroke="#888"/>'
    )
    middle = (top + bottom) / 2
    svg.text(
        14,
        middle,
        label,
        cls="axis-label",
        anchor="middle",
        extra=f' transform="rotate(-90 14 {_f(middle)})"',
    )


def _time_axis(
    svg: _Svg, *, start: datetime, end: datetime, x: Linear, bottom: float, label: str
) -> None:
    svg.add(
        f'<line class="axis" x1="{_f(x.r0)}" y1="{_f(bottom)}" x2="{_f(x.r1)}" '
        f'y2="{_f(bottom)}" stroke="#888"/>'
    )
    ticks = time_ticks(start, end)
    previous_day = None
    for tick in ticks:
        px = x(tick.timestamp())
        svg.add(
            f'<line class="tick-mark" x1="{_f(px)}" y1="{_f(bottom)}" x2="{_f(px)}" '
            f'y2="{_f(bottom + 4)}" stroke="#888"/>'
        )
        svg.text(px, bottom + 17, tick.strftime("%H:%M"), cls="tick", anchor="middle")
        if tick.date() != previous_day:
            svg.text(px, bottom + 31, tick.strftime("%b %d"), cls="tick tick-day", anchor="middle")
            previous_day = tick.date()
    svg.text((x.r0 + x.r1) / 2, svg.height - 4, label, cls="axis-label", anchor="middle")


def _legend_of(series: Sequence[Series | BarSeries]) -> list[LegendItem]:
    return [LegendItem(s.label, s.color) for s in series] if len(series) > 1 else []


# -- charts -----------------------------------------------------------------------------
def time_bars(
    chart: str,
    title: str,
    *,
    start: datetime,
    end: datetime,
    step: timedelta,
    series: Sequence[Series],
    y_label: str,
    tooltip: Format = number,
    width: int = 1200,
    height: int = 340,
    x_label: str = "time (UTC)",
) -> str:
    """Stacked bars per time bucket (bucket start, ``step`` wide), one stack per series."""
    svg = _Svg(chart, title, width, height)
    if not any(value > 0 and start <= ts < end for s in series for ts, value in s.points):
        return _empty(svg)
    top = _legend(svg, _legend_of(series), TITLE_FONT + 24)
    totals: dict[datetime, float] = {}
    for s in series:
        for ts, value in s.points:
            if start <= ts < end:
                totals[ts] = totals.get(ts, 0.0) + max(0.0, value)
    ticks = nice_ticks(0, max(totals.values()))
    left, right, bottom = 74.0, width - 10.0, height - 56.0
    y = Linear(ticks[0], ticks[-1], bottom, top + 8)
    x = Linear(start.timestamp(), end.timestamp(), left, right)
    _y_axis(
        svg,
        ticks=ticks,
        scale=y,
        left=left,
        right=right,
        label=y_label,
        fmt=None,
        top=top + 8,
        bottom=bottom,
    )
    bar = max(1.0, (x(start.timestamp() + step.total_seconds()) - left) * 0.86)
    stacked: dict[datetime, float] = {}
    for s in series:
        svg.add(f'<g class="series" data-series="{esc(s.label)}" fill="{esc(s.color)}">')
        for ts, value in s.points:
            if value <= 0 or not start <= ts < end:
                continue
            base = stacked.get(ts, 0.0)
            stacked[ts] = base + value
            y0, y1 = y(base), y(base + value)
            slot = x(ts.timestamp() + step.total_seconds()) - x(ts.timestamp())
            px = x(ts.timestamp()) + (slot - bar) / 2
            svg.add(
                f'<rect class="mark" x="{_f(px)}" y="{_f(y1)}" width="{_f(bar)}" '
                f'height="{_f(max(0.5, y0 - y1))}"><title>{esc(s.label)} · '
                f"{esc(ts.strftime('%Y-%m-%d %H:%M'))} UTC: {esc(tooltip(value))}</title></rect>"
            )
        svg.add("</g>")
    _time_axis(svg, start=start, end=end, x=x, bottom=bottom, label=x_label)
    return svg.render()


def time_lines(
    chart: str,
    title: str,
    *,
    start: datetime,
    end: datetime,
    series: Sequence[Series],
    y_label: str,
    fmt: Format | None = None,
    tooltip: Format = number,
    gap: timedelta | None = None,
    log_y: bool = False,
    legend: Sequence[LegendItem] | None = None,
    width: int = 1200,
    height: int = 360,
    x_label: str = "time (UTC)",
) -> str:
    """Lines over time with a dot per point; a line breaks where points are > ``gap`` apart."""
    svg = _Svg(chart, title, width, height)
    values = [v for s in series for _, v in s.points if math.isfinite(v)]
    if not values:
        return _empty(svg)
    items = list(legend) if legend is not None else _legend_of(series)
    top = _legend(svg, items, TITLE_FONT + 24)
    left, right, bottom = 74.0, width - 10.0, height - 56.0
    scale: Linear | Log
    if log_y:
        positive = [v for v in values if v > 0] or [1.0]
        ticks = log_ticks(min(positive), max(positive))
        scale = Log(ticks[0], ticks[-1], bottom, top + 8)
    else:
        ticks = nice_ticks(min(0.0, *values), max(values))
        scale = Linear(ticks[0], ticks[-1], bottom, top + 8)
    x = Linear(start.timestamp(), end.timestamp(), left, right)
    _y_axis(
        svg,
        ticks=ticks,
        scale=scale,
        left=left,
        right=right,
        label=y_label,
        fmt=fmt,
        top=top + 8,
        bottom=bottom,
    )
    for s in series:
        points = sorted((ts, v) for ts, v in s.points if math.isfinite(v) and start <= ts <= end)
        segments: list[list[tuple[datetime, float]]] = []
        for point in points:
            if segments and (gap is None or point[0] - segments[-1][-1][0] <= gap):
                segments[-1].append(point)
            else:
                segments.append([point])
        dash = f' stroke-dasharray="{esc(s.dash)}"' if s.dash else ""
        svg.add(f'<g class="series" data-series="{esc(s.label)}">')
        for segment in segments:
            if len(segment) > 1:
                d = "M" + " L".join(f"{_f(x(t.timestamp()))},{_f(scale(v))}" for t, v in segment)
                svg.add(
                    f'<path class="mark line" d="{d}" fill="none" stroke="{esc(s.color)}" '
                    f'stroke-width="2" stroke-linejoin="round"{dash}/>'
                )
        alone = {segment[0][0] for segment in segments if len(segment) == 1}
        for ts, value in points:
            svg.add(
                f'<circle class="mark dot" cx="{_f(x(ts.timestamp()))}" cy="{_f(scale(value))}" '
                f'r="{3 if ts in alone else 1.8}" fill="{esc(s.color)}"><title>{esc(s.label)} · '
                f"{esc(ts.strftime('%Y-%m-%d %H:%M'))} UTC: {esc(tooltip(value))}</title></circle>"
            )
        svg.add("</g>")
    _time_axis(svg, start=start, end=end, x=x, bottom=bottom, label=x_label)
    return svg.render()


def hbars(
    chart: str,
    title: str,
    *,
    categories: Sequence[str],
    series: Sequence[BarSeries],
    x_label: str,
    fmt: Format = number,
    width: int = 600,
    label_width: float = 190,
    bar_height: float = 24,
) -> str:
    """Horizontal stacked bars, one row per category, one stack per series; totals at the end."""
    rows = max(1, len(categories))
    svg = _Svg(chart, title, width, EMPTY_HEIGHT)
    totals = [sum(max(0.0, s.values[i]) for s in series) for i in range(len(categories))]
    if not categories or not any(t > 0 for t in totals):
        return _empty(svg)
    top = _legend(svg, _legend_of(series), TITLE_FONT + 24)
    svg.height = int(top + 8 + rows * bar_height + 52)
    left, right = label_width, width - 16.0 - text_width(fmt(max(totals))) - 6
    bottom = top + 8 + rows * bar_height
    ticks = nice_ticks(0, max(totals), 4)
    x = Linear(0, ticks[-1], left, right)
    for tick in ticks:
        px = x(tick)
        svg.add(
            f'<line class="grid" x1="{_f(px)}" y1="{_f(top + 8)}" x2="{_f(px)}" '
            f'y2="{_f(bottom)}" stroke="#E6E6E6"/>'
        )
        svg.text(px, bottom + 16, number(tick, ticks[1] - ticks[0]), cls="tick", anchor="middle")
    svg.add(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(top + 8)}" x2="{_f(left)}" '
        f'y2="{_f(bottom)}" stroke="#888"/>'
    )
    chars = int((label_width - 10) / CHAR_W)
    for i, category in enumerate(categories):
        y0 = top + 8 + i * bar_height
        label = short(category, chars)
        svg.text(
            left - 8, y0 + bar_height / 2 + 4, label, cls="category", tooltip=category, anchor="end"
        )
        offset = 0.0
        for s in series:
            value = max(0.0, s.values[i])
            if value <= 0:
                continue
            x0, x1 = x(offset), x(offset + value)
            svg.add(
                f'<rect class="mark" data-series="{esc(s.label)}" x="{_f(x0)}" '
                f'y="{_f(y0 + 3)}" width="{_f(max(0.5, x1 - x0))}" height="{_f(bar_height - 6)}" '
                f'fill="{esc(s.color)}"><title>{esc(category)} · {esc(s.label)}: '
                f"{esc(fmt(value))}</title></rect>"
            )
            offset += value
        svg.text(x(offset) + 5, y0 + bar_height / 2 + 4, fmt(totals[i]), cls="value")
    svg.text((left + right) / 2, svg.height - 6, x_label, cls="axis-label", anchor="middle")
    return svg.render()


def timeline(
    chart: str,
    title: str,
    *,
    start: datetime,
    end: datetime,
    rows: Sequence[str],
    events: Sequence[Event],
    legend: Sequence[LegendItem],
    width: int = 1200,
    label_width: float = 300,
    row_height: float = 26,
    x_label: str = "time (UTC)",
) -> str:
    """Events as dots on a time axis, one row per ``rows`` entry (e.g. one per signal)."""
    svg = _Svg(chart, title, width, EMPTY_HEIGHT)
    shown = [e for e in events if e.row in rows and start <= e.ts <= end]
    if not rows or not shown:
        return _empty(svg)
    top = _legend(svg, legend if len(legend) > 1 else [], TITLE_FONT + 24)
    svg.height = int(top + 8 + max(1, len(rows)) * row_height + 58)
    left, right = label_width, width - 14.0
    bottom = top + 8 + len(rows) * row_height
    x = Linear(start.timestamp(), end.timestamp(), left, right)
    index = {row: i for i, row in enumerate(rows)}
    chars = int((label_width - 12) / CHAR_W)
    for i, row in enumerate(rows):
        cy = top + 8 + (i + 0.5) * row_height
        if i % 2 == 0:
            svg.add(
                f'<rect class="band" x="{_f(left)}" y="{_f(cy - row_height / 2)}" '
                f'width="{_f(right - left)}" height="{_f(row_height)}" fill="#F5F7FA"/>'
            )
        svg.text(left - 8, cy + 4, short(row, chars), cls="category", anchor="end", tooltip=row)
    for tick in time_ticks(start, end):
        px = x(tick.timestamp())
        svg.add(
            f'<line class="grid" x1="{_f(px)}" y1="{_f(top + 8)}" x2="{_f(px)}" '
            f'y2="{_f(bottom)}" stroke="#E6E6E6"/>'
        )
    for event in shown:
        cy = top + 8 + (index[event.row] + 0.5) * row_height
        svg.add(
            f'<circle class="mark" cx="{_f(x(event.ts.timestamp()))}" cy="{_f(cy)}" r="6" '
            f'fill="{esc(event.color)}" fill-opacity="0.85" stroke="#FFF" stroke-width="1">'
            f"<title>{esc(event.tooltip)}</title></circle>"
        )
    _time_axis(svg, start=start, end=end, x=x, bottom=bottom, label=x_label)
    return svg.render()


def gauges(
    chart: str,
    title: str,
    *,
    rows: Sequence[Gauge],
    x_label: str = "share of the budget used (%)",
    width: int = 600,
    label_width: float = 170,
    bar_height: float = 26,
    text_room: float = 210,
) -> str:
    """One bar per row: the share of a limit used, a line at 100 %, the amounts as text."""
    legend = [
        LegendItem("under 80 %", OK_COLOR),
        LegendItem("80-100 %", WARN_COLOR),
        LegendItem("over the limit", ERROR_COLOR),
        LegendItem("limit", ERROR_COLOR, dash="4 3", line=True),
    ]
    svg = _Svg(chart, title, width, EMPTY_HEIGHT)
    if not rows:
        return _empty(svg)
    top = _legend(svg, legend, TITLE_FONT + 24)
    svg.height = int(top + 8 + max(1, len(rows)) * bar_height + 52)
    most = max([100.0] + [g.share_pct for g in rows if g.share_pct is not None])
    ticks = nice_ticks(0, most, 4)
    left, right = label_width, width - text_room
    bottom = top + 8 + len(rows) * bar_height
    x = Linear(0, ticks[-1], left, right)
    for tick in ticks:
        px = x(tick)
        svg.add(
            f'<line class="grid" x1="{_f(px)}" y1="{_f(top + 8)}" x2="{_f(px)}" '
            f'y2="{_f(bottom)}" stroke="#E6E6E6"/>'
        )
        svg.text(px, bottom + 16, number(tick, ticks[1] - ticks[0]), cls="tick", anchor="middle")
    chars = int((label_width - 10) / CHAR_W)
    for i, gauge in enumerate(rows):
        y0 = top + 8 + i * bar_height
        label = short(gauge.label, chars)
        svg.text(
            left - 8,
            y0 + bar_height / 2 + 4,
            label,
            cls="category",
            tooltip=gauge.label,
            anchor="end",
        )
        if gauge.share_pct is None:
            svg.text(left + 6, y0 + bar_height / 2 + 4, gauge.text, cls="value muted")
            continue
        svg.add(
            f'<rect class="track" x="{_f(left)}" y="{_f(y0 + 4)}" width="{_f(x(100) - left)}" '
            f'height="{_f(bar_height - 8)}" fill="#F0F0F0"/>'
        )
        share = gauge.share_pct
        fill = OK_COLOR if share < 80 else WARN_COLOR if share < 100 else ERROR_COLOR
        end = x(min(share, ticks[-1]))
        svg.add(
            f'<rect class="mark" x="{_f(left)}" y="{_f(y0 + 4)}" '
            f'width="{_f(max(1.5, end - left))}" height="{_f(bar_height - 8)}" fill="{fill}">'
            f"<title>{esc(gauge.label)}: {esc(gauge.text)}</title></rect>"
        )
        svg.text(max(end, x(100)) + 6, y0 + bar_height / 2 + 4, gauge.text, cls="value")
    limit = x(100)
    svg.add(
        f'<line class="limit" x1="{_f(limit)}" y1="{_f(top + 4)}" x2="{_f(limit)}" '
        f'y2="{_f(bottom + 2)}" stroke="{ERROR_COLOR}" stroke-width="1.5" stroke-dasharray="4 3"/>'
    )
    svg.text((left + right) / 2, svg.height - 6, x_label, cls="axis-label", anchor="middle")
    return svg.render()
