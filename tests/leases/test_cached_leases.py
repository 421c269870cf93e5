"""``@cached`` on clients that hand out leases: what each call form does with them.

Several ``MemcachedClient`` objects of one namespace, each with its own cached function,
stand for several processes (each has its own in-process compute-once): the leases are what
makes them compute once between them. The multi-process stampedes are in test_stampede.py.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from chorde.clients.inproc import InprocCacheClient
from chorde.clients.memcached import MemcachedClient
from chorde.clients.tiered import TieredInclusiveClient
from chorde.decorators import cached
from chorde.leases import (
    ALONE,
    BUSY,
    UNAVAILABLE,
    LeaseRead,
    compute_once,
    live,
    offered,
    wait_steps,
)
from chorde.tags import invalidate_tags
from tests.servers import wait_until

LEASE = 1.0
WAIT = 10
_names = itertools.count()


@pytest.fixture
def processes(memcached):
    """``processes(n, **options)``: ``n`` clients of one fresh namespace ("processes")."""
    made: list[MemcachedClient] = []
    namespace = f"cl{next(_names)}"

    def make(n: int, **options):
        options.setdefault("lease_ttl", LEASE)
        clients = [
            MemcachedClient([memcached.address], checksum_key="k", namespace=namespace, **options)
            for _ in range(n)
        ]
        made.extend(clients)
        return clients

    yield make
    for c in made:
        c.close()


class Computation:
    """A slow function that counts its runs and blocks until released (or a timeout)."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.runs = 0
        self.lock = threading.Lock()
        self.failing: set[int] = set()  # the runs that raise

    def __call__(self, x):
        with self.lock:
            self.runs += 1
            run = self.runs
        time.sleep(self.delay)
        if run in self.failing:
            raise RuntimeError(f"computation {run} failed")
        return f"{x}:{run}"


def _call_all(fns, args, threads_each=5):
    results, errors = [], []

    def call(fn):
        try:
            results.append(fn(*args))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(fn,)) for fn in fns for _ in range(threads_each)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    return results, errors


def _decorate(clients, compute, ttl=60, **options):
    options.setdefault("namespace", "f")
    return [cached(c, ttl, **options)(compute) for c in clients]


def test_processes_compute_once_between_them(processes):
    compute = Computation()
    fns = _decorate(processes(4), compute)
    results, errors = _call_all(fns, (1,))
    assert not errors and set(results) == {"1:1"} and compute.runs == 1
    infos = [f.cache_info() for f in fns]
    assert sum(i.claims for i in infos) == 1  # the winner's
    assert sum(i.misses for i in infos) == 20 and sum(i.coalesced for i in infos) == 16


def test_without_leases_each_process_computes(processes):
    clients = processes(3, lease_ttl=0)
    assert not any(offered(c) for c in clients)
    compute = Computation()
    _, errors = _call_all(_decorate(clients, compute), (1,))
    assert not errors and compute.runs == 3  # once per process, as before leases


def test_an_expired_entry_is_computed_once(processes):
    compute = Computation(delay=0.1)
    fns = _decorate(processes(3), compute, ttl_spread=False)
    assert fns[0](1) == "1:1"
    fns[1].expire(1)
    results, errors = _call_all(fns, (1,))
    assert not errors and set(results) == {"1:2"} and compute.runs == 2


def test_background_refresh_serves_the_stale_value_once_per_cluster(processes):
    """``.bg()`` on a stale entry: every process answers with it at once, and one of them
    refreshes it (the others' refreshes find the lease taken and end)."""
    compute = Computation(delay=0.3)
    fns = _decorate(processes(3), compute)
    assert fns[0](1) == "1:1"  # (a claim: computed under a lease)
    fns[0].expire(1)
    assert [f.bg()(1) for f in fns] == ["1:1"] * 3  # stale, at once
    assert wait_until(lambda: fns[2](1) == "1:2", WAIT)
    time.sleep(0.2)
    assert compute.runs == 2
    assert sum(f.cache_info().claims for f in fns) == 2
    assert sum(f.cache_info().refreshes for f in fns) == 3  # each tried, one computed


def test_expire_keeps_serving_while_the_next_reader_recomputes(processes):
    """``fn.expire``: invalidation that keeps serving. The next plain call (here in process
    0) takes the lease and recomputes; meanwhile ``.bg()`` callers in the other processes
    are served the old value at once (their own refreshes find the lease taken and end) and
    a plain call elsewhere waits for the new value: one computation in all."""
    compute = Computation(delay=0.5)
    fns = _decorate(processes(3), compute)
    assert fns[0](1) == "1:1"
    fns[1].expire(1)
    got: dict[str, str] = {}
    recomputing = threading.Thread(target=lambda: got.update(next_reader=fns[0](1)))
    recomputing.start()
    assert wait_until(lambda: compute.runs == 2, WAIT)  # the next reader computes
    waiting = threading.Thread(target=lambda: got.update(waiter=fns[2](1)))
    waiting.start()
    assert fns[1].bg()(1) == "1:1" and fns[2].bg()(1) == "1:1"  # the old value, meanwhile
    recomputing.join(WAIT)
    waiting.join(WAIT)
    assert got == {"next_reader": "1:2", "waiter": "1:2"}
    assert fns[1].bg()(1) == "1:2" and fns[1](1) == "1:2"
    time.sleep(0.2)  # (a refresh that wrongly went on would have started by now)
    assert compute.runs == 2
    assert sum(f.cache_info().claims for f in fns) == 2  # the first call's, the recompute's


def test_the_async_ttl_window_refreshes_once_per_cluster(processes):
    """Calls in the ``async_ttl`` window are answered with the value held, and the refresh
    each process starts takes the lease or ends: one refresh between the processes."""
    compute = Computation(delay=0.5)
    fns = _decorate(processes(3, lease_ttl=2.0), compute, ttl=4, async_ttl=3, ttl_spread=False)
    assert [f(1) for f in fns] == ["1:1"] * 3
    time.sleep(1.3)  # into the window: under 3 s left
    assert [f(1) for f in fns for _ in range(3)] == ["1:1"] * 9
    assert wait_until(lambda: fns[2](1) == "1:2", WAIT)
    time.sleep(0.2)  # (a second refresh would have started by now)
    assert compute.runs == 2
    assert sum(f.cache_info().refreshes for f in fns) >= 3  # each process tried, one ran


def test_a_failed_computation_lets_the_next_caller_win_at_once(processes):
    """The winner's computation fails: its lease goes back, so a waiter elsewhere computes
    at once rather than when the (here 60 s) lease would lapse."""
    compute = Computation(delay=0.2)
    compute.failing = {1}
    a, b = _decorate(processes(2, lease_ttl=60), compute)
    failures = []

    def first():
        try:
            a(1)
        except RuntimeError as exc:
            failures.append(exc)

    t = threading.Thread(target=first)
    t.start()
    assert wait_until(lambda: compute.runs == 1, WAIT)
    got = []
    waiter = threading.Thread(target=lambda: got.append(b(1)))
    waiter.start()
    waiter.join(WAIT)
    assert got == ["1:2"]  # waited for a's computation, then won when it failed
    t.join(WAIT)
    assert len(failures) == 1


def test_a_result_not_to_be_stored_gives_the_lease_back(processes):
    compute = Computation(delay=0.1)
    a, b = _decorate(processes(2), compute, condition=lambda value: False)
    assert a(1) == "1:1"
    assert b(1) == "1:2"  # nothing stored, no lease left out: computes at once
    assert compute.runs == 2


def test_the_ttl_from_the_result(processes):
    compute = Computation(delay=0.1)
    fns = _decorate(processes(3), compute, ttl=lambda value: 30)
    results, errors = _call_all(fns, (1,))
    assert not errors and set(results) == {"1:1"}
    left = fns[0].client.getTtl(fns[0].cache_key(1))[1]
    assert 25 < left <= 30


def test_invalidate_all_then_a_stampede_computes_once(processes):
    compute = Computation(delay=0.1)
    fns = _decorate(processes(3), compute, tags=["group"])
    assert fns[0](1) == "1:1"
    invalidate_tags(fns[1].client, "group")
    results, errors = _call_all(fns, (1,))
    assert not errors and set(results) == {"1:2"} and compute.runs == 2


def test_forced_refresh_in_the_background_takes_the_lease(processes):
    compute = Computation(delay=0.1)
    a, b = _decorate(processes(2), compute)
    assert a(1) == "1:1"
    assert a.bg().refresh(1).result(WAIT) == "1:2"  # forced: computed though live
    assert b(1) == "1:2"


def test_a_tiered_stack_promotes_what_the_lease_read_found(memcached):
    namespace = f"cl{next(_names)}"
    stacks = [
        TieredInclusiveClient(
            InprocCacheClient(100),
            MemcachedClient([memcached.address], checksum_key="k", namespace=namespace),
        )
        for _ in range(3)
    ]
    try:
        assert all(offered(s) for s in stacks)
        assert stacks[0].lease_ttl == 10.0
        compute = Computation()
        fns = _decorate(stacks, compute)
        _, errors = _call_all(fns, (1,))
        assert not errors and compute.runs == 1
        for fn, stack in zip(fns, stacks, strict=True):
            assert stack.clients[0].getTtl(fn.cache_key(1))[1] > 0  # in every L1
        assert not offered(TieredInclusiveClient(InprocCacheClient(10), InprocCacheClient(10)))
    finally:
        for s in stacks:
            s.close()


async def test_coroutine_functions_compute_once_between_processes(processes):
    runs = []

    async def compute(x):
        runs.append(x)
        await asyncio.sleep(0.3)
        return f"{x}:{len(runs)}"

    fns = _decorate(processes(3), compute)
    results = await asyncio.gather(*(f(1) for f in fns for _ in range(4)))
    assert set(results) == {"1:1"} and len(runs) == 1
    assert sum(f.cache_info().claims for f in fns) == 1


async def test_coroutine_background_refresh_serves_stale(processes):
    runs = []

    async def compute(x):
        runs.append(x)
        await asyncio.sleep(0.2)
        return f"{x}:{len(runs)}"

    fns = _decorate(processes(2), compute)
    assert await fns[0](1) == "1:1"
    await fns[0].expire(1)
    assert [await f.bg()(1) for f in fns] == ["1:1", "1:1"]
    for _ in range(100):
        if await fns[1](1) == "1:2":
            break
        await asyncio.sleep(0.05)
    assert len(runs) == 2


def test_compute_once_for_any_caller(processes):
    a, b = processes(2)
    compute = Computation()
    results = []
    threads = [
        threading.Thread(
            target=lambda c=c: results.append(compute_once(c, "key", lambda: compute("x"), 30))
        )
        for c in (a, b, a, b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == ["x:1"] * 4 and compute.runs == 1
    with pytest.raises(TypeError, match="leases"):
        compute_once(InprocCacheClient(10), "key", lambda: 1, 30)


def test_a_waiter_gives_up_after_three_lease_ttls():
    """The waiting loop itself, driven by hand: a lease that stays busy (each winner dies and
    the next lapse goes to someone else again) is waited for three lease ttls, then the
    caller computes by itself; a read that finds no lease to be had computes at once."""
    steps = wait_steps(live, lease_ttl=0.05)
    call = next(steps)
    reads = 0
    while True:
        assert call[0] in ("read", "sleep")
        if call[0] == "sleep":
            assert 0 < call[1] <= 0.025
            time.sleep(call[1])
            answer = None
        else:
            reads += 1
            answer = LeaseRead(BUSY)
        try:
            call = steps.send(answer)
        except StopIteration as stop:
            outcome, read = stop.value
            break
        assert reads < 10_000
    assert outcome == ALONE and read.state == BUSY and reads > 3
    steps = wait_steps(live, lease_ttl=0.05)
    next(steps)
    with pytest.raises(StopIteration) as stop:
        steps.send(LeaseRead(UNAVAILABLE))
    assert stop.value.value[0] == ALONE


def test_leases_and_coherence_compose(memcached):
    """A coherent client over a stack whose shared tier hands out leases: @cached computes
    once per cluster with the leases (no claim, no bus needed for it), and the bus still
    drops the other processes' L1 copies of a new value."""
    from chorde.clients.coherent import CoherentWrapperClient
    from chorde.mq import LocalBus, LocalHub

    hub = LocalHub()
    namespace = f"cl{next(_names)}"
    members = []
    for _ in range(3):
        l1 = InprocCacheClient(100)
        shared = MemcachedClient([memcached.address], checksum_key="k", namespace=namespace)
        members.append(
            (l1, CoherentWrapperClient(TieredInclusiveClient(l1, shared), LocalBus(hub)))
        )
    try:
        assert all(offered(c) and c.lease_ttl == 10.0 for _, c in members)
        compute = Computation()
        fns = _decorate([c for _, c in members], compute)
        results, errors = _call_all(fns, (1,))
        assert not errors and set(results) == {"1:1"} and compute.runs == 1
        assert sum(f.cache_info().claims for f in fns) == 1
        key = fns[0].cache_key(1)
        assert all(l1.getTtl(key, None)[0] is not None for l1, _ in members)  # in each L1
        fns[0].expire(1)  # announced: the other L1 copies go
        assert all(l1.getTtl(key, (None, -1))[1] <= 0 for l1, _ in members)
        assert fns[1](1) == "1:2" and fns[2](1) == "1:2" and compute.runs == 2
    finally:
        for _, c in members:
            c.close()
