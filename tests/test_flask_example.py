"""The Flask example project, run as a real server process and spoken to over HTTP."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import httpx
import pytest

from tests.servers import REPO, AppServer

APP = REPO / "example_projects" / "flask_app" / "app.py"


@pytest.fixture
def start_app(start_server) -> Callable[..., AppServer]:
    def start(**env: str) -> AppServer:
        argv = [sys.executable, "-m", "flask", "--app", str(APP), "run"]
        argv += ["--host", "127.0.0.1", "--port", "{port}"]
        return start_server(AppServer(argv, env, ready_path="/stats"))

    return start


def _work(client: httpx.Client) -> dict[str, int]:
    return client.get("/stats").json()["work"]


# What a load balancer in front of several workers sends them all: the site's one Host (the
# host is part of every cache key, and each test server listens on a port of its own).
SITE = {"host": "app.example"}


def _check_caching_and_invalidation(server: AppServer, client_name: str) -> None:
    with httpx.Client(base_url=server.url, timeout=10.0, headers=SITE) as http:
        assert http.get("/stats").json()["client"] == client_name
        first = http.get("/report", params={"n": 3})
        assert first.status_code == 200
        assert first.json()["square"] == 9
        assert _work(http) == {"report": 1, "square": 1}
        second = http.get("/report", params={"n": 3})
        assert second.json() == first.json()  # the cached response, same rendered_at
        assert http.get("/square/3").json() == {"n": 3, "square": 9}
        assert _work(http) == {"report": 1, "square": 1}

        assert http.post("/invalidate", params={"n": 3}).json() == {"invalidated": 3}
        third = http.get("/report", params={"n": 3})
        assert third.json()["rendered_at"] > first.json()["rendered_at"]
        assert _work(http) == {"report": 2, "square": 2}
        assert http.get("/report", params={"n": 4}).json()["square"] == 16
        assert _work(http) == {"report": 3, "square": 3}


def test_example_on_the_inproc_default(start_app):
    server = start_app()
    _check_caching_and_invalidation(server, "InprocCacheClient")


@pytest.mark.parametrize("backend", ["memcached", "redis"])
def test_example_on_a_shared_cache_shares_it_between_processes(start_app, request, backend):
    if backend == "redis":
        from tests.redis_servers import start_redis

        env = {"FLASK_CHORDE_URL": f"redis://{start_redis(request).address}"}
    else:
        address = request.getfixturevalue("memcached").address
        env = {"FLASK_CHORDE_CLIENT": "memcached", "FLASK_CHORDE_SERVERS": address}
    one = start_app(**env)
    _check_caching_and_invalidation(one, {"redis": "RedisClient"}.get(backend, "MemcachedClient"))
    two = start_app(**env)
    with httpx.Client(base_url=two.url, timeout=10.0, headers=SITE) as http:
        # Rendered by the first process, served from the shared cache to the second.
        assert http.get("/report", params={"n": 4}).json()["pid"] == one.pid
        assert http.get("/square/3").json()["square"] == 9
        assert _work(http) == {"report": 0, "square": 0}


def test_example_renders_a_page_once_for_concurrent_requests(start_app):
    server = start_app()
    start = threading.Barrier(16, timeout=10)
    bodies: list[dict] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                start.wait()
                response = http.get("/report", params={"n": 7})
                response.raise_for_status()
                bodies.append(response.json())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, daemon=True) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert len(bodies) == 16
    assert all(body == bodies[0] for body in bodies)  # one render (same rendered_at) for all
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        assert _work(http) == {"report": 1, "square": 1}
