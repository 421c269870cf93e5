"""Fixtures for the Starlette adapter: the example app under a real uvicorn process.

``example_server`` is parametrized over the cache backend (in-process, memcached via
``CHORDE_MEMCACHED``, Redis via ``CHORDE_REDIS``) and module-scoped: starting uvicorn costs
about a second, and tests keep out of each other's way by using distinct URLs (a unique
query string each).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import AppServer, MemcachedServer, starlette_example


@pytest.fixture(scope="module", params=["inproc", "memcached", "redis"])
def example_server(request: pytest.FixtureRequest) -> Iterator[AppServer]:
    """The example app served by uvicorn, caching in process or in a real memcached."""
    env = {"SLOW_SECONDS": "0.3", "CACHE_TTL": "60", "MAX_BODY_SIZE": "65536"}
    memcached = redis = None
    if request.param == "memcached":
        # Skips, or fails under CI, when memcached is not installed.
        memcached = MemcachedServer(executable=request.getfixturevalue("memcached_bin")).start()
        env["CHORDE_MEMCACHED"] = memcached.address
        env["CHORDE_CHECKSUM_KEY"] = "tests-only-secret"
    if request.param == "redis":
        from tests.redis_servers import start_redis

        redis = start_redis(request)
        env["CHORDE_REDIS"] = f"redis://{redis.address}"
        env["CHORDE_CHECKSUM_KEY"] = "tests-only-secret"
    server = starlette_example(env)
    try:
        server.start()
        server.backend = request.param  # type: ignore[attr-defined]
        server.memcached = memcached  # type: ignore[attr-defined]
        server.redis = redis  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()
        if memcached is not None:
            memcached.stop()
