"""The FastAPI example under a real uvicorn process, spoken to over HTTP (strict mode).

Each test runs against both backends (in-process and memcached, see ``conftest.py``) and
keeps to URLs, or a Host, of its own, so tests sharing a server never share entries.
``/stats`` tells how many times each handler really ran: a hit leaves it alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fastapi.support import PURGE_TOKEN, Backend, cache_status, fastapi_example, wait_for
from tests.servers import AppServer

ADMIN = {"authorization": f"Bearer {PURGE_TOKEN}"}


def uid() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def http(example_server: AppServer) -> Iterator[httpx.Client]:
    # A Host of this test's own: the products' URLs are the same in every test.
    with httpx.Client(
        base_url=example_server.url, timeout=15.0, headers={"host": f"{uid()}.shop.example"}
    ) as client:
        yield client


def calls(http: httpx.Client, name: str) -> int:
    count: int = http.get("/stats").json().get(name, 0)
    return count


# ---- slow endpoints: their own freshness ----------------------------------------------------


def test_a_report_is_computed_once_then_served_from_the_cache(http: httpx.Client) -> None:
    url = f"/reports/{uid()}"
    before = calls(http, "reports")
    first = http.get(url)
    second = http.get(url)
    assert first.status_code == second.status_code == 200
    assert cache_status(first).startswith("chorde; fwd=uri-miss; stored; ttl=")
    assert cache_status(second).startswith("chorde; hit; ttl=")
    assert calls(http, "reports") == before + 1
    assert second.json() == first.json()
    assert "age" not in first.headers and int(second.headers["age"]) >= 0
    assert second.headers["etag"] == first.headers["etag"]
    assert "stale-while-revalidate=2" in second.headers["cache-control"]


async def test_concurrent_misses_compute_once(example_server: AppServer) -> None:
    url = f"/reports/{uid()}"
    async with httpx.AsyncClient(base_url=example_server.url, timeout=15.0) as client:
        before = (await client.get("/stats")).json().get("reports", 0)
        answers = await asyncio.gather(*(client.get(url) for _ in range(8)))
        after = (await client.get("/stats")).json().get("reports", 0)
    assert after == before + 1
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1


def test_a_stale_report_is_revalidated_not_recomputed(http: httpx.Client) -> None:
    url = f"/reports/{uid()}"
    first = http.get(url)
    computed = calls(http, "reports")
    not_modified = calls(http, "reports_not_modified")
    # Fresh for 2 s, then served stale for 2 s while the cache revalidates it in the
    # background (stale-while-revalidate); later, revalidated before answering. Either
    # way the handler answers the cache's If-None-Match with a 304.

    def revalidated() -> bool:
        http.get(url)
        return calls(http, "reports_not_modified") > not_modified

    assert wait_for(revalidated, timeout=20.0, interval=0.2)
    again = http.get(url)
    assert again.json() == first.json()  # the body kept
    assert calls(http, "reports") == computed  # never computed again


def test_an_article_gets_heuristic_freshness_and_if_modified_since(http: httpx.Client) -> None:
    url = f"/articles/{uid()}"
    first = http.get(url)
    assert cache_status(first).startswith("chorde; fwd=uri-miss; stored; ttl=")
    assert "cache-control" not in first.headers  # only Last-Modified: a heuristic lifetime
    assert cache_status(http.get(url)).startswith("chorde; hit;")
    computed = calls(http, "articles")
    not_modified = calls(http, "articles_not_modified")
    revalidated: list[httpx.Response] = []

    def stale() -> bool:
        answer = http.get(url)
        if "hit" in cache_status(answer):
            return False
        revalidated.append(answer)
        return True

    # A tenth of the time since the article changed (5 s before the app started).
    assert wait_for(stale, timeout=30.0, interval=0.2)
    answer = revalidated[0]
    assert cache_status(answer).startswith("chorde; fwd=stale; fwd-status=304; stored")
    assert answer.json() == first.json()
    assert calls(http, "articles_not_modified") == not_modified + 1
    assert calls(http, "articles") == computed


def test_a_response_without_freshness_is_never_stored(http: httpx.Client) -> None:
    before = calls(http, "live")
    first = http.get("/live")
    second = http.get("/live")
    assert second.json()["n"] > first.json()["n"]
    assert calls(http, "live") == before + 2
    assert cache_status(second) == "chorde; fwd=uri-miss; fwd-status=200; stored=?0"
    assert "age" not in second.headers


def test_fastapi_own_pages_are_not_stored(http: httpx.Client) -> None:
    for page in ("/openapi.json", "/docs"):
        answer = http.get(page)
        assert answer.status_code == 200
        assert cache_status(answer).endswith("stored=?0"), page


# ---- personalised: never shared -------------------------------------------------------------


def test_personalised_answers_are_never_shared(http: httpx.Client) -> None:
    before = calls(http, "me")
    seen = []
    for user in ("alice", "bob", "alice", "bob"):
        answer = http.get("/me", headers={"authorization": f"Bearer {user}"})
        assert answer.json()["user"] == user
        assert cache_status(answer).endswith("stored=?0")
        seen.append(answer.json()["n"])
    guest = http.get("/me")
    assert guest.json()["user"] is None
    assert len(set(seen)) == 4  # every answer computed for its request
    assert calls(http, "me") == before + 5


def test_a_cookie_session_is_never_shared(example_server: AppServer) -> None:
    answers = {}
    for user in ("carol", "dave"):
        with httpx.Client(base_url=example_server.url, timeout=15.0) as browser:
            login = browser.post("/login", params={"user": user})
            assert "set-cookie" in login.headers
            first = browser.get("/me")
            second = browser.get("/me")
            assert first.json()["user"] == second.json()["user"] == user
            assert second.json()["n"] > first.json()["n"]
            assert "age" not in second.headers
            answers[user] = second.json()
    assert answers["carol"]["user"] != answers["dave"]["user"]


# ---- tagged responses and purging -----------------------------------------------------------


def _cached(http: httpx.Client, url: str) -> httpx.Response:
    """``url`` fetched until the answer is a hit (bounded), which it returns."""
    for _ in range(3):
        answer = http.get(url)
        if cache_status(answer).startswith("chorde; hit"):
            return answer
    raise AssertionError(f"{url} is not cached: {cache_status(answer)!r}")


def test_tagged_responses_are_cached_and_their_tags_stay_in_the_cache(
    http: httpx.Client,
) -> None:
    for url in ("/products", "/products/1"):
        first = http.get(url)
        assert "surrogate-key" not in first.headers
        hit = _cached(http, url)
        assert "surrogate-key" not in hit.headers
        assert hit.json() == first.json()


def test_an_unknown_product_is_not_stored(http: httpx.Client) -> None:
    missing = http.get("/products/999")
    assert missing.status_code == 404
    assert cache_status(missing).endswith("fwd-status=404; stored=?0")


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": "Basic x"}]
)
def test_purging_wants_the_token(http: httpx.Client, headers: dict[str, str]) -> None:
    _cached(http, "/products")
    refused = http.post("/purge", json={"tags": ["products"]}, headers=headers)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert cache_status(http.get("/products")).startswith("chorde; hit")


def test_purge_by_tag(http: httpx.Client) -> None:
    for url in ("/products", "/products/1", "/products/2"):
        _cached(http, url)
    done = http.post("/purge", json={"tags": ["product-2"]}, headers=ADMIN)
    assert done.status_code == 200
    assert done.json()["tags"] == ["product-2"]
    assert cache_status(http.get("/products")).startswith("chorde; fwd=uri-miss; stored")
    assert cache_status(http.get("/products/2")).startswith("chorde; fwd=uri-miss; stored")
    assert cache_status(http.get("/products/1")).startswith("chorde; hit")


def test_purge_by_url(http: httpx.Client) -> None:
    for url in ("/products", "/products/3"):
        _cached(http, url)
    done = http.post("/purge", json={"urls": ["/products/3"]}, headers=ADMIN)
    assert done.status_code == 200
    [absolute] = done.json()["urls"]
    assert absolute.endswith(".shop.example/products/3")  # taken on the request's Host
    assert cache_status(http.get("/products/3")).startswith("chorde; fwd=uri-miss; stored")
    assert cache_status(http.get("/products")).startswith("chorde; hit")


def test_purge_rejects_bad_orders(http: httpx.Client) -> None:
    too_many = http.post("/purge", json={"tags": ["t"] * 101}, headers=ADMIN)
    assert too_many.status_code == 422
    spaced = http.post("/purge", json={"tags": ["two words"]}, headers=ADMIN)
    assert spaced.status_code == 422


def test_a_price_change_purges_the_product_everywhere(http: httpx.Client) -> None:
    before = _cached(http, "/products").json()
    _cached(http, "/products/2")
    price = before["products"][1]["price"] + 1
    changed = http.put("/products/2", json={"price": price}, headers=ADMIN)
    assert changed.status_code == 200
    listing = http.get("/products")
    assert cache_status(listing).startswith("chorde; fwd=uri-miss; stored")
    assert listing.json()["products"][1]["price"] == price
    assert http.get("/products/2").json()["price"] == price
    refused = http.put("/products/2", json={"price": 1}, headers={"authorization": "Bearer no"})
    assert refused.status_code == 401


# ---- never cached, backends -----------------------------------------------------------------


def test_static_and_stats_are_left_alone(http: httpx.Client) -> None:
    static = http.get("/static")
    assert static.text == "ok"
    assert "cache-status" not in static.headers and "etag" not in static.headers
    assert "cache-status" not in http.get("/stats").headers


def test_entries_live_in_the_configured_backend(backend: Backend, http: httpx.Client) -> None:
    _cached(http, f"/reports/{uid()}")
    if backend.memcached is None:
        pytest.skip("in-process backend: nothing outside the server to inspect")
    assert int(backend.memcached.stats()["curr_items"]) >= 1


def test_workers_share_entries_and_purges(
    example_server: AppServer, second_example_server: AppServer
) -> None:
    site = {"host": f"{uid()}.shop.example"}
    with (
        httpx.Client(base_url=example_server.url, timeout=15.0, headers=site) as one,
        httpx.Client(base_url=second_example_server.url, timeout=15.0, headers=site) as two,
    ):
        stored = one.get("/products/1")
        assert cache_status(stored).startswith("chorde; fwd=uri-miss; stored")
        shared = two.get("/products/1")
        assert cache_status(shared).startswith("chorde; hit")  # stored by the other worker
        assert shared.json() == stored.json()
        assert two.post("/purge", json={"tags": ["product-1"]}, headers=ADMIN).status_code == 200
        assert cache_status(one.get("/products/1")).startswith("chorde; fwd=uri-miss")


def test_admin_endpoints_are_off_without_a_token(backend: Backend, start_server: Any) -> None:
    if backend.memcached is not None:
        pytest.skip("the setting does not depend on the backend")
    server = start_server(fastapi_example({"SLOW_SECONDS": "0"}))
    with httpx.Client(base_url=server.url, timeout=15.0) as http:
        for headers in ({}, {"authorization": "Bearer anything"}):
            answer = http.post("/purge", json={"tags": ["x"]}, headers=headers)
            assert answer.status_code == 503
            assert "PURGE_TOKEN" in answer.json()["detail"]
