"""Fixtures for the cluster tests: a broker process and worker processes, always killed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.mq._cluster import BrokerProcess, Member, start_members
from tests.servers import free_port

SECRET = "cluster-secret"
#: The buses the cluster tests run over: pyzmq through a broker process (memcached the
#: shared tier), and Redis pub/sub (Redis the shared tier and the bus, nothing else).
BUSES = ["broker", "redis"]


@pytest.fixture
def broker() -> Iterator[BrokerProcess]:
    """``python -m chorde.mq.broker`` on a free loopback port."""
    proc = BrokerProcess(free_port())
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(params=BUSES)
def bus_kind(request: pytest.FixtureRequest) -> str:
    """Which bus a cluster test runs over (``@pytest.mark.parametrize("bus_kind", ...)``
    narrows it)."""
    return str(request.param)


@pytest.fixture
def cluster_base(request: pytest.FixtureRequest, bus_kind: str) -> dict:
    """The servers of a cluster over ``bus_kind``: a broker process and memcached, or one
    ``redis-server`` (``"redis_server"``: the :class:`~tests.redis_servers.RedisServer`)."""
    if bus_kind == "redis":
        from tests.redis_servers import start_redis

        server = start_redis(request)
        return {"redis": server.url, "redis_server": server}
    memcached = request.getfixturevalue("memcached")
    broker = request.getfixturevalue("broker")
    return {"memcached": memcached.address, "broker": broker.endpoint}


@pytest.fixture
def cluster(cluster_base: dict, tmp_path: Path) -> Iterator[Callable[..., list[Member]]]:
    """``cluster(n, **cfg)``: n workers sharing memcached and the broker, or one Redis."""
    started: list[Member] = []
    servers = {k: v for k, v in cluster_base.items() if k != "redis_server"}

    def make(n: int, **cfg) -> list[Member]:
        base = {**servers, "secret": SECRET, "log": str(tmp_path / "computations.log")}
        members = start_members([{**base, **cfg} for _ in range(n)])
        started.extend(members)
        return members

    try:
        yield make
    finally:
        for member in started:
            member.stop()
