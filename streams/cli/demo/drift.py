"""The demo's drift step: profile the validated tickets, inject a shifted batch, show alerts.

1. profiles the validated tickets of this demo run with the pandas engine (what
   ``sluice batch profile support_tickets`` does on the topic's history) and
   publishes the profile to ``drift.profiles``;
2. starts ``drift`` (and ``validate``), lets it read the stable tickets, then
   produces a second batch in which agents answer three times slower and a
   quarter of the tickets arrive in a language never seen before (Portuguese);
3. waits for both processors and prints the alerts this run raised.
"""

from __future__ import annotations

import json
import time

import pandas as pd

from streams.cli import console
from streams.cli.demo.support import end_offsets, processors, read_new, wait_caught_up
from streams.cli.drift import alert_table
from streams.contracts.catalog import Catalog
from streams.contracts.serde import AvroSerde
from streams.profiling import pandas_engine, profile_job
from streams.runtime import kafka
from streams.runtime.spec import InputRecord
from streams.sdk.client import SluiceClient
from streams.settings import Settings

DATASET = "support_tickets"


def shifted(lines: list[str]) -> list[str]:
    """The same tickets, answered 3x slower, a quarter of them in Portuguese, with new ids."""
    out = []
    for index, line in enumerate(lines):
        try:
            ticket = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ticket, dict):
            continue
        ticket["ticket_id"] = f"TCK-9{index:07d}"
        minutes = ticket.get("first_response_minutes")
        if isinstance(minutes, int | float) and not isinstance(minutes, bool):
            ticket["first_response_minutes"] = min(round(minutes * 3, 1), 43_200)
        if index % 4 == 0:
            ticket["language"] = "pt"
        out.append(json.dumps(ticket))
    return out


def run(
    settings: Settings,
    catalog: Catalog,
    lines: list[str],
    validated: list[InputRecord],
) -> None:
    """Profile this run's tickets, start drift, inject a shifted batch, print the alerts."""
    dataset = catalog.dataset(DATASET)
    serde = AvroSerde(kafka.registry(settings), catalog)
    schema = catalog.value_schema(dataset.validated_topic)
    records = [serde.decode(r.raw, schema, topic=dataset.validated_topic) for r in validated]
    profile = pandas_engine.profile_dataset(
        pd.DataFrame.from_records(records), dataset.contract, "demo: this run's validated tickets"
    )
    profile_job.publish([profile], settings, catalog)
    console.print(
        f"[bold]4. drift[/bold]: profiled {profile.rows:,} validated tickets "
        f"(pandas engine), published to drift.profiles"
    )
    alerts_topic = catalog.physical("drift.alerts")
    before = end_offsets(settings, [alerts_topic])
    batch = shifted(lines[: max(len(lines) // 2, 1)])
    raw_topic = catalog.physical(dataset.raw_topic)
    validated_topic = catalog.physical(dataset.validated_topic)
    with processors(settings, ["validate", "drift"]):
        # drift first reads what is already validated (the stable tickets, partition by
        # partition); the shifted batch then arrives live, as a real shift would.
        wait_caught_up(settings, "drift", [validated_topic])
        console.print(
            f"   injecting {len(batch):,} tickets answered 3x slower, 1 in 4 in Portuguese"
        )
        started = time.perf_counter()
        with SluiceClient(settings, catalog, source="demo:drift") as client:
            for line in batch:
                client.send_payload(DATASET, line, key=None)
        wait_caught_up(settings, "validate", [raw_topic])
        wait_caught_up(settings, "drift", [validated_topic])
        elapsed = time.perf_counter() - started
    alert_schema = catalog.value_schema("drift.alerts")
    alerts = [
        serde.decode(r.raw, alert_schema, topic="drift.alerts")
        for r in read_new(settings, alerts_topic, before)
    ]
    alerts.sort(key=lambda a: a["detected_at"])
    console.print(alert_table(alerts, f"drift alerts of this run ({elapsed:.0f}s)"))
    if not alerts:
        console.print("   [yellow]no alert: see .sluice/logs/demo-drift.log[/yellow]")
