"""@cached on plain functions and methods: variants, compute-once, refresh, bad input."""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time

import pytest

from chorde import NONE, CacheMissError
from chorde.clients.base import BaseCacheClient
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached, set_default_executor
from chorde.futures import Future
from tests.contract.conftest import FACTORIES, FakeClock

WAIT = 5  # seconds: the bound on anything a test waits for (never reached when passing)


@pytest.fixture
def client():
    c = InprocCacheClient(1000)
    yield c
    c.close()


def _settle(fn, *args, **kwargs):
    """Wait for the background computation of one key of a cached function, if any."""
    core = fn._chorde_core
    flight = core.flights.get(core.key(args, kwargs))
    if flight is not None:
        concurrent.futures.wait([flight], timeout=WAIT)


class Gate:
    """A function body that counts calls and blocks while the gate is closed."""

    def __init__(self, results=None):
        self.calls = 0
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.results = list(results or [])
        self.lock = threading.Lock()

    def __call__(self, x):
        with self.lock:
            self.calls += 1
            n = self.calls
        self.entered.set()
        assert self.open.wait(WAIT), "gate never opened"
        if self.results:
            result = self.results.pop(0)
            if isinstance(result, BaseException):
                raise result
            return result
        return (x, n)


# ---- plain calls ---------------------------------------------------------------------


def test_caches_results(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    assert f(1) == (1, 1)
    assert f(1) == (1, 1)
    assert f(2) == (2, 2)
    assert body.calls == 2


def test_none_is_cached(client):
    calls = []

    @cached(client, ttl=300)
    def f():
        calls.append(1)

    assert f() is None and f() is None
    assert len(calls) == 1


def test_kwargs_order_does_not_matter(client):
    calls = []

    @cached(client, ttl=300)
    def f(a, b=0, c=0):
        calls.append((a, b, c))
        return a + b + c

    assert f(1, b=2, c=3) == 6
    assert f(1, c=3, b=2) == 6
    assert len(calls) == 1
    assert f.cache_key(1, c=3, b=2) == ((f.namespace, "**"), (1,), (("b", 2), ("c", 3)))
    assert f.cache_key(1, 2) == (f.namespace, 1, 2)


def test_positional_and_keyword_forms_never_collide(client):
    @cached(client, ttl=300)
    def f(*args, **kwargs):
        return (args, kwargs)

    assert f(("b", 2)) == ((("b", 2),), {})
    assert f(b=2) == ((), {"b": 2})
    assert f(1, ("b", 2)) == ((1, ("b", 2)), {})
    assert f(1, b=2) == ((1,), {"b": 2})
    # Flat positional keys: arguments shaped like the keyword form's parts stay apart.
    assert f((1,), (("b", 2),)) == (((1,), (("b", 2),)), {})
    assert f(1, b=2) == ((1,), {"b": 2})
    assert f((1, 2)) == (((1, 2),), {})
    assert f(1, 2) == ((1, 2), {})


def test_exception_is_not_cached(client):
    body = Gate([ValueError("boom"), "ok"])

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    with pytest.raises(ValueError, match="boom"):
        f(1)
    assert f(1) == "ok"
    assert body.calls == 2


def test_default_namespace_is_module_and_qualname(client):
    @cached(client, ttl=300)
    def f(x):
        return x

    assert f.namespace == f"{__name__}.test_default_namespace_is_module_and_qualname.<locals>.f"
    f(1)
    assert client.get((f.namespace, 1)) == 1


def test_explicit_namespace_is_shared(client):
    @cached(client, ttl=300, namespace="shared")
    def f(x):
        return ("f", x)

    @cached(client, ttl=300, namespace="shared")
    def g(x):
        return ("g", x)

    assert f(1) == ("f", 1)
    assert g(1) == ("f", 1)


def test_custom_key(client):
    calls = []

    @cached(client, ttl=300, key=lambda conn, x: x)
    def f(conn, x):
        calls.append(x)
        return x * 2

    assert f(object(), 2) == 4
    assert f(object(), 2) == 4
    assert len(calls) == 1
    assert f.cache_key(None, 2) == (f.namespace, 2)
    assert f.peek(None, 2) == 4


def test_ttl_limits_age(client):
    body = Gate()

    @cached(client, ttl=0.2, ttl_spread=False)
    def f(x):
        return body(x)

    assert f(1) == (1, 1)
    time.sleep(0.3)
    assert f(1) == (1, 2)


def test_ttl_spread_shortens_the_stored_ttl(client):
    @cached(client, ttl=100, ttl_spread=50)
    def f(x):
        return x

    lefts = []
    for x in range(20):
        f(x)
        lefts.append(client.getTtl(f.cache_key(x))[1])
    assert all(49 < left <= 100 for left in lefts)
    assert max(lefts) - min(lefts) > 1  # jittered, not one value


def test_ttl_spread_off(client):
    @cached(client, ttl=100, ttl_spread=False)
    def f(x):
        return x

    f(1)
    assert 99 < client.getTtl(f.cache_key(1))[1] <= 100


def test_default_spread_is_a_tenth(client):
    @cached(client, ttl=100)
    def f(x):
        return x

    for x in range(10):
        f(x)
        assert 89 < client.getTtl(f.cache_key(x))[1] <= 100


# ---- compute once ----------------------------------------------------------------------


def test_compute_once_16_threads():
    client = InprocCacheClient(100)
    calls = []
    barrier = threading.Barrier(16)

    @cached(client, ttl=300)
    def slow(x):
        calls.append(x)
        time.sleep(0.2)
        return x * 10

    results = []

    def caller():
        barrier.wait(WAIT)
        results.append(slow(7))

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == [70] * 16
    assert calls == [7]


def test_compute_once_is_per_key(client):
    both = threading.Barrier(2)

    @cached(client, ttl=300)
    def f(x):
        both.wait(WAIT)  # raises BrokenBarrierError unless both keys compute concurrently
        return x

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(f, [1, 2])) == [1, 2]


def test_exception_reaches_every_waiter(client):
    body = Gate([KeyError("nope")])
    body.open.clear()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    errors = []

    def caller():
        try:
            f(1)
        except KeyError as exc:
            errors.append(exc)

    first = threading.Thread(target=caller)
    first.start()
    assert body.entered.wait(WAIT)
    others = [threading.Thread(target=caller) for _ in range(5)]
    for t in others:
        t.start()
    # The other callers are waiting on the flight, not computing: let the first one fail.
    _wait_until(lambda: _waiters(f) == 5)
    body.open.set()
    for t in [first, *others]:
        t.join(WAIT)
    assert len(errors) == 6
    assert body.calls == 1
    assert f(1) == (1, 2)  # not cached: computed again


def _waiters(fn):
    """How many threads wait on the (single) flight of fn (CPython's Condition internals)."""
    [flight] = fn._chorde_core.flights._flights.values()
    if type(flight) is list:  # a lone miss's pending flight: a Future per waiter
        return sum(len(f._condition._waiters) for f in flight[1:] if hasattr(f, "_condition"))
    return len(flight._condition._waiters)


def _wait_until(predicate):
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.002)


def test_recursion_on_same_key_raises(client):
    @cached(client, ttl=300)
    def f(x):
        return f(x)

    with pytest.raises(RuntimeError, match="called itself"):
        f(1)


# ---- refresh window (async_ttl) --------------------------------------------------------


def test_async_ttl_threshold():
    @cached(InprocCacheClient(10), ttl=300, async_ttl=-60)
    def f():
        pass

    assert f._chorde_core.threshold == 240

    @cached(InprocCacheClient(10), ttl=300, async_ttl=30)
    def g():
        pass

    assert g._chorde_core.threshold == 30


def test_refresh_window_serves_old_value_without_waiting():
    clock = FakeClock()
    body = Gate()

    @cached(InprocCacheClient(100, clock=clock), ttl=1, async_ttl=-0.5, ttl_spread=False)
    def f(x):
        return body(x)

    assert f(1) == (1, 1)
    clock.advance(0.6)  # into the refresh window: 0.4 s left < 0.5
    body.open.clear()  # the refresh cannot finish until the gate opens
    got = []
    caller = threading.Thread(target=lambda: got.append(f(1)))
    caller.start()
    caller.join(WAIT)
    assert got == [(1, 1)]  # answered while the refresh was blocked
    assert body.entered.wait(WAIT)
    assert f(1) == (1, 1)  # one refresh per key: this call starts no second one
    body.open.set()
    _settle(f, 1)
    assert body.calls == 2
    assert f(1) == (1, 2)


def test_failing_refresh_keeps_old_value_and_logs(caplog):
    clock = FakeClock()
    errors = [RuntimeError("backend down"), RuntimeError("still down")]
    body = Gate([("v", 1), *errors, RuntimeError("down for good")])

    @cached(InprocCacheClient(100, clock=clock), ttl=1, async_ttl=-0.5, ttl_spread=False)
    def f(x):
        return body(x)

    assert f(1) == ("v", 1)
    clock.advance(0.6)
    with caplog.at_level(logging.ERROR, logger="chorde.decorators"):
        assert f(1) == ("v", 1)
        _settle(f, 1)
    assert body.calls == 2
    [record] = [r for r in caplog.records if r.name == "chorde.decorators"]
    assert "background computation failed" in record.getMessage()
    assert "backend down" in str(record.exc_info[1])
    assert f.peek(1) == ("v", 1)  # the old value is still there until its ttl
    assert f(1) == ("v", 1)
    _settle(f, 1)
    clock.advance(0.5)  # past the ttl: a plain call must compute, and now sees the error
    with pytest.raises(RuntimeError, match="down for good"):
        f(1)


def test_expired_entry_is_recomputed_by_plain_call(client):
    body = Gate()

    @cached(client, ttl=300, async_ttl=-60)
    def f(x):
        return body(x)

    f(1)
    f.expire(1)
    assert f(1) == (1, 2)


# ---- bg() ------------------------------------------------------------------------------


def test_bg_serves_stale_while_refreshing(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    assert f.bg()(1) == (1, 1)
    f.expire(1)
    body.open.clear()
    assert f.bg()(1) == (1, 1)  # stale, served; refresh blocked on the gate
    assert f.async_()(1) == (1, 1)
    assert body.entered.wait(WAIT)
    body.open.set()
    _settle(f, 1)
    assert f(1) == (1, 2)
    assert body.calls == 2


def test_bg_miss_computes_on_the_pool(client):
    threads = []

    @cached(client, ttl=300)
    def f(x):
        threads.append(threading.current_thread().name)
        return x

    assert f.bg()(3) == 3
    assert threads[0].startswith("chorde-bg")


def test_bg_uses_given_executor(client):
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine")
    names = []

    @cached(client, ttl=300, executor=pool)
    def f(x):
        names.append(threading.current_thread().name)
        return x

    assert f.bg()(1) == 1
    assert names[0].startswith("mine")
    pool.shutdown()


def test_set_default_executor(client):
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="default-swap")
    names = []

    @cached(client, ttl=300)
    def f(x):
        names.append(threading.current_thread().name)
        return x

    set_default_executor(pool)
    try:
        assert f.bg()(1) == 1
    finally:
        set_default_executor(None)
        pool.shutdown()
    assert names[0].startswith("default-swap")
    with pytest.raises(TypeError, match="submit"):
        set_default_executor("pool")


def test_saturated_pool_does_not_deadlock(client):
    # One worker: f's background job waits for g's, queued behind it on the same worker.
    pool = concurrent.futures.ThreadPoolExecutor(1)

    @cached(client, ttl=300, executor=pool)
    def g(x):
        return x + 1

    @cached(client, ttl=300, executor=pool)
    def f(x):
        return g.bg()(x) * 2

    future = f.future()(1)
    assert future.result(WAIT) == 4
    pool.shutdown()


def test_bg_failure_reaches_waiting_caller(client, caplog):
    @cached(client, ttl=300)
    def f(x):
        raise LookupError("no such thing")

    with caplog.at_level(logging.ERROR, logger="chorde.decorators"), pytest.raises(LookupError):
        f.bg()(1)
    # The caller got it: not also logged as a background failure.
    assert not [r for r in caplog.records if r.name == "chorde.decorators"]


# ---- lazy, peek, refresh, put, invalidate, expire, uncached ----------------------------


def test_peek_never_computes(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    with pytest.raises(CacheMissError):
        f.peek(1)
    f(1)
    assert f.peek(1) == (1, 1)
    f.expire(1)
    with pytest.raises(CacheMissError):
        f.peek(1)
    assert body.calls == 1


def test_lazy_never_computes(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    with pytest.raises(CacheMissError):
        f.lazy(1)
    assert body.calls == 0
    f(1)
    assert f.lazy(1) == (1, 1)


def test_bg_lazy_starts_computation(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    with pytest.raises(CacheMissError):
        f.bg().lazy(1)
    _settle(f, 1)
    assert f.peek(1) == (1, 1)
    assert f.bg().lazy(1) == (1, 1)
    assert body.calls == 1


def test_bg_lazy_serves_stale(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    f(1)
    f.expire(1)
    assert f.bg().lazy(1) == (1, 1)
    _settle(f, 1)
    assert f.peek(1) == (1, 2)


def test_refresh_recomputes(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    assert f(1) == (1, 1)
    assert f.refresh(1) == (1, 2)
    assert f(1) == (1, 2)


def test_bg_refresh_returns_a_future(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    f(1)
    future = f.bg().refresh(1)
    assert isinstance(future, Future)
    assert future.result(WAIT) == (1, 2)
    assert f(1) == (1, 2)


def test_put_and_invalidate(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x, y=0):
        return body(x)

    assert f.put(1, _cache_put="explicit") is None
    assert f(1) == "explicit"
    f.put(1, y=2, _cache_put="kw")
    assert f(1, y=2) == "kw"
    f.invalidate(1)
    assert f(1) == (1, 1)
    with pytest.raises(TypeError, match="_cache_put"):
        f.put(1)


def test_uncached_bypasses_the_cache(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    assert f(1) == (1, 1)
    assert f.uncached(1) == (1, 2)
    assert f(1) == (1, 1)  # neither read nor written


def test_client_attribute(client):
    @cached(client, ttl=300)
    def f(x):
        return x

    assert f.client is client
    assert f.bg().client is client
    assert f.future().client is client


def test_wrapper_metadata(client):
    @cached(client, ttl=300)
    def documented(x):
        """Docstring."""
        return x

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docstring."
    assert documented.__wrapped__(5) == 5


# ---- future() --------------------------------------------------------------------------


def test_future_variants(client):
    body = Gate()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    miss = f.future().lazy(1)
    assert isinstance(miss, concurrent.futures.Future)
    with pytest.raises(CacheMissError):
        miss.result(WAIT)
    _settle(f, 1)
    assert f.future().lazy(1).result(WAIT) == (1, 1)
    assert f.future()(1).result(WAIT) == (1, 1)
    assert f.future().peek(1).result(WAIT) == (1, 1)
    with pytest.raises(CacheMissError):
        f.future().peek(2).result(WAIT)
    assert f.future()(2).result(WAIT) == (2, 2)
    assert f.future().refresh(1).result(WAIT) == (1, 3)
    assert f.future().put(1, _cache_put="p").result(WAIT) is None
    assert f(1) == "p"
    f.future().invalidate(1).result(WAIT)
    with pytest.raises(CacheMissError):
        f.peek(1)
    assert f.future().uncached(9).result(WAIT) == (9, 4)
    f.future().expire(2).result(WAIT)
    assert f.future()(2).result(WAIT) == (2, 2)  # stale served, refreshed behind
    _settle(f, 2)
    assert body.calls == 5
    assert f.peek(2) == (2, 5)


def test_future_exception(client):
    @cached(client, ttl=300)
    def f(x):
        raise ValueError(x)

    with pytest.raises(ValueError):
        f.future()(1).result(WAIT)


def test_future_does_not_block_on_computation(client):
    body = Gate()
    body.open.clear()

    @cached(client, ttl=300)
    def f(x):
        return body(x)

    future = f.future()(1)
    assert not future.done()  # the computation is blocked on the gate
    body.open.set()
    assert future.result(WAIT) == (1, 1)


class BlockingClient(InprocCacheClient):
    """An in-process client that declares itself blocking (like network clients)."""

    blocking = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = set()

    def getTtl(self, key, default=NONE):
        self.threads.add(threading.current_thread().name)
        return super().getTtl(key, default)


def test_future_cache_access_on_the_pool_for_blocking_clients():
    client = BlockingClient(100)

    @cached(client, ttl=300)
    def f(x):
        return x

    assert f.future()(1).result(WAIT) == 1
    assert f.future().peek(1).result(WAIT) == 1
    assert client.threads and all(n.startswith("chorde-bg") for n in client.threads)


# ---- methods ---------------------------------------------------------------------------


class Service:
    calls = 0

    def __init__(self, name):
        self.name = name

    @cached(InprocCacheClient(100), ttl=300)
    def lookup(self, x):
        Service.calls += 1
        return (self.name, x)

    @cached(InprocCacheClient(100), ttl=300, key=lambda self, x: x)
    def shared(self, x):
        Service.calls += 1
        return (self.name, x)

    @staticmethod
    @cached(InprocCacheClient(100), ttl=300)
    def static(x):
        return ("static", x)


def test_methods_cache_per_instance():
    a, b = Service("a"), Service("b")
    before = Service.calls
    assert a.lookup(1) == ("a", 1)
    assert a.lookup(1) == ("a", 1)
    assert b.lookup(1) == ("b", 1)
    assert Service.calls - before == 2
    assert a.lookup.peek(1) == ("a", 1)
    assert a.lookup.bg()(1) == ("a", 1)
    assert a.lookup.future()(1).result(WAIT) == ("a", 1)
    assert Service.lookup(a, 1) == ("a", 1)
    assert Service.lookup.peek(a, 1) == ("a", 1)
    a.lookup.invalidate(1)
    with pytest.raises(CacheMissError):
        a.lookup.peek(1)
    assert b.lookup.peek(1) == ("b", 1)
    assert a.lookup.client is Service.lookup.client


def test_methods_with_key_share_across_instances():
    before = Service.calls
    assert Service("a").shared(5) == ("a", 5)
    assert Service("b").shared(5) == ("a", 5)
    assert Service.calls - before == 1


def test_staticmethod():
    assert Service.static(1) == ("static", 1)
    assert Service("z").static(1) == ("static", 1)
    assert Service.static.peek(1) == ("static", 1)


# ---- bad input -------------------------------------------------------------------------


def test_unhashable_positional_argument_names_it(client):
    @cached(client, ttl=300)
    def find(name, tags):
        return name

    with pytest.raises(TypeError, match=r"find.*'tags' = \['a'\] is unhashable") as info:
        find("x", ["a"])
    assert "key=" in str(info.value)


def test_unhashable_keyword_argument_names_it(client):
    @cached(client, ttl=300)
    def find(name, **filters):
        return name

    with pytest.raises(TypeError, match=r"'where' = \{'a': 1\} is unhashable"):
        find("x", where={"a": 1})
    with pytest.raises(TypeError, match="'where'"):
        find.peek("x", where={"a": 1})
    with pytest.raises(TypeError, match="'where'"):
        find.put("x", where={"a": 1}, _cache_put=1)


def test_unhashable_custom_key(client):
    @cached(client, ttl=300, key=lambda x: [x])
    def f(x):
        return x

    with pytest.raises(TypeError, match="key function"):
        f(1)


def test_generator_functions_are_rejected(client):
    def gen():
        yield 1

    async def agen():
        yield 1

    with pytest.raises(TypeError, match="generator"):
        cached(client, ttl=300)(gen)
    with pytest.raises(TypeError, match="generator"):
        cached(client, ttl=300)(agen)


@pytest.mark.parametrize("ttl, exc", [(0, ValueError), (-1, ValueError), ("5", TypeError)])
def test_bad_ttl(client, ttl, exc):
    with pytest.raises(exc, match="ttl"):
        cached(client, ttl=ttl)


@pytest.mark.parametrize("async_ttl", [-300, -400, float("nan")])
def test_bad_async_ttl(client, async_ttl):
    with pytest.raises(ValueError, match="async_ttl"):
        cached(client, ttl=300, async_ttl=async_ttl)


def test_a_key_function_given_third_is_named():
    # chorde 1.x's cached(client, ttl, key): the third positional is async_ttl now
    with pytest.raises(TypeError, match="key="):
        cached(InprocCacheClient(10), 300, lambda x: x)


def test_bad_options(client):
    with pytest.raises(TypeError, match="async_ttl"):
        cached(client, ttl=300, async_ttl="10")
    with pytest.raises(ValueError, match="ttl_spread"):
        cached(client, ttl=300, ttl_spread=300)
    with pytest.raises(ValueError, match="ttl_spread"):
        cached(client, ttl=300, ttl_spread=-1)
    with pytest.raises(TypeError, match="key"):
        cached(client, ttl=300, key="x")
    with pytest.raises(TypeError, match="namespace"):
        cached(client, ttl=300, namespace=5)
    with pytest.raises(TypeError, match="executor"):
        cached(client, ttl=300, executor=object())
    with pytest.raises(TypeError, match="chorde cache client"):
        cached({}, ttl=300)
    with pytest.raises(TypeError, match="decorates functions"):
        cached(client, ttl=300)(5)


# ---- every client of the contract suite ------------------------------------------------


@pytest.fixture(params=sorted(FACTORIES))
def any_client(request):
    env = FACTORIES[request.param](request, FakeClock())
    yield env.client
    env.client.close()


def test_decorator_over_every_client(any_client):
    assert isinstance(any_client, BaseCacheClient)
    calls = []

    @cached(any_client, ttl=300, async_ttl=-60)
    def f(x, scale=1):
        calls.append(x)
        return {"x": x * scale}

    assert f(2) == {"x": 2}
    assert f(2, scale=3) == {"x": 6}
    any_client.wait(f.cache_key(2))
    assert f(2) == {"x": 2}
    assert f.peek(2, scale=3) == {"x": 6}
    assert f.bg()(2) == {"x": 2}
    assert f.future()(2).result(WAIT) == {"x": 2}
    assert calls == [2, 2]
    f.put(("t", None), _cache_put=["p"])
    any_client.wait(f.cache_key(("t", None)))
    assert f(("t", None)) == ["p"]
    f.invalidate(2)
    any_client.wait(f.cache_key(2))
    with pytest.raises(CacheMissError):
        f.peek(2)
    assert f(2) == {"x": 2}
    assert len(calls) == 3


def test_unencodable_argument_with_a_network_client(memcached):
    from chorde.clients.memcached import MemcachedClient

    client = MemcachedClient([memcached.address], checksum_key="decorators")

    @cached(client, ttl=300)
    def describe(thing):
        return repr(thing)

    try:
        assert describe(("fine", 1)) == "('fine', 1)"
        with pytest.raises(TypeError, match=r"describe: argument 'thing' = .* cannot be encoded"):
            describe(object())  # hashable, but has no stable encoding across processes
    finally:
        client.close()


def test_stress_mixed_variants_threads():
    # A small cache (evictions) and a short ttl (refresh windows, expiry) under 8 threads.
    client = InprocCacheClient(20)
    computed = []

    @cached(client, ttl=0.05, async_ttl=-0.02)
    def f(x):
        computed.append(x)
        return x * 2

    failures = []

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(600):
            x = rng.randrange(40)
            op = rng.randrange(7)
            try:
                if op == 0:
                    got = f(x)
                elif op == 1:
                    got = f.bg()(x)
                elif op == 2:
                    got = f.future()(x).result(WAIT)
                elif op == 3:
                    got = f.bg().lazy(x)
                elif op == 4:
                    got = f.refresh(x)
                elif op == 5:
                    f.invalidate(x)
                    continue
                else:
                    got = f.peek(x)
            except CacheMissError:
                continue
            if got != x * 2:
                failures.append((op, x, got))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 6)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    _wait_until(lambda: len(f._chorde_core.flights) == 0)
    assert computed  # it did compute, and every answer above was right
