"""AsyncWriteCacheClient (write-behind) and makeFutureWrapper.

The contract suite runs the client too; these tests cover what is specific to it, with a
backend whose writes can be held on a gate so pending state is observable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time

import pytest
import tornado.concurrent
import tornado.gen
import tornado.ioloop

from chorde import CacheMissError
from chorde.clients.asyncache import AsyncWriteCacheClient, makeFutureWrapper
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.futures import Future, completed, failed

WAIT = 5


class GatedClient(InprocCacheClient):
    """Records every write; writes wait while the gate is closed."""

    def __init__(self, size=1000):
        super().__init__(size)
        self.gate = threading.Event()
        self.gate.set()
        self.writing = threading.Event()
        self.writes = []
        self.fail = False
        self.closed = False

    def _hold(self, op, key):
        # Only the client's writer threads are held: a caller writing through is not.
        if threading.current_thread().name.startswith("chorde-writer"):
            self.writing.set()
            assert self.gate.wait(WAIT), "gate never opened"
        self.writes.append((op, key))
        if self.fail:
            raise ConnectionError("backend down")

    def put(self, key, value, ttl):
        self._hold("put", key)
        super().put(key, value, ttl)

    def delete(self, key):
        self._hold("delete", key)
        super().delete(key)

    def expire(self, key):
        self._hold("expire", key)
        super().expire(key)

    def close(self):
        self.closed = True


@pytest.fixture
def backend():
    return GatedClient()


@pytest.fixture
def client(backend):
    c = AsyncWriteCacheClient(backend, writer_threads=1, queue_size=100)
    yield c
    backend.gate.set()
    c.close()


def _block(backend, client):
    """Close the gate and park the writer on a write of key '_blocker'."""
    backend.gate.clear()
    backend.writing.clear()
    client.put("_blocker", 0, 300)
    assert backend.writing.wait(WAIT)


def test_put_returns_before_the_write(backend, client):
    _block(backend, client)
    client.put("k", 1, 300)
    assert backend.get("k", None) is None  # not written yet
    assert client.get("k") == 1  # but visible through the client
    assert client.pending == 2
    backend.gate.set()
    client.wait("k")
    assert backend.get("k") == 1


def test_writes_to_one_key_coalesce(backend, client):
    _block(backend, client)
    for i in range(50):
        client.put("k", i, 300)
    assert client.get("k") == 49
    backend.gate.set()
    assert client.flush(WAIT)
    assert backend.get("k") == 49
    assert backend.writes.count(("put", "k")) == 1


def test_pending_delete_hides_the_value(backend, client):
    backend.put("k", "old", 300)
    _block(backend, client)
    client.delete("k")
    assert client.get("k", None) is None
    assert not client.contains("k")
    with pytest.raises(CacheMissError):
        client.getTtl("k")
    assert dict(client.getMulti(["k"], "absent")) == {"k": "absent"}
    backend.gate.set()
    client.wait("k")
    assert backend.get("k", None) is None


def test_pending_expire_marks_stale(backend, client):
    _block(backend, client)
    client.put("k", "v", 300)
    client.expire("k")
    assert client.get("k", None) is None
    value, ttl = client.getTtl("k")
    assert value == "v" and ttl <= 0
    backend.gate.set()
    assert client.flush(WAIT)
    value, ttl = backend.getTtl("k")
    assert value == "v" and ttl <= 0


def test_expire_of_a_written_value(backend, client):
    backend.put("k", "v", 300)
    _block(backend, client)
    client.expire("k")
    value, ttl = client.getTtl("k")
    assert value == "v" and ttl <= 0
    backend.gate.set()
    client.flush(WAIT)
    assert backend.getTtl("k")[1] <= 0


def test_last_operation_wins(backend, client):
    _block(backend, client)
    client.put("a", 1, 300)
    client.delete("a")
    client.put("b", 1, 300)
    client.delete("b")
    client.put("b", 2, 300)
    backend.gate.set()
    client.flush(WAIT)
    assert backend.get("a", None) is None
    assert backend.get("b") == 2


def test_write_of_a_key_in_flight_waits_its_turn(backend, client):
    backend.gate.clear()
    backend.writing.clear()
    client.put("k", 1, 300)
    assert backend.writing.wait(WAIT)  # the writer is inside put("k", 1)
    client.put("k", 2, 300)
    assert client.get("k") == 2
    backend.gate.set()
    client.flush(WAIT)
    assert backend.get("k") == 2
    assert backend.writes == [("put", "k"), ("put", "k")]


def test_getTtl_of_pending_put(backend, client):
    _block(backend, client)
    client.put("k", "v", 100)
    value, ttl = client.getTtl("k")
    assert value == "v" and 90 < ttl <= 100
    got = dict(client.getTtlMulti(["k", "zz"], None))
    assert got["k"][0] == "v" and got["zz"] == (None, -1.0)


def test_add_and_renew_wait_for_pending_writes(backend, client):
    _block(backend, client)
    client.put("k", 1, 300)
    result = []
    adder = threading.Thread(target=lambda: result.append(client.add("k", 2, 300)))
    adder.start()
    backend.gate.set()
    adder.join(WAIT)
    assert result == [False]
    assert client.get("k") == 1
    assert client.renew("k", 500)
    assert backend.getTtl("k")[1] > 400


def test_full_queue_writes_through(backend):
    client = AsyncWriteCacheClient(backend, writer_threads=1, queue_size=2)
    try:
        _block(backend, client)  # in flight, not queued
        client.put("a", 1, 300)
        client.put("b", 2, 300)
        assert client.pending == 3
        client.put("c", 3, 300)  # queue full: applied in this thread, writer still held
        assert client.write_throughs == 1
        assert backend.get("c") == 3
        assert backend.get("a", None) is None
        backend.gate.set()
        client.put("a", 10, 300)  # a pending key still coalesces
        assert client.flush(WAIT)
        assert [backend.get(k) for k in "abc"] == [10, 2, 3]
    finally:
        backend.gate.set()
        client.close()


def test_failed_write_is_logged_and_counted(backend, client, caplog):
    backend.fail = True
    with caplog.at_level(logging.ERROR, logger="chorde.clients.asyncache"):
        client.put("k", 1, 300)
        client.flush(WAIT)
    assert client.stats.errors == 1
    [record] = caplog.records
    assert "put of key 'k' failed" in record.getMessage()


def test_clear_drops_pending_writes(backend, client):
    _block(backend, client)
    client.put("k", 1, 300)
    releaser = threading.Timer(0.05, backend.gate.set)
    releaser.start()
    client.clear()  # waits for the in-flight write, then clears
    releaser.join()
    assert client.get("k", None) is None
    assert backend.get("_blocker", None) is None
    assert client.pending == 0


def test_close_flushes_and_closes_the_backend(backend):
    client = AsyncWriteCacheClient(backend, writer_threads=3)
    for i in range(100):
        client.put(i, i, 300)
    client.close()
    assert backend.closed
    assert [backend.get(i) for i in range(100)] == list(range(100))
    assert all(not t.is_alive() for t in client._threads)
    with pytest.raises(RuntimeError, match="closed"):
        client.put("late", 1, 300)
    client.close()  # idempotent


def test_wait_timeout(backend, client):
    _block(backend, client)
    client.wait("_blocker", timeout=0.01)  # returns although the write is held
    assert client.flush(timeout=0.01) is False
    backend.gate.set()
    assert client.flush(WAIT) is True


def test_concurrent_writers_end_with_each_threads_last_value():
    backend = InprocCacheClient(10_000)
    client = AsyncWriteCacheClient(backend, writer_threads=2, queue_size=50)
    expected = {}

    def writer(tid):
        rng = random.Random(tid)
        last = {}
        for i in range(2000):
            key = (tid, rng.randrange(30))
            if rng.random() < 0.2:
                client.delete(key)
                last[key] = None
            else:
                client.put(key, i, 300)
                last[key] = i
            assert client.get(key, None) == last[key]  # read-your-writes
        expected.update(last)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
    assert client.flush(WAIT)
    assert {k: backend.get(k, None) for k in expected} == expected
    client.close()


def test_a_put_that_expired_in_the_queue_is_stored_stale_like_a_direct_put(backend, client):
    # chorde 1.x's case: put(4, 15, 0) then flush; the wrapped client keeps the stale value.
    _block(backend, client)
    client.put(4, 15, 0)
    backend.gate.set()
    assert client.flush(WAIT)
    direct = GatedClient()
    direct.put(4, 15, 0)
    for target in (backend, client, direct):
        value, ttl = target.getTtl(4)
        assert value == 15 and ttl <= 0, target
        assert target.get(4, None) is None


def test_writer_options_are_keywords(backend):
    # chorde 1.x took (client, queue_size, workers): positional numbers are refused.
    with pytest.raises(TypeError, match=r"by keyword.*writer_threads=\.\.\., queue_size="):
        AsyncWriteCacheClient(backend, 100, 1)
    with pytest.warns(DeprecationWarning, match="writer_queue_size=...\\) is spelled queue_size="):
        renamed = AsyncWriteCacheClient(backend, writer_queue_size=7, writer_workers=2)
    try:
        assert (renamed._queue_size, renamed._writers) == (7, 2)
    finally:
        renamed.close()
    with pytest.raises(TypeError, match=r"no option 'overflow'.*backpressure"):
        AsyncWriteCacheClient(backend, overflow=True)


def test_bad_arguments(backend):
    with pytest.raises(TypeError, match="BaseCacheClient"):
        AsyncWriteCacheClient({})
    with pytest.raises(ValueError, match="writer_threads"):
        AsyncWriteCacheClient(backend, writer_threads=0)
    with pytest.raises(TypeError, match="queue_size"):
        AsyncWriteCacheClient(backend, queue_size="10")


def test_unhashable_key_is_rejected_at_the_call(client):
    with pytest.raises(TypeError, match=r"\[1\]"):
        client.put([1], 1, 300)
    with pytest.raises(TypeError, match=r"\[1\]"):
        client.delete([1])
    assert client.pending == 0


def test_is_async_and_blocking(backend, client):
    assert client.is_async is True
    assert client.blocking is backend.blocking


async def test_awaitable_flush_and_close(backend):
    client = AsyncWriteCacheClient(backend)
    await client.aput("k", 1, 300)
    assert await client.aflush(WAIT)
    assert backend.get("k") == 1
    await client.aclose()
    assert backend.closed


def test_decorator_over_write_behind(backend, client):
    calls = []

    @cached(client, ttl=300)
    def f(x):
        calls.append(x)
        return x * 2

    _block(backend, client)
    assert f(2) == 4
    assert f(2) == 4  # served from the pending write
    assert calls == [2]
    backend.gate.set()
    client.wait(f.cache_key(2))
    # Stamped with the function's revision (a write-behind client is not process-private).
    assert backend.get(f.cache_key(2)).value == 4


# ---- makeFutureWrapper ---------------------------------------------------------------


def _resolve_later(value=None, exc=None):
    fut = Future()

    def resolve():
        time.sleep(0.01)
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    threading.Thread(target=resolve).start()
    return fut


def test_wrap_into_concurrent_future():
    # Ours already are concurrent.futures.Future objects: returned as they are.
    ours = _resolve_later("x")
    assert makeFutureWrapper(concurrent.futures.Future)(ours) is ours

    class Other(concurrent.futures.Future):
        pass

    wrap = makeFutureWrapper(Other)
    out = wrap(_resolve_later("x"))
    assert type(out) is Other
    assert out.result(WAIT) == "x"
    with pytest.raises(KeyError):
        wrap(_resolve_later(exc=KeyError("k"))).result(WAIT)


async def test_wrap_into_asyncio_future():
    wrap = makeFutureWrapper(asyncio.Future)
    out = wrap(_resolve_later(7))
    assert isinstance(out, asyncio.Future)
    assert out.get_loop() is asyncio.get_running_loop()
    assert await out == 7
    with pytest.raises(ValueError):
        await wrap(_resolve_later(exc=ValueError("v")))
    assert await wrap(completed(3)) == 3
    src = Future()
    src.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wrap(src)


def test_tornado_future_is_asyncio_future():
    # tornado >= 5 uses asyncio.Future as its Future: the asyncio path covers it.
    assert tornado.concurrent.Future is asyncio.Future


def test_seed_tornado_coroutine_pattern():
    WF = makeFutureWrapper(tornado.concurrent.Future)

    @cached(InprocCacheClient(10), ttl=300)
    def some_func(x):
        return x * 3

    @tornado.gen.coroutine
    def get():
        first = yield WF(some_func.future()(2))
        # Without wrapping: tornado accepts concurrent futures, so ours work directly.
        second = yield some_func.future()(2)
        return first, second

    assert tornado.ioloop.IOLoop.current().run_sync(get, timeout=WAIT) == (6, 6)


def test_wrap_into_duck_typed_future():
    class Deferred:
        def __init__(self):
            self.outcome = None

        def set_result(self, value):
            self.outcome = ("ok", value)

        def set_exception(self, exc):
            self.outcome = ("error", exc)

    wrap = makeFutureWrapper(Deferred)
    assert wrap(completed(1)).outcome == ("ok", 1)
    err = KeyError("x")
    assert wrap(failed(err)).outcome == ("error", err)


def test_wrapper_rejects_non_future_classes():
    with pytest.raises(TypeError, match="future class"):
        makeFutureWrapper(5)
    with pytest.raises(TypeError, match="set_result"):
        makeFutureWrapper(int)
