"""Fixtures of the lease tests: stampedes of real worker processes on a real memcached."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mq._cluster import Member, start_members

WORKER = "tests.leases._worker"


def computations(log: Path) -> Counter[str]:
    """How many times each key was computed, in every process (the workers' log)."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())


def stampede(
    members: list[Member], key: str, threads: int, delay: float, *, timeout: float = 60, **kw: Any
) -> list[dict]:
    """Every member calls ``key`` from ``threads`` threads at the same moment (a second from
    now); every caller's ``{"value"| "error", "latency"}``, members in order."""
    at = time.time() + 1.0
    sent = [
        (m, m.send("stampede", key=key, threads=threads, delay=delay, at=at, **kw)) for m in members
    ]
    results: list[dict] = []
    for m, cid in sent:
        results += m.result(cid, timeout=timeout)["results"]
    return results


@pytest.fixture
def cluster(memcached, tmp_path) -> Iterator[Callable[..., list[Member]]]:
    """``cluster(n, **config)``: ``n`` worker processes caching on the test's memcached (a
    config may name another address), stopped at teardown."""
    started: list[Member] = []

    def start(n: int, **config: Any) -> list[Member]:
        cfg = {"memcached": memcached.address, "log": str(tmp_path / "computed.log"), **config}
        members = start_members([cfg] * n, worker=WORKER)
        started.extend(members)
        return members

    yield start
    for m in started:
        m.stop()
