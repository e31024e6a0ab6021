"""Polling: wait until a condition holds, or give up after a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Ask ``condition`` every ``interval`` seconds until it is true or ``timeout`` passed.

    Returns whether it came true. It is asked once more at the deadline, so a
    condition that comes true during the last interval is not missed, and a
    ``timeout`` of 0 asks it exactly once.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
