"""@cached policy options: condition, ttl computed from the result, stale_if_error, and the
forced() variant; sync and async, every call variant, in-process and memcached."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from chorde import CacheMissError
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached, check_options
from tests.contract.conftest import FakeClock

WAIT = 5


@pytest.fixture(params=["inproc", "memcached"])
def client(request):
    if request.param == "memcached":
        from chorde.clients.memcached import MemcachedClient

        server = request.getfixturevalue("memcached")
        c = MemcachedClient([server.address], checksum_key="policy")
    else:
        c = InprocCacheClient(100)
    yield c
    c.close()


# ---- condition -------------------------------------------------------------------------


def test_condition_false_is_returned_not_stored(client):
    calls = []

    @cached(client, ttl=300, condition=lambda result: result is not None)
    def find(x):
        calls.append(x)
        return None if x < 0 else x

    assert find(-1) is None and find(-1) is None
    assert find(1) == 1 and find(1) == 1
    assert calls == [-1, -1, 1]
    with pytest.raises(CacheMissError):
        find.peek(-1)
    assert find.future()(-2).result(WAIT) is None
    assert find.bg()(-3) is None
    assert find.forced()(-4) is None
    find.put(-5, _cache_put=None)  # an explicit put follows the policy too
    with pytest.raises(CacheMissError):
        for x in (-2, -3, -4, -5):
            find.peek(x)


async def test_condition_async(client):
    calls = []

    @cached(client, ttl=300, condition=lambda result: result != "error page")
    async def render(x):
        calls.append(x)
        return "error page" if x == "bad" else f"page {x}"

    assert await render("bad") == "error page"
    assert await render("bad") == "error page"
    assert await render("ok") == "page ok"
    client.wait(render.cache_key("ok"))
    assert await render("ok") == "page ok"
    assert calls == ["bad", "bad", "ok"]
    assert await render.future()("bad") == "error page"
    assert await render.forced()("bad") == "error page"
    with pytest.raises(CacheMissError):
        await render.peek("bad")


def test_condition_with_compute_once_across_the_cluster(memcached):
    """A coherent client stores what its compute-once computes: a result the condition
    refuses still comes back to the caller, and is not stored."""
    from chorde.clients.coherent import CoherentWrapperClient
    from chorde.clients.memcached import MemcachedClient
    from chorde.clients.tiered import TieredInclusiveClient
    from chorde.mq import LocalBus

    client = CoherentWrapperClient(
        TieredInclusiveClient(
            InprocCacheClient(10), MemcachedClient([memcached.address], checksum_key="policy")
        ),
        LocalBus(),
    )
    calls = []
    try:

        @cached(client, ttl=lambda v: 0 if v == "no" else 60, condition=lambda v: v != "skip")
        def f(x):
            calls.append(x)
            return x

        assert f("skip") == "skip" and f("skip") == "skip"
        assert f("no") == "no" and f("no") == "no"
        assert f("yes") == "yes" and f("yes") == "yes"
        assert calls == ["skip", "skip", "no", "no", "yes"]
        assert 50 < client.getTtl(f.cache_key("yes"))[1] <= 60
    finally:
        client.close()


# ---- ttl from the result ---------------------------------------------------------------


def test_ttl_from_the_result():
    clock = FakeClock()
    client = InprocCacheClient(100, clock=clock)
    calls = []

    @cached(client, ttl=lambda result: result["max_age"], ttl_spread=False)
    def fetch(name, max_age):
        calls.append(name)
        return {"name": name, "max_age": max_age}

    fetch("short", 5)
    fetch("long", 50)
    fetch("never", 0)  # 0: not stored
    assert client.getTtl(fetch.cache_key("short", 5))[1] == 5
    assert client.getTtl(fetch.cache_key("long", 50))[1] == 50
    clock.advance(10)
    fetch("short", 5)
    fetch("long", 50)
    fetch("never", 0)
    assert calls == ["short", "long", "never", "short", "never"]


def test_ttl_from_the_result_with_jitter_and_a_window(client):
    @cached(client, ttl=lambda v: 100, async_ttl=10)
    def f(x):
        return x

    f(1)
    client.wait(f.cache_key(1))
    assert 89 <= client.getTtl(f.cache_key(1))[1] <= 100  # a tenth of the ttl, at most


async def test_ttl_from_the_result_async(client):
    @cached(client, ttl=lambda v: 0 if v is None else 100)
    async def f(x):
        return None if x is None else x

    assert await f(None) is None
    await f(1)
    client.wait(f.cache_key(1))
    assert await f.peek(1) == 1
    with pytest.raises(CacheMissError):
        await f.peek(None)


def test_bad_ttl_functions_and_options():
    client = InprocCacheClient(10)

    @cached(client, ttl=lambda v: "soon")
    def f(x):
        return x

    with pytest.raises(TypeError, match=r"f: ttl\(1\) must return a number of seconds"):
        f(1)
    with pytest.raises(ValueError, match="async_ttl must be None, 0 or a positive"):
        cached(client, ttl=lambda v: 10, async_ttl=-5)
    with pytest.raises(TypeError, match="condition must be a callable"):
        cached(client, ttl=10, condition=True)
    with pytest.raises(ValueError, match="stale_if_error must be >= 0"):
        cached(client, ttl=10, stale_if_error=-1)
    with pytest.raises(TypeError, match="tags must be a list"):
        check_options(10, tags=5)


# ---- stale_if_error --------------------------------------------------------------------


def test_stale_if_error_serves_the_old_value_within_its_window(caplog):
    clock = FakeClock()
    client = InprocCacheClient(100, clock=clock)
    failing = threading.Event()

    @cached(client, ttl=10, ttl_spread=False, stale_if_error=30)
    def f(x):
        if failing.is_set():
            raise ConnectionError("backend down")
        return [x, clock.now]

    first = f(1)
    failing.set()
    clock.advance(20)  # expired 10 s ago: within the window
    caplog.set_level(logging.WARNING, logger="chorde.decorators")
    assert f(1) == first
    assert "serving a stale value" in caplog.text
    clock.advance(30)  # expired 40 s ago: too old
    with pytest.raises(ConnectionError):
        f(1)
    with pytest.raises(ConnectionError):
        f(2)  # nothing held
    info = f.cache_info()
    assert (info.stale, info.errors) == (1, 3)
    failing.clear()
    assert f(1) != first


async def test_stale_if_error_async():
    clock = FakeClock()
    client = InprocCacheClient(100, clock=clock)
    failing = False

    @cached(client, ttl=10, ttl_spread=False, stale_if_error=30, tags=["t"])
    async def f(x):
        if failing:
            raise ConnectionError("backend down")
        return [x, clock.now]

    first = await f(1)
    failing = True
    clock.advance(20)
    assert await f(1) == first
    clock.advance(30)
    with pytest.raises(ConnectionError):
        await f(1)


def test_stale_if_error_never_serves_an_invalidated_entry():
    clock = FakeClock()
    client = InprocCacheClient(100, clock=clock)

    @cached(client, ttl=10, stale_if_error=300, tags=["t"])
    def f(x):
        if clock.now > 1005:
            raise ConnectionError("down")
        return x

    f(1)
    clock.advance(20)
    from chorde.tags import invalidate_tags

    invalidate_tags(client, "t")
    with pytest.raises(ConnectionError):
        f(1)


# ---- forced() --------------------------------------------------------------------------


def test_forced_recomputes_and_stores(client):
    calls = []

    @cached(client, ttl=300)
    def f(x):
        calls.append(x)
        return len(calls)

    assert f(1) == 1
    assert f.forced()(1) == 2
    client.wait(f.cache_key(1))
    assert f(1) == 2
    assert f.future().forced()(1).result(WAIT) == 3
    client.wait(f.cache_key(1))
    assert f.peek(1) == 3
    assert f.forced().future()(1).result(WAIT) == 4  # either order


def test_bg_forced_answers_at_once_and_refreshes(client):
    gate = threading.Event()
    calls = []

    @cached(client, ttl=300)
    def f(x):
        calls.append(x)
        if len(calls) > 1:
            assert gate.wait(WAIT)
        return len(calls)

    assert f(1) == 1
    client.wait(f.cache_key(1))
    assert f.bg().forced()(1) == 1  # the held value, while the refresh waits on the gate
    gate.set()
    core = f._chorde_core
    flight = core.flights.get(f.cache_key(1))
    if flight is not None:
        flight.result(WAIT)
    client.wait(f.cache_key(1))
    assert f.peek(1) == 2
    assert f.bg().forced()(2) == 3  # nothing held: it waits for the computation


async def test_forced_async(client):
    calls = []

    @cached(client, ttl=300)
    async def f(x):
        calls.append(x)
        await asyncio.sleep(0)
        return len(calls)

    assert await f(1) == 1
    assert await f.forced()(1) == 2
    client.wait(f.cache_key(1))
    assert await f(1) == 2
    assert await f.bg().forced()(1) == 2  # held: at once, and a refresh task
    for _ in range(100):
        client.wait(f.cache_key(1))
        if await f.peek(1) == 3:
            break
        await asyncio.sleep(0.01)
    assert await f.peek(1) == 3
    assert await f.future().forced()(1) == 4


def test_forced_on_a_method():
    client = InprocCacheClient(10)
    calls = []

    class Thing:
        @cached(client, ttl=300, key=lambda self, x: x)
        def get(self, x):
            calls.append(x)
            return len(calls)

    thing = Thing()
    assert thing.get(1) == 1
    assert thing.get.forced()(1) == 2
    assert thing.get(1) == 2
