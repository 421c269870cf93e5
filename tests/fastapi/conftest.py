"""Fixtures for the FastAPI tests: real uvicorn processes on loopback ports.

* ``example_server``: ``example_projects/fastapi_app`` (strict mode), caching in process or
  in a real memcached (``backend``); ``second_example_server``: another worker on the same
  memcached;
* ``origin`` and ``proxy``: ``origin_app.py`` (an origin whose fields the test sets) and in
  front of it ``proxy_app.py`` (an httpx reverse proxy wrapped in
  ``CacheMiddleware(strict=True)``), on the same backend; ``defaults_proxy``, a second proxy
  in front of the same origin with the middleware's RFC 5861 defaults on, a ttl of 1 s,
  named ``edge`` and with the key in ``Cache-Status``; ``second_proxy``, another proxy
  process on the same memcached.

Servers are module-scoped (a uvicorn start costs about a second) and parametrized over the
backend, so every test runs against both; tests keep apart by using URLs of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fastapi.support import (
    CHECKSUM_KEY,
    PURGE_TOKEN,
    Backend,
    Site,
    fastapi_example,
    origin_server,
    proxy_server,
)
from tests.servers import AppServer, MemcachedServer


@pytest.fixture(scope="module", params=["inproc", "memcached"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Where the servers cache: in process, or a real memcached (started for the module;
    skipped, or failed under CI, when memcached is missing)."""
    if request.param == "inproc":
        yield Backend({}, None)
        return
    server = MemcachedServer(executable=request.getfixturevalue("memcached_bin")).start()
    try:
        env = {"CHORDE_MEMCACHED": server.address, "CHORDE_CHECKSUM_KEY": CHECKSUM_KEY}
        yield Backend(env, server)
    finally:
        server.stop()


def _started(server: AppServer) -> Iterator[AppServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---- the example project --------------------------------------------------------------------

EXAMPLE_ENV = {
    "SLOW_SECONDS": "0.3",
    "REPORT_MAX_AGE": "2",
    "ARTICLE_AGE": "5",
    "PURGE_TOKEN": PURGE_TOKEN,
}


@pytest.fixture(scope="module")
def example_server(backend: Backend) -> Iterator[AppServer]:
    yield from _started(fastapi_example({**EXAMPLE_ENV, **backend.env}))


@pytest.fixture(scope="module")
def second_example_server(backend: Backend) -> Iterator[AppServer]:
    """Another worker of the example on the same memcached (memcached runs only)."""
    if backend.memcached is None:
        pytest.skip("in-process caches are not shared between processes")
    yield from _started(fastapi_example({**EXAMPLE_ENV, **backend.env}))


# ---- the reverse proxy in front of an origin ------------------------------------------------


@pytest.fixture(scope="module")
def origin() -> Iterator[AppServer]:
    yield from _started(origin_server())


@pytest.fixture(scope="module")
def proxy(origin: AppServer, backend: Backend) -> Iterator[AppServer]:
    yield from _started(proxy_server(origin, backend.env))


@pytest.fixture(scope="module")
def defaults_proxy(origin: AppServer, backend: Backend) -> Iterator[AppServer]:
    env = {
        **backend.env,
        "PROXY_TTL": "1",  # the application-mode ttl, which strict mode must not use
        "PROXY_STALE_WHILE_REVALIDATE": "30",
        "PROXY_STALE_IF_ERROR": "30",
        "PROXY_STATUS_KEY": "1",
        "PROXY_CACHE_NAME": "edge",
    }
    yield from _started(proxy_server(origin, env))


@pytest.fixture(scope="module")
def second_proxy(origin: AppServer, backend: Backend) -> Iterator[AppServer]:
    """Another proxy process on the same memcached (memcached runs only)."""
    if backend.memcached is None:
        pytest.skip("in-process caches are not shared between processes")
    yield from _started(proxy_server(origin, backend.env))


@pytest.fixture
def site(proxy: AppServer, origin: AppServer) -> Iterator[Site]:
    with Site(proxy, origin) as s:
        yield s


@pytest.fixture
def defaults_site(defaults_proxy: AppServer, origin: AppServer) -> Iterator[Site]:
    with Site(defaults_proxy, origin) as s:
        yield s


@pytest.fixture
def path() -> str:
    """A resource path of this test's own."""
    return f"/r/{uuid.uuid4().hex}"
