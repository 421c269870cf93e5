"""Faults, for real: Redis killed and restarted, frozen (SIGSTOP), unreachable behind a
faulty proxy, restarted from its persistence with older values. Every call returns (a miss
or a dropped write), is bounded by its timeout, and the client recovers by itself.

Bounds are asserted generously (a loaded machine is slow, never fast); the figures measured
are printed at the end of the run (``redis figures``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from chorde import CacheMissError
from chorde.clients.redis import RedisClient
from tests.chaos.proxy import ChaosProxy
from tests.servers import wait_until

SECRET = "redis-test-secret"
TTL = 300


def _fast_failing(address, **options):
    options = {"connect_timeout": 0.3, "timeout": 0.3, "retry_interval": 0.3, **options}
    return RedisClient(address, checksum_key=SECRET, **options)


def _every_operation(c, key):
    """Every call of the contract once; none may raise."""
    c.get(key, None)
    c.getTtl(key, None)
    c.contains(key)
    c.put(key, 1, TTL)
    c.add(key, 1, TTL)
    c.renew(key, TTL)
    c.expire(key)
    c.touch(key, TTL)
    c.delete(key)
    dict(c.getMulti([key, "other"], None))
    c.putMulti({key: 1, "other": 2}, TTL)
    with contextlib.suppress(CacheMissError):
        c.update(key, lambda v: v)


def test_killed_server_degrades_to_misses_logged_once_and_recovers(redis_server, caplog, figures):
    c = _fast_failing(redis_server.address)
    c.put("k", "before", TTL)
    caplog.set_level(logging.WARNING, "chorde.clients.redis")
    redis_server.kill()
    for i in range(50):
        _every_operation(c, f"key{i}")
    assert c.get("k", None) is None
    c.clear()
    c.purge()
    assert c.capacity == 0 and c.usage == 0
    down = [r for r in caplog.records if "treating it as down" in r.getMessage()]
    assert len(down) == 1  # once per outage, not once per call
    assert c.stats.errors > 50

    redis_server.start()  # same port, empty
    back_at = time.monotonic()

    def back():
        c.put("k", "after", TTL)
        return c.get("k", None) == "after"

    assert wait_until(back, 10)
    figures.record("standalone: restarted server used again after", time.monotonic() - back_at)
    c.close()


def test_refused_connections_never_raise(unused_port):
    c = RedisClient(f"127.0.0.1:{unused_port}", checksum_key=SECRET, retry_interval=0.05)
    for i in range(5):
        _every_operation(c, i)
        time.sleep(0.06)

    async def awaited():
        assert await c.aget("k", "miss") == "miss"
        await c.aput("k", 1, TTL)
        assert await c.agetMulti(["k"], 0) == [("k", 0)]

    asyncio.run(awaited())
    assert c.stats.errors >= 5
    c.close()


def test_a_frozen_server_never_blocks_a_call_past_its_timeout(redis_server, figures):
    c = _fast_failing(redis_server.address, timeout=0.5, retry_interval=0.5)
    c.put("k", 1, TTL)
    redis_server.suspend()
    durations: list[float] = []

    def calls():
        for i in range(20):
            for op, args in ((c.get, ("k", None)), (c.put, (("k", i), i, TTL))):
                started = time.monotonic()
                op(*args)
                durations.append(time.monotonic() - started)
            time.sleep(0.05)

    worker = threading.Thread(target=calls)
    try:
        worker.start()
        worker.join(60)  # without the timeout a call would hang for good
        assert not worker.is_alive()
    finally:
        redis_server.resume()
    figures.record("frozen server: longest blocked call (timeout 0.5 s)", max(durations))
    assert max(durations) < 0.5 + 1.0  # generous: the timeout plus a slow machine's margin
    assert wait_until(lambda: c.get("k", None) == 1, 10)
    c.close()


def test_awaited_calls_to_a_frozen_server_let_the_event_loop_run(redis_server, figures):
    c = _fast_failing(redis_server.address, timeout=0.5)
    c.put("k", 1, TTL)
    redis_server.suspend()

    async def scenario():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        assert await c.aget("k", "miss") == "miss"
        took = time.monotonic() - started
        stop.set()
        await task
        return ticks, took

    try:
        ticks, took = asyncio.run(scenario())
    finally:
        redis_server.resume()
    figures.record("frozen server: awaited get returned after (timeout 0.5 s)", took)
    assert ticks > 3  # the loop ran while the call waited
    c.close()


def test_a_blackholed_link_is_bounded_and_heals(redis_server, figures):
    with ChaosProxy(redis_server.port) as proxy:
        c = _fast_failing(proxy.address, timeout=0.4, retry_interval=0.3)
        c.put("k", 1, TTL)
        proxy.blackhole()
        started = time.monotonic()
        assert c.get("k", None) is None
        figures.record(
            "blackholed link: get returned after (timeout 0.4 s)", time.monotonic() - started
        )
        proxy.heal()
        proxy.reset()  # the connections that saw the hole are garbage: new ones
        healed = time.monotonic()
        assert wait_until(lambda: c.get("k", None) == 1, 10)
        figures.record("blackholed link: served again after healing", time.monotonic() - healed)
        c.close()


def test_a_failed_write_never_lets_an_older_value_come_back(redis_factory):
    # A server that persists every write: restarted, it comes back with what it had.
    server = redis_factory(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    c = _fast_failing(server.address)
    c.put("deleted", "old", TTL)
    c.put("rewritten", "old", TTL)
    c.put("kept", "old", TTL)
    server.kill()
    c.delete("deleted")  # both fail: the server is down
    c.put("rewritten", "new", TTL)
    server.start()  # from its append-only file: the old values are back on the server
    assert wait_until(lambda: c.get("kept", None) == "old", 10)
    assert c.get("deleted", None) is None
    assert c.get("rewritten", None) is None  # not "old": deleted before it is read
    assert c.get("kept") == "old"
    c.close()


def test_a_clear_that_failed_is_redone_before_anything_is_served(redis_factory):
    server = redis_factory(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    c = _fast_failing(server.address)
    c.put("k", "before the clear", TTL)
    server.kill()
    c.clear()  # fails
    server.start()  # with the old generation and the old entry
    assert wait_until(lambda: (c.put("probe", 1, TTL), c.get("probe", None))[1] == 1, 10)
    assert c.get("k", None) is None
    c.close()


def test_past_its_size_the_write_log_clears_the_namespace(redis_factory):
    server = redis_factory(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    c = _fast_failing(server.address, write_log_size=3)
    c.putMulti({i: "old" for i in range(10)}, TTL)
    server.kill()
    for i in range(5):
        c.put(i, "new", TTL)  # dropped: more than the log keeps
    server.start()
    assert wait_until(lambda: (c.put("probe", 1, TTL), c.get("probe", None))[1] == 1, 10)
    assert dict(c.getMulti(range(10), None)) == dict.fromkeys(range(10))
    c.close()


def test_a_frozen_cluster_master_blocks_no_call_past_its_timeout(fresh_cluster, figures):
    c = RedisClient(
        cluster=[n.address for n in fresh_cluster.nodes],
        checksum_key=SECRET,
        timeout=0.5,
        retry_interval=0.3,
    )
    items = {i: i for i in range(100)}
    c.putMulti(items, TTL)
    victim = fresh_cluster.master_nodes()[0]
    victim.suspend()
    durations: list[float] = []
    served: list[int] = []
    try:
        deadline = time.monotonic() + 20  # bounded: the replica takes over within seconds
        while time.monotonic() < deadline:
            for key in (1, 2, 3, 4, 5):
                started = time.monotonic()
                c.get(key, None)
                durations.append(time.monotonic() - started)
            started = time.monotonic()
            got = dict(c.getMulti(list(items), None))
            durations.append(time.monotonic() - started)
            served.append(sum(v is not None for v in got.values()))
            if served[-1] == len(items):
                break
    finally:
        victim.resume()
    figures.record("cluster, frozen master: longest blocked call (timeout 0.5 s)", max(durations))
    assert served[-1] == len(items)  # its replica took over
    assert max(durations) < 2 * 0.5 + 1.0  # a call, and at most one slot map refresh
    c.close()
