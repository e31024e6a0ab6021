"""What Grafana and its ClickHouse plugin do to a dashboard query before ClickHouse sees it,
and what a PromQL expression refers to: helpers for tests/unit/deploy/test_dashboards.py.

A ClickHouse panel query goes through three steps, in this order, as in
grafana-clickhouse-datasource 4.10.1 (the version docker-compose.yml installs):

1. **$__conditionalAll(condition, $var)** (the plugin's frontend,
   ``CHDatasource.applyConditionalAll``): replaced by ``1=1`` when the variable's
   current value is All (``$__all``) or empty, otherwise by ``condition``.
2. **Template variables** (Grafana's ``templateSrv.replace`` with the plugin's
   default format): ``$var``, ``${var}``, ``${var:format}``, ``[[var]]``. A
   multi-value selection renders as ``'a','b'`` by default; ``singlequote`` quotes
   every value (``'`` escaped as ``\\'``); ``sqlstring`` doubles quotes; ``raw`` and
   ``csv`` join with commas. All renders every option of the variable, or its
   ``allValue`` unformatted when one is set. Names Grafana does not know
   (the plugin's ``$__`` macros) are left alone.
3. **Macros** (the plugin's backend, ``pkg/macros/macros.go``, applied by
   grafana-plugin-sdk-go's ``sqlutil.Interpolate``): each ``$__name`` (word
   boundary, longest names first) with its bracketed, comma-separated, trimmed
   arguments. With the time range ``from``/``to`` (Unix seconds) and the interval:

   ==================================  ===============================================
   ``$__timeFilter(c)``                ``c >= toDateTime(from) AND c <= toDateTime(to)``
   ``$__timeFilter_ms(c)``             ``c >= fromUnixTimestamp64Milli(from_ms) AND ...``
   ``$__dateFilter(c)``                ``c >= toDate('YYYY-MM-DD') AND c <= toDate(...)``
   ``$__dateTimeFilter(d, t)``,        ``(d >= toDate(..) AND d <= toDate(..)) AND
   ``$__dt(d, t)``                     (t >= toDateTime(from) AND t <= toDateTime(to))``
   ``$__fromTime``, ``$__toTime``      ``toDateTime(from)``, ``toDateTime(to)``
   ``$__fromTime_ms``, ``$__toTime_ms``  ``fromUnixTimestamp64Milli(from_ms)``, ...
   ``$__timeInterval(c)``              ``toStartOfInterval(toDateTime(c), INTERVAL s second)``
   ``$__timeInterval_ms(c)``           ``toStartOfInterval(toDateTime64(c, 3),
                                       INTERVAL ms millisecond)``
   ``$__interval_s``                   the interval in seconds (at least 1)
   ==================================  ===============================================

   The SDK's generic ``$__timeFrom``, ``$__timeTo``, ``$__timeGroup``, ``$__interval``,
   ``$__interval_ms``, ``$__table`` and ``$__column`` are refused here: they render
   SQL for other databases (RFC 3339 strings, ``datepart``) or panel settings that
   dashboards should not rely on. Any ``$`` left after the three steps is an error.

Stricter than Grafana on purpose, so that a mistake fails a test instead of showing an
empty panel: an unknown variable raises (Grafana leaves ``$typo`` in the SQL), and so
does a ``$__conditionalAll`` whose second argument names no variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

ALL = "$__all"


@dataclass(frozen=True)
class TimeRange:
    """The dashboard's time range and the panel's interval, as the plugin receives them."""

    start: datetime
    end: datetime
    interval_s: float = 60.0


@dataclass(frozen=True)
class Variable:
    """A template variable: its current value (ALL, a list of values or a text) and options."""

    name: str
    current: str | list[str]
    options: Sequence[str] = ()
    all_value: str | None = None

    @property
    def is_all(self) -> bool:
        """All is selected (a list holding only ``$__all``, or ``$__all`` itself)."""
        return self.current in (ALL, [ALL])

    def values(self) -> str | list[str]:
        """The values a selection stands for: every option when All is selected."""
        return list(self.options) if self.is_all else self.current


class UnknownMacroError(ValueError):
    """A ``$__`` macro the plugin does not have (or that dashboards must not use)."""


# -- 1. $__conditionalAll --------------------------------------------------------------
_CONDITIONAL_ALL = "$__conditionalAll("
_VAR_IN_ARG = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")


def _bracket_args(text: str, open_index: int) -> tuple[list[str], int]:
    """Comma-separated arguments of the bracket at ``open_index``; and the index after it."""
    depth, args, start = 0, [], open_index + 1
    for index in range(open_index, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:index])
                return args, index + 1
        elif char == "," and depth == 1:
            args.append(text[start:index])
            start = index + 1
    raise ValueError(f"unbalanced brackets after {text[open_index - 20 : open_index + 20]!r}")


def apply_conditional_all(sql: str, variables: Mapping[str, Variable]) -> str:
    """The frontend's ``applyConditionalAll``: innermost-last, like the plugin (lastIndexOf)."""
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        args, end = _bracket_args(sql, index + len(_CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            raise ValueError(f"$__conditionalAll takes 2 arguments, got {len(args)}: {args}")
        condition, variable_arg = args
        found = _VAR_IN_ARG.search(variable_arg.strip())
        if found is None:
            raise ValueError(f"$__conditionalAll: no variable in {variable_arg!r}")
        if found.group(0) not in variables:
            raise KeyError(f"$__conditionalAll names an unknown variable {found.group(0)!r}")
        variable = variables[found.group(0)]
        everything = variable.is_all or variable.current in ("", [])
        sql = sql[:index] + ("1=1" if everything else condition) + sql[end:]
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


# -- 2. template variables -----------------------------------------------------------
# Grafana's variable syntax (public/app/features/variables/utils.ts, variableRegex).
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)


def _format(value: str | list[str], fmt: str | None) -> str:
    values = value if isinstance(value, list) else [value]
    if fmt is None:  # the plugin's own format(): arrays quoted, single values as they are
        return "'" + "','".join(values) + "'" if isinstance(value, list) else value
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt in ("raw", "csv"):
        return ",".join(values)
    raise ValueError(f"variable format {fmt!r} is not emulated here")


def interpolate_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    """Grafana's ``templateSrv.replace`` for the variables of a ClickHouse query."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name.startswith("__"):
            return match.group(0)  # a plugin macro ($__timeFilter ...), not a variable
        if name not in variables:
            raise KeyError(f"unknown template variable ${name}")
        variable = variables[name]
        if variable.is_all and variable.all_value is not None:
            return variable.all_value  # Grafana does not format a custom all value
        return _format(variable.values(), fmt)

    return _VARIABLE.sub(replace, sql)


# -- 3. the plugin's macros ----------------------------------------------------------
def _unix(at: datetime) -> int:
    return int(at.timestamp())


def _unix_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _date(at: datetime) -> str:
    return f"toDate('{at.astimezone(UTC):%Y-%m-%d}')"


def _one(name: str, args: list[str]) -> str:
    if len(args) != 1:
        raise ValueError(f"$__{name} expects 1 argument, received {len(args)}")
    return args[0]


def _macros(time: TimeRange) -> dict[str, Callable[[list[str]], str]]:
    start, end = f"toDateTime({_unix(time.start)})", f"toDateTime({_unix(time.end)})"
    start_ms = f"fromUnixTimestamp64Milli({_unix_ms(time.start)})"
    end_ms = f"fromUnixTimestamp64Milli({_unix_ms(time.end)})"
    seconds = int(max(time.interval_s, 1))
    millis = int(max(time.interval_s * 1000, 1))

    def date_time_filter(args: list[str]) -> str:
        if len(args) != 2:
            raise ValueError(f"$__dateTimeFilter expects 2 arguments, received {len(args)}")
        day, at = args
        return (
            f"({day} >= {_date(time.start)} AND {day} <= {_date(time.end)}) AND "
            f"({at} >= {start} AND {at} <= {end})"
        )

    def column(name: str, render: Callable[[str], str]) -> Callable[[list[str]], str]:
        return lambda args: render(_one(name, args))

    return {
        "fromTime": lambda _: start,
        "toTime": lambda _: end,
        "fromTime_ms": lambda _: start_ms,
        "toTime_ms": lambda _: end_ms,
        "timeFilter": column("timeFilter", lambda c: f"{c} >= {start} AND {c} <= {end}"),
        "timeFilter_ms": column(
            "timeFilter_ms", lambda c: f"{c} >= {start_ms} AND {c} <= {end_ms}"
        ),
        "dateFilter": column(
            "dateFilter", lambda c: f"{c} >= {_date(time.start)} AND {c} <= {_date(time.end)}"
        ),
        "dateTimeFilter": date_time_filter,
        "dt": date_time_filter,
        "timeInterval": column(
            "timeInterval",
            lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {seconds} second)",
        ),
        "timeInterval_ms": column(
            "timeInterval_ms",
            lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {millis} millisecond)",
        ),
        "interval_s": lambda _: str(seconds),
    }


_REFUSED = ("timeFrom", "timeTo", "timeGroup", "interval", "interval_ms", "table", "column")


def _macro_args(text: str) -> tuple[list[str], int]:
    """sqlutil's parseArgs: bracketed arguments at the start of ``text``, trimmed."""
    if not text.startswith("("):
        return [], 0
    args, length = _bracket_args(text, 0)
    return [arg.strip() for arg in args], length


def expand_macros(sql: str, time: TimeRange) -> str:
    """The plugin's backend macros, applied like ``sqlutil.Interpolate`` (longest first)."""
    macros = _macros(time)
    for name in _REFUSED:
        if re.search(rf"\$__{name}\b", sql):
            raise UnknownMacroError(f"$__{name} renders SQL that is not ClickHouse's")
    for name in sorted(macros, key=len, reverse=True):
        pattern = re.compile(rf"\$__{re.escape(name)}\b")
        while (found := pattern.search(sql)) is not None:
            args, length = _macro_args(sql[found.end() :])
            sql = sql[: found.start()] + macros[name](args) + sql[found.end() + length :]
    left = re.search(r"\$\S*", sql)
    if left:
        raise UnknownMacroError(f"not expanded: {left.group(0)!r} in\n{sql}")
    return sql


def render(sql: str, variables: Mapping[str, Variable], time: TimeRange) -> str:
    """A dashboard query as ClickHouse receives it from Grafana and the plugin."""
    return expand_macros(
        interpolate_variables(apply_conditional_all(sql, variables), variables), time
    )


# -- PromQL ----------------------------------------------------------------------------
PROMQL_FUNCTIONS = frozenset(
    {
        "abs", "absent", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp_max",
        "clamp_min", "count", "count_over_time", "delta", "deriv", "floor", "group",
        "histogram_quantile", "idelta", "increase", "irate", "label_replace", "last_over_time",
        "max", "max_over_time", "min", "min_over_time", "predict_linear", "quantile",
        "quantile_over_time", "rate", "resets", "round", "scalar", "sort", "sort_desc",
        "stddev", "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
    }
)  # fmt: skip
_PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "group_left", "group_right"})


@dataclass(frozen=True)
class PromQL:
    """What an expression refers to: metric names, label names and functions."""

    metrics: frozenset[str]
    labels: frozenset[str]
    functions: frozenset[str]


def scan_promql(expr: str) -> PromQL:
    """Metric names, labels (matchers and grouping clauses) and functions of ``expr``.

    Grafana variables (``$model``, ``$__rate_interval``) and string literals are left
    out; label_values(metric, label), a variable query, counts as a function call.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "", text)
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text
    ):
        labels.update(label.strip() for label in clause.split(",") if label.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    if match := re.fullmatch(r"\s*label_values\(\s*([\w:]+)\s*,\s*(\w+)\s*\)\s*", text):
        return PromQL(
            frozenset({match.group(1)}), frozenset({match.group(2)}), frozenset({"label_values"})
        )
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])", " ", text)
    metrics, functions = set(), set()
    for found in re.finditer(r"[A-Za-z_:][\w:]*", text):
        name = found.group(0)
        if name in _PROMQL_KEYWORDS:
            continue
        if text[found.end() :].lstrip().startswith("("):
            functions.add(name)
        else:
            metrics.add(name)
    return PromQL(frozenset(metrics), frozenset(labels), frozenset(functions))
