"""Shared fixtures: real servers on 127.0.0.1, started per test and always killed.

``memcached`` is function-scoped: a fresh server per test costs ~10 ms and gives every test
an empty cache, clean stats, and the freedom to stop/start/suspend it. Use
``memcached_factory(n, **options)`` for several servers or non-default options, and
``start_server(AppServer(...))`` to run an example project as a real HTTP server.

When the ``memcached`` executable is missing the tests that need it are skipped, except
under CI (``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers import (
    AppServer,
    MemcachedServer,
    find_memcached,
    free_port,
    memcached_install_hint,
    stop_all,
)

pytest_plugins = ["pytester"]

MemcachedFactory = Callable[..., list[MemcachedServer]]
StartServer = Callable[[AppServer], AppServer]


def _under_ci() -> bool:
    return os.environ.get("CI") == "true"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill any server a test started by hand and forgot."""
    stop_all()


@pytest.fixture(scope="session")
def memcached_bin() -> str:
    """Path of the memcached executable; skip (or fail under CI) when it is missing."""
    path = find_memcached()
    if path is None:
        if _under_ci():
            pytest.fail(memcached_install_hint() + " (CI=true: a missing server is a failure)")
        pytest.skip(memcached_install_hint())
    return path


@pytest.fixture
def memcached_factory(memcached_bin: str) -> Iterator[MemcachedFactory]:
    """Start ``n`` memcached servers: ``a, b = memcached_factory(2, memory_mb=16)``.

    Options are those of :class:`tests.servers.MemcachedServer` (``memory_mb``,
    ``item_size``, ``threads``, ``max_connections``, ``extra_args``). Every server started
    through the factory is killed at teardown, whatever the test's outcome.
    """
    started: list[MemcachedServer] = []

    def factory(n: int = 1, **options: Any) -> list[MemcachedServer]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        servers = []
        for _ in range(n):
            server = MemcachedServer(executable=memcached_bin, **options)
            started.append(server)
            servers.append(server.start())
        return servers

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def memcached(memcached_factory: MemcachedFactory) -> MemcachedServer:
    """One fresh memcached server (64 MB, default item size) for this test."""
    [server] = memcached_factory(1)
    return server


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (for connection-refused tests)."""
    return free_port()


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start an app server now, stop it at teardown: ``start_server(AppServer(argv, env))``."""
    started: list[AppServer] = []

    def start(server: AppServer) -> AppServer:
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()
