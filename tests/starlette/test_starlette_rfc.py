"""CacheMiddleware against an origin: revalidation, RFC 5861, strict mode, RFC 9213, RFC 9211.

The origin is a small ASGI app whose validators, freshness and failures the test sets; it
answers ``304`` to a matching ``If-None-Match``, as an origin server does. A fake clock,
shared by the middleware and its in-process client, makes ages exact without sleeping.
"""

from __future__ import annotations

import asyncio
import email.utils
from typing import Any

import httpx
import pytest

from chorde.clients.inproc import InprocCacheClient
from chorde_starlette import CacheMiddleware


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Origin:
    """An origin whose answers the test sets; it records the validators it was sent."""

    def __init__(self) -> None:
        self.version = 1
        self.fields: dict[str, str] = {"cache-control": "max-age=10"}
        self.fail: str | int | None = None
        self.validators: list[tuple[str | None, str | None]] = []
        self.gate: asyncio.Event | None = None

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fields = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.validators.append((fields.get("if-none-match"), fields.get("if-modified-since")))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail == "raise":
            raise RuntimeError("origin down")
        if isinstance(self.fail, int):
            await send({"type": "http.response.start", "status": self.fail, "headers": []})
            await send({"type": "http.response.body", "body": b"failure"})
            return
        headers = [(k.encode(), v.encode()) for k, v in self.fields.items()]
        headers.append((b"etag", self.etag.encode()))
        if fields.get("if-none-match") == self.etag:
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": f"version {self.version}".encode()})

    @property
    def calls(self) -> int:
        return len(self.validators)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def origin() -> Origin:
    return Origin()


def cache(origin: Origin, clock: Clock, **options: Any) -> CacheMiddleware:
    client = InprocCacheClient(64, clock=clock)
    return CacheMiddleware(origin, client=client, clock=clock, cache_status="chorde", **options)


def http(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://site.example")


def status(response: httpx.Response) -> str:
    return response.headers.get("cache-status", "")


# ---- revalidation (RFC 9111 section 4.3) ----------------------------------------------------


async def test_a_stale_entry_is_revalidated_and_freshened_on_304(
    origin: Origin, clock: Clock
) -> None:
    mw = cache(origin, clock)
    async with http(mw) as c:
        first = await c.get("/r")
        assert first.text == "version 1" and "fwd=uri-miss; stored" in status(first)
        clock.now += 11  # stale
        origin.fields["x-fresh"] = "yes"
        again = await c.get("/r")
        assert again.text == "version 1" and again.status_code == 200
        assert origin.validators[-1] == ('"v1"', None)  # our validator, not the client's
        assert "fwd=stale; fwd-status=304; stored" in status(again)
        assert again.headers["x-fresh"] == "yes"  # fields updated from the 304
        hit = await c.get("/r")
        assert "hit" in status(hit) and hit.headers["x-fresh"] == "yes"
    assert origin.calls == 2


async def test_a_changed_resource_replaces_the_entry(origin: Origin, clock: Clock) -> None:
    mw = cache(origin, clock)
    async with http(mw) as c:
        await c.get("/r")
        clock.now += 11
        origin.version = 2
        replaced = await c.get("/r")
        assert replaced.text == "version 2"
        assert (await c.get("/r")).text == "version 2"
    assert origin.calls == 2


async def test_the_clients_own_condition_is_answered_by_the_cache(
    origin: Origin, clock: Clock
) -> None:
    mw = cache(origin, clock)
    async with http(mw) as c:
        await c.get("/r")
        clock.now += 11
        conditional = await c.get("/r", headers={"if-none-match": '"v1"'})
        assert conditional.status_code == 304
        other = await c.get("/r", headers={"if-none-match": '"v0"'})
        assert other.status_code == 200 and other.text == "version 1"


async def test_last_modified_is_a_validator(origin: Origin, clock: Clock) -> None:
    modified = email.utils.formatdate(clock.now - 3600, usegmt=True)
    origin.fields["last-modified"] = modified
    mw = cache(origin, clock)
    async with http(mw) as c:
        await c.get("/r")
        clock.now += 11
        await c.get("/r")
    assert origin.validators[-1] == ('"v1"', modified)


async def test_no_cache_request_revalidates(origin: Origin, clock: Clock) -> None:
    mw = cache(origin, clock)
    async with http(mw) as c:
        await c.get("/r")
        again = await c.get("/r", headers={"cache-control": "no-cache"})
        assert again.text == "version 1"
    assert origin.validators == [(None, None), ('"v1"', None)]


# ---- RFC 5861 -----------------------------------------------------------------------------


async def test_stale_while_revalidate_serves_at_once_and_refreshes_once(
    origin: Origin, clock: Clock
) -> None:
    origin.fields["cache-control"] = "max-age=10, stale-while-revalidate=30"
    mw = cache(origin, clock)
    async with http(mw) as c:
        await c.get("/r")
        clock.now += 15
        origin.version = 2
        origin.gate = asyncio.Event()
        stale = await asyncio.gather(*(c.get("/r") for _ in range(5)))
        assert {r.text for r in stale} == {"version 1"}
        assert all(int(r.headers["age"]) >= 15 for r in stale)
        origin.gate.set()
        for _ in range(100):  # the background refresh, once for the five
            if not mw._refreshing:
                break
            await asyncio.sleep(0.01)
        assert origin.calls == 2
        assert (await c.get("/r")).text == "version 2"
        clock.now += 50  # past the window: a plain stale entry, fetched before answering
        origin.version = 3
        assert (await c.get("/r")).text == "version 3"


async def test_stale_if_error(origin: Origin, clock: Clock) -> None:
    origin.fields["cache-control"] = "max-age=10, stale-if-error=60"
    mw = cache(origin, clock)
    async with http(mw) as c:
        await c.get("/r")
        clock.now += 20
        for failure in (503, "raise"):
            origin.fail = failure
            answer = await c.get("/r")
            assert (answer.status_code, answer.text) == (200, "version 1"), failure
            assert "fwd=stale" in status(answer)
        clock.now += 60  # past the window: the failure goes through
        origin.fail = 503
        assert (await c.get("/r")).status_code == 503


async def test_middleware_defaults_for_responses_that_do_not_say(
    origin: Origin, clock: Clock
) -> None:
    mw = cache(origin, clock, stale_if_error=60)
    async with http(mw) as c:
        await c.get("/r")
        clock.now += 20
        origin.fail = 502
        assert (await c.get("/r")).text == "version 1"
    origin.fields["cache-control"] = "max-age=10, must-revalidate"
    mw = cache(origin, clock, stale_if_error=60)
    origin.fail = None
    async with http(mw) as c:
        await c.get("/m")
        clock.now += 20
        origin.fail = 502
        assert (await c.get("/m")).status_code == 502  # must-revalidate: never stale


# ---- strict mode, targeted fields -----------------------------------------------------------


async def test_strict_mode_stores_only_what_the_origin_grants(origin: Origin, clock: Clock) -> None:
    origin.fields = {}
    mw = cache(origin, clock, strict=True)
    async with http(mw) as c:
        await c.get("/none")
        await c.get("/none")
        assert origin.calls == 2  # no freshness: not stored
        origin.fields = {"cache-control": "max-age=7200"}
        await c.get("/long")
        clock.now += 3600
        assert "hit" in status(await c.get("/long"))  # the route ttl (60 s) plays no part


async def test_cdn_cache_control_wins_in_strict_mode(origin: Origin, clock: Clock) -> None:
    origin.fields = {"cache-control": "max-age=600", "cdn-cache-control": "no-store"}
    mw = cache(origin, clock, strict=True)
    async with http(mw) as c:
        await c.get("/c")
        await c.get("/c")
    assert origin.calls == 2


# ---- Cache-Status (RFC 9211) ------------------------------------------------------------------


async def test_cache_status_values(origin: Origin, clock: Clock) -> None:
    mw = cache(origin, clock, cache_status_key=True)
    async with http(mw) as c:
        miss = await c.get("/s")
        assert status(miss).startswith("chorde; fwd=uri-miss; stored; ttl=10; key=")
        hit = await c.get("/s")
        assert status(hit).startswith("chorde; hit; ttl=10")
        origin.fields["cache-control"] = "private"
        passed = await c.get("/p")
        assert status(passed).startswith("chorde; fwd=uri-miss; fwd-status=200; stored=?0")
        request = await c.get("/s", headers={"cache-control": "no-cache"})
        assert "fwd=stale" in status(request) or "fwd=request" in status(request)
    plain = CacheMiddleware(origin, clock=clock)
    async with http(plain) as c:
        assert "cache-status" not in (await c.get("/s")).headers


# ---- Range (RFC 9110 section 14) --------------------------------------------------------------


async def test_a_single_byte_range_of_a_stored_response(origin: Origin, clock: Clock) -> None:
    mw = cache(origin, clock)
    async with http(mw) as c:
        await c.get("/r")  # "version 1", stored
        part = await c.get("/r", headers={"range": "bytes=0-6"})
        assert (part.status_code, part.text) == (206, "version")
        assert part.headers["content-range"] == "bytes 0-6/9"
        assert part.headers["content-length"] == "7"
        tail = await c.get("/r", headers={"range": "bytes=-1"})
        assert (tail.status_code, tail.text) == (206, "1")
        several = await c.get("/r", headers={"range": "bytes=0-1,3-4"})
        assert (several.status_code, several.text) == (200, "version 1")
        beyond = await c.get("/r", headers={"range": "bytes=50-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == "bytes */9"
        matching = await c.get("/r", headers={"range": "bytes=0-0", "if-range": '"v1"'})
        assert (matching.status_code, matching.text) == (206, "v")
        changed = await c.get("/r", headers={"range": "bytes=0-0", "if-range": '"v0"'})
        assert (changed.status_code, changed.text) == (200, "version 1")
    assert origin.calls == 1  # every range answered from the one stored response


# ---- purging: by URL and by tag ----------------------------------------------------------------


async def test_purge_by_url_and_by_tag(origin: Origin, clock: Clock) -> None:
    origin.fields["surrogate-key"] = "product-42 catalogue"
    mw = cache(origin, clock)
    async with http(mw) as c:
        first = await c.get("/p?x=1")
        assert "surrogate-key" not in first.headers  # the cache's field, never sent on
        hit = await c.get("/p?x=1")
        assert "hit" in status(hit) and "surrogate-key" not in hit.headers
        await mw.purge_tags("product-42")
        assert "fwd=uri-miss" in status(await c.get("/p?x=1"))
        assert "hit" in status(await c.get("/p?x=1"))
        await mw.purge_tags("unrelated")
        assert "hit" in status(await c.get("/p?x=1"))
        await mw.purge("http://site.example/p?x=1")
        assert "fwd=uri-miss" in status(await c.get("/p?x=1"))
        origin.fields["cache-control"] = "private"
        passed = await c.get("/private")
        assert "surrogate-key" not in passed.headers  # stripped when not stored too
    with pytest.raises(ValueError, match="absolute"):
        await mw.purge("/p?x=1")


async def test_tag_purges_cross_processes_sharing_memcached(memcached: Any, clock: Clock) -> None:
    from chorde.clients.memcached import MemcachedClient

    origin = Origin()
    origin.fields = {"cache-control": "max-age=60", "surrogate-key": "t1"}
    clients = [MemcachedClient([memcached.address], checksum_key="k") for _ in range(2)]
    try:
        one, two = (
            CacheMiddleware(origin, client=client, cache_status="chorde") for client in clients
        )
        async with http(one) as a, http(two) as b:
            await a.get("/t")
            assert "hit" in status(await b.get("/t"))  # stored by one, served by two
            await one.purge_tags("t1")
            assert "fwd=uri-miss" in status(await b.get("/t"))
    finally:
        for client in clients:
            client.close()


async def test_a_no_cache_response_is_revalidated_on_every_use(
    origin: Origin, clock: Clock
) -> None:
    origin.fields["cache-control"] = 'no-cache="x-private", max-age=600'
    mw = cache(origin, clock)
    async with http(mw) as c:
        for _ in range(3):
            answer = await c.get("/n")
            assert answer.text == "version 1"
        assert origin.validators == [(None, None), ('"v1"', None), ('"v1"', None)]
        assert "fwd=stale; fwd-status=304" in status(answer)
    origin.fields["cache-control"] = "no-cache"
    del origin.fields["cache-control"]
    no_validator = Origin()
    no_validator.fields = {"cache-control": "no-cache"}

    async def bare(scope: Any, receive: Any, send: Any) -> None:  # no ETag, no Last-Modified
        no_validator.validators.append((None, None))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"cache-control", b"no-cache")],
            }
        )
        await send({"type": "http.response.body", "body": b"x"})

    async with http(CacheMiddleware(bare, clock=clock)) as c:
        await c.get("/b")
        await c.get("/b")
    assert no_validator.calls == 2  # nothing to revalidate with: not stored


async def test_a_short_lived_variant_never_shortens_the_vary_marker(
    origin: Origin, clock: Clock
) -> None:
    origin.fields = {"cache-control": "max-age=3600", "vary": "accept-language"}
    mw = cache(origin, clock, strict=True)
    async with http(mw) as c:
        await c.get("/v", headers={"accept-language": "de"})  # kept an hour
        origin.fields["cache-control"] = "max-age=5"
        await c.get("/v", headers={"accept-language": "fr"})  # kept 5 s
        clock.now += 600  # past the middleware's ttl (60 s) and the short variant's life
        long_lived = await c.get("/v", headers={"accept-language": "de"})
        assert "hit" in status(long_lived)
    assert origin.calls == 2


async def test_forward_reasons_rfc_9211(origin: Origin, clock: Clock) -> None:
    origin.fields = {"cache-control": "max-age=60", "vary": "accept-language"}
    mw = cache(origin, clock)
    async with http(mw) as c:
        assert "fwd=uri-miss" in status(await c.get("/f", headers={"accept-language": "de"}))
        assert "fwd=vary-miss" in status(await c.get("/f", headers={"accept-language": "fr"}))
        forced = await c.get("/f", headers={"accept-language": "de", "cache-control": "no-cache"})
        assert "fwd=request" in status(forced)  # asked for by the request, not stale
        clock.now += 61
        assert "fwd=stale" in status(await c.get("/f", headers={"accept-language": "de"}))
