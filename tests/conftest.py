"""Fixtures shared by both tiers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.tickets import TicketFactory


@pytest.fixture(scope="session")
def good_ticket() -> TicketFactory:
    """A factory of support tickets that pass the ``support_tickets`` data contract."""

    def build(**changes: Any) -> dict[str, Any]:
        ticket: dict[str, Any] = {
            "ticket_id": "TCK-12345678",
            "tenant_id": "acme",
            "created_at": "2026-10-01T12:00:00Z",
            "channel": "email",
            "priority": "high",
            "product": "billing",
            "subject": "Charged twice",
            "body": "I was charged twice.",
            "customer_tier": "pro",
            "first_response_minutes": 12.5,
            "satisfaction": 4,
            "order_value_usd": 19.99,
            "language": "en",
        }
        ticket.update(changes)
        return {k: v for k, v in ticket.items() if v is not ...}

    return build
