"""A cluster on Redis alone (the shared tier and the bus) across real processes: what a Redis
restart does, the Redis twin of ``test_cluster.test_broker_restart``. The other cluster tests
run over both buses (``conftest.BUSES``); a frozen Redis is in ``tests/chaos``."""

from __future__ import annotations

import itertools

import pytest

from tests.mq._cluster import Member
from tests.servers import wait_until

pytestmark = pytest.mark.parametrize("bus_kind", ["redis"])
_probes = itertools.count()


def _put_and_settle(writer: Member, readers: list[Member], key: str, value) -> None:
    watches = [(r, r.send("watch", keys=[key], timeout=5)) for r in readers]
    writer.call("put", key=key, value=value)
    for r, cid in watches:
        r.result(cid)


def _shared_tier_used(writer: Member, reader: Member) -> bool:
    """A put by ``writer`` is read by ``reader`` (from Redis: the key is new to both)."""
    key = f"probe-{writer.pid}-{next(_probes)}"
    writer.call("put", key=key, value=1)
    return reader.call("get", key=key)["value"] == 1


def test_redis_restart(cluster, cluster_base):
    """Redis killed: everyone is disconnected and stops trusting its L1, every call still
    answers (misses, dropped writes, computations done locally); Redis back (empty): the
    buses subscribe again by themselves and coherence resumes."""
    server = cluster_base["redis_server"]
    a, b, c = cluster(3)
    for m in (a, b, c):
        m.call("peers", n=2)
    _put_and_settle(a, [b, c], "r", 1)
    assert b.call("get", key="r")["l1"]

    server.stop()
    for m in (a, b, c):
        assert m.call("state", connected=False, timeout=10)["connected"] is False
    # Down: nothing raises, and nobody serves its L1 copy (nor anything else: Redis is gone).
    a.call("put", key="r", value=2)
    got = b.call("get", key="r")
    assert (got["value"], got["l1"]) == (None, True)  # its copy of 1 is there, not served
    assert c.call("compute_one", key="down", delay=0)["value"] == "value-down"
    a.call("delete", key="r")

    server.start()  # same port, empty
    for m in (a, b, c):
        assert m.call("state", connected=True, timeout=15)["connected"] is True
        assert m.call("synced", timeout=15)["synced"]
        m.call("peers", n=2)
    # The shared tier comes back by itself too: each client probes Redis again after its
    # retry_interval (1 s), and drops writes until then.
    for w, r in ((a, b), (b, c), (c, a)):
        assert wait_until(lambda w=w, r=r: _shared_tier_used(w, r), 15)
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
