import pytest

from streams.runtime.bounded import BoundedCache
from streams.runtime.metrics import OTHER, bounded_label


def test_the_least_recently_used_entry_leaves_first():
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache["c"] = 3
    assert "b" not in cache
    assert cache.get("a") == 1 and cache["c"] == 3
    assert len(cache) == 2 and cache.evictions == 1


def test_a_missing_key_gives_the_default():
    cache: BoundedCache[str, int] = BoundedCache(1)
    assert cache.get("x") is None
    assert cache.get("x", 7) == 7
    with pytest.raises(KeyError):
        cache["x"]


def test_a_cache_needs_room_for_one_entry():
    with pytest.raises(ValueError, match="at least one"):
        BoundedCache(0)


def test_a_label_value_outside_the_known_set_is_other():
    known = {"gpt-4o-mini", "minilm"}
    assert bounded_label("minilm", known) == "minilm"
    assert bounded_label("made-up-model", known) == OTHER
    assert bounded_label("", known) == OTHER
