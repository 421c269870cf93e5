"""The example app under a real uvicorn process, spoken to over HTTP: every caching rule.

Each test runs against both backends (in-process and memcached, see ``conftest.py``) and
uses URLs of its own (a unique query string), so tests sharing a server never share
entries. ``/stats`` tells how many times each handler really ran: a hit leaves it alone.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest


@pytest.fixture
def http(example_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=example_server.url, timeout=15.0) as client:
        yield client


def uid() -> str:
    return uuid.uuid4().hex


def calls(http: httpx.Client, name: str) -> int:
    return http.get("/stats").json().get(name, 0)


# ---- hits, misses, keys --------------------------------------------------------------------


def test_slow_endpoint_is_computed_once_then_served_with_age(http: httpx.Client) -> None:
    url = f"/slow?item={uid()}"
    before = calls(http, "slow")
    first = http.get(url)
    second = http.get(url)
    assert first.status_code == second.status_code == 200
    assert calls(http, "slow") == before + 1
    assert second.json() == first.json()
    assert "age" not in first.headers
    assert int(second.headers["age"]) >= 0
    assert second.headers["etag"] == first.headers["etag"]


def test_query_string_is_part_of_the_key(http: httpx.Client) -> None:
    tag = uid()
    a = http.get(f"/slow?item=a{tag}")
    b = http.get(f"/slow?item=b{tag}")
    assert a.json()["item"] == f"a{tag}"
    assert b.json()["item"] == f"b{tag}"
    assert "age" not in b.headers


async def test_concurrent_misses_make_one_call(example_server: Any) -> None:
    url = f"/slow?item={uid()}"
    async with httpx.AsyncClient(base_url=example_server.url, timeout=15.0) as client:
        before = (await client.get("/stats")).json().get("slow", 0)
        responses = await asyncio.gather(*(client.get(url) for _ in range(8)))
        after = (await client.get("/stats")).json().get("slow", 0)
    assert after == before + 1
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1


def test_head_is_served_from_the_cached_get(http: httpx.Client) -> None:
    url = f"/slow?item={uid()}"
    got = http.get(url)
    before = calls(http, "slow")
    head = http.head(url)
    assert calls(http, "slow") == before
    assert head.status_code == 200
    assert head.content == b""
    assert "age" in head.headers
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["content-length"] == got.headers["content-length"]


def test_head_miss_goes_to_the_app_and_stores_nothing(http: httpx.Client) -> None:
    url = f"/slow?item={uid()}"
    before = calls(http, "slow")
    assert http.head(url).status_code == 200
    got = http.get(url)
    assert calls(http, "slow") == before + 2
    assert "age" not in got.headers


def test_post_is_never_cached(http: httpx.Client) -> None:
    url = f"/lab?t={uid()}"
    before = calls(http, "lab")
    assert http.post(url).status_code == 200
    assert http.post(url).status_code == 200
    got = http.get(url)
    assert calls(http, "lab") == before + 3
    assert "age" not in got.headers


def test_post_invalidates_the_stored_get(http: httpx.Client) -> None:
    url = f"/lab?t={uid()}"
    first = http.get(url)
    assert http.get(url).json() == first.json()
    http.post(url)
    after = http.get(url)
    assert after.json()["n"] > first.json()["n"]
    assert "age" not in after.headers


# ---- request Cache-Control -------------------------------------------------------------


def test_request_no_store_bypasses_the_cache(http: httpx.Client) -> None:
    url = f"/lab?t={uid()}"
    first = http.get(url)
    bypass = http.get(url, headers={"cache-control": "no-store"})
    again = http.get(url)
    assert bypass.json()["n"] == first.json()["n"] + 1
    assert "age" not in bypass.headers
    assert again.json() == first.json()  # the stored entry was neither used nor replaced
    assert "age" in again.headers


@pytest.mark.parametrize("directive", ["no-cache", "max-age=0"])
def test_request_no_cache_revalidates_and_stores(http: httpx.Client, directive: str) -> None:
    url = f"/lab?t={uid()}"
    first = http.get(url)
    fresh = http.get(url, headers={"cache-control": directive})
    again = http.get(url)
    assert fresh.json()["n"] == first.json()["n"] + 1
    assert "age" not in fresh.headers
    assert again.json() == fresh.json()
    assert "age" in again.headers


def test_only_if_cached_answers_504_on_a_miss(http: httpx.Client) -> None:
    url = f"/lab?t={uid()}"
    before = calls(http, "lab")
    assert http.get(url, headers={"cache-control": "only-if-cached"}).status_code == 504
    assert calls(http, "lab") == before
    http.get(url)
    hit = http.get(url, headers={"cache-control": "only-if-cached"})
    assert hit.status_code == 200
    assert "age" in hit.headers


# ---- Authorization and personalised responses ---------------------------------------------


def test_authorized_requests_are_not_stored(http: httpx.Client) -> None:
    url = f"/lab?t={uid()}"
    auth = {"authorization": "Bearer alice"}
    a = http.get(url, headers=auth)
    b = http.get(url, headers=auth)
    anonymous = http.get(url)
    assert b.json()["n"] == a.json()["n"] + 1
    assert anonymous.json()["n"] == b.json()["n"] + 1
    assert "age" not in b.headers and "age" not in anonymous.headers


def test_shared_entry_is_not_served_to_an_authorized_request(http: httpx.Client) -> None:
    url = f"/lab?t={uid()}"
    http.get(url)
    assert "age" in http.get(url).headers
    authorized = http.get(url, headers={"authorization": "Bearer bob"})
    assert "age" not in authorized.headers


def test_personalised_endpoint_is_never_shared(http: httpx.Client) -> None:
    guest = http.get("/me")
    alice = http.get("/me", headers={"authorization": "Bearer alice"})
    bob = http.get("/me", headers={"authorization": "Bearer bob"})
    assert guest.json()["user"] is None
    assert alice.json()["user"] == "alice"
    assert bob.json()["user"] == "bob"
    before = calls(http, "me")
    assert http.get("/me", headers={"authorization": "Bearer alice"}).json()["user"] == "alice"
    assert calls(http, "me") == before + 1


def test_cookie_personalised_answers_are_private(http: httpx.Client) -> None:
    http.get("/me")  # the guest copy, shared
    for user in ("carol", "dave"):
        with httpx.Client(base_url=str(http.base_url), timeout=15.0) as browser:
            login = browser.get(f"/login?user={user}")
            assert "set-cookie" in login.headers
            first = browser.get("/me")
            second = browser.get("/me")
            assert first.json()["user"] == second.json()["user"] == user
            assert second.json()["n"] == first.json()["n"] + 1
            assert "age" not in second.headers


def test_public_response_is_shared_despite_authorization(http: httpx.Client) -> None:
    first = http.get("/news", headers={"authorization": "Bearer erin"})
    second = http.get("/news", headers={"authorization": "Bearer frank"})
    assert second.json() == first.json()
    assert "age" in second.headers


@pytest.mark.parametrize("cc", ["public", "s-maxage%3D60", "must-revalidate"])
def test_lab_shareable_directives_with_authorization(http: httpx.Client, cc: str) -> None:
    url = f"/lab?t={uid()}&cc={cc}"
    first = http.get(url, headers={"authorization": "Bearer grace"})
    other_user = http.get(url, headers={"authorization": "Bearer heidi"})
    anonymous = http.get(url)
    assert other_user.json() == anonymous.json() == first.json()
    assert "age" in other_user.headers and "age" in anonymous.headers


# ---- response Cache-Control, Set-Cookie, status, Expires ------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "cc=no-store",
        "cc=private",
        "cc=no-cache",
        "cc=max-age%3D0",
        "cookie=yes",
        "vary=*",
        "status=500",
        "status=302",
        "expires=0",
        "expires=Thu,%2001%20Jan%201970%2000:00:00%20GMT",
    ],
)
def test_unstorable_responses_are_not_stored(http: httpx.Client, query: str) -> None:
    url = f"/lab?t={uid()}&{query}"
    first = http.get(url, follow_redirects=False)
    second = http.get(url, follow_redirects=False)
    assert second.json()["n"] == first.json()["n"] + 1
    assert "age" not in second.headers


@pytest.mark.parametrize("query", ["status=404", "status=410", "cc=public", "cc=max-age%3D60"])
def test_storable_responses_are_stored(http: httpx.Client, query: str) -> None:
    url = f"/lab?t={uid()}&{query}"
    first = http.get(url)
    second = http.get(url)
    assert second.status_code == first.status_code
    assert second.json() == first.json()
    assert "age" in second.headers


def test_max_age_and_s_maxage_bound_the_ttl(http: httpx.Client) -> None:
    tag = uid()
    urls = [f"/lab?t={tag}&cc=max-age%3D1", f"/lab?t={tag}&cc=max-age%3D100,%20s-maxage%3D1"]
    firsts = [http.get(u).json() for u in urls]
    assert [http.get(u).json() for u in urls] == firsts  # hits while fresh
    time.sleep(1.05)
    for url, first in zip(urls, firsts, strict=True):
        after = http.get(url)
        assert after.json()["n"] > first["n"]
        assert "age" not in after.headers


def test_future_expires_is_stored(http: httpx.Client) -> None:
    date = email.utils.formatdate(time.time() + 3600, usegmt=True)
    url = f"/lab?t={uid()}&expires={date}"
    first = http.get(url)
    assert http.get(url).json() == first.json()


# ---- Vary ------------------------------------------------------------------------------------


def test_vary_accept_language_keeps_one_entry_per_language(http: httpx.Client) -> None:
    before = calls(http, "greeting")
    answers = {}
    for lang in ("en", "fr", "es", "en", "fr", "es"):
        r = http.get("/greeting", headers={"accept-language": lang})
        assert r.headers["vary"] == "Accept-Language"
        assert r.json()["lang"] == lang
        answers.setdefault(lang, r.json())
        assert r.json() == answers[lang]
    # Three distinct entries at most (an earlier test run on this server may have stored some).
    assert calls(http, "greeting") - before <= 3
    assert "age" in http.get("/greeting", headers={"accept-language": "fr"}).headers


def test_vary_on_a_lab_url(http: httpx.Client) -> None:
    url = f"/lab?t={uid()}&vary=Accept-Language"
    en = http.get(url, headers={"accept-language": "en"})
    fr = http.get(url, headers={"accept-language": "fr"})
    none = http.get(url)
    assert len({en.json()["n"], fr.json()["n"], none.json()["n"]}) == 3
    assert http.get(url, headers={"accept-language": "en"}).json() == en.json()
    assert http.get(url, headers={"accept-language": "fr"}).json() == fr.json()
    assert http.get(url).json() == none.json()


# ---- ETag and If-None-Match ---------------------------------------------------------------


def test_strong_etag_and_304(http: httpx.Client) -> None:
    url = f"/lab?t={uid()}&cc=max-age%3D60&vary=Accept-Language"
    first = http.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')  # strong: no W/ prefix
    before = calls(http, "lab")
    not_modified = http.get(url, headers={"if-none-match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert not_modified.headers["cache-control"] == "max-age=60"
    assert not_modified.headers["vary"] == "Accept-Language"
    assert "age" in not_modified.headers
    assert "content-type" not in not_modified.headers
    weak = http.get(url, headers={"if-none-match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    assert http.get(url, headers={"if-none-match": "*"}).status_code == 304
    other = http.get(url, headers={"if-none-match": '"something-else"'})
    assert other.status_code == 200
    assert other.content == first.content
    assert calls(http, "lab") == before


def test_app_etag_is_kept(http: httpx.Client) -> None:
    url = f'/lab?t={uid()}&etag="v1"'
    assert http.get(url).headers["etag"] == '"v1"'
    assert http.get(url, headers={"if-none-match": '"v1"'}).status_code == 304


def test_first_answer_gets_304_when_its_etag_matches(http: httpx.Client) -> None:
    url = f'/lab?t={uid()}&etag="v7"'
    before = calls(http, "lab")
    assert http.get(url, headers={"if-none-match": '"v7"'}).status_code == 304
    assert calls(http, "lab") == before + 1


# ---- streaming -------------------------------------------------------------------------------


def test_stream_passes_through_before_it_ends(http: httpx.Client) -> None:
    token = uid()
    with http.stream("GET", f"/stream?chunks=3&size=100&hold={token}") as response:
        chunks = response.iter_raw()
        first = next(chunks)
        # The app waits for the release before producing more: a buffering cache would
        # never have let the first chunk through.
        assert first.startswith(b"call ")
        assert http.get(f"/stream/release?token={token}").status_code == 200
        rest = b"".join(chunks)
    assert len(first) + len(rest) == 300


def test_stream_above_the_cap_is_not_stored(http: httpx.Client) -> None:
    url = f"/stream?chunks=100&size=1024&t={uid()}"  # 100 KiB, cap is 64 KiB
    first = http.get(url)
    second = http.get(url)
    assert len(first.content) == len(second.content) == 100 * 1024
    assert first.content.split(b" ")[1] != second.content.split(b" ")[1]
    assert "age" not in second.headers


def test_stream_within_the_cap_is_stored(http: httpx.Client) -> None:
    url = f"/stream?chunks=8&size=1024&t={uid()}"
    first = http.get(url)
    second = http.get(url)
    assert second.content == first.content
    assert second.headers["content-length"] == str(8 * 1024)
    assert "age" in second.headers
    assert "etag" in second.headers


# ---- opt-out and backend -------------------------------------------------------------------


def test_no_cache_route_endpoints_are_never_cached(http: httpx.Client) -> None:
    before = http.get("/stats").json()
    after = http.get("/stats").json()
    assert "age" not in http.get("/stats").headers
    assert after == before
    assert "etag" not in http.get("/static").headers


def test_entries_live_in_the_configured_backend(example_server: Any, http: httpx.Client) -> None:
    url = f"/slow?item={uid()}"
    http.get(url)
    assert "age" in http.get(url).headers
    if example_server.backend == "redis":
        assert int(example_server.redis.call("DBSIZE")) >= 1
        return
    if example_server.backend != "memcached":
        pytest.skip("in-process backend: nothing outside the server to inspect")
    items = int(example_server.memcached.stats()["curr_items"])
    assert items >= 1
