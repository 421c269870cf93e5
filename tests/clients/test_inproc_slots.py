"""The linked LRU store's slots (chorde.clients.inproc._Links): keys and values in chunk
lists, links in C ints, nodes holding no Python reference. What must hold whatever the
layout: the exact LRU order across namespace tables, slots reused, cycles through cached
values collectable, and nothing of a dropped entry readable."""

from __future__ import annotations

import gc
import random
import weakref

import pytest

from chorde.clients.inproc import InprocCacheClient, LinkedLRU, OrderedLRU


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drive(store: type, seed: int, spaces: bool) -> list:
    """Random operations over plain keys and keys under two namespace heads; everything
    observable, in order (items() in LRU order included)."""
    clock = _Clock()
    c = InprocCacheClient(40, store, clock=clock)
    if spaces and store is LinkedLRU:
        c.namespace_table("a")  # routed keys: ("a", ...) live in a table of their own
    rng = random.Random(seed)
    seen: list = []

    def key() -> object:
        n = rng.randrange(30)
        return rng.choice((n, ("a", n), ("a", n, "x"), ("b", n), f"s{n}"))

    for i in range(5000):
        k = key()
        op = rng.randrange(14)
        if op < 4:
            seen.append(c.get(k, None))
        elif op < 8:
            c.put(k, (k, i), rng.choice((0.5, 5, 50, float("inf"))))
        elif op == 8:
            seen.append(c.add(k, i, 5))
        elif op == 9:
            seen.append(c.getTtl(k, None))
        elif op == 10:
            seen.append(c.renew(k, 3) if rng.random() < 0.5 else c.expire(k))
        elif op == 11:
            c.delete(k)
        elif op == 12:
            if rng.random() < 0.05:
                c.clear()
            elif rng.random() < 0.2:
                c.purge(1)
        else:
            seen.append(list(c.store.items()))
        clock.now += rng.choice((0, 0.01, 0.3, 1))
    seen.append((list(c.store.items()), c.usage, c.stats))
    return seen


@pytest.mark.parametrize("spaces", [False, True])
def test_the_linked_store_is_an_exact_lru_like_the_ordered_one(spaces):
    for seed in range(4):
        assert _drive(LinkedLRU, seed, spaces) == _drive(OrderedLRU, seed, spaces)


def test_freed_slots_are_reused():
    store = LinkedLRU(100)
    for round_ in range(50):
        for k in range(100):
            store.set((round_, k), (k, 1e9), 0)
        for k in range(0, 100, 2):
            store.pop((round_, k))
    links = store._links
    assert len(store) == 50 and links.top == 100  # never more slots than the capacity
    assert sum(map(len, links.chunks)) == 2 * 100


class _Holder:
    pass


@pytest.mark.parametrize("namespaced", [False, True])
def test_a_value_referring_to_its_cache_is_collected_with_it(namespaced):
    client = InprocCacheClient(10)
    key = ("ns", 1) if namespaced else 1
    if namespaced:
        client.namespace_table("ns")
    value = _Holder()
    value.client = client  # a cycle through the cache's entry
    client.put(key, value, 100)
    gone = weakref.ref(value)
    del client, value
    gc.collect()
    assert gone() is None


def test_a_dropped_entry_is_never_read_through_a_node_held_before():
    store = LinkedLRU(4)
    store.set("k", ("v", 1e9), 0)
    links = store._links
    node = links.nodes["k"]
    store.pop("k")
    store.set("other", ("w", 1e9), 0)  # reuses the slot the node had
    table = {"k": node}  # as a reader that found it just before the pop
    assert links.live_in(table, "k", 0.0, "MISS") == "MISS"
    with pytest.raises(KeyError):
        links.entry("k", 0.0)


def test_an_evicted_entry_is_never_read_through_a_node_held_before():
    # Eviction hands the victim's slot (and, compiled, its node when nobody else holds it)
    # to the new entry: a node a reader still holds must read a miss, never the new value.
    store = LinkedLRU(2)
    store.set("a", ("va", 1e9), 0)
    store.set("b", ("vb", 1e9), 0)
    links = store._links
    held = links.nodes["a"]
    store.set("c", ("vc", 1e9), 0)  # evicts "a": its slot now holds "c"
    assert "a" not in links.nodes
    assert links.live_in({"a": held}, "a", 0.0, "MISS") == "MISS"
    assert links.nodes["c"] is not held
    for n in range(100):  # evictions whose nodes nobody holds: recycled when compiled
        store.set(n, (n, 1e9), 0)
    assert len(store) == 2 and store._links.evictions == 101
    assert [k for k, _ in store.items()] == [98, 99]
    assert store.lookup(99) == (99, 1e9) and store.lookup(98) == (98, 1e9)
