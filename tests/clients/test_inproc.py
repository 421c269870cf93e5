"""In-process stores and client: eviction, expiry, capacity, threads, bad input."""

from __future__ import annotations

import random
import threading

import pytest

from chorde import CacheMissError, ConfigurationError
from chorde.clients.inproc import (
    BaseStore,
    Cache,
    CuckooCache,
    InprocCacheClient,
    LinkedLRU,
    LRUCache,
    OrderedLRU,
)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=[OrderedLRU, LinkedLRU], ids=["ordered", "linked"])
def lru(request):
    """Each exact-LRU implementation (both run in each build)."""
    return request.param


# ---- exact LRU ---------------------------------------------------------------------


def test_lru_evicts_least_recently_used(clock, lru):
    c = InprocCacheClient(3, lru, clock=clock)
    for k in "abc":
        c.put(k, k, 100)
    c.get("a")  # a becomes the youngest
    c.put("d", "d", 100)
    assert c.get("b", None) is None
    assert [c.get(k) for k in "acd"] == ["a", "c", "d"]
    assert c.stats.evictions == 1


def test_lru_overwrite_counts_as_use(clock, lru):
    c = InprocCacheClient(2, lru, clock=clock)
    c.put("a", 1, 100)
    c.put("b", 1, 100)
    c.put("a", 2, 100)
    c.put("c", 1, 100)
    assert c.get("b", None) is None
    assert c.get("a") == 2


def test_lru_without_touch_on_read_evicts_in_insertion_order(clock, lru):
    c = InprocCacheClient(3, lru(3, touch_on_read=False), clock=clock)
    for k in "abc":
        c.put(k, k, 100)
    c.get("a")
    c.put("d", "d", 100)
    assert c.get("a", None) is None
    assert c.get("b") == "b"


def test_lru_eviction_order_long_sequence(clock, lru):
    c = InprocCacheClient(100, lru, clock=clock)
    rng = random.Random(1)
    order: list[int] = []  # model: least recent first
    for _ in range(5000):
        k = rng.randrange(300)
        if rng.random() < 0.5:
            c.put(k, k, 100)
            if k in order:
                order.remove(k)
            order.append(k)
            del order[:-100]
        elif c.get(k, None) is not None:
            order.remove(k)
            order.append(k)
    assert sorted(k for k, _ in c.store.items()) == sorted(order)
    assert [k for k, _ in c.store.items()] == order


def test_usage_exact(clock, lru):
    c = InprocCacheClient(10, lru, clock=clock)
    assert c.usage == 0
    for i in range(7):
        c.put(i, i, 100)
    assert c.usage == 7
    c.delete(3)
    c.delete(3)
    assert c.usage == 6
    for i in range(100):
        c.put(i, i, 100)
    assert c.usage == 10 == c.capacity
    c.clear()
    assert c.usage == 0


def test_lru_alias_and_build_choice():
    import chorde.clients.inproc as module

    assert LRUCache is Cache
    compiled = not module.__file__.endswith(".py")
    assert Cache is (LinkedLRU if compiled else OrderedLRU)


# ---- expiry with a controlled clock ------------------------------------------------


@pytest.mark.parametrize("store", [OrderedLRU, LinkedLRU, "cuckoo"])
def test_expiry_boundary(clock, store):
    c = InprocCacheClient(10, store, clock=clock)
    c.put("k", "v", 10)
    clock.now = 9.999
    assert c.get("k") == "v"
    assert c.getTtl("k")[1] == pytest.approx(0.001)
    clock.now = 10
    with pytest.raises(CacheMissError):
        c.get("k")
    assert c.getTtl("k") == ("v", 0)
    clock.now = 15
    assert c.getTtl("k") == ("v", -5)


@pytest.mark.parametrize("store", [OrderedLRU, LinkedLRU, "cuckoo"])
def test_purge_drops_only_expired(clock, store):
    c = InprocCacheClient(100, store, clock=clock)
    for i in range(10):
        c.put(i, i, i + 1)
    clock.now = 5.5
    c.purge(timeout=2)  # drops those expired before 3.5: ttl 1, 2, 3
    assert c.usage == 7
    c.purge()
    assert c.usage == 5
    assert [c.get(i, None) for i in range(10)] == [None] * 5 + list(range(5, 10))


@pytest.mark.parametrize("store", [OrderedLRU, LinkedLRU, "cuckoo"])
def test_expired_entries_are_preferred_victims_or_evicted(clock, store):
    c = InprocCacheClient(4, store, clock=clock)
    c.put("old", 1, 1)
    clock.now = 2
    assert c.add("old", 2, 10)
    assert c.get("old") == 2


# ---- cuckoo specifics --------------------------------------------------------------


class CountingKey:
    """A key whose comparisons are counted (and run Python code, releasing the GIL)."""

    compares = 0

    def __init__(self, k):
        self.k = k

    def __hash__(self):
        return hash(self.k)

    def __eq__(self, other):
        CountingKey.compares += 1
        return isinstance(other, CountingKey) and other.k == self.k


def test_cuckoo_bounded_probes():
    store = CuckooCache(1000)
    c = InprocCacheClient(1000, store)
    keys = [CountingKey(i) for i in range(1000)]
    for k in keys:
        c.put(k, 1, 100)
    CountingKey.compares = 0
    for i in range(1000, 2000):
        c.get(CountingKey(i), None)
    assert CountingKey.compares <= 4 * 1000


def test_cuckoo_never_grows():
    store = CuckooCache(500)
    slots = len(store._slots)
    c = InprocCacheClient(500, store)
    for i in range(20_000):
        c.put(("k", i), i, 100)
        assert c.usage <= 500
    assert len(store._slots) == slots == 500
    assert c.stats.evictions == 20_000 - c.usage
    held = [k for k, _ in store.items()]
    assert len(held) == c.usage


def test_cuckoo_keeps_hot_keys():
    c = InprocCacheClient(1000, "cuckoo")
    hot = [("hot", i) for i in range(50)]
    for k in hot:
        c.put(k, k, 100)
    for i in range(5000):
        c.put(("cold", i), i, 100)
        c.get(hot[i % len(hot)], None)
    survivors = sum(c.get(k, None) == k for k in hot)
    assert survivors >= 45  # approximate LRU: nearly all recently used keys survive


def test_cuckoo_fills_most_of_its_capacity():
    c = InprocCacheClient(1000, "cuckoo")
    for i in range(1000):
        c.put(i * 7919, i, 100)
    assert c.usage >= 900


def test_cuckoo_size_one():
    c = InprocCacheClient(1, "cuckoo")
    c.put("a", 1, 100)
    c.put("b", 2, 100)
    assert c.usage == 1
    assert c.get("b") == 2


class TouchingKey:
    """A key whose __hash__ reads another key: what a lock-free reader in another thread
    does when a Python __hash__ lets it run in the middle of a walk of the store."""

    client = None

    def __init__(self, k):
        self.k = k

    def __hash__(self):
        if TouchingKey.client is not None:
            TouchingKey.client.get(0, None)  # moves key 0 to the young end
        return hash(self.k)

    def __eq__(self, other):
        return isinstance(other, TouchingKey) and other.k == self.k


def test_items_and_purge_survive_reordering_during_the_walk(clock, lru):
    c = InprocCacheClient(100, lru, clock=clock)
    c.put(0, "zero", 100)
    keys = [TouchingKey(i) for i in range(1, 20)]
    for k in keys:
        c.put(k, k.k, 5 if k.k % 2 else 100)
    TouchingKey.client = c
    try:
        items = c.store.items()
        assert sorted(k.k if isinstance(k, TouchingKey) else k for k, _ in items) == list(range(20))
        clock.now = 10
        c.purge()
    finally:
        TouchingKey.client = None
    assert sorted(k.k for k, _ in c.store.items() if isinstance(k, TouchingKey)) == list(
        range(2, 20, 2)
    )
    assert c.get(0) == "zero"


# ---- threads -----------------------------------------------------------------------


@pytest.mark.parametrize("store", [OrderedLRU, LinkedLRU, "lru-notouch", "cuckoo"])
def test_threads_random_operations(store):
    """8 threads x 50,000 random operations: no exception, no cross-key value."""
    c = InprocCacheClient(1000, store)
    errors: list[BaseException] = []
    over_capacity: list[int] = []
    stop = threading.Event()

    def key_for(rng):
        n = rng.randrange(3000)
        return CountingKey(n) if n % 10 == 0 else n

    def worker(seed):
        rng = random.Random(seed)
        try:
            for i in range(50_000):
                k = key_for(rng)
                op = rng.random()
                if op < 0.4:
                    v = c.get(k, None)
                    if v is not None and v[0] != k:
                        raise AssertionError(f"key {k!r} read value {v!r}")
                elif op < 0.75:
                    c.put(k, (k, i), rng.choice((0.001, 10, 100)))
                elif op < 0.8:
                    c.add(k, (k, i), 100)
                elif op < 0.85:
                    c.delete(k)
                elif op < 0.9:
                    got = c.getTtl(k, None)[0]
                    if got is not None and got[0] != k:
                        raise AssertionError(f"key {k!r} read value {got!r}")
                elif op < 0.93:
                    c.expire(k)
                elif op < 0.96:
                    c.renew(k, 100)
                elif op < 0.999:
                    for kk, v in c.getMulti([k, key_for(rng)], None):
                        if v is not None and v[0] != kk:
                            raise AssertionError(f"key {kk!r} read value {v!r}")
                else:
                    c.purge()
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    def monitor():
        while not stop.is_set():
            if c.usage > c.capacity:
                over_capacity.append(c.usage)
            stop.wait(0.001)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    watcher = threading.Thread(target=monitor)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    stop.set()
    watcher.join()
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    assert not over_capacity
    assert c.usage <= c.capacity
    items = c.store.items()
    assert len(items) == c.usage
    assert len({k for k, _ in items}) == len(items)  # no key listed twice


# ---- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, exc", [(0, ValueError), (-3, ValueError), ("10", TypeError), (1.5, TypeError)]
)
def test_bad_size(size, exc):
    with pytest.raises(exc, match=repr(size).replace(".", r"\.")):
        InprocCacheClient(size)
    with pytest.raises(exc):
        CuckooCache(size)


def test_bool_size_rejected():
    with pytest.raises(TypeError, match="True"):
        InprocCacheClient(True)


@pytest.mark.parametrize("store", ["foo", 42, dict, object()])
def test_unknown_store(store):
    with pytest.raises(ConfigurationError, match="unknown store"):
        InprocCacheClient(10, store)


def test_unhashable_key_named():
    c = InprocCacheClient(10)
    with pytest.raises(TypeError, match=r"\[1, 2\]"):
        c.put([1, 2], 1, 10)
    with pytest.raises(TypeError, match=r"\{'a': 1\}"):
        c.get({"a": 1})
    with pytest.raises(TypeError, match="list"):
        c.delete([1])


def test_store_instance_and_class():
    assert InprocCacheClient(10, CuckooCache(5)).capacity == 5
    assert isinstance(InprocCacheClient(10, CuckooCache).store, CuckooCache)
    assert isinstance(InprocCacheClient(10, "lru").store, Cache)


class FifoStore(BaseStore):
    """A user-written store: a dict, evicting the oldest insertion, with touches recorded."""

    def __init__(self, size: int) -> None:
        self.capacity = size
        self.evictions = 0
        self.data: dict = {}
        self.touched: list = []
        self.lookup = self.data.__getitem__
        self.touch = self.touched.append

    def peek(self, key):
        return self.data[key]

    def set(self, key, entry, now):
        if key not in self.data and len(self.data) >= self.capacity:
            del self.data[next(iter(self.data))]
            self.evictions += 1
        self.data[key] = entry

    def pop(self, key):
        self.data.pop(key, None)

    def __len__(self):
        return len(self.data)


def test_user_store_is_read_through_its_lookup_and_touch(clock):
    store = FifoStore(2)
    c = InprocCacheClient(10, store, clock=clock)
    c.put("a", 1, 10)
    c.put("b", 2, 5)
    assert c.get("a") == 1
    assert c.getTtl("b") == (2, 5)
    assert store.touched == ["a", "b"]  # a hit is a use; the store decides what that means
    clock.now = 6
    assert c.get("b", None) is None  # expired
    assert c.getTtl("b", None) == (2, -1)
    assert store.touched == ["a", "b"]  # an expired read is not a use
    with pytest.raises(CacheMissError):
        c.get("zz")
    c.put("c", 3, 10)  # the store evicts its oldest
    assert c.get("a", None) is None
    assert c.stats.hits == 2 and c.stats.evictions == 1
