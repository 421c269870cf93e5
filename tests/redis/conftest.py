"""Fixtures of the Redis tests: real servers, a Sentinel group and Clusters on 127.0.0.1.

* ``redis_server``: a fresh ``redis-server`` for the test (killed at teardown);
  ``redis_factory(**options)`` for more, or with options (``password``, ``users``,
  ``unix_socket``, ``tls``, ``extra_args`` ...: see :class:`tests.redis_servers.RedisServer`);
* ``redis_client``: a :class:`~chorde.clients.redis.RedisClient` on ``redis_server``;
* ``sentinel_group``: a master, a replica and three sentinels, for the test (seconds to
  start: used by the few tests that need it);
* ``redis_cluster``: the session's shared three-master cluster, for tests that only read
  and write (each uses a namespace of its own); ``fresh_cluster``: a cluster of the test's
  own, to kill nodes of;
* ``figures``: ``figures.record(name, value, unit)``, shown at the end of the run.

A missing ``redis-server`` skips these tests, and fails them under ``CI=true``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chorde.clients.redis import RedisClient
from tests.redis_servers import (
    RedisCluster,
    RedisServer,
    SentinelGroup,
    redis_executable,
    shared_cluster,
)

SECRET = "redis-test-secret"
_figures: list[tuple[str, float, str]] = []
_namespaces = itertools.count()


class Figures:
    """What the fault tests measured, shown in the terminal summary."""

    def record(self, name: str, value: float, unit: str = "s") -> None:
        _figures.append((name, float(value), unit))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures the Redis tests measured (outage recovery, longest blocked call ...)."""
    if _figures:
        terminalreporter.section("redis figures")
        for name, value, unit in _figures:
            terminalreporter.write_line(f"  {name}: {value:.3f} {unit}")


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures()


@pytest.fixture(scope="session")
def redis_bin() -> str:
    return redis_executable()


@pytest.fixture
def redis_factory(redis_bin: str) -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def factory(**options: Any) -> RedisServer:
        server = RedisServer(executable=redis_bin, **options)
        started.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[RedisClient]:
    client = RedisClient(redis_server.address, checksum_key=SECRET)
    yield client
    client.close()


@pytest.fixture
def sentinel_group(redis_bin: str) -> Iterator[SentinelGroup]:
    group = SentinelGroup(redis_bin).start()
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def redis_cluster(redis_bin: str) -> RedisCluster:
    return shared_cluster()


@pytest.fixture
def fresh_cluster(redis_bin: str) -> Iterator[RedisCluster]:
    cluster = RedisCluster(redis_bin).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses (for the shared cluster)."""
    return f"t{next(_namespaces)}"
