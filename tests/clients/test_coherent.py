"""CoherentWrapperClient in one process: several "processes" joined by a LocalHub.

Each member has its own L1 and bus and shares the L2 (an in-process client here, memcached
in the contract suite and in tests/mq/test_cluster.py, which runs real processes).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chorde import CacheMissError
from chorde.clients.coherent import CoherentWrapperClient
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.tiered import TieredInclusiveClient
from chorde.errors import ConfigurationError
from chorde.mq import LocalBus, LocalHub, MessageType
from tests.servers import wait_until

TTL = 300


class Cluster:
    """``n`` coherent clients over one shared L2, each with its own L1 and bus."""

    def __init__(self, n: int, **kw) -> None:
        self.hub = LocalHub()
        self.shared = InprocCacheClient(10_000)
        self.l1s = [InprocCacheClient(1000) for _ in range(n)]
        self.buses = [LocalBus(self.hub) for _ in range(n)]
        self.clients = [
            CoherentWrapperClient(TieredInclusiveClient(l1, self.shared), bus, **kw)
            for l1, bus in zip(self.l1s, self.buses, strict=True)
        ]

    def in_l1(self, key) -> list[bool]:
        return [l1.contains(key) for l1 in self.l1s]


@pytest.fixture
def trio() -> Cluster:
    return Cluster(3, timeout=2.0, poll_interval=0.02)


# ---- invalidation ----------------------------------------------------------------------


def test_reads_fill_each_l1(trio):
    a, b, c = trio.clients
    a.put("k", 1, TTL)
    assert [b.get("k"), c.get("k")] == [1, 1]
    assert trio.in_l1("k") == [True, True, True]


@pytest.mark.parametrize("op", ["put", "delete", "expire", "add-after-expire", "putMulti"])
def test_a_write_drops_the_other_copies(trio, op):
    a, b, c = trio.clients
    a.put("k", 1, TTL)
    b.get("k"), c.get("k")
    if op == "put":
        b.put("k", 2, TTL)
    elif op == "delete":
        b.delete("k")
    elif op == "expire":
        b.expire("k")
    elif op == "add-after-expire":
        trio.shared.expire("k")
        assert b.add("k", 2, TTL)
    else:
        b.putMulti({"k": 2, "j": 3}, TTL)
    assert trio.in_l1("k")[0] is False and trio.in_l1("k")[2] is False
    expected = None if op in ("delete", "expire") else 2
    assert [cl.get("k", None) for cl in (a, b, c)] == [expected] * 3


def test_own_write_keeps_own_copy(trio):
    a, b, _ = trio.clients
    a.put("k", 1, TTL)
    assert trio.in_l1("k")[0]
    b.get("k")
    a.put("k", 2, TTL)
    assert trio.in_l1("k") == [True, False, False]
    assert b.get("k") == 2


def test_clear_drops_every_private_copy(trio):
    a, b, c = trio.clients
    for i in range(5):
        a.put(i, i, TTL)
        b.get(i), c.get(i)
    c.clear()
    assert not any(l1.usage for l1 in trio.l1s)
    assert trio.shared.usage == 0


def test_a_read_overtaken_by_an_invalidation_leaves_no_copy():
    # The read fetches the old value from L2; the writer's invalidation lands before the
    # reader promotes it into L1. Without the sequence check the old value would stay.
    hub = LocalHub()
    shared = InprocCacheClient(100)
    l1 = InprocCacheClient(100)
    writer = CoherentWrapperClient(
        TieredInclusiveClient(InprocCacheClient(100), shared), LocalBus(hub)
    )
    shared.put("k", "old", TTL)

    class Racing(InprocCacheClient):
        def getTtl(self, key, default=None):
            found = shared.getTtl(key, default)
            if key == "k":
                writer.put("k", "new", TTL)  # lands between the read and the promotion
            return found

    reader = CoherentWrapperClient(TieredInclusiveClient(l1, Racing(100)), LocalBus(hub))
    assert reader.get("k") == "old"  # the read itself was legitimately concurrent
    assert not l1.contains("k")
    assert shared.get("k") == "new"


def test_other_channels_are_not_affected():
    hub = LocalHub()
    shared = InprocCacheClient(100)
    l1a, l1b = InprocCacheClient(100), InprocCacheClient(100)
    a = CoherentWrapperClient(TieredInclusiveClient(l1a, shared), LocalBus(hub), channel="x")
    b = CoherentWrapperClient(TieredInclusiveClient(l1b, shared), LocalBus(hub), channel="y")
    a.put("k", 1, TTL)
    b.get("k")
    a.put("k", 2, TTL)
    assert l1b.get("k") == 1  # different stacks by declaration: not invalidated


def test_two_clients_on_one_bus_invalidate_each_other():
    bus = LocalBus()
    shared = InprocCacheClient(100)
    l1a, l1b = InprocCacheClient(100), InprocCacheClient(100)
    a = CoherentWrapperClient(TieredInclusiveClient(l1a, shared), bus)
    b = CoherentWrapperClient(TieredInclusiveClient(l1b, shared), bus)
    a.put("k", 1, TTL)
    b.get("k")
    a.delete("k")
    assert not l1b.contains("k")
    assert b.get("k", None) is None


def test_multi_reads(trio):
    a, b, _ = trio.clients
    a.putMulti({i: i * 10 for i in range(10)}, TTL)
    assert dict(b.getMulti([1, 2, 99], "x")) == {1: 10, 2: 20, 99: "x"}
    assert trio.in_l1(1)[1] and trio.in_l1(2)[1]
    assert dict(b.getTtlMulti([3]))[3][0] == 30


def test_a_batch_read_overtaken_by_an_invalidation_leaves_no_copy():
    hub = LocalHub()
    shared = InprocCacheClient(100)
    l1 = InprocCacheClient(100)
    writer = CoherentWrapperClient(
        TieredInclusiveClient(InprocCacheClient(100), shared), LocalBus(hub)
    )
    shared.putMulti({"k": "old", "j": "j"}, TTL)

    class Racing(InprocCacheClient):
        def getTtlMulti(self, keys, default=None):
            found = list(shared.getTtlMulti(keys, default))
            writer.put("k", "new", TTL)  # lands between the read and the promotion
            return iter(found)

    reader = CoherentWrapperClient(TieredInclusiveClient(l1, Racing(100)), LocalBus(hub))
    assert dict(reader.getMulti(["k", "j"])) == {"k": "old", "j": "j"}
    assert not l1.contains("k")
    assert shared.get("k") == "new"


def test_batch_and_single_reads_see_the_same_tiers():
    hub = LocalHub()
    l1, l2, shared = InprocCacheClient(100), InprocCacheClient(100), InprocCacheClient(100)
    client = CoherentWrapperClient(TieredInclusiveClient(l1, l2, shared), LocalBus(hub))
    l2.put("in-l2", 1, TTL)  # a private tier below L1 answers before the shared one
    l1.put("stale-in-l1", 2, TTL)
    l1.expire("stale-in-l1")
    batch = dict(client.getTtlMulti(["in-l2", "stale-in-l1", "nowhere"], "d"))
    assert batch["in-l2"][0] == 1 and batch["in-l2"][1] > 0
    assert l1.get("in-l2") == 1  # promoted above the tier it was found in
    assert batch["stale-in-l1"][0] == 2 and batch["stale-in-l1"][1] <= 0
    assert batch["nowhere"] == ("d", -1.0)
    for key in ("in-l2", "stale-in-l1"):
        assert client.getTtl(key)[0] == batch[key][0]


def test_not_tiered_client_is_the_shared_tier():
    hub = LocalHub()
    shared = InprocCacheClient(100)
    a = CoherentWrapperClient(shared, LocalBus(hub))
    b = CoherentWrapperClient(shared, LocalBus(hub))
    a.put("k", 1, TTL)
    assert b.get("k") == 1
    assert b.compute_once("c", lambda: 5, TTL) == 5


# ---- degraded mode -----------------------------------------------------------------------


def test_a_write_the_shared_tier_lost_leaves_no_private_copy(memcached):
    from chorde.clients.memcached import MemcachedClient

    shared = MemcachedClient([memcached.address], "secret", timeout=0.3, retry_interval=60)
    l1 = InprocCacheClient(100)
    client = CoherentWrapperClient(TieredInclusiveClient(l1, shared), LocalBus(LocalHub()))
    try:
        client.put("kept", "v", TTL)
        assert l1.get("kept") == "v"
        memcached.stop()
        client.put("lost", "v", TTL)  # memcached is down: nobody else could read it
        assert l1.get("lost", None) is None
        client.put("kept", "w", TTL)  # an old copy goes too
        assert l1.get("kept", None) is None
        assert client.putMulti({"a": 1, "b": 2}, TTL) == ["a", "b"]
        assert l1.get("a", None) is None and client.get("a", None) is None
    finally:
        client.close()


def test_bus_down_reads_bypass_l1_and_lost_writes_drop_the_others_copies(trio):
    a, b, c = trio.clients
    a.put("k", 1, TTL)
    b.get("k"), c.get("k")
    trio.buses[1].set_down(True)
    # b no longer trusts its L1: a change made behind its back is seen.
    trio.shared.put("k", 2, TTL)
    assert b.get("k") == 2
    assert trio.l1s[1].get("k") == 1  # still held, no longer served
    # b's writes reach L2 but not the bus: c keeps a stale copy until b comes back.
    c.get("j", None)
    a.put("j", "a", TTL)
    c.get("j")
    b.put("j", "b", TTL)
    assert trio.l1s[2].get("j") == "a"
    trio.buses[1].set_down(False)
    # b's heartbeat says how many messages it numbered: c notices the lost one.
    assert not trio.l1s[2].contains("j")
    assert c.get("j") == "b"
    assert b.get("k") == 2 and trio.in_l1("k")[1]  # L1 back in use


def test_a_lost_message_drops_every_copy_of_its_channel():
    cl = Cluster(2)
    a, b = cl.clients
    for i in range(5):
        a.put(i, i, TTL)
        b.get(i)
    cl.buses[0].set_down(True)
    a.put(0, -1, TTL)  # numbered, never delivered
    assert cl.l1s[1].usage == 5
    gaps = cl.buses[1].gaps
    cl.buses[0].set_down(False)
    assert cl.buses[1].gaps == gaps + 1
    assert cl.l1s[1].usage == 0
    assert [b.get(i) for i in range(5)] == [-1, 1, 2, 3, 4]


def test_no_loss_no_drop(trio):
    a, b, _ = trio.clients
    a.put("k", 1, TTL)
    b.get("k")
    trio.buses[0].set_down(True)
    trio.buses[0].set_down(False)  # its heartbeat: nothing was lost
    assert trio.in_l1("k")[1]
    assert trio.buses[1].gaps == 0


def test_a_gap_drops_only_the_channel_it_is_on():
    hub = LocalHub()
    shared = InprocCacheClient(100)
    buses = [LocalBus(hub), LocalBus(hub)]
    l1 = {(i, ch): InprocCacheClient(100) for i in range(2) for ch in "xy"}
    clients = {
        (i, ch): CoherentWrapperClient(
            TieredInclusiveClient(l1[i, ch], shared), buses[i], channel=ch
        )
        for i in range(2)
        for ch in "xy"
    }
    for ch in "xy":
        clients[0, ch].put(ch, 1, TTL)
        clients[1, ch].get(ch)
    buses[0].set_down(True)
    clients[0, "x"].put("x", 2, TTL)
    buses[0].set_down(False)
    assert not l1[1, "x"].contains("x")
    assert l1[1, "y"].contains("y")  # nothing was lost on y


def test_reconnection_clears_own_l1(trio):
    a, b, _ = trio.clients
    a.put("k", 1, TTL)
    b.get("k")
    trio.buses[1].set_down(True)
    trio.buses[1].set_down(False)
    assert not trio.in_l1("k")[1]


# ---- compute once ------------------------------------------------------------------------


def test_compute_once_across_clients_and_threads(trio):
    runs = []

    def compute():
        runs.append(1)
        time.sleep(0.05)
        return "v"

    results = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(c.compute_once("x", compute, TTL)))
        for c in trio.clients
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["v"] * 12
    assert len(runs) == 1
    assert all(cl.get("x") == "v" for cl in trio.clients)


def test_compute_once_returns_a_fresh_value_without_computing(trio):
    a, b, _ = trio.clients
    a.put("x", 1, TTL)
    assert b.compute_once("x", lambda: pytest.fail("computed"), TTL) == 1
    # recheck: a value with less than that left is recomputed.
    assert b.compute_once("x", lambda: 2, TTL, recheck=TTL * 2) == 2
    # None: always compute.
    assert b.compute_once("x", lambda: 3, TTL, recheck=None) == 3
    assert a.get("x") == 3


def test_failure_reaches_the_caller_and_another_takes_over(trio):
    a, b, _ = trio.clients
    started = threading.Event()
    release = threading.Event()

    def failing():
        started.set()
        release.wait(5)
        raise ValueError("boom")

    errors = []

    def run_a():
        try:
            a.compute_once("x", failing, TTL)
        except ValueError as exc:
            errors.append(exc)

    ta = threading.Thread(target=run_a)
    ta.start()
    assert started.wait(5)
    got = []
    tb = threading.Thread(target=lambda: got.append(b.compute_once("x", lambda: "b", TTL)))
    tb.start()
    time.sleep(0.05)
    assert not got  # b waits for a's claim
    release.set()
    ta.join(5)
    tb.join(5)
    assert [str(e) for e in errors] == ["boom"]
    assert got == ["b"]


def _in_thread(fn):
    """Run ``fn`` in a thread; returns (thread, results list)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def _computation(name, runs, started=None, release=None):
    def compute():
        runs.append(name)
        if started is not None:
            started.set()
        if release is not None:
            assert release.wait(10)
        return name

    return compute


def test_a_live_holder_keeps_its_claim_past_the_lease():
    # The holder computes for several leases: it renews its claim, nobody takes over.
    cl = Cluster(2, lease=0.2, poll_interval=0.02)
    a, b = cl.clients
    runs, started, release = [], threading.Event(), threading.Event()
    ta, got_a = _in_thread(
        lambda: a.compute_once("x", _computation("a", runs, started, release), TTL)
    )
    assert started.wait(5)
    tb, got_b = _in_thread(lambda: b.compute_once("x", _computation("b", runs), TTL))
    assert not wait_until(lambda: got_b, 1.0)  # five leases: b still waits
    release.set()
    ta.join(5)
    tb.join(5)
    assert (got_a, got_b, runs) == (["a"], ["a"], ["a"])


def test_a_holder_that_stops_renewing_is_taken_over_and_the_first_result_wins():
    # a's claims stop being renewed (a frozen or partitioned process): after the lease b
    # computes; a's late result loses to b's, which was stored first.
    cl = Cluster(2, lease=0.3, poll_interval=0.02)
    a, b = cl.clients
    a._claims._renew = lambda lock, claim: None
    runs, started, release = [], threading.Event(), threading.Event()
    ta, got_a = _in_thread(
        lambda: a.compute_once("x", _computation("a", runs, started, release), TTL)
    )
    assert started.wait(5)
    assert b.compute_once("x", _computation("b", runs), TTL) == "b"
    release.set()
    ta.join(5)
    assert got_a == ["b"]
    assert sorted(runs) == ["a", "b"]  # one extra computation for one lapsed lease
    assert a.get("x") == b.get("x") == "b"


def test_a_bus_outage_does_not_start_a_second_computation():
    cl = Cluster(2, lease=0.2, poll_interval=0.02)
    a, b = cl.clients
    runs, started, release = [], threading.Event(), threading.Event()
    ta, got_a = _in_thread(
        lambda: a.compute_once("x", _computation("a", runs, started, release), TTL)
    )
    assert started.wait(5)
    tb, got_b = _in_thread(lambda: b.compute_once("x", _computation("b", runs), TTL))
    for bus in cl.buses:
        bus.set_down(True)
    assert not wait_until(lambda: got_b, 0.5)
    release.set()  # a stores while nobody hears it: b finds the value by polling
    ta.join(5)
    tb.join(5)
    assert (got_a, got_b, runs) == (["a"], ["a"], ["a"])


def test_a_waiter_out_of_patience_starts_one_more_computation():
    cl = Cluster(3, timeout=0.3, lease=5.0, poll_interval=0.02)
    a, b, c = cl.clients
    runs, started, release, second = [], threading.Event(), threading.Event(), threading.Event()
    ta, got_a = _in_thread(
        lambda: a.compute_once("x", _computation("a", runs, started, release), TTL)
    )
    assert started.wait(5)
    tb, got_b = _in_thread(lambda: b.compute_once("x", _computation("b", runs, None, second), TTL))
    tc, got_c = _in_thread(lambda: c.compute_once("x", _computation("c", runs, None, second), TTL))
    assert wait_until(lambda: len(runs) == 2, 5)  # b or c, not both
    second.set()
    assert wait_until(lambda: cl.shared.contains("x"), 5)
    release.set()  # a finishes last
    for t in (ta, tb, tc):
        t.join(5)
    assert sorted(runs) in (["a", "b"], ["a", "c"])
    # The second computation finished first: its value is everybody's, a's included.
    assert got_a == got_b == got_c == [runs[1]]


def test_close_hands_the_claims_over_at_once():
    cl = Cluster(2, lease=30.0, poll_interval=0.02)
    a, b = cl.clients
    runs, started, release = [], threading.Event(), threading.Event()
    ta, _ = _in_thread(lambda: a.compute_once("x", _computation("a", runs, started, release), TTL))
    assert started.wait(5)
    _, got_b = _in_thread(lambda: b.compute_once("x", _computation("b", runs), TTL))
    a.close()
    # Far less than the 30 s lease: released, not lapsed.
    assert wait_until(lambda: got_b == ["b"], 10)
    release.set()
    ta.join(5)


def test_unknown_holder_is_taken_over_when_the_lease_ends():
    cl = Cluster(1, timeout=1.5, poll_interval=0.02)
    [a] = cl.clients
    # A claim by a process this bus never heard of: only the lease (1.5 s) can end it.
    assert cl.shared.add(a._lock_key("x", 0), ("00" * 8, "t"), 1.5)
    got = []
    t = threading.Thread(target=lambda: got.append(a.compute_once("x", lambda: "v", TTL)))
    t.start()
    time.sleep(0.2)
    assert got == []  # still waiting on the claim
    t.join(10)
    assert got == ["v"]


def test_recursion_is_an_error(trio):
    a = trio.clients[0]

    def again():
        return a.compute_once("x", lambda: 1, TTL)

    with pytest.raises(RuntimeError, match="its own computation"):
        a.compute_once("x", again, TTL)
    assert a.compute_once("x", lambda: 2, TTL) == 2  # nothing left claimed


async def test_acompute_once(trio):
    runs = []

    async def compute():
        runs.append(1)
        await asyncio.sleep(0.05)
        return "v"

    results = await asyncio.gather(
        *(c.acompute_once("x", compute, TTL) for c in trio.clients for _ in range(3))
    )
    assert results == ["v"] * 9
    assert len(runs) == 1


async def test_acompute_once_failure():
    cl = Cluster(1)

    async def boom():
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await cl.clients[0].acompute_once("x", boom, TTL)
    assert await cl.clients[0].acompute_once("x", lambda: asyncio.sleep(0), TTL) is None


# ---- the @cached hook and configuration ---------------------------------------------------


def test_cached_decorator_over_coherent_client(trio):
    from chorde.decorators import cached

    runs = []

    def make(client):
        @cached(client, TTL, namespace="f")
        def f(x):
            runs.append(x)
            time.sleep(0.02)
            return x * 2

        return f

    fs = [make(c) for c in trio.clients]
    results = []
    threads = [
        threading.Thread(target=lambda f=f: results.append(f(21))) for f in fs for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [42] * 9
    # Per process always; per cluster once chorde.decorators calls compute_once.
    assert 1 <= len(runs) <= 3
    fs[0].invalidate(21)
    assert not any(trio.in_l1(("f", (21,))))


def test_unencodable_key_is_a_type_error(trio):
    with pytest.raises(TypeError, match="cannot encode cache key"):
        trio.clients[0].put(object(), 1, TTL)
    with pytest.raises(TypeError):
        trio.clients[0].compute_once(["list"], lambda: 1, TTL)


def test_miss_raises(trio):
    with pytest.raises(CacheMissError):
        trio.clients[0].get("absent")


def test_bad_frames_keys_are_counted_not_raised(trio):
    b = trio.clients[1]
    trio.buses[0].publish(MessageType.INVALIDATE, "chorde", [b"\xffnot a key"])
    assert b.stats.errors == 1


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"channel": ""}, "channel"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"lease": 0}, "lease"),
        ({"lease": float("inf")}, "lease"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises((ConfigurationError, ValueError, TypeError), match=match):
        CoherentWrapperClient(InprocCacheClient(10), LocalBus(), **kw)


def test_bad_client_and_bus():
    with pytest.raises(ConfigurationError, match="client"):
        CoherentWrapperClient({}, LocalBus())
    with pytest.raises(ConfigurationError, match="bus"):
        CoherentWrapperClient(InprocCacheClient(10), object())


def test_close_leaves_the_channel():
    cl = Cluster(2)
    a, b = cl.clients
    a.put("k", 1, TTL)
    b.get("k")
    b.close()
    a.delete("k")
    assert cl.l1s[1].contains("k")  # no longer told
    assert cl.buses[1]._subs == {}
