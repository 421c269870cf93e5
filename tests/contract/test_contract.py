"""The client contract (chorde.clients.base), run against every client in FACTORIES."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from chorde import NONE, CacheMissError
from chorde.clients.base import CacheStats

TTL = 300


class Custom:
    """An arbitrary picklable value."""

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Custom) and other.x == self.x

    __hash__ = None  # values need not be hashable


VALUES = [
    0,
    None,
    "",
    "text é",
    b"\x00bytes",
    3.5,
    [1, 2, [3]],
    {"a": (1, 2)},
    Custom(7),
    "x" * 100_000,
]
KEYS = [0, 1, -5, "a", "a b", "ä", b"a", (1, "a"), ("a", (2, b"x")), 1.5, None, frozenset({1, 2})]


# ---- get / put ---------------------------------------------------------------------


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_put_get_roundtrip(env, value):
    env.client.put("k", value, TTL)
    assert env.client.get("k") == value


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_key_types(env, key):
    env.client.put(key, ("v", key), TTL)
    assert env.client.get(key) == ("v", key)
    env.client.delete(key)
    assert env.client.get(key, "gone") == "gone"


def test_distinct_keys_do_not_collide(env):
    keys = [1, "1", b"1", (1,), ("1",), (1, 2), ((1, 2),), "a b", "a_b"]
    for i, key in enumerate(keys):
        env.client.put(key, i, TTL)
    assert [env.client.get(k) for k in keys] == list(range(len(keys)))


def test_miss_raises_cache_miss_error(env):
    with pytest.raises(CacheMissError):
        env.client.get("absent")
    with pytest.raises(KeyError):  # CacheMissError is a KeyError
        env.client.get("absent")


def test_miss_with_default(env):
    assert env.client.get("absent", None) is None
    assert env.client.get("absent", 17) == 17


def test_none_is_cacheable_and_distinct_from_miss(env):
    env.client.put("n", None, TTL)
    assert env.client.get("n") is None
    assert env.client.get("n", 5) is None


def test_overwrite(env):
    env.client.put("k", 1, TTL)
    env.client.put("k", 2, TTL)
    assert env.client.get("k") == 2


def test_forever(env):
    env.client.put("k", 1, math.inf)
    value, ttl = env.client.getTtl("k")
    assert value == 1 and ttl > 10**6


# ---- getTtl and expiry -------------------------------------------------------------


def test_getTtl(env):
    env.client.put("k", "v", 100)
    value, ttl = env.client.getTtl("k")
    assert value == "v"
    assert 90 < ttl <= 100


def test_getTtl_miss(env):
    with pytest.raises(CacheMissError):
        env.client.getTtl("absent")
    assert env.client.getTtl("absent", None) == (None, -1.0)


def test_expiry(env):
    env.client.put("k", "v", 0.5)
    assert env.client.get("k") == "v"
    env.advance(0.7)
    with pytest.raises(CacheMissError):
        env.client.get("k")
    assert not env.client.contains("k")
    # A client still holding the entry returns it stale; otherwise it is a miss.
    value, ttl = env.client.getTtl("k", NONE) if _holds(env, "k") else (NONE, -1.0)
    assert value in ("v", NONE)
    assert ttl <= 0


def _holds(env, key):
    try:
        env.client.getTtl(key)
        return True
    except CacheMissError:
        return False


def test_zero_ttl_is_immediately_stale(env):
    env.client.put("k", "v", 0)
    assert env.client.get("k", None) is None


def test_expire_keeps_value_for_getTtl(env):
    env.client.put("k", "v", TTL)
    env.client.expire("k")
    assert env.client.get("k", None) is None
    assert not env.client.contains("k")
    if _holds(env, "k"):
        value, ttl = env.client.getTtl("k")
        assert value == "v" and ttl <= 0


def test_expire_missing_is_harmless(env):
    env.client.expire("absent")
    assert env.client.get("absent", None) is None


def test_renew(env):
    env.client.put("k", "v", 1)
    assert env.client.renew("k", 100)
    env.advance(2)
    assert env.client.get("k") == "v"
    assert env.client.getTtl("k")[1] > 50


def test_renew_only_extends(env):
    env.client.put("k", "v", 100)
    assert env.client.renew("k", 1)
    env.advance(2)
    assert env.client.get("k") == "v"  # the longer life it had is kept
    assert env.client.getTtl("k")[1] > 50


def test_renew_revives_expired(env):
    env.client.put("k", "v", TTL)
    env.client.expire("k")
    if _holds(env, "k"):
        assert env.client.renew("k", TTL)
        assert env.client.get("k") == "v"


def test_renew_missing(env):
    assert not env.client.renew("absent", TTL)
    assert env.client.get("absent", None) is None


# ---- add, delete, contains, clear, purge -------------------------------------------


def test_add(env):
    assert env.client.add("k", 1, TTL) is True
    assert env.client.add("k", 2, TTL) is False
    assert env.client.get("k") == 1


def test_add_over_expired(env):
    env.client.put("k", 1, 0.3)
    env.advance(0.5)
    assert env.client.add("k", 2, TTL) is True
    assert env.client.get("k") == 2


def test_delete(env):
    env.client.put("k", 1, TTL)
    env.client.delete("k")
    assert env.client.get("k", None) is None
    env.client.delete("k")  # deleting a missing key is not an error


def test_contains(env):
    assert not env.client.contains("k")
    env.client.put("k", 1, 100)
    assert env.client.contains("k")
    assert env.client.contains("k", 50)
    assert not env.client.contains("k", 200)


def test_clear(env):
    for i in range(20):
        env.client.put(i, i, TTL)
    env.client.clear()
    assert all(env.client.get(i, None) is None for i in range(20))
    env.client.put("after", 1, TTL)
    assert env.client.get("after") == 1


def test_purge(env):
    env.client.put("old", 1, 0.3)
    env.client.put("new", 2, TTL)
    env.advance(0.5)
    env.client.purge()
    assert not _holds(env, "old")
    assert env.client.get("new") == 2


def test_purge_timeout_keeps_recently_expired(env):
    env.client.put("k", 1, 0.3)
    env.advance(0.5)
    env.client.purge(timeout=TTL)
    assert env.client.get("k", None) is None  # still expired, purged or not


# ---- batches -----------------------------------------------------------------------


def test_getMulti(env):
    env.client.put(3, 10, TTL)
    env.client.put(4, 20, TTL)
    assert dict(env.client.getMulti([3, 4, 5], None)) == {3: 10, 4: 20, 5: None}
    assert dict(env.client.getMulti([5])) == {5: NONE}


def test_getMulti_keeps_order_and_duplicates(env):
    env.client.put("a", 1, TTL)
    pairs = list(env.client.getMulti(["b", "a", "b", "a"], 0))
    assert pairs == [("b", 0), ("a", 1), ("b", 0), ("a", 1)]


def test_getMulti_skips_expired(env):
    env.client.put("a", 1, 0.3)
    env.advance(0.5)
    assert dict(env.client.getMulti(["a"], None)) == {"a": None}


def test_getTtlMulti(env):
    env.client.put(3, 10, 100)
    result = dict(env.client.getTtlMulti([3, 5], None))
    assert result[3][0] == 10 and 90 < result[3][1] <= 100
    assert result[5] == (None, -1.0)


def test_putMulti(env):
    assert env.client.putMulti([(1, "a"), (2, "b")], TTL) == []  # the keys not stored
    assert env.client.putMulti({3: "c"}, TTL) == []
    assert dict(env.client.getMulti([1, 2, 3])) == {1: "a", 2: "b", 3: "c"}


# ---- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "ttl, exc",
    [(-1, ValueError), (float("nan"), ValueError), ("10", TypeError), (None, TypeError)],
    ids=repr,
)
def test_bad_ttl(env, ttl, exc):
    with pytest.raises(exc, match="ttl"):
        env.client.put("k", 1, ttl)
    with pytest.raises(exc, match="ttl"):
        env.client.add("k", 1, ttl)
    assert env.client.get("k", None) is None


@pytest.mark.parametrize("key", [[1, 2], {"a": 1}, {1, 2}], ids=repr)
def test_unhashable_key(env, key):
    with pytest.raises(TypeError, match=r"\[1, 2\]|'a'|\{1, 2\}"):
        env.client.put(key, 1, TTL)
    with pytest.raises(TypeError):
        env.client.get(key)


# ---- attributes and stats ----------------------------------------------------------


def test_attributes(env):
    c = env.client
    assert isinstance(c.is_async, bool)
    assert c.capacity > 0
    assert c.usage >= 0
    assert isinstance(c.stats, CacheStats)
    assert repr(c)


def test_stats_count(env):
    before = env.client.stats
    env.client.put("k", 1, TTL)
    env.client.get("k")
    env.client.get("absent", None)
    after = env.client.stats
    assert after.hits > before.hits
    assert after.misses > before.misses
    assert after.sets > before.sets
    # Whole numbers, whatever a client counts in internally.
    assert all(type(n) is int for n in dataclasses.astuple(after)), after


# ---- awaitable twins ---------------------------------------------------------------


def test_async_methods(env):
    async def scenario():
        c = env.client
        await c.aput("k", 1, TTL)
        assert await c.aget("k") == 1
        assert (await c.agetTtl("k"))[0] == 1
        assert await c.aadd("k", 2, TTL) is False
        assert await c.acontains("k")
        assert await c.aputMulti({"a": 1, "b": 2}, TTL) == []
        assert dict(await c.agetMulti(["a", "b", "z"], None)) == {"a": 1, "b": 2, "z": None}
        got = dict(await c.agetTtlMulti(["a", "z"], None))
        assert got["a"][0] == 1 and got["z"] == (None, -1.0)
        assert await c.arenew("k", TTL)
        await c.aexpire("k")
        assert await c.aget("k", None) is None
        await c.adelete("a")
        assert await c.aget("a", None) is None
        with pytest.raises(CacheMissError):
            await c.aget("a")
        await c.apurge()
        await c.aclear()
        assert await c.aget("b", None) is None

    asyncio.run(scenario())


# ---- read-modify-write: update / updateTtl / incr / touch ---------------------------------


def test_update_replaces_the_live_value_and_keeps_its_ttl(env):
    c = env.client
    c.put("u", 10, TTL)
    assert c.update("u", lambda v: v * 2) == 20
    assert c.get("u") == 20
    new, left = c.updateTtl("u", lambda v: v + 1)
    assert new == 21 and 0 < left <= TTL
    assert c.getTtl("u")[1] > TTL - 60  # the time it had left, not a fresh default


def test_update_with_a_ttl_sets_it(env):
    c = env.client
    c.put("u", 1, TTL)
    new, left = c.updateTtl("u", lambda v: v + 1, 30)
    assert new == 2 and 0 < left <= 30
    assert 0 < c.getTtl("u")[1] <= 30


def test_update_of_a_missing_or_stale_entry_is_a_miss(env):
    c = env.client
    with pytest.raises(CacheMissError):
        c.update("nothing", lambda v: v)
    c.put("stale", 1, TTL)
    c.expire("stale")
    with pytest.raises(CacheMissError):
        c.update("stale", lambda v: v + 1)


def test_update_that_raises_leaves_the_entry(env):
    c = env.client
    c.put("u", "text", TTL)
    with pytest.raises(TypeError):
        c.update("u", lambda v: v + 1)
    assert c.get("u") == "text"


def test_incr(env):
    c = env.client
    c.put("n", 5, TTL)
    assert c.incr("n") == 6
    assert c.incr("n", -10) == -4
    assert c.get("n") == -4
    with pytest.raises(CacheMissError):
        c.incr("missing")


def test_touch_sets_a_new_ttl_longer_or_shorter(env):
    c = env.client
    c.put("t", "v", TTL)
    assert c.touch("t", 20)
    value, left = c.getTtl("t")
    assert value == "v" and 0 < left <= 20
    assert c.touch("t", 1000)
    assert c.getTtl("t")[1] > TTL
    assert not c.touch("missing", 10)


def test_incr_is_atomic_across_threads(env):
    import threading

    if env.awaited:
        pytest.skip("the awaited proxy runs one event loop: no calls from other threads")
    c = env.client
    c.put("n", 0, TTL)
    start = threading.Barrier(8, timeout=10)

    def bump():
        start.wait()
        for _ in range(50):
            c.incr("n")

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert c.get("n") == 400
