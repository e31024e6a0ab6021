"""The demo's last step: what ClickHouse knows about this run, asked in SQL as a user would.

meter and the sink run beside the other processors for the whole demo; this
step waits until meter has metered every result and the sink has loaded every
analytics topic (their consumer groups have no records left), then queries
the tables the sink filled. Only this run's rows are counted (time filter), so
the demo can run again on the same stack.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from streams.cli import console
from streams.cli.demo.support import wait_caught_up
from streams.cli.output import cell
from streams.cli.sql import warehouse
from streams.contracts.catalog import Catalog
from streams.settings import Settings, without_password
from streams.warehouse.tables import sink_topics

#: (title, SQL with {since}: this run's start as a ClickHouse DateTime64 expression).
QUERIES: list[tuple[str, str]] = [
    (
        "cost per tenant and model (usage)",
        "SELECT tenant_id, model, count() AS requests, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(cost) AS cost_usd FROM usage FINAL "
        "WHERE completed_at >= {since} GROUP BY tenant_id, model ORDER BY cost_usd DESC",
    ),
    (
        "end-to-end latency per model (results)",
        "SELECT model, count() AS requests, countIf(status != 'ok') AS errors, "
        "round(quantileExact(0.5)(e2e_ms), 1) AS p50_ms, "
        "round(quantileExact(0.99)(e2e_ms), 1) AS p99_ms FROM results FINAL "
        "WHERE completed_at >= {since} GROUP BY model ORDER BY model",
    ),
    (
        "dead letters by topic and reason (dead_letters)",
        "SELECT topic, error_class, if(details['field'] != '', "
        "concat(details['field'], ': ', details['rule']), '') AS rule, count() AS records "
        "FROM dead_letters FINAL WHERE ts >= {since} "
        "GROUP BY topic, error_class, rule ORDER BY records DESC LIMIT 8",
    ),
    (
        "requests guard blocked, by reason (requests)",
        "SELECT guard_reason AS reason, count() AS requests FROM requests FINAL "
        "WHERE stage = 'blocked' AND created_at >= {since} GROUP BY reason ORDER BY requests DESC",
    ),
    (
        "PII found by entity type and action (pii_findings)",
        "SELECT entity_type, action, count() AS findings, uniqExact(request_id) AS requests "
        "FROM pii_findings FINAL WHERE ts >= {since} "
        "GROUP BY entity_type, action ORDER BY findings DESC",
    ),
    (
        "today's spend against budgets (budget_status)",
        "SELECT tenant_id, requests, tokens, cost AS cost_usd, cost_limit AS usd_limit, hard "
        "FROM budget_status FINAL WHERE period = 'day' AND period_end > now() "
        "AND updated_at >= {since} ORDER BY cost DESC",
    ),
    (
        "drift alerts (drift_alerts)",
        "SELECT subject, signal_name, detector, severity, round(reference_mean, 3) AS ref_mean, "
        "round(current_mean, 3) AS cur_mean FROM drift_alerts FINAL WHERE ts >= {since} "
        "ORDER BY ts",
    ),
]


def run(settings: Settings, catalog: Catalog, since_ms: int) -> None:
    """Wait for meter and the sink, then print this run's analytics from ClickHouse."""
    meter_inputs = [catalog.physical(t) for t in ("inference.results", "metering.usage")]
    wait_caught_up(settings, "meter", meter_inputs)
    read, _ = sink_topics(catalog)
    wait_caught_up(settings, "sink", [catalog.physical(t) for t in read])
    console.print(
        f"[bold]5. analytics[/bold] from ClickHouse ({without_password(settings.clickhouse_url)}), "
        "as `sluice sql` answers them"
    )
    # An integer from this process, not user input: safe to format into SQL.
    since = f"fromUnixTimestamp64Milli({int(since_ms)})"
    db = warehouse(settings)
    try:
        for title, sql in QUERIES:
            _print(title, db.query(sql.format(since=since)))
    finally:
        db.close()
    console.print(
        "   more: `sluice sql -f infra/clickhouse/queries/<question>.sql` "
        "(cost per tenant yesterday, p99 per model per hour, budget status, ...)"
    )


def _print(title: str, result: Any) -> None:
    table = Table(title=title)
    for column in result.columns:
        table.add_column(cell(column))
    for row in result.rows:
        table.add_row(*(cell(_text(value)) for value in row))  # tenant ids, models: data
    if not result.rows:
        table.caption = "no rows in this run"
    console.print(table)


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return str(value)
