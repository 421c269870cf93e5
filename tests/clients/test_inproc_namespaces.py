"""Namespace tables of the linked LRU store: keys ``(ns, *rest)`` held in a table of their
namespace (the hit path of ``@cached``) behave exactly as in the main table."""

from __future__ import annotations

import random
import threading
from collections import namedtuple

import pytest

from chorde.clients.inproc import InprocCacheClient, LinkedLRU, OrderedLRU
from chorde.decorators import cached
from tests.contract.conftest import FakeClock

MISS = object()
Pair = namedtuple("Pair", "head arg")


def _client(size=100, clock=None, **kw):
    return InprocCacheClient(size, LinkedLRU(size, **kw), clock=clock or FakeClock())


def test_only_the_linked_store_has_namespace_tables():
    assert _client().namespace_table("ns") is not None
    assert InprocCacheClient(10, OrderedLRU).namespace_table("ns") is None
    assert InprocCacheClient(10, "cuckoo").namespace_table("ns") is None


def test_the_same_table_each_time():
    c = _client()
    assert c.namespace_table("ns") is c.namespace_table("ns")
    assert c.namespace_table("ns") is not c.namespace_table("other")


def test_keys_route_to_the_table_and_back():
    c = _client()
    table = c.namespace_table("ns")
    c.put(("ns", 1), "one", 10)
    c.put(("ns", 1, 2), "one-two", 10)
    c.put(("ns", (1, 2)), "pair", 10)
    c.put(("ns",), "bare", 10)  # no rest: stays in the main table
    c.put(("other", 1), "other", 10)
    assert set(table) == {1, (1, 2), ((1, 2),)}
    assert c.namespace_get(table, (1,), 0, MISS) == "one"
    assert c.namespace_get(table, (1, 2), 0, MISS) == "one-two"
    assert c.namespace_get(table, ((1, 2),), 0, MISS) == "pair"
    assert [c.get(k) for k in [("ns", 1), ("ns", 1, 2), ("ns", (1, 2)), ("ns",)]] == [
        "one",
        "one-two",
        "pair",
        "bare",
    ]
    assert c.usage == 5
    assert [k for k, _ in c.store.items()] == [  # least recently used first
        ("other", 1),
        ("ns", 1),
        ("ns", 1, 2),
        ("ns", (1, 2)),
        ("ns",),
    ]


def test_equal_keys_find_the_same_entry():
    c = _client()
    c.namespace_table("ns")
    c.put(("ns", 1), "one", 10)
    # Dict equality, as in the main table: 1 == 1.0 == True, a namedtuple equals its tuple.
    assert c.get(("ns", 1.0)) == "one"
    assert c.get(("ns", True)) == "one"
    assert c.get(Pair("ns", 1)) == "one"
    c.put(Pair("ns", 2), "two", 10)
    assert c.get(("ns", 2)) == "two"
    assert c.usage == 2


def test_tuple_arguments_never_collide():
    c = _client()
    table = c.namespace_table("ns")
    keys = [("ns", 1, 2), ("ns", (1, 2)), ("ns", ((1, 2),)), ("ns", (1,)), ("ns", 1), ("ns", ())]
    for i, k in enumerate(keys):
        c.put(k, i, 10)
    assert len(table) == len(keys)
    assert [c.get(k) for k in keys] == list(range(len(keys)))


def test_namespace_get_honours_expiry_and_threshold():
    clock = FakeClock()
    c = _client(clock=clock)
    table = c.namespace_table("ns")
    c.put(("ns", "k"), "v", 10)
    assert c.namespace_get(table, ("k",), 0, MISS) == "v"
    assert c.namespace_get(table, ("k",), 9.5, MISS) == "v"
    assert c.namespace_get(table, ("k",), 10, MISS) is MISS  # not more than 10 s left
    clock.advance(10)
    assert c.namespace_get(table, ("k",), 0, MISS) is MISS
    assert c.getTtl(("ns", "k"))[1] == 0  # still held, expired
    assert c.namespace_get(table, ("absent",), 0, MISS) is MISS
    with pytest.raises(TypeError):
        c.namespace_get(table, (["unhashable"],), 0, MISS)


def test_hits_through_the_table_are_counted():
    c = _client()
    table = c.namespace_table("ns")
    c.put(("ns", 1), 1, 10)
    for _ in range(3):
        c.namespace_get(table, (1,), 0, MISS)
    c.namespace_get(table, (2,), 0, MISS)  # a miss is counted by the caller's fallback
    assert (c.stats.hits, c.stats.misses) == (3, 0)


def test_existing_entries_move_into_a_new_table_keeping_their_order():
    c = _client(size=4)
    c.put(("ns", 1), "a", 10)
    c.put("x", "x", 10)
    c.put(("ns", 2, 3), "b", 10)
    c.put(("ns", (4,)), "c", 10)
    before = c.store.items()
    table = c.namespace_table("ns")
    assert set(table) == {1, (2, 3), ((4,),)}
    assert c.store.items() == before
    assert c.usage == 4
    assert c.get(("ns", 1)) == "a"
    c.put("y", "y", 10)  # full: the least recently used goes, wherever it is held
    assert c.get("x", None) is None
    assert c.usage == 4


def test_capacity_and_recency_are_shared_across_tables():
    c = _client(size=3)
    c.namespace_table("ns")
    c.put(("ns", 1), 1, 10)
    c.put("main", 2, 10)
    c.put(("ns", 2), 3, 10)
    c.get(("ns", 1))  # the youngest now: "main" is the oldest
    c.put(("other", 1), 4, 10)
    assert c.get("main", None) is None
    c.put(("ns", 3), 5, 10)  # evicts ("ns", 2)
    assert c.get(("ns", 2), None) is None
    assert c.usage == 3
    assert c.stats.evictions == 2


def test_clear_and_purge_reach_every_table():
    clock = FakeClock()
    c = _client(clock=clock)
    table = c.namespace_table("ns")
    c.put(("ns", 1), 1, 5)
    c.put(("ns", 2), 2, 50)
    c.put("m", 3, 5)
    clock.advance(10)
    c.purge()
    assert set(table) == {2}
    assert c.usage == 1
    c.clear()
    assert c.usage == 0 and not table
    assert c.namespace_table("ns") is table  # kept for the functions holding it
    c.put(("ns", 1), "again", 10)
    assert c.namespace_get(table, (1,), 0, MISS) == "again"


@pytest.mark.parametrize("touch", [True, False])
def test_same_behaviour_as_without_tables(touch):
    """Random operations on keys of every shape give the same answers and the same final
    state on a client with namespace tables as on one without."""
    rng = random.Random(7)
    clocks = FakeClock(), FakeClock()
    plain = _client(size=40, clock=clocks[0], touch_on_read=touch)
    routed = _client(size=40, clock=clocks[1], touch_on_read=touch)
    routed.namespace_table("a")

    def key():
        n = rng.randrange(30)
        return rng.choice(
            [n, ("a", n), ("a", n, 1), ("a", (n,)), ("b", n), ("a",), Pair("a", n), ("a", n * 1.0)]
        )

    for step in range(6000):
        if step == 3000:
            routed.namespace_table("b")  # a second table, made while "b" keys are held
        k = key()
        op = rng.randrange(9)
        ttl = rng.choice((1, 5, 50))
        other = key()
        results = []
        for c in (plain, routed):
            if op == 0:
                results.append(c.get(k, None))
            elif op == 1:
                results.append(c.getTtl(k, None))
            elif op in (2, 3):
                results.append(c.put(k, (k, step), ttl))
            elif op == 4:
                results.append(c.add(k, (k, step), ttl))
            elif op == 5:
                results.append(c.delete(k))
            elif op == 6:
                results.append((c.renew(k, ttl), c.expire(other)))
            elif op == 7:
                results.append(c.contains(k))
            else:
                results.append(c.purge() if step % 50 == 0 else c.usage)
        assert results[0] == results[1], (step, k, op)
        if step % 7 == 0:
            for clock in clocks:
                clock.advance(1)
    assert routed.store.items() == plain.store.items()
    assert routed.stats == plain.stats


def test_threads_with_a_table_made_mid_run():
    """8 threads mixing main-table, routed and table-direct operations while the table is
    made: no exception, no value under the wrong key, capacity held."""
    c = InprocCacheClient(500, LinkedLRU)
    errors: list[BaseException] = []
    started = threading.Barrier(9)
    table_box: list[dict] = []

    def worker(seed):
        rng = random.Random(seed)
        started.wait()
        try:
            for i in range(20_000):
                n = rng.randrange(1500)
                k = rng.choice((n, ("ns", n), ("ns", n, 0)))
                op = rng.random()
                if op < 0.4:
                    v = c.get(k, None)
                    if v is not None and v[0] != k:
                        raise AssertionError(f"key {k!r} read value {v!r}")
                elif op < 0.55 and table_box:
                    v = c.namespace_get(table_box[0], (n,), 0, None)
                    if v is not None and v[0] != ("ns", n):
                        raise AssertionError(f"table key {n!r} read value {v!r}")
                elif op < 0.85:
                    c.put(k, (k, i), rng.choice((0.001, 10)))
                elif op < 0.9:
                    c.delete(k)
                elif op < 0.95:
                    c.expire(k)
                else:
                    c.add(k, (k, i), 10)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    started.wait()
    table_box.append(c.namespace_table("ns"))
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    items = c.store.items()
    assert len(items) == c.usage <= c.capacity
    assert len({k for k, _ in items}) == len(items)
    assert all(v[0][0] == k for k, v in items)


# ---- @cached over the tables -------------------------------------------------------


def test_cached_hits_the_table_and_the_client_sees_the_same_entries():
    c = _client()
    calls = []

    @cached(c, 100, namespace="f")
    def f(*args, **kwargs):
        calls.append((args, kwargs))
        return (args, kwargs)

    for args in [(1,), ((1, 2),), (1, 2), ()]:
        assert f(*args) == (args, {})
        assert f(*args) == (args, {})
        assert c.get(f.cache_key(*args)) == (args, {})
    assert f(1, b=2) == f(1, b=2) == ((1,), {"b": 2})
    assert len(calls) == 5
    assert c.stats.hits >= 5
    f.invalidate(1)
    assert f(1) == ((1,), {})
    assert len(calls) == 6
    c.put(f.cache_key(7), "stored elsewhere", 100)
    assert f(7) == "stored elsewhere"


def test_cached_refresh_window_over_the_table():
    clock = FakeClock()
    c = _client(clock=clock)
    calls = []

    @cached(c, 100, async_ttl=10, namespace="g", ttl_spread=False)
    def g(x):
        calls.append(x)
        return len(calls)

    assert g(1) == 1
    clock.advance(50)
    assert g(1) == 1  # fresh: from the table
    clock.advance(45)  # 5 s left, inside the 10 s window: served, refreshed in the background
    assert g(1) == 1
    for _ in range(200):
        if c.get(g.cache_key(1)) == 2:
            break
        threading.Event().wait(0.01)
    assert c.get(g.cache_key(1)) == 2
    assert calls == [1, 1]


def test_cached_unhashable_argument_is_named():
    @cached(_client(), 100, namespace="h")
    def h(items):
        return items

    with pytest.raises(TypeError, match=r"'items'.*unhashable"):
        h([1, 2])


def test_a_subclass_overriding_reads_gets_no_table():
    reads = []

    class Logged(InprocCacheClient):
        def getTtl(self, key, default=MISS):
            reads.append(key)
            return super().getTtl(key, default)

    c = Logged(10, LinkedLRU)
    assert c.namespace_table("ns") is None

    @cached(c, 100, namespace="logged", async_ttl=-10)
    def f(x):
        return x

    f(1)
    f(1)
    assert reads == [("logged", 1)] * 2  # miss (a lone miss reads no more), hit


def test_a_wrapper_forwarding_attributes_keeps_its_reads():
    inner = _client()
    reads = []

    class Forwarding:
        """A client wrapper that forwards what it does not define (as some do)."""

        def getTtl(self, key, default=MISS):
            reads.append(key)
            return inner.getTtl(key, default)

        def __getattr__(self, name):
            return getattr(inner, name)

    @cached(Forwarding(), 100, namespace="fw", async_ttl=-10)
    def f(x):
        return x

    f(1)
    f(1)
    # miss (a lone miss reads no more), hit (each with the function's revision record: the
    # wrapper is not a process-private client)
    assert [key for key in reads if key[0] == "fw"] == [("fw", 1)] * 2
    assert "fw" not in inner.store._links.spaces
