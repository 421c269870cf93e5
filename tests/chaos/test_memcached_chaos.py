"""MemcachedClient under faults: memcached frozen (SIGSTOP), killed and restarted on its
port, cut off or made lossy by the chaos proxy, while threads and an event loop use it.

The bounds asserted are those docs/operations.md ("memcached under faults") states, each
with generous room for this loaded 2-CPU machine, none depending on its speed:

* every call returns within the client's ``timeout`` (1 s here) plus :data:`MARGIN`,
  whatever the other calls to the same server are doing: 20 concurrent awaitables and 8
  threads on a frozen server, a stalled or blackholed link, one hung server of two;
* a write that could not reach its server never lets an older value be read by the client
  afterwards: not while the server is down, not when it is back (not even the value of a
  write that timed out and was applied when the server thawed);
* a server restarted on its port, or back after an outage, is used again within
  :data:`RECOVERY` (2 s) of its return, by every thread and event loop;
* a socket to the process before a restart, or one lost connect, does not mark a server
  down.

Each test records what it measured (``figures``), shown in the chaos summary.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from chorde.clients.memcached import MemcachedClient
from tests.chaos.conftest import SECRET, wait_for

TTL = 300
TIMEOUT = 1.0
#: What a call may take beyond its timeout here (scheduling, a loaded machine).
MARGIN = 0.5
#: How soon a server that is back must be used again (the issue's bound).
RECOVERY = 2.0
OLD = "old"


def _client(*addresses: str, **options) -> MemcachedClient:
    options = {"timeout": TIMEOUT, "connect_timeout": 0.5, **options}
    return MemcachedClient(list(addresses), checksum_key=SECRET, **options)


def _timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def _in_threads(n: int, work: Callable[[int], float]) -> list[float]:
    """Run ``work(i)`` on ``n`` threads (joined, bounded); what each returned."""
    results: list[float] = [float("inf")] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return results


def _server(client: MemcachedClient, key: object = "k"):
    return client._locate(key)[2]


# ---- every call bounded by its own timeout ------------------------------------------------


def _hammer_while_hung(c: MemcachedClient) -> list[float]:
    """20 concurrent awaitables (reads and writes) on one event loop and 8 threads, all at
    once: how long each call took."""

    async def one(i: int) -> float:
        start = time.monotonic()
        if i % 4 == 0:
            await c.aput(("a", i), i, TTL)
        elif i % 4 == 1:
            await c.agetMulti([("a", i), "k"], None)
        else:
            await c.aget("k", None)
        return time.monotonic() - start

    async def loop_calls() -> list[float]:
        return await asyncio.gather(*(one(i) for i in range(20)))

    async_times: list[float] = []
    loop_thread = threading.Thread(target=lambda: async_times.extend(asyncio.run(loop_calls())))
    loop_thread.start()

    def thread_call(i: int) -> float:
        if i % 2:
            return _timed(lambda: c.put(("t", i), i, TTL))
        return _timed(lambda: c.get("k", None))

    thread_times = _in_threads(8, thread_call)
    loop_thread.join(30)
    assert len(async_times) == 20
    return async_times + thread_times


def test_concurrent_calls_to_a_frozen_server_each_return_within_the_timeout(memcached, figures):
    c = _client(memcached.address)
    c.put("k", 1, TTL)
    asyncio.run(c.aget("k"))  # connections open before the freeze
    memcached.suspend()
    try:
        times = _hammer_while_hung(c)
        later = _timed(lambda: c.get("k", None))  # marked down: at once
    finally:
        memcached.resume()
    figures.record("memcached: longest call, frozen server (timeout 1 s)", max(times))
    assert max(times) <= TIMEOUT + MARGIN, sorted(times)
    assert later <= MARGIN
    c.close()


def test_calls_over_a_stalled_or_blackholed_link_return_within_the_timeout(
    memcached, chaos_proxy, figures
):
    proxy = chaos_proxy(memcached.port)
    longest = 0.0
    for fault in (proxy.stall, proxy.blackhole):
        c = _client(proxy.address)
        c.put("k", 1, TTL)
        fault(True)
        times = _hammer_while_hung(c)
        proxy.heal()
        longest = max(longest, *times)
        assert max(times) <= TIMEOUT + MARGIN, (fault.__name__, sorted(times))
        c.close()
    figures.record("memcached: longest call, stalled or blackholed link", longest)


def test_hung_servers_cost_the_calls_to_the_others_nothing_more(memcached_factory, figures):
    hung, hung_too, healthy = memcached_factory(3)
    c = _client(hung.address, hung_too.address, healthy.address)
    keys = list(range(100))
    c.putMulti({k: k for k in keys}, TTL)
    on_healthy = [k for k in keys if _server(c, k).name == healthy.address]
    assert 0 < len(on_healthy) < len(keys)
    hung.suspend()
    hung_too.suspend()
    try:
        times = {
            "getMulti": _timed(lambda: dict(c.getMulti(keys, None))),
            "putMulti": _timed(lambda: c.putMulti({k: -k for k in keys}, TTL)),
            "clear": _timed(c.clear),
            "capacity": _timed(lambda: c.capacity),
            "agetMulti": _timed(lambda: asyncio.run(c.agetMulti(keys, None))),
        }
        got = dict(c.getMulti(on_healthy, None))  # the healthy server's, cleared by now
    finally:
        hung.resume()
        hung_too.resume()
    figures.record("memcached: longest batch call, two hung servers of three", max(times.values()))
    assert max(times.values()) <= TIMEOUT + MARGIN, times
    assert got == dict.fromkeys(on_healthy)  # the clear reached the healthy server
    c.close()


# ---- writes that survive an outage -------------------------------------------------------


def _never_old_until_back(c: MemcachedClient, keys: list, bad: set, since: float) -> float:
    """Read ``keys`` until the client uses its server again (bounded): no read may return a
    value in ``bad``. Returns how long after ``since`` a new put was read back."""

    def back() -> bool:
        for key in keys:
            got = c.get(key, None)
            assert got not in bad, (key, got)
        c.put("probe", since, TTL)
        return c.get("probe", None) == since

    wait_for(back, RECOVERY + 3, "the server used again")
    recovered = time.monotonic() - since
    for _ in range(20):  # and for a while after: nothing older comes back
        for key in keys:
            assert c.get(key, None) not in bad
        time.sleep(0.01)
    return recovered


def test_writes_during_a_freeze_never_let_an_older_value_back(memcached, figures):
    c = _client(memcached.address)
    keys = ["a", "b", "c", "k"]
    c.putMulti(dict.fromkeys(keys, OLD), TTL)
    memcached.suspend()
    try:
        # Two writes reach the frozen server's socket and time out; it applies them when it
        # thaws. The writes after them are not even sent (the server is down by then).
        _in_threads(2, lambda i: _timed(lambda: c.put("k", "v1", TTL) if i else c.delete("a")))
        assert _server(c).down
        c.delete("a")
        c.put("b", "new", TTL)
        asyncio.run(c.adelete("c"))
        c.put("k", "v2", TTL)  # v1, applied on thaw, is older than this lost write
    finally:
        memcached.resume()
    thawed = time.monotonic()
    recovered = _never_old_until_back(c, keys, {OLD, "v1"}, thawed)
    figures.record("memcached: used again after a thaw", recovered)
    assert recovered <= RECOVERY
    assert [c.get(k, None) for k in keys] == [None] * 4  # undone, not rewritten
    c.close()


def test_writes_while_unreachable_never_let_an_older_value_back(memcached, chaos_proxy, figures):
    proxy = chaos_proxy(memcached.port)
    c = _client(proxy.address)
    c.putMulti({"deleted": OLD, "overwritten": OLD}, TTL)
    proxy.refuse()
    proxy.reset()
    c.delete("deleted")
    c.put("overwritten", "new", TTL)
    time.sleep(0.5)  # an outage of a few probes
    proxy.heal()
    healed = time.monotonic()
    recovered = _never_old_until_back(c, ["deleted", "overwritten"], {OLD}, healed)
    figures.record("memcached: used again after an outage (new put read back)", recovered)
    assert recovered <= RECOVERY
    c.close()


# ---- recovery in seconds -----------------------------------------------------------------


def test_a_restarted_server_is_used_again_within_two_seconds(memcached, figures):
    c = _client(memcached.address)
    stop = threading.Event()
    restarted: list[float] = []
    recovered: dict[str, float] = {}

    def note(worker: str) -> None:
        if restarted and worker not in recovered:
            recovered[worker] = time.monotonic() - restarted[0]

    def thread_worker(i: int) -> float:
        for n in range(100_000):  # bounded; stops when told
            if stop.is_set():
                break
            c.put(("t", i), n, TTL)
            if c.get(("t", i), None) == n:
                note(f"thread {i}")
            time.sleep(0.005)
        return 0.0

    async def loop_worker() -> None:
        for n in range(100_000):
            if stop.is_set():
                break
            await c.aput("loop", n, TTL)
            if await c.aget("loop", None) == n:
                note("event loop")
            await asyncio.sleep(0.005)

    loop_thread = threading.Thread(target=lambda: asyncio.run(loop_worker()))
    loop_thread.start()
    workers = threading.Thread(target=lambda: _in_threads(4, thread_worker))
    workers.start()
    try:
        time.sleep(0.5)  # every worker has its connections
        memcached.stop()
        time.sleep(0.3)  # calls meanwhile fail: the server is marked down
        memcached.start()  # same port, a new process
        restarted.append(time.monotonic())
        wait_for(lambda: len(recovered) == 5, RECOVERY + 3, "every worker served again")
    finally:
        stop.set()
        workers.join(30)
        loop_thread.join(30)
    figures.record(
        "memcached: used again after a restart (slowest of 5 workers)", max(recovered.values())
    )
    assert max(recovered.values()) <= RECOVERY, recovered
    c.close()


def test_a_restart_between_calls_marks_nothing_down(memcached, figures):
    c = _client(memcached.address)
    c.put("k", 1, TTL)
    _in_threads(4, lambda i: _timed(lambda: c.get("k")))  # each thread has a socket
    asyncio.run(c.aget("k"))
    memcached.restart()  # every socket the client has is to the process gone
    times = _in_threads(4, lambda i: _timed(lambda: c.put(("t", i), i, TTL)))
    assert asyncio.run(c.aget(("t", 0))) == 0
    assert [c.get(("t", i)) for i in range(4)] == list(range(4))
    assert not _server(c).down and c.stats.errors == 0
    figures.record("memcached: first call after a restart (slowest of 4 threads)", max(times))
    assert max(times) <= TIMEOUT
    c.close()


def test_lost_connects_do_not_mark_a_healthy_server_down(memcached, chaos_proxy, figures):
    proxy = chaos_proxy(memcached.port)
    c = _client(proxy.address)
    times = []
    for i in range(4):  # each thread's first connection is lost (reset as it is accepted)
        proxy.drop(1)
        times += _in_threads(1, lambda _, i=i: _timed(lambda: c.put(("t", i), i, TTL)))
    proxy.drop(1)
    assert asyncio.run(c.aget(("t", 0))) == 0  # the event loop's too
    assert [c.get(("t", i)) for i in range(4)] == list(range(4))
    assert proxy.resets == 5
    assert not _server(c).down and c.stats.errors == 0
    figures.record("memcached: call whose first connect was lost (slowest)", max(times))
    assert max(times) <= TIMEOUT
    # A link that loses every connect marks it down, and it is used again once healed.
    proxy.reset()
    proxy.drop(None)
    c.get("k", None)
    assert _server(c).down
    proxy.heal()
    wait_for(lambda: not _server(c).down, RECOVERY, "the server used again")
    c.close()
