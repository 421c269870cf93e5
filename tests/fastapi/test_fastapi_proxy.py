"""Every rule of the strict shared cache, over HTTP, as a CDN engineer would deploy it.

A reverse proxy (``proxy_app.py``: httpx forwarding, wrapped in ``CacheMiddleware(strict=
True)``) runs under uvicorn in front of a separate origin process (``origin_app.py``), so
that every field line the origin sends reaches the cache. Each test sets what the origin
answers (the query string, or ``Site.set``), talks to the proxy, and reads the origin's log
to see what reached it. Both run against the in-process and the memcached client.

Real time is used (the processes share no fake clock): freshness lifetimes are 1 s where a
test needs an entry to go stale, waits are bounded, and nothing asserts how long anything
took. Where a test needs requests to overlap, the origin holds them until released.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import httpx
import pytest

from tests.fastapi.support import (
    Site,
    cache_status,
    origin_server,
    proxy_server,
    status_ttl,
    url,
    wait_for,
)
from tests.servers import AppServer

#: The freshness of the responses a test lets go stale (see :func:`going_stale`), and how
#: long the test then waits. The cache keeps a stale entry that has validators for another
#: lifetime, and at least a minute, so it is still there to be revalidated.
LIFETIME = 2
STALE = LIFETIME + 0.4


def going_stale(path: str, directives: str = "", **params: Any) -> str:
    """A URL of ``path`` whose response is fresh for :data:`LIFETIME` seconds (plus
    ``directives``). It has no ``Date``: a Date counts whole seconds, and its apparent age
    would make the response stale up to a second earlier than that."""
    cc = f"max-age={LIFETIME}" + (f", {directives}" if directives else "")
    return url(path, cc=cc, date="none", **params)


def statuses(site: Site, path: str) -> list[int]:
    """The statuses the origin answered for ``path``, in order."""
    return [entry["status"] for entry in site.log(path)]


def stored(response: httpx.Response) -> bool:
    """Whether the cache stored the answer it forwarded."""
    status = cache_status(response)
    assert "stored" in status, status
    return "stored=?0" not in status


def hit(response: httpx.Response) -> bool:
    """Whether the cache answered without going forward (whatever its name)."""
    _name, _, params = cache_status(response).partition("; ")
    return params.startswith("hit")


# ---- strict mode (RFC 9111 sections 3, 4.2) -------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{}, {"etag": "none"}, {"cc": "public"}, {"vary": "Accept-Language"}],
    ids=["etag-only", "nothing", "public-only", "vary-only"],
)
def test_nothing_is_stored_without_freshness(site: Site, path: str, fields: Any) -> None:
    first = site.get(url(path, **fields))
    second = site.get(url(path, **fields))
    assert cache_status(first) == "chorde; fwd=uri-miss; fwd-status=200; stored=?0"
    assert cache_status(second) == cache_status(first)
    assert statuses(site, path) == [200, 200]


def test_heuristic_freshness_from_last_modified(site: Site, path: str) -> None:
    target = url(path, lm_ago=1000)
    first = site.get(target)
    assert stored(first)
    # RFC 9111 4.2.2: a share (10%) of the time since Last-Modified: 100 s here.
    assert 0 < status_ttl(first) <= 100
    assert hit(site.get(target))
    assert len(site.log(path)) == 1


@pytest.mark.parametrize(
    "modified, valid",
    [
        ("Mon, 06 Nov 2000 08:49:37 GMT", True),
        ("Monday, 06-Nov-00 08:49:37 GMT", True),
        ("Mon Nov  6 08:49:37 2000", True),
        ("Mon, 06 Nov 00 08:49:37 GMT", False),
        ("Mon, 06 Nov 2000 8:49:37 GMT", False),
        ("Mon, 06 Nov 2000 08:49:37 CET", False),
        ("2000-11-06T08:49:37Z", False),
        ("yesterday", False),
    ],
)
def test_only_an_http_date_gives_heuristic_freshness(
    site: Site, path: str, modified: str, valid: bool
) -> None:
    # RFC 9110 section 5.6.7: IMF-fixdate and the two obsolete forms; nothing else.
    assert stored(site.get(url(path, lm=modified))) is valid


def test_no_heuristic_for_statuses_not_cacheable_by_default(site: Site, path: str) -> None:
    target = url(path, lm_ago=1000, status=302)
    site.http.get(target)
    assert not stored(site.http.get(target))
    assert statuses(site, path) == [302, 302]


def test_explicit_freshness_stores_any_final_status(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60", status=302)
    assert stored(site.http.get(target))
    again = site.http.get(target)
    assert again.status_code == 302 and hit(again)


def test_strict_mode_ignores_the_middleware_ttl(defaults_site: Site, path: str) -> None:
    # This proxy's application-mode ttl is 1 s; the origin grants 30 s.
    target = url(path, cc="max-age=30")
    assert stored(defaults_site.get(target))
    time.sleep(1.2)
    later = defaults_site.get(target)
    assert hit(later) and int(later.headers["age"]) >= 1
    assert len(defaults_site.log(path)) == 1


def test_a_varying_response_keeps_its_freshness_past_the_middleware_ttl(
    defaults_site: Site, path: str
) -> None:
    target = url(path, cc="max-age=30", vary="Accept-Language")
    assert stored(defaults_site.get(target, accept_language="en"))
    time.sleep(1.2)
    assert hit(defaults_site.get(target, accept_language="en"))


@pytest.mark.parametrize(
    "cc, kept", [("max-age=0, s-maxage=60", True), ("max-age=60, s-maxage=0", False)]
)
def test_s_maxage_wins_in_a_shared_cache(site: Site, path: str, cc: str, kept: bool) -> None:
    assert stored(site.get(url(path, cc=cc))) is kept
    assert hit(site.get(url(path, cc=cc))) is kept


# ---- revalidation (RFC 9111 section 4.3) ----------------------------------------------------


def test_a_304_freshens_the_entry_headers_updated_body_kept(site: Site, path: str) -> None:
    target = going_stale(path)
    first = site.get(target)
    etag = first.headers["etag"]
    site.set(path, fields={"x-note": "updated"})
    time.sleep(STALE)
    again = site.get(target)
    assert cache_status(again).startswith("chorde; fwd=stale; fwd-status=304; stored")
    assert (again.status_code, again.content) == (200, first.content)
    assert again.headers["x-note"] == "updated"
    assert site.log(path)[-1]["inm"] == etag  # the cache's validator, sent by the cache
    assert statuses(site, path) == [200, 304]
    fresh = site.get(target)
    assert hit(fresh) and fresh.headers["x-note"] == "updated"
    assert fresh.content == first.content


def test_a_stale_entry_is_revalidated_long_after_it_went_stale(site: Site, path: str) -> None:
    # Kept past its freshness for another lifetime, and at least a minute: a short-lived
    # response asked for again a while later is revalidated, not fetched anew.
    target = going_stale(path)
    first = site.get(target)
    time.sleep(LIFETIME * 2 + 0.5)
    again = site.get(target)
    assert cache_status(again).startswith("chorde; fwd=stale; fwd-status=304; stored")
    assert site.log(path)[-1]["inm"] == first.headers["etag"]


def test_a_variant_is_revalidated_with_its_own_request_fields(site: Site, path: str) -> None:
    target = going_stale(path, vary="Accept-Language")
    en = site.get(target, accept_language="en")
    fr = site.get(target, accept_language="fr")
    assert en.headers["etag"] != fr.headers["etag"]  # the origin's ETag names the variant
    time.sleep(STALE)
    again = site.get(target, accept_language="fr")
    assert cache_status(again).startswith("chorde; fwd=stale; fwd-status=304; stored")
    assert again.content == fr.content
    last = site.log(path)[-1]
    assert (last["inm"], last["lang"]) == (fr.headers["etag"], "fr")
    assert hit(site.get(target, accept_language="fr"))


def test_last_modified_alone_revalidates(site: Site, path: str) -> None:
    target = going_stale(path, etag="none", lm_ago=1000)
    first = site.get(target)
    time.sleep(STALE)
    again = site.get(target)
    assert cache_status(again).startswith("chorde; fwd=stale; fwd-status=304; stored")
    assert again.content == first.content
    last = site.log(path)[-1]
    assert (last["inm"], last["ims"]) == (None, first.headers["last-modified"])


def test_a_200_to_a_revalidation_replaces_the_entry(site: Site, path: str) -> None:
    target = going_stale(path)
    first = site.get(target)
    site.set(path, version=2)
    time.sleep(STALE)
    replaced = site.get(target)
    assert cache_status(replaced).startswith("chorde; fwd=stale; stored")
    assert replaced.text == f"{path} v2" and first.text == f"{path} v1"
    assert replaced.headers["etag"] != first.headers["etag"]
    assert site.log(path)[-1]["inm"] == first.headers["etag"]
    after = site.get(target)
    assert hit(after) and after.text == f"{path} v2"
    assert statuses(site, path) == [200, 200]


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate"])
def test_must_revalidate_is_never_served_stale(
    defaults_site: Site, path: str, directive: str
) -> None:
    # The defaults proxy would serve stale entries (stale-while-revalidate=30 and
    # stale-if-error=30 by default), but not these.
    target = going_stale(path, directive)
    first = defaults_site.get(target)
    time.sleep(STALE)
    again = defaults_site.get(target)
    assert cache_status(again).startswith("edge; fwd=stale; fwd-status=304")
    assert again.content == first.content
    assert defaults_site.log(path)[-1]["inm"] == first.headers["etag"]  # conditional
    time.sleep(STALE)
    defaults_site.set(path, fail=503)
    failed = defaults_site.get(target)
    assert failed.status_code == 503  # the failure, not the stale copy


@pytest.mark.parametrize("directive", ["no-cache", "max-age=0"])
def test_a_no_cache_request_revalidates_a_fresh_entry(
    site: Site, path: str, directive: str
) -> None:
    target = url(path, cc="max-age=60")
    first = site.get(target)
    again = site.get(target, cache_control=directive)
    assert (again.status_code, again.content) == (200, first.content)
    assert "fwd-status=304" in cache_status(again)
    assert site.log(path)[-1]["inm"] == first.headers["etag"]
    assert statuses(site, path) == [200, 304]


@pytest.mark.parametrize("cc", ["max-age=60, no-cache", 'max-age=60, no-cache="x-internal"'])
def test_a_no_cache_response_is_revalidated_on_every_use(site: Site, path: str, cc: str) -> None:
    target = url(path, cc=cc)
    first = site.get(target)
    assert stored(first)
    for _ in range(2):
        again = site.get(target)
        assert cache_status(again).startswith("chorde; fwd=stale; fwd-status=304; stored")
        assert again.content == first.content
    assert statuses(site, path) == [200, 304, 304]
    assert [entry["inm"] for entry in site.log(path)] == [None, *[first.headers["etag"]] * 2]


@pytest.mark.parametrize(
    "fields", [{"cc": "max-age=60, no-cache", "etag": "none"}, {"cc": "no-cache"}]
)
def test_a_no_cache_response_is_never_served_without_the_origin(
    site: Site, path: str, fields: dict[str, str]
) -> None:
    # Without a validator it cannot be revalidated; without freshness a strict cache
    # does not keep it: either way every request reaches the origin.
    target = url(path, **fields)
    for _ in range(3):
        assert not hit(site.get(target))
    assert statuses(site, path) == [200, 200, 200]


async def test_concurrent_revalidations_go_to_the_origin_once(site: Site, path: str) -> None:
    target = going_stale(path)
    first = site.get(target)
    time.sleep(STALE)
    site.set(path, hold=True)
    try:
        async with httpx.AsyncClient(base_url=site.proxy.url, timeout=15.0) as client:
            answers = asyncio.gather(*(client.get(target) for _ in range(6)))
            released = asyncio.create_task(_release_when_asked(site, path, 2))
            results = await answers
            await released
    finally:
        site.set(path, hold=False)
    assert {(r.status_code, r.content) for r in results} == {(200, first.content)}
    assert statuses(site, path) == [200, 304]


async def _release_when_asked(site: Site, path: str, requests: int) -> None:
    """Release the origin's hold on ``path`` once it has had ``requests`` requests (and
    the proxy a moment to queue the others behind the one it forwarded)."""
    await asyncio.to_thread(wait_for, lambda: len(site.log(path)) >= requests)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(site.set, path, hold=False)


# ---- Age and dates (RFC 9111 sections 4.2.3, 5.1, 5.3) --------------------------------------


def test_the_origins_age_is_kept_and_added_to(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60", age=30)
    first = site.get(target)
    assert stored(first)
    assert int(first.headers["age"]) >= 30  # kept on the miss
    assert status_ttl(first) <= 30  # the age counts against max-age
    time.sleep(1.1)
    later = site.get(target)
    assert hit(later) and int(later.headers["age"]) >= 31


def test_an_age_past_the_lifetime_is_stale_on_arrival(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60", age=61)
    assert not stored(site.get(target))
    assert not hit(site.get(target))


@pytest.mark.parametrize("ages, kept", [(["10", "100"], True), (["100", "10"], False)])
def test_of_two_age_lines_the_first_counts(
    site: Site, path: str, ages: list[str], kept: bool
) -> None:
    target = url(path, cc="max-age=50", age=ages)
    first = site.get(target)
    assert stored(first) is kept
    if kept:
        assert first.headers.get_list("age") == [first.headers["age"]]  # one line leaves
        assert 10 <= int(first.headers["age"]) < 50


@pytest.mark.parametrize("age", ["7200, 0", "abc", "-1", "1.5", ""])
def test_an_invalid_age_is_not_stored(site: Site, path: str, age: str) -> None:
    target = url(path, cc="max-age=3600", age=age)
    assert not stored(site.get(target))
    assert not hit(site.get(target))
    assert len(site.log(path)) == 2


def _dates(when: float) -> dict[str, str]:
    t = time.gmtime(when)
    return {
        "imf": email.utils.formatdate(when, usegmt=True),
        "rfc850": time.strftime("%A, %d-%b-%y %H:%M:%S GMT", t),
        "asctime": time.strftime("%a %b %e %H:%M:%S %Y", t),
    }


@pytest.mark.parametrize("form", ["imf", "rfc850", "asctime"])
def test_the_three_http_date_forms_are_dates(site: Site, path: str, form: str) -> None:
    target = url(path, expires=_dates(time.time() + 3600)[form])
    assert stored(site.get(target)), form
    assert hit(site.get(target))


def _invalid_expires() -> dict[str, str]:
    when = time.time() + 400 * 86400  # next year: a lenient parser would store these
    t = time.gmtime(when)
    day, month, year = time.strftime("%a", t), time.strftime("%b", t), t.tm_year
    dd = f"{t.tm_mday:02d}"
    return {
        "1-digit hour": f"{day}, {dd} {month} {year} 9:00:00 GMT",
        "2-digit year": f"{day}, {dd} {month} {year % 100} 09:00:00 GMT",
        "AEST": f"{day}, {dd} {month} {year} 09:00:00 AEST",
        "dashes": f"{day}, {dd}-{month}-{year} 09:00:00 GMT",
        "extra spaces": f"{day},  {dd} {month} {year} 09:00:00 GMT",
        "no comma": f"{day} {dd} {month} {year} 09:00:00 GMT",
        "dots": f"{day}, {dd} {month} {year} 09.00.00 GMT",
        "zero": "0",
        "words": "never",
    }


@pytest.mark.parametrize("form", sorted(_invalid_expires()))
def test_an_invalid_expires_means_already_expired(site: Site, path: str, form: str) -> None:
    target = url(path, expires=_invalid_expires()[form])
    assert not stored(site.get(target)), form
    assert not hit(site.get(target))
    assert len(site.log(path)) == 2


def test_two_expires_lines_mean_already_expired(site: Site, path: str) -> None:
    future = _dates(time.time() + 3600)["imf"]
    assert not stored(site.get(url(path, expires=[future, future])))


@pytest.mark.parametrize("expires_after, kept", [(3600, False), (86400 + 3600, True)])
def test_expires_counts_from_the_origins_date(
    site: Site, path: str, expires_after: int, kept: bool
) -> None:
    # A Date a day ago: the lifetime is Expires minus Date, and the response is a day old.
    sent = time.time() - 86400
    target = url(path, date=_dates(sent)["imf"], expires=_dates(sent + expires_after)["imf"])
    assert stored(site.get(target)) is kept


# ---- targeted fields (RFC 9213) -------------------------------------------------------------


@pytest.mark.parametrize(
    "cc, cdn, kept",
    [
        ("max-age=600", "no-store", False),
        ("max-age=600", "max-age=0", False),
        ("max-age=600", "no-cache", False),
        ("max-age=600", "private", False),
        ("no-store", "max-age=60", True),
        ("max-age=0", "max-age=60", True),
        ("private", "public, max-age=60", True),
    ],
)
def test_cdn_cache_control_overrides_cache_control(
    site: Site, path: str, cc: str, cdn: str, kept: bool
) -> None:
    target = url(path, cc=cc, cdn=cdn)
    assert stored(site.get(target)) is kept
    assert hit(site.get(target)) is kept


# ---- RFC 5861 -------------------------------------------------------------------------------


def _stale_while_revalidate(site: Site, path: str, target: str) -> None:
    first = site.get(target)
    assert first.text == f"{path} v1"
    site.set(path, version=2)
    time.sleep(STALE)
    site.set(path, hold=True)  # the refresh waits at the origin until released
    try:
        answers = [site.get(target) for _ in range(4)]
    finally:
        site.set(path, hold=False)
    for answer in answers:  # served at once, from the stale entry
        assert answer.text == f"{path} v1"
        assert hit(answer) and status_ttl(answer) <= 0
        assert int(answer.headers["age"]) >= 1
    assert wait_for(lambda: site.get(target).text == f"{path} v2")
    refreshes = site.log(path)[1:]
    assert len(refreshes) == 1  # refreshed once for the four
    assert refreshes[0]["inm"] == first.headers["etag"]


def test_stale_while_revalidate_serves_at_once_and_refreshes_once(site: Site, path: str) -> None:
    _stale_while_revalidate(site, path, going_stale(path, "stale-while-revalidate=30"))


def test_stale_while_revalidate_as_a_middleware_default(defaults_site: Site, path: str) -> None:
    _stale_while_revalidate(defaults_site, path, going_stale(path))


def test_no_stale_while_revalidate_past_the_window(site: Site, path: str) -> None:
    target = going_stale(path, "stale-while-revalidate=1")
    site.get(target)
    site.set(path, version=2)
    time.sleep(STALE + 1)
    later = site.get(target)  # waited for: the origin's answer
    assert later.text == f"{path} v2"
    assert not hit(later)


@pytest.mark.parametrize("failure", [500, 502, 503, 504])
def test_stale_if_error_on_a_5xx(site: Site, path: str, failure: int) -> None:
    target = going_stale(path, "stale-if-error=60")
    first = site.get(target)
    site.set(path, fail=failure)
    time.sleep(STALE)
    answer = site.get(target)
    assert (answer.status_code, answer.content) == (200, first.content)
    assert cache_status(answer).startswith(f"chorde; fwd=stale; fwd-status={failure}; ttl=")
    assert status_ttl(answer) <= 0


def test_without_stale_if_error_the_failure_goes_through(site: Site, path: str) -> None:
    target = going_stale(path)
    site.get(target)
    site.set(path, fail=503)
    time.sleep(STALE)
    assert site.get(target).status_code == 503


def test_stale_if_error_as_a_middleware_default(defaults_site: Site, path: str) -> None:
    # The response's own stale-while-revalidate (1 s) replaces the proxy's default (30 s),
    # so that it is past that window and the request goes to the failing origin.
    target = going_stale(path, "stale-while-revalidate=1")
    first = defaults_site.get(target)
    defaults_site.set(path, fail=500)
    time.sleep(STALE + 1)
    answer = defaults_site.get(target)
    assert (answer.status_code, answer.content) == (200, first.content)
    assert cache_status(answer).startswith("edge; fwd=stale; fwd-status=500; ttl=-")


@pytest.fixture
def lone_site(backend: Any, start_server: Any) -> Any:
    """An origin and a proxy of this test's own (the test kills the origin)."""
    origin = start_server(origin_server())
    origin.term_grace = 0  # killed, not shut down
    proxy = start_server(proxy_server(origin, backend.env))
    with Site(proxy, origin) as s:
        yield s


def test_stale_if_error_when_the_origin_is_killed(lone_site: Site, path: str) -> None:
    kept = going_stale(path, "stale-if-error=60")
    lost = going_stale(path, n=2)
    first = lone_site.get(kept)
    lone_site.get(lost)
    lone_site.origin.stop()  # SIGKILL
    time.sleep(STALE)
    answer = lone_site.get(kept)
    assert (answer.status_code, answer.content) == (200, first.content)
    assert cache_status(answer).startswith("chorde; fwd=stale; fwd-status=502")
    assert lone_site.get(lost).status_code == 502
    lone_site.origin.start()  # back on its port: the next request goes through
    back = lone_site.get(kept)
    assert back.status_code == 200 and not hit(back)
    assert len(lone_site.log(path)) == 1


# ---- Range (RFC 9110 section 14) ------------------------------------------------------------


def test_ranges_of_a_stored_response(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60", size=100)
    whole = site.get(target)
    body = whole.content
    assert len(body) == 100
    part = site.get(target, range="bytes=10-19")
    assert (part.status_code, part.content) == (206, body[10:20])
    assert part.headers["content-range"] == "bytes 10-19/100"
    assert part.headers["content-length"] == "10"
    assert hit(part)
    suffix = site.get(target, range="bytes=-5")
    assert (suffix.status_code, suffix.content) == (206, body[-5:])
    several = site.get(target, range="bytes=0-1,5-6")
    assert (several.status_code, several.content) == (200, body)  # the whole body
    beyond = site.get(target, range="bytes=500-")
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == "bytes */100"
    same = site.get(target, range="bytes=0-0", if_range=whole.headers["etag"])
    assert (same.status_code, same.content) == (206, body[:1])
    changed = site.get(target, range="bytes=0-0", if_range='"another"')
    assert (changed.status_code, changed.content) == (200, body)
    assert len(site.log(path)) == 1  # all from the one stored response


def test_a_partial_response_is_never_stored(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60", size=100)
    part = site.get(target, range="bytes=0-9")  # a miss: the origin answers 206
    assert part.status_code == 206
    assert cache_status(part) == "chorde; fwd=uri-miss; fwd-status=206; stored=?0"
    whole = site.get(target)
    assert whole.status_code == 200 and len(whole.content) == 100
    assert statuses(site, path) == [206, 200]


# ---- Cache-Status (RFC 9211) ----------------------------------------------------------------


def test_cache_status_values(defaults_site: Site, path: str) -> None:
    # This proxy calls itself "edge" and adds the key (PROXY_CACHE_NAME, PROXY_STATUS_KEY).
    target = url(path, cc="max-age=60")
    miss = defaults_site.get(target)
    assert miss.headers.get_list("cache-status") == [miss.headers["cache-status"]]
    assert cache_status(miss).startswith("edge; fwd=uri-miss; stored; ttl=")
    assert "; key=" in cache_status(miss) and path in cache_status(miss)
    found = defaults_site.get(target)
    assert cache_status(found).startswith("edge; hit; ttl=")
    assert 0 < status_ttl(found) <= 60
    passed = defaults_site.get(url(path, cc="private"))
    assert cache_status(passed).startswith("edge; fwd=uri-miss; fwd-status=200; stored=?0")
    asked = defaults_site.get(url(path, cc="max-age=60", n=2), cache_control="no-cache")
    assert cache_status(asked).startswith("edge; fwd=request; stored")


def test_cache_status_says_vary_miss(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60", vary="Accept-Language")
    site.get(target, accept_language="en")
    assert hit(site.get(target, accept_language="en"))
    other = site.get(target, accept_language="fr")
    assert cache_status(other).startswith("chorde; fwd=vary-miss")


def test_cache_status_says_request_for_a_no_cache_request(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60")
    site.get(target)
    asked = site.get(target, cache_control="no-cache")
    assert cache_status(asked).startswith("chorde; fwd=request")


# ---- purging --------------------------------------------------------------------------------


def test_purge_by_tag(site: Site, path: str) -> None:
    tag = path.rsplit("/", 1)[1]
    tagged = [url(path, cc="max-age=60", tags=f"t-{tag} other-{tag}", n=i) for i in range(2)]
    untagged = url(path, cc="max-age=60", n=3)
    for target in [*tagged, untagged]:
        first = site.get(target)
        assert "surrogate-key" not in first.headers  # the cache's field, not sent on
        assert hit(site.get(target))
    site.purge(tags=[f"t-{tag}"])
    for target in tagged:
        assert cache_status(site.get(target)).startswith("chorde; fwd=uri-miss; stored")
        assert hit(site.get(target))
    assert hit(site.get(untagged))
    site.purge(tags=[f"unrelated-{tag}"])
    assert all(hit(site.get(t)) for t in tagged)


def test_purge_by_url(site: Site, path: str) -> None:
    one, two = url(path, cc="max-age=60", n=1), url(path, cc="max-age=60", n=2)
    for target in (one, two):
        site.get(target)
        assert hit(site.get(target))
    site.purge(urls=[site.proxy.url + one])
    assert cache_status(site.get(one)).startswith("chorde; fwd=uri-miss; stored")
    assert hit(site.get(two))


def test_purge_needs_the_token(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60", tags="x")
    site.get(target)
    refused = site.http.post("/_chorde/purge", json={"tags": ["x"]})
    assert refused.status_code == 401
    wrong = site.http.post(
        "/_chorde/purge", json={"tags": ["x"]}, headers={"authorization": "Bearer no"}
    )
    assert wrong.status_code == 401
    assert hit(site.get(target))


def test_purges_reach_every_proxy_on_the_shared_cache(
    proxy: AppServer, second_proxy: AppServer, origin: AppServer, path: str
) -> None:
    host = {"host": "cdn.example"}  # both proxies serve the one site
    tag = path.rsplit("/", 1)[1]
    target = url(path, cc="max-age=60", tags=tag)
    with Site(proxy, origin) as one, Site(second_proxy, origin) as two:
        assert stored(one.http.get(target, headers=host))
        assert hit(two.http.get(target, headers=host))  # stored by the other process
        two.purge(tags=[tag])
        assert not hit(one.http.get(target, headers=host))
        assert hit(two.http.get(target, headers=host))
        one.purge(urls=[f"http://cdn.example{target}"])
        assert not hit(two.http.get(target, headers=host))
        assert len(one.log(path)) == 3


# ---- compute once ---------------------------------------------------------------------------


async def test_concurrent_misses_make_one_origin_request(site: Site, path: str) -> None:
    target = url(path, cc="max-age=60")
    site.set(path, hold=True)
    try:
        async with httpx.AsyncClient(base_url=site.proxy.url, timeout=15.0) as client:
            answers = asyncio.gather(*(client.get(target) for _ in range(8)))
            released = asyncio.create_task(_release_when_asked(site, path, 1))
            results = await answers
            await released
    finally:
        site.set(path, hold=False)
    assert {(r.status_code, r.text) for r in results} == {(200, f"{path} v1")}
    assert len(site.log(path)) == 1
