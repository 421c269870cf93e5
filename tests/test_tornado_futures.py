"""chorde_tornado: chorde futures yielded and awaited in tornado coroutines, no monkey patching."""

from __future__ import annotations

import asyncio
import datetime
import functools
import itertools
import json
import subprocess
import sys
import threading
import time

import pytest
import tornado.concurrent
import tornado.gen
import tornado.ioloop

import chorde_tornado
from chorde.clients.asyncache import makeFutureWrapper
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.memcached import MemcachedClient
from chorde.decorators import cached
from chorde.futures import Future

# ---- yield / await -----------------------------------------------------------------------


@pytest.fixture
def client():
    return InprocCacheClient(100)


def test_convert_yielded_gives_a_future_of_the_running_loop():
    async def main():
        fut = Future()
        converted = tornado.gen.convert_yielded(fut)
        assert isinstance(converted, asyncio.Future)
        assert converted.get_loop() is asyncio.get_running_loop()
        threading.Timer(0.01, fut.set_result, ["done"]).start()
        return await converted

    assert asyncio.run(main()) == "done"


async def test_yield_in_gen_coroutine_success_and_cached(client):
    calls = []

    @cached(client, 60)
    def double(x):
        calls.append(threading.current_thread())
        time.sleep(0.05)
        return x * 2

    @tornado.gen.coroutine
    def handler(x):
        first = yield double.future()(x)
        second = yield double.future()(x)
        return first, second

    assert await handler(4) == (8, 8)
    assert len(calls) == 1
    assert calls[0] is not threading.current_thread()  # computed on the pool, not the loop


async def test_yield_list_dict_and_with_timeout(client):
    @cached(client, 60)
    def square(x):
        return x * x

    @tornado.gen.coroutine
    def many():
        as_list = yield [square.future()(1), square.future()(2)]
        as_dict = yield {"a": square.future()(3), "b": square.future()(4)}
        timed = yield tornado.gen.with_timeout(datetime.timedelta(seconds=5), square.future()(5))
        return as_list, as_dict, timed

    assert await many() == ([1, 4], {"a": 9, "b": 16}, 25)


async def test_yield_exception_path_and_not_cached(client):
    calls = []

    @cached(client, 60)
    def boom(x):
        calls.append(x)
        raise ValueError(f"bad {x}")

    @tornado.gen.coroutine
    def handler():
        try:
            yield boom.future()(1)
        except ValueError as exc:
            return str(exc)

    assert await handler() == "bad 1"
    assert await handler() == "bad 1"
    assert calls == [1, 1]


async def test_await_in_native_coroutine_success_and_exception(client):
    @cached(client, 60)
    def inverse(x):
        return 1 / x

    assert await inverse.future()(4) == 0.25
    with pytest.raises(ZeroDivisionError):
        await inverse.future()(0)


async def test_cancelled_chorde_future_raises_cancelled_in_the_coroutine():
    fut = Future()

    @tornado.gen.coroutine
    def waiter():
        yield fut

    task = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)
    assert fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_cancelling_the_coroutine_leaves_the_computation_running(client):
    started, release = threading.Event(), threading.Event()

    @cached(client, 60)
    def slow(x):
        started.set()
        release.wait(5)
        return x + 1

    fut = slow.future()(1)

    @tornado.gen.coroutine
    def waiter():
        return (yield fut)

    task = asyncio.ensure_future(waiter())
    assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not fut.cancelled()
    release.set()
    assert await fut == 2
    assert slow.peek(1) == 2  # computed and cached although its first waiter left


def test_run_sync_on_a_fresh_ioloop(client):
    @cached(client, 60)
    def triple(x):
        return x * 3

    async def native():
        return await triple.future()(4)

    loop = tornado.ioloop.IOLoop(make_current=False)
    try:
        assert loop.run_sync(lambda: triple.future()(3), timeout=5) == 9
        assert loop.run_sync(native, timeout=5) == 12
    finally:
        loop.close()


async def test_make_future_wrapper_with_tornado_future(client):
    wrap = makeFutureWrapper(tornado.concurrent.Future)

    @cached(client, 60)
    def negate(x):
        return -x

    @tornado.gen.coroutine
    def handler():
        wrapped = wrap(negate.future()(5))
        assert isinstance(wrapped, tornado.concurrent.Future)
        return (yield wrapped)

    assert await handler() == -5


# ---- loop responsiveness -----------------------------------------------------------------


async def _largest_gap_while(awaitable_factory) -> tuple[float, object]:
    stamps = [time.monotonic()]
    ticker = tornado.ioloop.PeriodicCallback(lambda: stamps.append(time.monotonic()), 10)
    ticker.start()
    try:
        result = await awaitable_factory()
    finally:
        ticker.stop()
    stamps.append(time.monotonic())
    return max(b - a for a, b in itertools.pairwise(stamps)), result


_ATTEMPTS = 3


@pytest.mark.parametrize("backend", ["inproc", "memcached"])
@pytest.mark.parametrize("style", ["gen", "native"])
async def test_loop_keeps_running_during_a_500ms_computation(request, backend, style):
    if backend == "memcached":
        server = request.getfixturevalue("memcached")
        client = MemcachedClient([server.address], "test-key")
    else:
        client = InprocCacheClient(10)

    @cached(client, 60)
    def slow(x):
        time.sleep(0.5)
        return x

    @tornado.gen.coroutine
    def gen_style(x):
        return (yield slow.future()(x))

    async def native_style(x):
        return await slow.future()(x)

    run = gen_style if style == "gen" else native_style
    gaps = []
    try:
        # A loop blocked by the computation stalls ~500 ms on every attempt; a busy machine
        # may delay one tick now and then, so one clean attempt out of three is enough.
        for attempt in range(_ATTEMPTS):
            gap, result = await _largest_gap_while(functools.partial(run, attempt))
            assert result == attempt
            gaps.append(gap)
            if gap <= 0.1:
                break
    finally:
        client.close()
    # A bound on responsiveness (the loop was free while the pool computed), not a speed test.
    assert min(gaps) <= 0.1, f"the IOLoop stalled: largest gaps {[round(g, 3) for g in gaps]} s"


# ---- no monkey patching ------------------------------------------------------------------

_SNAPSHOT_SCRIPT = r"""
import asyncio, concurrent.futures, inspect, json, sys
import tornado.concurrent, tornado.gen, tornado.ioloop, tornado.web, tornado.platform.asyncio
# Everything chorde_tornado imports, imported first: only what it does itself is compared.
import chorde.clients.asyncache, chorde.clients.inproc, chorde.decorators, chorde.futures

PREFIXES = ("tornado", "asyncio", "concurrent")

def snapshot():
    seen = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(PREFIXES):
            continue
        for attr, value in vars(module).items():
            seen[f"{name}.{attr}"] = id(value)
            if inspect.isclass(value) and value.__module__ == name:
                for cattr, cvalue in vars(value).items():
                    seen[f"{name}.{attr}.{cattr}"] = id(cvalue)
    return seen

def named():
    return {
        "gen.convert_yielded": tornado.gen.convert_yielded,
        "gen.is_future": tornado.gen.is_future,
        "gen.Runner.handle_yield": tornado.gen.Runner.handle_yield,
        "gen.multi_future": tornado.gen.multi_future,
        "concurrent.is_future": tornado.concurrent.is_future,
        "concurrent.FUTURES": tornado.concurrent.FUTURES,
        "concurrent.Future": tornado.concurrent.Future,
        "concurrent.chain_future": tornado.concurrent.chain_future,
        "concurrent.future_add_done_callback": tornado.concurrent.future_add_done_callback,
        "ioloop.IOLoop.add_future": tornado.ioloop.IOLoop.add_future,
        "asyncio.Future": asyncio.Future,
        "asyncio.wrap_future": asyncio.wrap_future,
        "asyncio.isfuture": asyncio.isfuture,
        "asyncio.ensure_future": asyncio.ensure_future,
        "concurrent.futures.Future": concurrent.futures.Future,
    }
named_before = {k: id(v) for k, v in named().items()}
registry_before = set(tornado.gen.convert_yielded.registry)
before = snapshot()

import chorde_tornado

after = snapshot()
print(json.dumps({
    "changed": sorted(k for k in before if after.get(k) != before[k]),
    "added": sorted(k for k in after if k not in before and not k.startswith("chorde")),
    "named_changed": sorted(k for k, v in named().items() if id(v) != named_before[k]),
    "registered": sorted(
        f"{t.__module__}.{t.__qualname__}"
        for t in set(tornado.gen.convert_yielded.registry) - registry_before
    ),
}))
"""


def test_import_replaces_nothing_in_tornado_or_asyncio():
    out = subprocess.run(
        [sys.executable, "-c", _SNAPSHOT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["changed"] == []
    assert report["added"] == []
    assert report["named_changed"] == []
    # The one extension, through tornado's public singledispatch registry.
    assert report["registered"] == ["chorde.futures.Future"]


def test_other_futures_keep_tornados_own_conversion():
    plain = __import__("concurrent.futures").futures.Future()
    assert tornado.gen.convert_yielded(plain) is plain
    assert tornado.gen.convert_yielded.dispatch(Future) is chorde_tornado._convert_chorde_future
