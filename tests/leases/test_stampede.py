"""Compute once per cluster with no broker: stampedes of real processes on a real memcached.

Four worker processes of fifty threads each call one ``@cached`` function at the same
moment on a key that expired (or was never computed): the function runs once and every
caller gets its value. The winner killed mid-computation, the server restarted mid-stampede
and a server without meta commands are the other cases the leases must survive.
"""

from __future__ import annotations

import time

import pytest

from tests.leases.conftest import computations, stampede
from tests.leases.textonly import TextOnlyMemcached

PROCESSES = 4
THREADS = 50
LEASE = 2.0


def _one_value(results: list[dict]) -> str:
    errors = [r for r in results if "error" in r]
    assert not errors, errors[:3]
    values = {r["value"] for r in results}
    assert len(values) == 1, values
    return values.pop()


@pytest.mark.parametrize("stack", ["memcached", "tiered"])
@pytest.mark.parametrize("held", ["expired", "missing"])
def test_200_callers_one_computation(cluster, tmp_path, stack, held):
    members = cluster(PROCESSES, lease_ttl=LEASE, tiered=stack == "tiered")
    if held == "expired":
        members[0].call("call", key="k")
        members[0].call("expire", key="k")
    before = computations(tmp_path / "computed.log")["k"]
    results = stampede(members, "k", THREADS, delay=0.3)
    assert len(results) == PROCESSES * THREADS
    _one_value(results)
    assert computations(tmp_path / "computed.log")["k"] - before == 1


def test_expired_then_bg_serves_the_old_value_while_one_process_refreshes(cluster, tmp_path):
    """``fn.expire`` then 200 ``.bg()`` callers in 4 processes: every caller is served the
    old value, and the function runs once in the cluster (in the background)."""
    members = cluster(PROCESSES, lease_ttl=LEASE, mode="leases_bg")
    old = members[0].call("call", key="k")["value"]
    members[0].call("expire", key="k")
    results = stampede(members, "k", THREADS, delay=0.3)
    assert len(results) == PROCESSES * THREADS
    assert _one_value(results) == old
    log = tmp_path / "computed.log"
    deadline = time.monotonic() + 10
    while computations(log)["k"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    fresh = members[1].call("call", key="k")["value"]
    deadline = time.monotonic() + 10
    while fresh == old and time.monotonic() < deadline:  # (the refresh takes 0.3 s)
        time.sleep(0.05)
        fresh = members[1].call("call", key="k")["value"]
    assert fresh != old
    assert computations(log)["k"] == 2  # the first call, one refresh


def test_the_winner_killed_is_taken_over_within_the_lease(cluster, tmp_path):
    """SIGKILL the process computing: its lease lapses on the server, one other process
    takes over, and every caller left gets the takeover's value."""
    members = cluster(PROCESSES, lease_ttl=LEASE)
    at = time.time() + 1.0
    sent = [
        (m, m.send("stampede", key="k", threads=10, delay=60, then=0.2, at=at)) for m in members
    ]
    first = None
    while first is None:  # (bounded by event()'s timeout)
        for m in members:
            if not m.events.empty():
                first = m
                break
        else:
            time.sleep(0.01)
            if time.time() > at + 30:
                pytest.fail("nobody computed")
    assert first.event(timeout=1)["event"] == "computing"
    killed = time.monotonic()
    first.kill()
    survivors = [(m, cid) for m, cid in sent if m is not first]
    results = [r for m, cid in survivors for r in m.result(cid, timeout=60)["results"]]
    value = _one_value(results)
    takeovers = [m.event(timeout=1) for m, _ in survivors if not m.events.empty()]
    assert len(takeovers) == 1 and str(takeovers[0]["pid"]) in value
    assert computations(tmp_path / "computed.log")["k"] == 2  # the victim's, one takeover
    # Within the lease (memcached counts whole seconds: up to one more), plus a poll.
    assert takeovers[0]["t"] - killed <= LEASE + 1.5


def test_the_server_restarted_mid_stampede(cluster, memcached, tmp_path):
    """memcached restarts (empty) while a computation runs and others wait: callers compute
    again, a bounded number of times, and none gets an exception."""
    members = cluster(PROCESSES, lease_ttl=LEASE)
    at = time.time() + 1.0
    sent = [(m, m.send("stampede", key="k", threads=THREADS, delay=1.5, at=at)) for m in members]
    while not any(not m.events.empty() for m in members):  # someone computes
        time.sleep(0.01)
        if time.time() > at + 30:
            pytest.fail("nobody computed")
    time.sleep(0.3)
    memcached.restart()
    results = [r for m, cid in sent for r in m.result(cid, timeout=60)["results"]]
    assert len(results) == PROCESSES * THREADS
    assert not [r for r in results if "error" in r]
    assert 1 <= computations(tmp_path / "computed.log")["k"] <= 1 + PROCESSES


def test_a_server_without_meta_commands(cluster, memcached, tmp_path):
    """The text protocol only (as memcached before 1.6): leases are lease keys, and the
    stampede still computes once."""
    with TextOnlyMemcached(memcached.port) as front:
        members = cluster(PROCESSES, lease_ttl=LEASE, memcached=front.address)
        members[0].call("call", key="k")
        members[0].call("expire", key="k")
        results = stampede(members, "k", THREADS, delay=0.3)
        _one_value(results)
        assert computations(tmp_path / "computed.log")["k"] == 2  # the first call, one more
        assert front.refused > 0  # meta commands were tried (and refused)
