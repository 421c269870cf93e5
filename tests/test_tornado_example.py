"""The tornado example project, run as a real server process and spoken to over HTTP."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import httpx
import pytest

from tests.servers import REPO, AppServer

APP = REPO / "example_projects" / "tornado_app" / "app.py"
# What a load balancer in front of several processes sends them all: the site's one Host
# (the host is part of every cache key, and each test server has a port of its own).
SITE = {"host": "app.example"}


@pytest.fixture
def start_app(start_server) -> Callable[..., AppServer]:
    def start(**env: str) -> AppServer:
        argv = [sys.executable, str(APP), "--port", "{port}"]
        return start_server(AppServer(argv, env, ready_path="/stats"))

    return start


def _work(http: httpx.Client) -> dict[str, int]:
    return http.get("/stats").json()["work"]


def _check_cached_handlers(server: AppServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10.0, headers=SITE) as http:
        gen = http.get("/gen/fib/20").json()
        assert gen == {"n": 20, "fib": 6765, "style": "gen.coroutine"}
        assert http.get("/gen/fib/20").json() == gen
        native = http.get("/native/square/12").json()
        assert native == {"n": 12, "square": 144, "style": "async def"}
        assert http.get("/native/square/12").json() == native
        assert _work(http) == {"fib": 1, "square": 1}

        page = http.get("/page").json()
        assert (page["fib10"], page["square12"]) == (55, 144)
        assert http.get("/page").json() == page  # the cached response, same "at"
        assert _work(http) == {"fib": 2, "square": 1, "page": 1}

        assert http.post("/invalidate/20", content=b"").json() == {"invalidated": 20}
        assert http.get("/gen/fib/20").json() == gen
        assert _work(http) == {"fib": 3, "square": 1, "page": 1}


def test_example_serves_cached_results(start_app):
    server = start_app()
    assert httpx.get(f"{server.url}/stats").json()["client"] == "InprocCacheClient"
    _check_cached_handlers(server)


def test_example_answers_while_a_miss_computes(start_app):
    server = start_app()

    async def race(n: int) -> list[str]:
        finished: list[str] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:

            async def fetch(path: str) -> None:
                (await http.get(path)).raise_for_status()
                finished.append(path)

            miss = asyncio.ensure_future(fetch(f"/gen/fib/{n}"))
            await asyncio.sleep(0.05)  # the miss is now computing on the app's pool
            await fetch("/stats")
            await miss
        return finished

    # The IOLoop answered /stats while the 0.3 s computation of the miss was running. A
    # blocked loop never could; a starved machine might miss once, so three tries.
    orders = []
    for n in (30, 31, 32):
        orders.append(asyncio.run(race(n)))
        if orders[-1][0] == "/stats":
            break
    assert orders[-1] == ["/stats", f"/gen/fib/{n}"], orders


@pytest.mark.parametrize("backend", ["memcached", "redis"])
def test_example_on_a_shared_cache_shares_results_between_processes(start_app, request, backend):
    if backend == "redis":
        from tests.redis_servers import start_redis

        env = {"CHORDE_REDIS": f"redis://{start_redis(request).address}"}
    else:
        env = {"CHORDE_MEMCACHED": request.getfixturevalue("memcached").address}
    one = start_app(**env)
    _check_cached_handlers(one)
    two = start_app(**env)
    with httpx.Client(base_url=two.url, timeout=10.0, headers=SITE) as http:
        assert http.get("/stats").json()["client"] == {"redis": "RedisClient"}.get(
            backend, "MemcachedClient"
        )
        assert http.get("/gen/fib/20").json()["fib"] == 6765
        assert http.get("/native/square/12").json()["square"] == 144
        assert http.get("/page").json()["pid"] == one.pid
        assert _work(http) == {}
