"""Coherence across real processes on loopback: 4 workers, a broker process and memcached, or
4 workers and one Redis (the shared tier and the bus); see ``conftest.BUSES``."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from chorde.clients.coherent import CoherentWrapperClient
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.tiered import TieredInclusiveClient
from chorde.decorators import cached
from chorde.mq import LocalBus
from tests.mq._cluster import Member, start_members
from tests.servers import free_port

KEYS = [f"k{i}" for i in range(200)]


def test_decorator_hands_computations_to_compute_once() -> None:
    """@cached hands computations to the client's compute_once (the cluster hook)."""
    calls = []

    class Probe(CoherentWrapperClient):
        def compute_once(self, key, compute, ttl, recheck=0.0):
            calls.append(key)
            return super().compute_once(key, compute, ttl, recheck)

    client = Probe(TieredInclusiveClient(InprocCacheClient(10), InprocCacheClient(10)), LocalBus())
    cached(client, 60)(lambda x: x)(1)
    assert calls


def _computations(tmp_path: Path) -> collections.Counter:
    log = tmp_path / "computations.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return collections.Counter(line.split()[1] for line in lines)


def _put_and_settle(writer: Member, readers: list[Member], key: str, value) -> None:
    """Put, and wait until the readers got the put's own invalidation (else it could land
    after their next read and drop the copy that read made)."""
    watches = [(r, r.send("watch", keys=[key], timeout=5)) for r in readers]
    writer.call("put", key=key, value=value)
    for r, cid in watches:
        r.result(cid)


def _storm(members: list[Member], decorated: bool) -> list[dict]:
    ids = [
        m.send("compute", keys=KEYS, threads=8, delay=0.005, decorated=decorated) for m in members
    ]
    return [m.result(cid, timeout=120) for m, cid in zip(members, ids, strict=True)]


@pytest.mark.parametrize("decorated", [False, True], ids=["client", "cached-decorator"])
def test_compute_once_per_cluster(cluster, tmp_path, decorated):
    """Through the client's compute_once, and through @cached with no extra code."""
    members = cluster(4)
    for m in members:
        m.call("peers", n=3)
    replies = _storm(members, decorated=decorated)
    for reply in replies:
        assert reply["values"] == {k: f"value-{k}" for k in KEYS}
    counts = _computations(tmp_path)
    assert set(counts) == set(KEYS)
    assert {k: n for k, n in counts.items() if n != 1} == {}


def test_invalidation_reaches_every_process(cluster):
    members = cluster(4)
    writer, *readers = members
    for m in members:
        m.call("peers", n=3)
    delays = []
    for round_ in range(5):
        key = f"inv{round_}"
        _put_and_settle(writer, readers, key, round_)
        for r in readers:
            got = r.call("get", key=key)
            assert got["value"] == round_ and got["l1"], got
        watches = [(r, r.send("watch", keys=[key], timeout=5)) for r in readers]
        sent = writer.call("delete", key=key)["t"]
        for r, cid in watches:
            reply = r.result(cid)
            assert reply["in_l1"] == [], "the L1 copy survived the invalidation"
            assert reply["times"][key] is not None, "the invalidation never arrived"
            delays.append(reply["times"][key] - sent)
            assert r.call("get", key=key)["value"] is None
    # The bound: a delete is seen by the others within 2 s (typically ~1 ms).
    assert max(delays) < 2.0, delays


def test_put_replaces_other_processes_copies(cluster):
    a, b, c = cluster(3)
    for m in (a, b, c):
        m.call("peers", n=2)
    _put_and_settle(a, [b, c], "p", "old")
    assert b.call("get", key="p")["value"] == "old"
    assert c.call("get", key="p")["value"] == "old"
    watches = [(m, m.send("watch", keys=["p"], timeout=5)) for m in (b, c)]
    a.call("put", key="p", value="new")
    for m, cid in watches:
        m.result(cid)
        assert m.call("get", key="p")["value"] == "new"


def test_kill_9_during_computation(cluster, tmp_path):
    # Waiters' patience far longer than the test: the takeover must come from the lease
    # running out (tests/chaos/ measures how soon).
    members = cluster(4, timeout=60.0, lease=1.0)
    victim, *others = members
    for m in members:
        m.call("peers", n=3)
    victim.send("compute_one", key="slow", delay=120)
    event = victim.event(timeout=20)
    assert (event["event"], event["key"]) == ("computing", "slow")
    waits = [(m, m.send("compute_one", key="slow", delay=0.05)) for m in others]
    time.sleep(0.2)  # let the others find the claim and start waiting on it
    victim.kill()
    for m, cid in waits:
        reply = m.result(cid, timeout=30)
        assert reply["value"] == "value-slow"
    counts = _computations(tmp_path)
    assert counts["slow"] == 2, counts  # the victim's, then exactly one takeover


@pytest.mark.parametrize("bus_kind", ["broker"])  # Redis: test_cluster_redis.py
def test_broker_restart(cluster, broker):
    a, b, c = cluster(3)
    for m in (a, b, c):
        m.call("peers", n=2)
    _put_and_settle(a, [b, c], "r", 1)
    assert b.call("get", key="r")["l1"]

    broker.stop()
    for m in (a, b, c):
        assert m.call("state", connected=False, timeout=10)["connected"] is False
    # Down: every operation still works, and nobody serves its L1 copy.
    a.call("put", key="r", value=2)
    assert b.call("get", key="r")["value"] == 2
    assert c.call("compute_one", key="down", delay=0)["value"] == "value-down"
    a.call("delete", key="r")
    assert b.call("get", key="r")["value"] is None

    broker.start()
    for m in (a, b, c):
        assert m.call("state", connected=True, timeout=15)["connected"] is True
        m.call("peers", n=2)
    # Coherence resumes: a put here drops the copies there.
    _put_and_settle(a, [b, c], "r", 3)
    for m in (b, c):
        got = m.call("get", key="r")
        assert got["value"] == 3 and got["l1"], got
    watches = [(m, m.send("watch", keys=["r"], timeout=5)) for m in (b, c)]
    a.call("put", key="r", value=4)
    for m, cid in watches:
        assert m.result(cid)["in_l1"] == []
        assert m.call("get", key="r")["value"] == 4
    for m in (a, b, c):
        assert "Traceback" not in m.stderr()


def test_static_peers_and_a_peer_restart(memcached, tmp_path):
    ports = [free_port() for _ in range(3)]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    base = {"memcached": memcached.address, "secret": "s", "log": str(tmp_path / "c.log")}
    members = start_members([{**base, "bind": e, "peers": endpoints} for e in endpoints])
    try:
        for m in members:
            m.call("peers", n=2)
        a, b, c = members
        _put_and_settle(a, [b, c], "s", 1)
        assert b.call("get", key="s")["l1"] and c.call("get", key="s")["l1"]
        watches = [(m, m.send("watch", keys=["s"], timeout=5)) for m in (b, c)]
        a.call("delete", key="s")
        for m, cid in watches:
            assert m.result(cid)["in_l1"] == []
            assert m.call("get", key="s")["value"] is None

        # A peer dies and comes back on its endpoint: the others never see an exception
        # and coherence with the new process resumes.
        c.kill()
        a.call("put", key="s", value=2)
        assert b.call("get", key="s")["value"] == 2
        [c] = start_members([{**base, "bind": endpoints[2], "peers": endpoints}])
        members.append(c)
        c.call("peers", n=2)
        for m in (a, b):
            m.call("peers", n=2)
        _put_and_settle(a, [b, c], "s", 3)
        got = c.call("get", key="s")
        assert (got["value"], got["l1"]) == (3, True)
        watches = [(m, m.send("watch", keys=["s"], timeout=5)) for m in (b, c)]
        a.call("delete", key="s")
        for m, cid in watches:
            assert m.result(cid)["in_l1"] == []
        for m in (a, b):
            assert "Traceback" not in m.stderr()
    finally:
        for m in members:
            m.stop()
