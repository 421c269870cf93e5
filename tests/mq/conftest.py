"""Fixtures for the cluster tests: a broker process and worker processes, always killed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.mq._cluster import BrokerProcess, Member, start_members
from tests.servers import free_port

SECRET = "cluster-secret"


@pytest.fixture
def broker() -> Iterator[BrokerProcess]:
    """``python -m chorde.mq.broker`` on a free loopback port."""
    proc = BrokerProcess(free_port())
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def cluster(memcached, broker, tmp_path: Path) -> Iterator[Callable[..., list[Member]]]:
    """``cluster(n, **cfg)``: n workers sharing one memcached and the broker."""
    started: list[Member] = []

    def make(n: int, **cfg) -> list[Member]:
        base = {
            "memcached": memcached.address,
            "broker": broker.endpoint,
            "secret": SECRET,
            "log": str(tmp_path / "computations.log"),
        }
        members = start_members([{**base, **cfg} for _ in range(n)])
        started.extend(members)
        return members

    try:
        yield make
    finally:
        for member in started:
            member.stop()
