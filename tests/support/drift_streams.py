"""Synthetic streams with planted shifts, shared by drift's unit and integration tests and bench.

Tickets look like the support_tickets dataset: a heavy-tailed response time
(lognormal), a discrete 1-5 score with nulls, an order value, and categories.
A shift is planted at a known index; everything before it is stationary.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np

CHANNELS = ["email", "chat", "phone", "web"]
CHANNEL_P = [0.4, 0.3, 0.2, 0.1]
PRODUCTS = ["billing", "mobile-app", "web-app", "api", "hardware", "shipping"]
PRODUCT_P = [0.25, 0.2, 0.2, 0.15, 0.1, 0.1]
LANGUAGES = ["en", "de", "fr", "es"]
LANGUAGE_P = [0.7, 0.1, 0.1, 0.1]
SCORE_P = [0.05, 0.1, 0.2, 0.35, 0.3]
START = datetime(2026, 1, 1, tzinfo=UTC)

#: Planted shifts: name -> what changes after the shift index.
SHIFTS = ("none", "mean", "variance", "new_category", "null_rate")


def tickets(n: int, seed: int, shift: str = "none", at: int | None = None) -> Iterator[dict]:
    """``n`` validated-shaped tickets; from index ``at`` on, ``shift`` applies."""
    rng = np.random.default_rng(seed)
    at = n if at is None else at
    for i in range(n):
        after = i >= at
        sigma = 0.8 * (2.0 if after and shift == "variance" else 1.0)
        # A 0.5-sigma shift of the log response time: responses get ~50% slower.
        mu = 3.0 + (0.4 if after and shift == "mean" else 0.0)
        response = float(np.exp(rng.normal(mu, sigma)))
        if after and shift == "new_category":
            language = "pt" if rng.random() < 0.15 else str(rng.choice(LANGUAGES, p=LANGUAGE_P))
        else:
            language = str(rng.choice(LANGUAGES, p=LANGUAGE_P))
        null_p = 0.6 if after and shift == "null_rate" else 0.3
        score = None if rng.random() < null_p else int(rng.choice(5, p=SCORE_P)) + 1
        yield {
            "ticket_id": f"TCK-{i:08d}",
            "tenant_id": "acme",
            "created_at": START + timedelta(seconds=i),
            "channel": str(rng.choice(CHANNELS, p=CHANNEL_P)),
            "priority": "medium",
            "product": str(rng.choice(PRODUCTS, p=PRODUCT_P)),
            "subject": "Subject line",
            "body": "Body text",
            "customer_tier": None if rng.random() < 0.1 else "pro",
            "first_response_minutes": response,
            "satisfaction": score,
            "order_value_usd": round(float(rng.gamma(2.0, 40.0)), 2),
            "language": language,
        }


def results(
    n: int, seed: int, *, model: str = "minilm", shift_at: int | None = None, dim: int = 32
) -> Iterator[dict]:
    """Inference results of an embedding model; from ``shift_at`` the embeddings rotate."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=dim)
    base /= np.linalg.norm(base)
    other = rng.normal(size=dim)
    other -= other @ base * base
    other /= np.linalg.norm(other)
    for i in range(n):
        after = shift_at is not None and i >= shift_at
        direction = base * 0.8 + other * 0.6 if after else base
        vector = direction * 4.0 + rng.normal(scale=0.25, size=dim)
        yield {
            "request_id": f"req-{i}",
            "tenant_id": "acme",
            "model": model,
            "model_version": "1",
            "operation": "embeddings",
            "status": "error" if rng.random() < 0.01 else "ok",
            "error_code": None,
            "error_message": None,
            "output_text": None,
            "embedding": [float(x) for x in vector],
            "input_tokens": int(rng.integers(5, 40)),
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "request_created_at": START + timedelta(seconds=i),
            "completed_at": START + timedelta(seconds=i, milliseconds=20),
            "queue_ms": 1.0,
            "inference_ms": 5.0,
            "e2e_ms": float(rng.gamma(4.0, 5.0)),
            "batch_size": 8,
            "device": "cpu",
            "input_guard": None,
            "output_guard": None,
            "metadata": {},
        }
