"""The serve and lookup flows answer alike whichever way they run: the blocking driver, the
asyncio driver, or the flows as steps (``serve_steps``/``lookup_steps``) run by a driver of
the test's own. The drivers make a flow's first read themselves and go on in plain code
while no more cache calls are needed, so every path past that read is checked here: a plain
hit, a vary marker's variant, a tagged entry (and one purged), stale-while-revalidate, a
bypass, a render that fails, a client that fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from chorde.clients.inproc import InprocCacheClient
from chorde.http import Outcome, Rendered, ResponseCache, StoredResponse
from chorde.observe import HIT, MISS, STALE

DRIVERS = ("serve", "aserve", "steps")


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class _BrokenReads(InprocCacheClient):
    def get(self, key: Any, default: Any = None) -> Any:
        raise ConnectionError("down")

    async def aget(self, key: Any, default: Any = None) -> Any:
        raise ConnectionError("down")


def _run_steps(cache: ResponseCache, steps: Any, render: Callable[[Any], Rendered] | None) -> Any:
    """A driver of the test's own: each step done by calling the client directly."""
    client = cache.client
    value: Any = None
    try:
        while True:
            step = steps.send(value)
            kind = step[0]
            if kind == "render":
                assert render is not None
                value = render(step[1])
            elif kind == "getMulti":
                value = list(client.getMulti(*step[1:]))
            else:
                value = getattr(client, kind)(*step[1:])
    except StopIteration as stop:
        return stop.value


class _Site:
    """A cache and a page whose response fields the test sets; renders are counted."""

    def __init__(self, client: InprocCacheClient | None = None) -> None:
        self.clock = _Clock()
        self.cache = ResponseCache(client or InprocCacheClient(64), clock=self.clock)
        self.fields: list[tuple[str, str]] = [("Cache-Control", "max-age=60")]
        self.renders = 0
        self.fail = False

    def request(self, **fields: str) -> Any:
        return self.cache.request(
            method="GET",
            scheme="http",
            hosts=["a.example"],
            path="/page",
            query="",
            headers=[(k.replace("_", "-"), v) for k, v in fields.items()],
        )

    def _render(self, conditions: Any) -> Rendered:
        self.renders += 1
        if self.fail:
            raise RuntimeError("the view failed")
        body = b"page %d" % self.renders
        return Rendered(200, list(self.fields), body, None)

    def serve(self, driver: str, **fields: str) -> Outcome:
        req = self.request(**fields)
        if driver == "serve":
            return self.cache.serve(req, self._render)
        if driver == "aserve":

            async def arender(conditions: Any) -> Rendered:
                return self._render(conditions)

            return asyncio.run(self.cache.aserve(req, arender))
        outcome: Outcome = _run_steps(self.cache, self.cache.serve_steps(req), self._render)
        self.cache.count(req, outcome.kind)
        return outcome

    def lookup(self, driver: str, **fields: str) -> StoredResponse | None:
        req = self.request(**fields)
        if driver == "serve":
            return self.cache.lookup(req)
        if driver == "aserve":
            return asyncio.run(self.cache.alookup(req))
        entry: StoredResponse | None = _run_steps(self.cache, self.cache.lookup_steps(req), None)
        return entry


def _body(outcome: Outcome) -> bytes:
    if outcome.reply is not None:
        return outcome.reply.body
    assert outcome.rendered is not None and outcome.rendered.body is not None
    return outcome.rendered.body


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_stored_page_is_a_hit(driver: str) -> None:
    site = _Site()
    first = site.serve(driver)
    assert (first.kind, first.hit, site.renders) == (MISS, False, 1)
    site.clock.now += 5
    hit = site.serve(driver)
    assert (hit.kind, hit.hit, site.renders) == (HIT, True, 1)
    assert hit.reply is not None and hit.reply.status == 200 and _body(hit) == b"page 1"
    assert (b"age", b"5") in hit.reply.headers
    assert site.lookup(driver) is not None
    info = site.cache.route_info()["default"]
    assert (info.hits, info.misses) == (1, 1)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_varying_page_is_read_under_its_variant(driver: str) -> None:
    site = _Site()
    site.fields.append(("Vary", "Accept-Language"))
    assert _body(site.serve(driver, accept_language="en")) == b"page 1"
    assert _body(site.serve(driver, accept_language="fr")) == b"page 2"
    en, fr = site.serve(driver, accept_language="en"), site.serve(driver, accept_language="fr")
    assert (en.kind, _body(en), fr.kind, _body(fr)) == (HIT, b"page 1", HIT, b"page 2")
    other = site.serve(driver, accept_language="de")  # the resource varies: a variant miss
    assert (other.kind, _body(other), site.renders) == (MISS, b"page 3", 3)
    found = site.lookup(driver, accept_language="fr")
    assert found is not None and found.body == b"page 2"
    req = site.request(accept_language="nl")
    assert site.cache.lookup(req) is None and req.vary_miss


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_tagged_page_reads_as_a_miss_once_its_tag_is_purged(driver: str) -> None:
    site = _Site()
    site.fields.append(("Surrogate-Key", "news front"))
    site.serve(driver)
    assert site.serve(driver).kind == HIT
    assert site.lookup(driver) is not None
    site.cache.purge_tags("front")
    assert site.lookup(driver) is None
    again = site.serve(driver)
    assert (again.kind, _body(again), site.renders) == (MISS, b"page 2", 2)
    assert site.serve(driver).kind == HIT


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_varying_tagged_page_is_checked_for_both(driver: str) -> None:
    site = _Site()
    site.fields += [("Vary", "Accept-Language"), ("Surrogate-Key", "news")]
    site.serve(driver, accept_language="en")
    assert site.serve(driver, accept_language="en").kind == HIT
    site.cache.purge_tags("news")
    assert site.lookup(driver, accept_language="en") is None
    assert site.serve(driver, accept_language="en").kind == MISS


@pytest.mark.parametrize("driver", DRIVERS)
def test_stale_while_revalidate_is_served_with_a_refresh(driver: str) -> None:
    site = _Site()
    site.fields = [("Cache-Control", "max-age=10, stale-while-revalidate=30")]
    site.serve(driver)
    site.clock.now += 20
    stale = site.serve(driver)
    assert (stale.kind, stale.refresh is not None, _body(stale), site.renders) == (
        STALE,
        True,
        b"page 1",
        1,
    )
    site.clock.now += 30  # past the window: rendered anew
    assert site.serve(driver).kind == MISS and site.renders == 2


@pytest.mark.parametrize("driver", DRIVERS)
def test_request_directives_and_bypasses(driver: str) -> None:
    site = _Site()
    site.serve(driver)
    assert site.serve(driver, cache_control="no-cache").kind == MISS  # revalidates
    assert site.renders == 2
    passed = site.serve(driver, cache_control="no-store")  # not through the cache
    assert (passed.kind, passed.own, passed.reply, site.renders) == (None, True, None, 3)
    assert site.serve(driver, cache_control="max-age=0").kind == MISS


@pytest.mark.parametrize("driver", DRIVERS)
def test_each_only_if_cached_miss_gets_a_reply_of_its_own(driver: str) -> None:
    # An adapter may add fields to the reply it is given: that must not reach the next one.
    site = _Site()
    first = site.serve(driver, cache_control="only-if-cached")
    assert first.reply is not None and first.reply.status == 504 and site.renders == 0
    first.reply.headers.append((b"x-added", b"by an adapter"))
    second = site.serve(driver, cache_control="only-if-cached")
    assert second.reply is not None and second.reply.headers == [(b"content-length", b"0")]


@pytest.mark.parametrize("driver", ("serve", "aserve"))
def test_a_failing_render_reaches_the_caller_and_is_counted(driver: str) -> None:
    site = _Site()
    site.fail = True
    with pytest.raises(RuntimeError, match="the view failed"):
        site.serve(driver)
    assert site.cache.route_info()["default"].misses == 1
    assert site.cache.flights.get((site.request().key, "")) is None  # released
    site.fail = False
    assert site.serve(driver).kind == MISS and site.serve(driver).kind == HIT


@pytest.mark.parametrize("driver", ("serve", "aserve"))
def test_a_failing_client_reads_as_a_miss(driver: str, caplog: Any) -> None:
    site = _Site(_BrokenReads(64))
    with caplog.at_level("WARNING", logger="chorde.http"):
        first, second = site.serve(driver), site.serve(driver)
    assert (first.kind, second.kind, site.renders) == (MISS, MISS, 2)
    assert site.lookup(driver) is None
    assert any("cache lookup failed" in r.getMessage() for r in caplog.records)


def _fields_lookup(pairs: list[tuple[str, str]]) -> Callable[[str], list[str]]:
    """Request fields as an indexed lookup (as WSGI and tornado adapters pass them)."""

    def values(name: str) -> list[str]:
        return [v for k, v in pairs if k.lower() == name]

    return values


@pytest.mark.parametrize("indexed", (False, True), ids=("pairs", "lookup"))
@pytest.mark.parametrize("driver", DRIVERS)
def test_ranges_are_answered_from_the_stored_page(driver: str, indexed: bool) -> None:
    site = _Site()
    site.fields.append(("ETag", '"v1"'))
    site.serve(driver)

    def ask(*pairs: tuple[str, str]) -> Any:
        headers: Any = list(pairs)
        req = site.cache.request(
            method="GET",
            scheme="http",
            hosts=["a.example"],
            path="/page",
            query="",
            headers=_fields_lookup(headers) if indexed else headers,
        )
        assert req.bypass is None
        reply = site.cache.serve(req, site._render).reply
        assert reply is not None
        return reply.status, reply.body

    assert ask(("Range", "bytes=0-3")) == (206, b"page")
    assert ask(("Range", "bytes=0-3"), ("If-Range", '"v1"')) == (206, b"page")
    assert ask(("Range", "bytes=0-3"), ("If-Range", '"v0"')) == (200, b"page 1")
    assert ask(("Range", "bytes=0-3"), ("Range", "bytes=4-5")) == (200, b"page 1")
    # Two If-Range lines (a singleton field): a condition that cannot hold, the whole page.
    two = ("If-Range", '"v1"'), ("If-Range", '"v1"')
    assert ask(("Range", "bytes=0-3"), *two) == (200, b"page 1")
    assert ask(("If-Range", '"v0"')) == (200, b"page 1")
    assert site.renders == 1


def test_hosts_are_normalised_alike_every_time() -> None:
    site = _Site()
    for _ in range(3):
        for raw, expected in (
            ("A.Example", "a.example"),
            (" a.example ", "a.example"),
            ("a.example:8000", "a.example:8000"),
        ):
            req = site.cache.request(
                method="GET", scheme="http", hosts=[raw], path="/", query="", headers=[]
            )
            assert req.bypass is None and req.key[4] == expected
        for bad in (["a.example, b.example"], ["a b"], ["a.example", "a.example"], []):
            req = site.cache.request(
                method="GET", scheme="http", hosts=bad, path="/", query="", headers=[]
            )
            assert req.bypass is not None and "Host" in req.bypass
