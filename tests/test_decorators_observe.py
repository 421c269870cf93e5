"""@cached counters (fn.cache_info()) and hooks (chorde.observe): what each call path counts
and which events it fires, sync and async, in-process and memcached."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from chorde import observe
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.observe import CacheInfo
from tests.contract.conftest import FakeClock

WAIT = 5


@pytest.fixture(params=["inproc", "inproc-cuckoo", "memcached"])
def client(request):
    if request.param == "memcached":
        from chorde.clients.memcached import MemcachedClient

        server = request.getfixturevalue("memcached")
        # No leases: the counts asserted are one process's (leases add claims, see
        # tests/leases/test_cached_leases.py).
        c = MemcachedClient([server.address], checksum_key="observe", lease_ttl=0)
    else:
        c = InprocCacheClient(100, "cuckoo" if request.param == "inproc-cuckoo" else None)
    yield c
    c.close()


@pytest.fixture
def events():
    got: list[observe.Event] = []
    with observe.hooked(got.append):
        yield got


def _kinds(events, name=None):
    return [e.kind for e in events if name is None or e.name.endswith(name)]


def test_hits_and_misses_every_call_form(client):
    @cached(client, ttl=300)
    def f(x=0, y=0):
        return x + y

    for _ in range(3):
        f(1)
        f(1, y=2)
        f()
    assert f.cache_info() == CacheInfo(hits=6, misses=3)
    assert f.cache_info().hit_ratio == 6 / 9


def test_refresh_window_stale_and_refreshes():
    clock = FakeClock()
    client = InprocCacheClient(100, clock=clock)
    done = threading.Event()

    @cached(client, ttl=10, async_ttl=-5, ttl_spread=False)
    def f(x):
        done.set()
        return x

    f(1)  # miss
    clock.advance(6)  # in the refresh window
    done.clear()
    assert f(1) == 1  # a hit, and a refresh
    assert done.wait(WAIT)
    _settle(f, 1)
    clock.advance(20)  # expired: bg() serves it stale
    done.clear()
    assert f.bg()(1) == 1
    assert done.wait(WAIT)
    _settle(f, 1)
    info = f.cache_info()
    assert (info.hits, info.misses, info.stale, info.refreshes) == (1, 1, 1, 2)


def _settle(fn, *args):
    core = fn._chorde_core
    flight = core.flights.get(core.key(args, {}))
    if flight is not None:
        flight.exception(WAIT)


def test_coalesced_waiters_and_errors(client):
    entered, release = threading.Event(), threading.Event()

    @cached(client, ttl=300)
    def slow(x):
        entered.set()
        assert release.wait(WAIT)
        return x

    first = threading.Thread(target=slow, args=(1,))
    first.start()
    assert entered.wait(WAIT)
    others = [threading.Thread(target=slow, args=(1,)) for _ in range(3)]
    for t in others:
        t.start()
    core = slow._chorde_core
    for _ in range(500):
        if slow.cache_info().coalesced == 3:
            break
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *others]:
        t.join(WAIT)
    assert slow.cache_info() == CacheInfo(misses=4, coalesced=3)
    assert not core.flights

    @cached(client, ttl=300)
    def broken(x):
        raise ValueError(x)

    for _ in range(2):
        with pytest.raises(ValueError):
            broken(1)
    assert broken.cache_info() == CacheInfo(misses=2, errors=2)


async def test_async_counters(client):
    @cached(client, ttl=300)
    async def f(x):
        await asyncio.sleep(0.01)
        return x

    assert await asyncio.gather(f(1), f(1), f(1)) == [1, 1, 1]
    client.wait(f.cache_key(1))
    assert await f(1) == 1
    assert f.cache_info() == CacheInfo(hits=1, misses=3, coalesced=2)

    @cached(client, ttl=300)
    async def broken():
        raise KeyError("x")

    with pytest.raises(KeyError):
        await broken()
    assert broken.cache_info().errors == 1


def test_variants_count_too(client):
    @cached(client, ttl=300)
    def f(x):
        return x

    f.future()(1).result(WAIT)  # miss
    client.wait(f.cache_key(1))
    assert f.future()(1).result(WAIT) == 1  # hit
    assert f.bg()(1) == 1  # hit
    assert f.forced()(1) == 1  # a forced computation counts as a miss
    f.peek(1)  # cache-only operations are not calls of the function
    assert f.cache_info() == CacheInfo(hits=2, misses=2)


def test_methods_count_in_their_function():
    client = InprocCacheClient(100)

    class Thing:
        @cached(client, ttl=300, key=lambda self, x: x)
        def method(self, x):
            return x

    thing = Thing()
    thing.method(1)
    thing.method(1)
    assert Thing.method.cache_info() == CacheInfo(hits=1, misses=1)
    assert thing.method.cache_info() == CacheInfo(hits=1, misses=1)


def test_hooks_see_every_kind_with_names_and_durations(client, events):
    @cached(client, ttl=300)
    def f(x):
        if x == "boom":
            raise RuntimeError(x)
        return x

    f(1)
    client.wait(f.cache_key(1))
    f(1)
    with pytest.raises(RuntimeError):
        f("boom")
    assert _kinds(events, ".f") == ["miss", "hit", "error"]
    assert all(e.scope == "function" and e.duration >= 0 for e in events)
    assert (
        events[0].name
        == f"{__name__}.test_hooks_see_every_kind_with_names_and_durations.<locals>.f"
    )


def test_hook_refresh_and_stale_events():
    clock = FakeClock()
    client = InprocCacheClient(100, clock=clock)

    @cached(client, ttl=10, ttl_spread=False)
    def f(x):
        return x

    f(1)
    clock.advance(11)
    got: list[observe.Event] = []
    refreshed = threading.Event()

    def hook(event):
        got.append(event)
        if event.kind == "refresh":
            refreshed.set()

    with observe.hooked(hook):
        assert f.bg()(1) == 1
        assert refreshed.wait(WAIT)
    assert _kinds(got) == ["stale", "refresh"]


async def test_hooks_async(events):
    client = InprocCacheClient(100)

    @cached(client, ttl=300)
    async def f(x):
        return x

    await f(1)
    await f(1)
    assert _kinds(events, ".f") == ["miss", "hit"]


def test_installing_a_hook_switches_existing_functions_and_back():
    client = InprocCacheClient(100)

    @cached(client, ttl=300)
    def f(x):
        return x

    f(1)
    got: list[observe.Event] = []
    observe.add_hook(got.append)
    try:
        f(1)
        f(2)
    finally:
        observe.remove_hook(got.append)
    f(1)
    assert _kinds(got) == ["hit", "miss"]
    assert f.cache_info() == CacheInfo(hits=2, misses=2)


def test_a_failing_hook_is_logged_not_raised(caplog):
    client = InprocCacheClient(100)

    @cached(client, ttl=300)
    def f(x):
        return x

    def bad(event):
        raise ZeroDivisionError("hook")

    caplog.set_level(logging.ERROR, logger="chorde.observe")
    with observe.hooked(bad):
        assert f(1) == 1
    assert "hook" in caplog.text


def test_hooks_must_be_callable():
    with pytest.raises(TypeError, match="hook must be callable"):
        observe.add_hook(5)


def test_snapshot_sums_functions_of_one_name():
    one, two = InprocCacheClient(10), InprocCacheClient(10)

    def make(client):
        @cached(client, ttl=300, namespace="snap")
        def snapped(x):
            return x

        return snapped

    a, b = make(one), make(two)
    a(1)
    a(1)
    b(1)
    info = observe.snapshot()[("function", f"{__name__}.{make.__qualname__}.<locals>.snapped")]
    assert info == CacheInfo(hits=1, misses=2)


def test_cluster_claims_under_coherence(memcached):
    from chorde.clients.coherent import CoherentWrapperClient
    from chorde.clients.memcached import MemcachedClient
    from chorde.clients.tiered import TieredInclusiveClient
    from chorde.mq import LocalBus

    client = CoherentWrapperClient(
        TieredInclusiveClient(
            InprocCacheClient(10), MemcachedClient([memcached.address], checksum_key="claims")
        ),
        LocalBus(),
    )
    try:

        @cached(client, ttl=300)
        def f(x):
            return x

        assert f(1) == 1
        assert f(1) == 1
        info = f.cache_info()
        assert (info.hits, info.misses, info.claims) == (1, 1, 1)
    finally:
        client.close()
