"""@cached on coroutine functions: never blocks the loop, compute-once across tasks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading

import pytest

from chorde import NONE, CacheMissError
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.futures import Future, completed
from tests.contract.conftest import FACTORIES, FakeClock

WAIT = 5


@pytest.fixture
def client():
    return InprocCacheClient(1000)


class Body:
    """A coroutine function body that counts calls and waits on an asyncio gate."""

    def __init__(self, results=None):
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.results = list(results or [])

    async def __call__(self, x):
        self.calls += 1
        n = self.calls
        self.entered.set()
        await asyncio.wait_for(self.gate.wait(), WAIT)
        if self.results:
            result = self.results.pop(0)
            if isinstance(result, BaseException):
                raise result
            return result
        return (x, n)


async def _settle(fn, *args, **kwargs):
    """Wait for the background task computing one key, if any."""
    core = fn._chorde_core
    run = core.aflights.get(core.key(args, kwargs))
    if run is not None:
        await asyncio.wait([run.task], timeout=WAIT)


async def test_wrapper_is_a_coroutine_function(client):
    @cached(client, ttl=300)
    async def f(x):
        return x

    assert inspect.iscoroutinefunction(f)
    assert await f(1) == 1
    assert f.__name__ == "f"


async def test_caches_results(client):
    body = Body()

    @cached(client, ttl=300)
    async def f(x):
        return await body(x)

    assert await f(1) == (1, 1)
    assert await f(1) == (1, 1)
    assert await f(x=1) == (1, 2)  # keyword form: a different key
    assert body.calls == 2


async def test_compute_once_100_tasks(client):
    calls = []

    @cached(client, ttl=300)
    async def slow(x):
        calls.append(x)
        await asyncio.sleep(0.2)
        return x * 10

    results = await asyncio.gather(*(slow(3) for _ in range(100)))
    assert results == [30] * 100
    assert calls == [3]
    assert not slow._chorde_core.aflights  # the registry forgets finished flights


async def test_compute_once_is_per_key(client):
    started = []
    both = asyncio.Event()

    @cached(client, ttl=300)
    async def f(x):
        started.append(x)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), WAIT)  # times out unless both keys run at once
        return x

    assert sorted(await asyncio.gather(f(1), f(2))) == [1, 2]


async def test_exception_reaches_every_waiter_and_is_not_cached(client):
    body = Body([ValueError("bad"), "fine"])

    @cached(client, ttl=300)
    async def f(x):
        return await body(x)

    results = await asyncio.gather(*(f(1) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert body.calls == 1
    assert await f(1) == "fine"


async def test_cancelling_one_waiter_does_not_cancel_the_computation(client):
    body = Body()
    body.gate.clear()

    @cached(client, ttl=300)
    async def f(x):
        return await body(x)

    first = asyncio.create_task(f(1))
    second = asyncio.create_task(f(1))
    await asyncio.wait_for(body.entered.wait(), WAIT)
    first.cancel()
    body.gate.set()
    assert await second == (1, 1)
    assert first.cancelled()
    assert body.calls == 1


async def test_recursion_on_same_key_raises(client):
    @cached(client, ttl=300)
    async def f(x):
        return await f(x)

    with pytest.raises(RuntimeError, match="awaited itself"):
        await f(1)


async def test_refresh_window_serves_old_value_without_waiting():
    clock = FakeClock()
    body = Body()

    @cached(InprocCacheClient(100, clock=clock), ttl=1, async_ttl=-0.5, ttl_spread=False)
    async def f(x):
        return await body(x)

    assert await f(1) == (1, 1)
    clock.advance(0.6)
    body.gate.clear()
    # The refresh is blocked on the gate; a caller that waited for it would time out.
    assert await asyncio.wait_for(f(1), WAIT) == (1, 1)
    await asyncio.wait_for(body.entered.wait(), WAIT)
    assert await f(1) == (1, 1)  # no second refresh
    body.gate.set()
    await _settle(f, 1)
    assert body.calls == 2
    assert await f(1) == (1, 2)


async def test_failing_refresh_keeps_old_value_and_logs(caplog):
    clock = FakeClock()
    body = Body([("v", 1), RuntimeError("refresh failed")])

    @cached(InprocCacheClient(100, clock=clock), ttl=1, async_ttl=-0.5, ttl_spread=False)
    async def f(x):
        return await body(x)

    assert await f(1) == ("v", 1)
    clock.advance(0.6)
    with caplog.at_level(logging.ERROR, logger="chorde.decorators"):
        assert await f(1) == ("v", 1)
        await _settle(f, 1)
    [record] = [r for r in caplog.records if r.name == "chorde.decorators"]
    assert "background computation failed" in record.getMessage()
    assert await f.peek(1) == ("v", 1)


async def test_bg_serves_stale(client):
    body = Body()

    @cached(client, ttl=300)
    async def f(x):
        return await body(x)

    assert await f.bg()(1) == (1, 1)
    await f.expire(1)
    body.gate.clear()
    assert await asyncio.wait_for(f.bg()(1), WAIT) == (1, 1)
    assert await asyncio.wait_for(f.async_()(1), WAIT) == (1, 1)
    body.gate.set()
    await _settle(f, 1)
    assert await f(1) == (1, 2)


async def test_plain_call_recomputes_expired(client):
    body = Body()

    @cached(client, ttl=300)
    async def f(x):
        return await body(x)

    await f(1)
    await f.expire(1)
    assert await f(1) == (1, 2)


async def test_lazy_peek_and_bg_lazy(client):
    body = Body()

    @cached(client, ttl=300)
    async def f(x):
        return await body(x)

    with pytest.raises(CacheMissError):
        await f.peek(1)
    with pytest.raises(CacheMissError):
        await f.lazy(1)
    assert body.calls == 0
    with pytest.raises(CacheMissError):
        await f.bg().lazy(1)
    await _settle(f, 1)
    assert body.calls == 1
    assert await f.lazy(1) == (1, 1)
    assert await f.bg().lazy(1) == (1, 1)


async def test_refresh_put_invalidate_uncached(client):
    body = Body()

    @cached(client, ttl=300)
    async def f(x):
        return await body(x)

    assert await f(1) == (1, 1)
    assert await f.refresh(1) == (1, 2)
    assert await f(1) == (1, 2)
    task = f.bg().refresh(1)
    assert isinstance(task, asyncio.Task)
    assert await task == (1, 3)
    await f.put(1, _cache_put="mine")
    assert await f(1) == "mine"
    await f.invalidate(1)
    with pytest.raises(CacheMissError):
        await f.peek(1)
    assert await f.uncached(1) == (1, 4)
    with pytest.raises(CacheMissError):
        await f.peek(1)
    with pytest.raises(TypeError, match="_cache_put"):
        await f.put(1)


async def test_future_on_a_running_loop(client):
    body = Body()

    @cached(client, ttl=300)
    async def f(x):
        return await body(x)

    fut = f.future()(1)
    assert isinstance(fut, Future)
    assert isinstance(fut, concurrent.futures.Future)
    assert await fut == (1, 1)
    assert fut.result() == (1, 1)
    assert await f.future().peek(1) == (1, 1)
    assert await f.future().lazy(1) == (1, 1)
    with pytest.raises(CacheMissError):
        await f.future().lazy(2)  # and starts computing it
    await _settle(f, 2)
    assert await f.peek(2) == (2, 2)
    assert await f.future().refresh(1) == (1, 3)


def test_future_without_a_loop_runs_on_chorde_loop(client):
    loops = []

    @cached(client, ttl=300)
    async def f(x):
        loops.append(threading.current_thread().name)
        return x + 1

    assert f.future()(1).result(WAIT) == 2
    assert f.future().peek(1).result(WAIT) == 2
    assert loops == ["chorde-asyncio"]


async def test_methods(client):
    class Repo:
        def __init__(self, name):
            self.name = name

        @cached(client, ttl=300)
        async def load(self, x):
            return (self.name, x)

    repo = Repo("r")
    assert await repo.load(1) == ("r", 1)
    assert await repo.load.peek(1) == ("r", 1)
    assert await repo.load.bg()(1) == ("r", 1)
    assert await repo.load.future()(1) == ("r", 1)


async def test_unhashable_argument(client):
    @cached(client, ttl=300)
    async def f(items):
        return items

    with pytest.raises(TypeError, match=r"'items' = \{1: 2\} is unhashable"):
        await f({1: 2})


class GatedBlockingClient(InprocCacheClient):
    """Declares itself blocking; its reads wait for a threading.Event."""

    blocking = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def getTtl(self, key, default=NONE):
        assert self.gate.wait(WAIT), "the event loop was blocked"
        return super().getTtl(key, default)


async def test_blocking_client_does_not_block_the_loop():
    client = GatedBlockingClient(100)

    @cached(client, ttl=300)
    async def f(x):
        return x * 2

    async def open_gate():
        # Runs only if the lookup below yields the loop while the client blocks.
        client.gate.set()

    call = asyncio.create_task(f(4))
    opener = asyncio.create_task(open_gate())
    assert await asyncio.wait_for(call, WAIT) == 8
    await opener


# ---- chorde futures are awaitable --------------------------------------------------------


async def test_awaiting_a_future_resolved_from_another_thread():
    fut = Future()
    threading.Timer(0.01, fut.set_result, ("late",)).start()
    assert await fut == "late"


async def test_awaiting_a_done_future():
    assert await completed(5) == 5


async def test_cancelled_awaiter_leaves_the_future_alone():
    fut = Future()
    waiter = asyncio.create_task(_await(fut))
    await asyncio.sleep(0)  # the waiter now awaits fut
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not fut.cancelled()
    fut.set_result(1)
    assert await fut == 1


async def _await(fut):
    return await fut


# ---- every client of the contract suite ------------------------------------------------


@pytest.fixture(params=sorted(FACTORIES))
def any_client(request):
    env = FACTORIES[request.param](request, FakeClock())
    yield env.client
    env.client.close()


async def test_coroutine_over_every_client(any_client):
    calls = []

    @cached(any_client, ttl=300)
    async def f(x):
        calls.append(x)
        await asyncio.sleep(0)
        return [x]

    assert await asyncio.gather(f(1), f(1), f(2)) == [[1], [1], [2]]
    any_client.wait(f.cache_key(1))
    assert await f(1) == [1]
    assert await f.peek(2) == [2]
    assert sorted(calls) == [1, 2]
    await f.invalidate(1)
    any_client.wait(f.cache_key(1))
    with pytest.raises(CacheMissError):
        await f.peek(1)
