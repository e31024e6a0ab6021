from __future__ import annotations

import time

from streams.runtime.waiting import wait_until


def test_returns_as_soon_as_the_condition_holds() -> None:
    calls = iter([False, False, True])
    started = time.monotonic()
    assert wait_until(lambda: next(calls), timeout=5, interval=0.01)
    assert time.monotonic() - started < 1


def test_gives_up_after_the_timeout_having_asked_once_more_at_the_deadline() -> None:
    asked: list[float] = []

    def never() -> bool:
        asked.append(time.monotonic())
        return False

    started = time.monotonic()
    assert not wait_until(never, timeout=0.2, interval=0.05)
    assert asked[-1] - started >= 0.2
    assert len(asked) >= 4


def test_a_zero_timeout_asks_exactly_once() -> None:
    asked: list[bool] = []
    assert not wait_until(lambda: asked.append(True) or False, timeout=0)
    assert asked == [True]
