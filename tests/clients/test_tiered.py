"""TieredInclusiveClient: promotion, fall-through, batched lookups, writes to every tier."""

from __future__ import annotations

import pytest

from chorde import CacheMissError, ConfigurationError
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.tiered import TieredInclusiveClient


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Recording(InprocCacheClient):
    """A real in-process client that records which keys each lookup asked for."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.asked: list[list] = []

    def getTtl(self, key, default=...):
        self.asked.append([key])
        return super().getTtl(key) if default is ... else super().getTtl(key, default)

    def getTtlMulti(self, keys, default=...):
        keys = list(keys)
        self.asked.append(keys)
        for key in keys:
            yield key, InprocCacheClient.getTtl(self, key, None if default is ... else default)


@pytest.fixture
def tiers():
    clock = Clock()
    l1 = Recording(10, clock=clock)
    l2 = Recording(100, clock=clock)
    return clock, l1, l2, TieredInclusiveClient(l1, l2)


def test_promotes_with_remaining_ttl(tiers):
    clock, l1, l2, c = tiers
    l2.put("k", "v", 100)
    clock.now = 40
    assert c.get("k") == "v"
    value, ttl = l1.getTtl("k")
    assert value == "v" and ttl == pytest.approx(60)


def test_fresh_lower_tier_wins_over_stale_upper(tiers):
    clock, l1, l2, c = tiers
    l1.put("k", "old", 1)
    l2.put("k", "new", 100)
    clock.now = 5
    assert c.get("k") == "new"
    assert l1.get("k") == "new"


def test_stale_everywhere_returns_freshest_stale(tiers):
    clock, l1, l2, c = tiers
    l1.put("k", "a", 1)
    l2.put("k", "b", 3)
    clock.now = 10
    assert c.getTtl("k") == ("b", -7)
    with pytest.raises(CacheMissError):
        c.get("k")


def test_writes_reach_every_tier(tiers):
    _, l1, l2, c = tiers
    c.put("k", 1, 100)
    assert l1.get("k") == l2.get("k") == 1
    c.expire("k")
    assert l1.get("k", None) is None and l2.get("k", None) is None
    assert c.renew("k", 100)
    assert l1.get("k") == l2.get("k") == 1
    c.delete("k")
    assert l1.get("k", None) is None and l2.get("k", None) is None


def test_add_is_decided_by_last_tier(tiers):
    _, l1, l2, c = tiers
    l2.put("k", "shared", 100)
    assert not c.add("k", "mine", 100)
    assert c.get("k") == "shared"
    assert c.add("j", "mine", 100)
    assert l1.get("j") == l2.get("j") == "mine"


def test_getMulti_asks_lower_tier_only_for_missing(tiers):
    _, l1, l2, c = tiers
    l1.put(1, "a", 100)
    l2.put(1, "a", 100)
    l2.put(2, "b", 100)
    l1.asked.clear()
    l2.asked.clear()
    assert dict(c.getMulti([1, 2, 3], None)) == {1: "a", 2: "b", 3: None}
    assert l1.asked == [[1, 2, 3]]
    assert l2.asked == [[2, 3]]
    assert l1.get(2) == "b"  # promoted


def test_getMulti_stops_when_everything_found(tiers):
    _, _, l2, c = tiers
    c.putMulti({1: "a", 2: "b"}, 100)
    l2.asked.clear()
    assert dict(c.getMulti([1, 2])) == {1: "a", 2: "b"}
    assert l2.asked == []


def test_capacity_usage_of_last_tier(tiers):
    _, l1, _, c = tiers
    for i in range(30):
        c.put(i, i, 100)
    assert c.capacity == 100 and c.usage == 30 and l1.usage == 10


def test_three_tiers():
    clock = Clock()
    a, b, d = (InprocCacheClient(n, clock=clock) for n in (2, 10, 100))
    c = TieredInclusiveClient(a, b, d)
    d.put("k", 1, 10)
    assert c.get("k") == 1
    assert a.get("k") == b.get("k") == 1


def test_bad_configuration():
    with pytest.raises(ConfigurationError, match="at least one"):
        TieredInclusiveClient()
    with pytest.raises(ConfigurationError, match="tier 1"):
        TieredInclusiveClient(InprocCacheClient(2), {"not": "a client"})
