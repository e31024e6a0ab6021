"""Prometheus metrics of the gateway, served on its own ``/metrics``.

Labels are bounded: the endpoint is one of the routes, the status an HTTP code, the
reason and the limit words of a fixed set. The tenant is a label of the rate-limit
counter and of the queued-requests gauge only, never of a histogram (tenants are
bounded by the tenant registry; meter counts usage per tenant from the pipeline's own
records); a key id never is one.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GATEWAY_REQUESTS = Counter(
    "sluice_gateway_requests_total",
    "HTTP calls answered by the gateway, by endpoint and status code.",
    ["endpoint", "status"],
)
GATEWAY_LATENCY = Histogram(
    "sluice_gateway_request_seconds",
    "From a call's arrival to its answer, by endpoint.",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
GATEWAY_AUTH_FAILURES = Counter(
    "sluice_gateway_auth_failures_total",
    "Calls refused with 401: missing (no key) or invalid (unknown, wrong or revoked key).",
    ["reason"],
)
GATEWAY_PENDING = Gauge(
    "sluice_gateway_pending_requests",
    "Requests sent to Kafka whose outcome this replica is still waiting for.",
)
GATEWAY_RATE_LIMITED = Counter(
    "sluice_gateway_rate_limited_total",
    "Calls refused with 429 by a rate limit: limit (requests or tokens), scope (key or "
    "tenant: whose limit refused it) and tenant.",
    ["limit", "scope", "tenant"],
)
GATEWAY_QUEUED = Gauge(
    "sluice_gateway_queued_requests",
    "Requests waiting for a pipeline slot on this replica (weighted fair admission), by tenant.",
    ["tenant"],
)
GATEWAY_OUTSTANDING = Gauge(
    "sluice_gateway_pipeline_outstanding",
    "Pipeline slots in use on this replica: requests produced (or about to be) and not yet "
    "answered.",
)
GATEWAY_QUEUE_WAIT = Histogram(
    "sluice_gateway_queue_wait_seconds",
    "How long a request waited for a pipeline slot before it was produced (0 when a slot "
    "was free).",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
