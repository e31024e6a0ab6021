"""``sluice demo``: real events through every processor, then what happened, in numbers.

The demo runs against whatever stack the settings point at (``sluice up``
first). Each processor runs as its own ``sluice run`` process, exactly as in
production; the demo only produces input, waits until every consumer group has
caught up, and reports. It counts only what this run produced, so it can be run
again and again on the same stack.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import click
from rich.table import Table

from streams.cli import console
from streams.cli.acl import apply_declared
from streams.cli.demo.inference import (
    EMBEDDINGS_LANE,
    EMBEDDINGS_LANE_ENV,
    guard_secret,
    run_inference,
)
from streams.cli.demo.ingest import connect_client, ingest_with_connect
from streams.cli.demo.online import run_online
from streams.cli.demo.support import end_offsets, processors, read_new, wait_caught_up
from streams.cli.output import cell, safe
from streams.contracts import registry
from streams.contracts.catalog import Catalog, catalog_for
from streams.runtime import kafka
from streams.runtime.audit import Auditor
from streams.runtime.dead_letters import parse_error_headers
from streams.runtime.spec import InputRecord
from streams.sdk.client import SluiceClient
from streams.sdk.connect_client import ConnectClient
from streams.settings import Settings, get_settings
from streams.stack.secrets import (
    ensure_budget_keys,
    ensure_dead_letter_key,
    ensure_verdict_keys,
)
from streams.stack.tenant_keys import DEMO_TENANTS, ensure_tenants

DATASET = "support_tickets"


@click.command()
@click.option(
    "--rows", type=int, default=None, help="Send only the first N rows of the sample dataset."
)
@click.option(
    "--prompts",
    type=int,
    default=300,
    show_default=True,
    help="Inference requests made from tickets (plus a few prompt-injection attempts).",
)
@click.option(
    "--via",
    type=click.Choice(["auto", "connect", "sdk"]),
    default="auto",
    show_default=True,
    help="Ingest with Kafka Connect's FileStream source, or produce with the SDK; "
    "auto takes Connect when a worker answers.",
)
def demo(rows: int | None, prompts: int, via: str) -> None:
    """Push the sample dataset through the pipeline and print what happened.

    Needs a running stack (`sluice up`); applies the schemas and ACLs itself.
    """
    settings = get_settings()
    catalog = catalog_for(settings)
    specs = list(catalog.topics.values())
    kafka.ensure_topics(kafka.admin(settings), specs)
    registry.apply(settings.registry, catalog, specs)
    # Before any processor or connector starts: each logs in as its own principal
    # (SLUICE_STACK__PROCESSOR_PRINCIPALS), which may touch only what acls.yaml grants it.
    acls = apply_declared(settings, catalog, lambda: Auditor(settings, catalog), table=False)
    console.print(
        "[bold]1. contracts applied[/bold]: topics created, schemas registered, "
        + ("ACLs applied" if acls is not None else "no ACLs (the broker has no authorizer)")
    )

    sample = settings.schemas_dir / "datasets" / DATASET / "sample.jsonl"
    lines = [line for line in sample.read_text().splitlines() if line.strip()][:rows]
    connect = connect_client(settings, via)
    env = guard_secret(settings, os.environ)
    # The demo's processors dead-letter prompts, encrypted: a stack started before
    # `sluice up` made the key gets one now (`sluice run` hands it to them).
    ensure_dead_letter_key(settings)
    ensure_verdict_keys(settings)  # guard signs what infer serves, with the stack's keypair
    # Each tenant signs its requests; guard reads the registry once, when it starts.
    ensure_tenants(settings, DEMO_TENANTS)
    ensure_budget_keys(settings)  # meter signs the budgets guard enforces, with its own
    since_ms = int(time.time() * 1000)
    # meter and the sink run for the whole demo: they meter and load every step's output.
    with processors(settings, ["meter", "sink"], env):
        _pipeline(
            settings,
            catalog,
            lines=lines,
            sample=sample,
            subset=rows is not None,
            prompts=prompts,
            connect=connect,
            env=env,
        )
        from streams.cli.demo import analytics as demo_analytics  # noqa: PLC0415 (needs the sink extra)

        demo_analytics.run(settings, catalog, since_ms)


def _pipeline(
    settings: Settings,
    catalog: Catalog,
    *,
    lines: list[str],
    sample: Path,
    subset: bool,
    prompts: int,
    connect: ConnectClient | None,
    env: dict[str, str],
) -> None:
    """Ingest and validate, guard and infer, then the drift step."""
    dataset = catalog.dataset(DATASET)
    raw_topic = catalog.physical(dataset.raw_topic)
    validated_topic = catalog.physical(dataset.validated_topic)
    dlq_topic = catalog.physical(dataset.dlq_topic)
    before = end_offsets(settings, [raw_topic, validated_topic, dlq_topic])
    with (
        processors(settings, ["validate", "guard", "guard-stream", "infer"], env),
        # Embeddings get a lane of their own, so their results never wait for generations.
        processors(settings, ["infer"], {**env, **EMBEDDINGS_LANE_ENV}, label=EMBEDDINGS_LANE),
    ):
        started = time.perf_counter()
        if connect is not None:
            ingest_with_connect(
                settings,
                connect,
                raw_topic=raw_topic,
                lines=lines,
                subset=subset,
                before=before,
            )
        else:
            console.print(f"[bold]2. producing[/bold] {len(lines):,} raw events to {raw_topic}")
            with SluiceClient(settings, catalog, source=f"demo:{sample.name}") as client:
                for line in lines:
                    client.send_payload(DATASET, line, key=_key(line))
        wait_caught_up(settings, "validate", [raw_topic])
        elapsed = time.perf_counter() - started
        validated = read_new(settings, validated_topic, before)
        dead = read_new(settings, dlq_topic, before)
        _report_validate(len(lines), validated, dead, elapsed)
        run_inference(settings, catalog, sample, prompts)
        run_online(settings, catalog)

    try:
        from streams.cli.demo import drift as demo_drift  # noqa: PLC0415 (needs the drift extra)
    except ImportError as exc:
        console.print(f"skipping the drift step ({exc}): pip install -e '.[drift]'")
        return
    demo_drift.run(settings, catalog, lines, validated)


def _report_validate(
    produced: int, validated: list[InputRecord], dead: list[InputRecord], elapsed: float
) -> None:
    table = Table(title="validate: support_tickets")
    table.add_column("raw events")
    table.add_column("validated")
    table.add_column("dead-lettered")
    table.add_column("throughput")
    table.add_row(
        f"{produced:,}",
        f"{len(validated):,}",
        f"{len(dead):,}",
        f"{produced / elapsed:,.0f} events/s end to end",
    )
    console.print(table)
    reasons: Counter[str] = Counter()
    for record in dead:
        info = parse_error_headers(record.headers)
        rule = info.details.get("rule")
        field = info.details.get("field")
        reasons[f"{info.error_class}" + (f" ({field}: {rule})" if rule else "")] += 1
    table = Table(title="top dead-letter reasons (sluice dlq show raw.support_tickets)")
    table.add_column("reason")
    table.add_column("records", justify="right")
    for reason, count in reasons.most_common(8):
        table.add_row(cell(reason), str(count))  # header values: the producer's
    console.print(table)
    for record in dead[:3]:
        console.print(
            f"  e.g. [yellow]{safe(parse_error_headers(record.headers).message)}[/yellow]"
        )


def _key(line: str) -> str | None:
    import json  # noqa: PLC0415 (only the demo parses lines)

    try:
        value = json.loads(line).get("ticket_id")
    except (ValueError, AttributeError):
        return None
    return None if value is None else str(value)


COMMANDS = [demo]
