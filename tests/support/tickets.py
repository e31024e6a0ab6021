"""Support tickets, the dataset most tests feed through validate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The ``good_ticket`` fixture: builds a document that passes the ``support_tickets``
#: contract; ``good_ticket(field=value, other=...)`` changes ``field`` and drops ``other``.
TicketFactory = Callable[..., dict[str, Any]]
