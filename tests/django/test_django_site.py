"""The example site (example_projects/django_site), run as a real server, spoken to over HTTP.

Each test starts ``manage.py runserver --noreload`` on a free loopback port, with the
in-process cache (default) or memcached (``CHORDE_DJANGO_SITE_MEMCACHED``), waits until it
answers (bounded), and kills it at teardown.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.servers import REPO, AppServer

SITE = REPO / "example_projects" / "django_site"


class Site(AppServer):
    """One example-site process (``manage.py runserver --noreload``)."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        argv = [sys.executable, "manage.py", "runserver", "--noreload", "127.0.0.1:{port}"]
        super().__init__(argv, env, port, cwd=SITE, start_timeout=30.0)

    def client(self) -> httpx.Client:
        """An HTTP client with its own cookie jar (one visitor)."""
        return httpx.Client(base_url=self.url, timeout=10.0)

    def counters(self) -> dict[str, int]:
        """How often each view's expensive part ran in this process."""
        return httpx.get(self.url + "/counters/", timeout=10.0).json()


@pytest.fixture(params=["inproc", "memcached", "redis"])
def start_site(request: pytest.FixtureRequest, start_server: Any) -> Callable[..., Site]:
    """Start the site with the in-process cache, with memcached, or with Redis."""
    env: dict[str, str] = {}
    if request.param == "memcached":
        env["CHORDE_DJANGO_SITE_MEMCACHED"] = request.getfixturevalue("memcached").address
    if request.param == "redis":
        from tests.redis_servers import start_redis

        env["CHORDE_DJANGO_SITE_REDIS"] = f"redis://{start_redis(request).address}/0"
    return lambda port=None: start_server(Site(env, port))


def test_cache_page_serves_without_rerunning_the_view(start_site: Any) -> None:
    site = start_site()
    with site.client() as http:
        first = http.get("/cached-page/")
        assert first.status_code == 200
        assert "view ran 1 times" in first.text
        for _ in range(3):
            assert http.get("/cached-page/").text == first.text
        assert site.counters()["cached_page"] == 1
        assert http.post("/invalidate/").status_code == 200
        assert "view ran 2 times" in http.get("/cached-page/").text
        assert site.counters()["cached_page"] == 2


def test_template_fragment_caching(start_site: Any) -> None:
    site = start_site()
    with site.client() as http:
        for _ in range(3):
            assert "sidebar rendered 1 times" in http.get("/fragment/").text
        assert site.counters()["fragment_page"] == 3  # the page itself is not cached
        assert site.counters()["sidebar"] == 1
        http.post("/fragment/invalidate/")
        assert "sidebar rendered 2 times" in http.get("/fragment/").text


def test_low_level_api_sync_and_async(start_site: Any) -> None:
    site = start_site()
    with site.client() as http:
        for _ in range(2):
            assert http.get("/lowlevel/bob/").json() == {"greeting": "hello bob (computed 1 times)"}
        assert http.delete("/lowlevel/bob/").json() == {"deleted": True}
        assert http.delete("/lowlevel/bob/").json() == {"deleted": False}
        assert http.get("/lowlevel/bob/").json()["greeting"].endswith("(computed 2 times)")
        for _ in range(2):
            body = http.get("/async-lowlevel/bob/").json()
            assert body == {"greeting": "hello async bob (computed 1 times)"}


def test_cached_function_view(start_site: Any) -> None:
    site = start_site()
    with site.client() as http:
        assert http.get("/square/12/").json() == {"square": 144, "computed": 1}
        assert http.get("/square/12/").json() == {"square": 144, "computed": 1}
        assert http.get("/square/13/").json() == {"square": 169, "computed": 2}


def test_sessions_survive_across_requests(start_site: Any) -> None:
    site = start_site()
    with site.client() as alice, site.client() as bob:
        assert [alice.get("/session/").json()["visits"] for _ in range(3)] == [1, 2, 3]
        assert bob.get("/session/").json()["visits"] == 1
        assert "sessionid" in alice.cookies
        # Clearing the page cache leaves the sessions (another alias) alone.
        alice.post("/invalidate/")
        assert alice.get("/session/").json()["visits"] == 4


def test_memcached_state_outlives_the_site_process(memcached: Any, start_server: Any) -> None:
    env = {"CHORDE_DJANGO_SITE_MEMCACHED": memcached.address}
    _restart_keeps_pages_and_sessions(lambda port=None: start_server(Site(env, port)))


def _restart_keeps_pages_and_sessions(start_site: Callable[..., Site]) -> None:
    site = start_site()
    with site.client() as http:
        page = http.get("/cached-page/").text
        assert http.get("/session/").json()["visits"] == 1
        cookies = dict(http.cookies)
    site.stop()
    # The same port: cache_page keys include the absolute URL, host and port included.
    again = start_site(site.port)
    with again.client() as http:
        http.cookies.update(cookies)
        assert http.get("/cached-page/").text == page  # served from memcached...
        assert "cached_page" not in again.counters()  # ...the new process never ran the view
        assert http.get("/session/").json()["visits"] == 2
