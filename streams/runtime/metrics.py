"""Prometheus metrics shared by every processor.

Each processor process serves them on ``SLUICE_METRICS__PORT``; the labels name
the processor and topic so one Prometheus job scrapes every replica.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streams.settings import Settings

log = logging.getLogger(__name__)

RECORDS_IN = Counter("sluice_records_in_total", "Records consumed.", ["processor", "topic"])
RECORDS_OUT = Counter(
    "sluice_records_out_total", "Records produced (committed).", ["processor", "topic"]
)
RECORDS_DLQ = Counter(
    "sluice_records_dlq_total",
    "Records sent to a dead-letter topic.",
    ["processor", "topic", "stage"],
)
BATCHES = Counter(
    "sluice_batches_total", "Batches processed, by outcome.", ["processor", "outcome"]
)
BATCH_SIZE = Histogram(
    "sluice_batch_size",
    "Records per batch.",
    ["processor"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
BATCH_LATENCY = Histogram(
    "sluice_batch_latency_seconds",
    "From poll to committed transaction, per batch.",
    ["processor"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_STAGE = Histogram(
    "sluice_batch_stage_seconds",
    "Where a batch's time goes: fill (from its first record until the batch is full or "
    "the batch timeout is over), process (the pipeline, produces included) and commit "
    "(offsets and transaction commit).",
    ["processor", "stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WINDOW_RECORDS = Gauge(
    "sluice_fair_window_records",
    "Records read ahead and waiting for their turn (processors that schedule fairly).",
    ["processor"],
)
WINDOW_SHARES = Gauge(
    "sluice_fair_window_shares",
    "Tenants (shares) with records waiting in the read-ahead window.",
    ["processor"],
)
SKIPPED_DONE = Counter(
    "sluice_fair_skipped_total",
    "Records read again that were committed already (done ahead of their partition's "
    "commit point) and skipped.",
    ["processor"],
)
IN_FLIGHT = Gauge("sluice_batches_in_flight", "Batches being processed right now.", ["processor"])
CONSUMER_LAG = Gauge(
    "sluice_consumer_lag",
    "Records behind the end of each assigned partition.",
    ["processor", "topic", "partition"],
)
BUDGET_RECORDS_REJECTED = Counter(
    "sluice_budget_records_rejected_total",
    "Records of metering.budgets a budget view ignored (not signed by meter, or unreadable).",
    ["reason"],
)
BUDGET_RESERVATIONS = Gauge(
    "sluice_budget_reservations",
    "Worst-case reservations guard holds for passed requests of hard-budget tenants that "
    "meter has not counted yet (all tenants together).",
)
BUDGET_RESERVATION_BLOCKS = Counter(
    "sluice_budget_reservation_blocks_total",
    "Requests guard blocked as budget_exceeded because their reservation would break a "
    "limit (limit) or their tenant holds its most reservations (cap).",
    ["reason"],
)
BUDGET_RESERVATIONS_EXPIRED = Counter(
    "sluice_budget_reservations_expired_total",
    "Reservations dropped after SLUICE_GUARD__RESERVATION_TTL_S without meter counting "
    "their request (dropped or dead-lettered on the way).",
)
RETRIES = Counter(
    "sluice_retries_total",
    "Batches rewound because a dependency was unavailable.",
    ["processor"],
)


def serve(host: str, port: int) -> int:
    """Start the metrics endpoint; returns the port it listens on (0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def serve_or_any(host: str, port: int) -> int:
    """Serve on ``port``, or on a free port when it is taken (another replica has it)."""
    try:
        return serve(host, port)
    except OSError as exc:
        bound = serve(host, 0)
        log.warning(
            "metrics port %d is taken (%s); serving on %d instead. Give each replica "
            "its own port with --metrics-port.",
            port,
            exc.strerror,
            bound,
        )
        return bound


def record_consumer_lag(processor: str, stats_json: str) -> None:
    """Update the lag gauges from librdkafka's statistics callback."""
    stats: dict[str, Any] = json.loads(stats_json)
    for topic, tstats in stats.get("topics", {}).items():
        for partition, pstats in tstats.get("partitions", {}).items():
            if partition == "-1":
                continue
            lag = pstats.get("consumer_lag_stored", pstats.get("consumer_lag", -1))
            if lag is not None and lag >= 0:
                CONSUMER_LAG.labels(processor, topic, partition).set(lag)


def register(
    settings: Settings,
    *,
    processor: str,
    instance: str,
    group: str,
    inputs: list[str],
    port: int | None,
) -> Path | None:
    """Leave a note in the state directory so ``sluice status`` finds this replica.

    Returns the note's path (remove it on exit), or None when the directory is not writable.
    """
    directory = settings.stack.root / "run" / "processors"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{processor}.{instance}.json"
        path.write_text(
            json.dumps(
                {
                    "processor": processor,
                    "instance": instance,
                    "pid": os.getpid(),
                    "group": group,
                    "inputs": inputs,
                    "metrics_port": port,
                    "started_at": time.time(),
                }
            )
        )
    except OSError:
        return None
    return path


#: The label value that stands for every value outside a label's known set.
OTHER = "other"


def bounded_label(value: str, known: Collection[str]) -> str:
    """``value`` when it is one of ``known``, else ``"other"``.

    Every label value that comes from a record (a model name, a field name)
    goes through here with the set its processor knows from its configuration
    (the model catalog, the contract), so no producer can add time series: a
    metric has at most ``len(known) + 1`` values of that label. Tenants are
    never a label.
    """
    return value if value in known else OTHER
