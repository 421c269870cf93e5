"""CacheMiddleware at the ASGI level: finer rules, options, compute-once, clients.

Apps are called in process through ``httpx.ASGITransport`` (or directly with hand-made
``receive``/``send`` where a test needs to hold a request open). A fake clock, shared by
the middleware and its in-process client, makes ages and expiry exact without sleeping.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from chorde.clients.inproc import InprocCacheClient
from chorde.clients.memcached import MemcachedClient
from chorde_starlette import DEFAULT_STATUSES, CacheMiddleware, cache_route, no_cache_route


class Clock:
    """A wall clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Counter:
    """Counts handler runs per name."""

    def __init__(self) -> None:
        self.n: dict[str, int] = {}

    def bump(self, name: str) -> int:
        self.n[name] = self.n.get(name, 0) + 1
        return self.n[name]


def lab_app(counter: Counter, **options: Any) -> tuple[Starlette, CacheMiddleware]:
    """A Starlette app whose /lab response fields come from the query string."""

    async def lab(request: Request) -> Response:
        n = counter.bump("lab")
        q = request.query_params
        headers = {
            k: q[k] for k in ("cache-control", "vary", "etag", "expires", "date", "age") if k in q
        }
        body = q.get("body", f"n={n}")
        return Response(body, status_code=int(q.get("status", "200")), headers=headers)

    app = Starlette(routes=[Route("/lab", lab, methods=["GET", "POST"])])
    middleware = CacheMiddleware(app, **options)
    return app, middleware


def client_for(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def lab(clock: Clock, counter: Counter) -> tuple[CacheMiddleware, Counter, Clock]:
    client = InprocCacheClient(128, clock=clock)
    _, mw = lab_app(counter, client=client, ttl=60, clock=clock)
    return mw, counter, clock


# ---- configuration errors -------------------------------------------------------------------


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": -1}, ValueError, "ttl"),
        ({"ttl": "60"}, TypeError, "ttl"),
        ({"ttl": True}, TypeError, "ttl"),
        ({"max_body_size": -1}, ValueError, "max_body_size"),
        ({"max_body_size": 1.5}, TypeError, "max_body_size"),
        ({"client": object()}, TypeError, "client"),
        ({"statuses": {304}}, ValueError, "statuses"),
        ({"statuses": {99}}, ValueError, "statuses"),
        ({"key_prefix": 1}, TypeError, "key_prefix"),
        ({"clock": 5}, TypeError, "clock"),
        ({"inproc_size": 0}, ValueError, "inproc_size"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], error: type, named: str) -> None:
    with pytest.raises(error, match=named):
        CacheMiddleware(_noop_app, **options)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        CacheMiddleware(_noop_app, None)  # type: ignore[misc]


def test_app_must_be_callable() -> None:
    with pytest.raises(TypeError, match="app"):
        CacheMiddleware(None)  # type: ignore[arg-type]


def test_decorators_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="ttl"):
        cache_route(ttl=0)
    with pytest.raises(TypeError, match="endpoint"):
        no_cache_route(42)  # type: ignore[type-var]

    class Thing:
        def method(self) -> None: ...

    with pytest.raises(TypeError, match="cannot mark"):
        no_cache_route(Thing().method)


def test_default_statuses_follow_rfc_9110() -> None:
    assert {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501} == DEFAULT_STATUSES


# ---- ages, expiry, freshness ------------------------------------------------------------------


async def test_age_grows_and_entry_expires_with_ttl(lab: Any) -> None:
    mw, _counter, clock = lab
    async with client_for(mw) as c:
        assert (await c.get("/lab")).text == "n=1"
        clock.now += 7
        hit = await c.get("/lab")
        assert hit.text == "n=1"
        assert hit.headers["age"] == "7"
        clock.now += 53.5
        assert (await c.get("/lab")).text == "n=2"


@pytest.mark.parametrize(
    ("cc", "ttl", "fresh_for"),
    [
        ("max-age=10", 60, 10),
        ("max-age=100", 5, 5),
        ("s-maxage=3, max-age=100", 60, 3),
        ("max-age=bogus", 60, 0),
        ("public", 60, 60),
    ],
)
async def test_response_freshness_bounds_the_ttl(
    clock: Clock, counter: Counter, cc: str, ttl: float, fresh_for: float
) -> None:
    _, mw = lab_app(counter, client=InprocCacheClient(8, clock=clock), ttl=ttl, clock=clock)
    async with client_for(mw) as c:
        url = f"/lab?cache-control={cc}"
        await c.get(url)
        if fresh_for:
            clock.now += fresh_for - 0.5
            assert "age" in (await c.get(url)).headers
        clock.now += 1
        assert "age" not in (await c.get(url)).headers


async def test_expires_minus_date_is_the_lifetime(lab: Any) -> None:
    mw, _counter, clock = lab
    # Dated now (an older Date would make the response older on arrival, RFC 9111 4.2.3).
    date = email.utils.formatdate(clock.now, usegmt=True)
    expires = email.utils.formatdate(clock.now + 20, usegmt=True)  # 20 s after Date
    url = f"/lab?date={date}&expires={expires}"
    async with client_for(mw) as c:
        await c.get(url)
        clock.now += 19
        assert "age" in (await c.get(url)).headers
        clock.now += 2
        assert "age" not in (await c.get(url)).headers


async def test_initial_age_from_the_app_counts(lab: Any) -> None:
    mw, _counter, clock = lab
    url = "/lab?age=5&cache-control=max-age=10"
    async with client_for(mw) as c:
        first = await c.get(url)
        assert first.headers["age"] == "5"  # the app's own Age goes on (RFC 9111 4.2.3)
        hit = await c.get(url)
        assert (hit.text, hit.headers["age"]) == (first.text, "5")
        clock.now += 3
        assert (await c.get(url)).headers["age"] == "8"  # and grows while stored
        clock.now += 2.5  # 10.5 s old: stale, so rendered again
        again = await c.get(url)
        assert again.text != first.text and again.headers["age"] == "5"


async def test_request_max_age_and_min_fresh(lab: Any) -> None:
    mw, _counter, clock = lab
    async with client_for(mw) as c:
        await c.get("/lab")
        clock.now += 10
        assert (await c.get("/lab", headers={"cache-control": "max-age=20"})).text == "n=1"
        assert (await c.get("/lab", headers={"cache-control": "max-age=5"})).text == "n=2"
        clock.now += 45  # the n=2 entry is 45 s old, 15 s left
        assert (await c.get("/lab", headers={"cache-control": "min-fresh=10"})).text == "n=2"
        assert (await c.get("/lab", headers={"cache-control": "min-fresh=20"})).text == "n=3"


async def test_no_cache_request_stores_the_fresh_answer(lab: Any) -> None:
    mw, _counter, _clock = lab
    async with client_for(mw) as c:
        await c.get("/lab")
        assert (await c.get("/lab", headers={"cache-control": "no-cache"})).text == "n=2"
        assert (await c.get("/lab")).text == "n=2"
        assert (await c.get("/lab", headers={"cache-control": "No-Store"})).text == "n=3"
        assert (await c.get("/lab")).text == "n=2"


# ---- per-endpoint policy -----------------------------------------------------------------


def policy_app(counter: Counter, clock: Clock, **options: Any) -> CacheMiddleware:
    def endpoint(name: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            return PlainTextResponse(f"{name}={counter.bump(name)}")

        return handler

    plain = endpoint("plain")
    opted_in = cache_route(endpoint("in"))
    short = cache_route(ttl=5)(endpoint("short"))
    opted_out = no_cache_route(endpoint("out"))

    @cache_route(ttl=5)
    class Klass(HTTPEndpoint):
        async def get(self, request: Request) -> Response:
            return PlainTextResponse(f"klass={counter.bump('klass')}")

    sub = Starlette(routes=[Route("/deep/{x:int}", short), Route("/out", opted_out)])
    app = Starlette(
        routes=[
            Route("/plain", plain),
            Route("/in", opted_in),
            Route("/short", short),
            Route("/out", opted_out),
            Route("/klass", Klass),
            Mount("/sub", app=sub),
        ],
        middleware=[
            Middleware(
                CacheMiddleware,
                client=InprocCacheClient(64, clock=clock),
                ttl=60,
                clock=clock,
                **options,
            )
        ],
    )
    return app  # type: ignore[return-value]


async def test_route_policies(counter: Counter, clock: Clock) -> None:
    app = policy_app(counter, clock)
    async with client_for(app) as c:
        for path in ("/plain", "/in", "/short", "/out", "/klass", "/sub/deep/3", "/sub/out"):
            await c.get(path)
            await c.get(path)
        assert counter.n == {"plain": 1, "in": 1, "short": 2, "out": 4, "klass": 1}
        clock.now += 6  # past the routes' 5 s, within the middleware's 60 s
        for path in ("/plain", "/in", "/short", "/klass", "/sub/deep/3"):
            await c.get(path)
        assert counter.n == {"plain": 1, "in": 1, "short": 4, "out": 4, "klass": 2}


async def test_cache_by_default_false_caches_only_marked_routes(
    counter: Counter, clock: Clock
) -> None:
    app = policy_app(counter, clock, cache_by_default=False)
    async with client_for(app) as c:
        for path in ("/plain", "/in", "/out", "/klass"):
            await c.get(path)
            await c.get(path)
        assert counter.n == {"plain": 2, "in": 1, "out": 2, "klass": 1}


async def test_middleware_around_a_starlette_app_finds_its_routes(counter: Counter) -> None:
    async def marked(request: Request) -> Response:
        return PlainTextResponse(str(counter.bump("marked")))

    inner = Starlette(routes=[Route("/x", no_cache_route(marked))])
    async with client_for(CacheMiddleware(inner)) as c:
        await c.get("/x")
        await c.get("/x")
    assert counter.n == {"marked": 2}


# ---- what is stored -----------------------------------------------------------------------


async def test_head_and_post(lab: Any) -> None:
    mw, counter, _clock = lab
    async with client_for(mw) as c:
        assert (await c.post("/lab")).text == "n=1"
        assert (await c.post("/lab")).text == "n=2"
        await c.get("/lab")
        head = await c.head("/lab")
        assert head.content == b""
        assert head.headers["content-length"] == "3"
        assert counter.n["lab"] == 3


@pytest.mark.parametrize(
    ("method", "status", "invalidates"),
    [
        ("POST", 200, True),
        ("PUT", 204, True),
        ("DELETE", 303, True),
        ("PATCH", 200, True),
        ("POST", 404, False),
        ("POST", 500, False),
        ("OPTIONS", 200, False),
    ],
)
async def test_unsafe_methods_invalidate_the_uri(
    counter: Counter, method: str, status: int, invalidates: bool
) -> None:
    async def resource(request: Request) -> Response:
        if request.method != "GET":
            return Response(status_code=int(request.headers["x-status"]))
        headers = {"vary": "accept"} if "vary" in request.query_params else {}
        return PlainTextResponse(str(counter.bump("get")), headers=headers)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    mw = CacheMiddleware(Starlette(routes=[Route("/r", resource, methods=methods)]))
    async with client_for(mw) as c:
        for url in ("/r", "/r?vary=1"):
            await c.get(url)
            assert "age" in (await c.get(url)).headers
            await c.request(method, url, headers={"x-status": str(status)})
            assert ("age" not in (await c.get(url)).headers) is invalidates
        assert "age" in (await c.get("/r")).headers  # stored again


@pytest.mark.parametrize(
    ("query", "stored"),
    [
        ("status=200", True),
        ("status=404", True),
        ("status=501", True),
        ("status=201", False),
        ("status=500", False),
        ("status=503", False),
        ("cache-control=private", False),
        ('cache-control=no-cache="set-cookie"', False),
        ("cache-control=no-store, max-age=60", False),
        ("vary=Accept, *", False),
    ],
)
async def test_storable_statuses_and_directives(lab: Any, query: str, stored: bool) -> None:
    mw, counter, _clock = lab
    async with client_for(mw) as c:
        await c.get(f"/lab?{query}")
        second = await c.get(f"/lab?{query}")
    assert ("age" in second.headers) is stored
    assert counter.n["lab"] == (1 if stored else 2)


async def test_statuses_option(clock: Clock, counter: Counter) -> None:
    _, mw = lab_app(counter, client=InprocCacheClient(8, clock=clock), clock=clock, statuses={500})
    async with client_for(mw) as c:
        await c.get("/lab?status=500")
        await c.get("/lab?status=500")
        await c.get("/lab")
        await c.get("/lab")
    assert counter.n["lab"] == 3


async def test_authorization_rules(lab: Any) -> None:
    mw, counter, _clock = lab
    auth = {"authorization": "Basic dTpw"}
    async with client_for(mw) as c:
        await c.get("/lab?k=1", headers=auth)
        await c.get("/lab?k=1", headers=auth)
        assert counter.n["lab"] == 2
        for directive in ("public", "s-maxage=60", "must-revalidate"):
            url = f"/lab?cache-control={directive}"
            await c.get(url, headers=auth)
            hit = await c.get(url, headers={"authorization": "Bearer other"})
            assert "age" in hit.headers, directive
            assert "age" in (await c.get(url)).headers, directive


async def test_set_cookie_and_hop_by_hop_fields(counter: Counter) -> None:
    async def cookie(request: Request) -> Response:
        r = PlainTextResponse(str(counter.bump("cookie")))
        r.set_cookie("a", "b")
        return r

    async def hop(request: Request) -> Response:
        return PlainTextResponse(
            str(counter.bump("hop")), headers={"keep-alive": "timeout=5", "x-kept": "1"}
        )

    app = CacheMiddleware(Starlette(routes=[Route("/cookie", cookie), Route("/hop", hop)]))
    async with client_for(app) as c:
        await c.get("/cookie")
        await c.get("/cookie")
        c.cookies.clear()  # a request carrying the cookie would not be cached at all
        await c.get("/hop")
        hit = await c.get("/hop")
    assert counter.n == {"cookie": 2, "hop": 1}
    assert hit.headers["x-kept"] == "1"
    assert "keep-alive" not in hit.headers


@pytest.mark.parametrize(("size", "stored"), [(100, True), (101, False)])
async def test_body_size_cap_single_message(
    clock: Clock, counter: Counter, size: int, stored: bool
) -> None:
    _, mw = lab_app(counter, max_body_size=100)
    async with client_for(mw) as c:
        url = f"/lab?body={'x' * size}"
        first = await c.get(url)
        second = await c.get(url)
    assert len(first.content) == len(second.content) == size
    assert ("age" in second.headers) is stored
    assert ("etag" in first.headers) is stored


def streaming_app(counter: Counter, **options: Any) -> CacheMiddleware:
    async def stream(request: Request) -> Response:
        n = counter.bump("stream")
        chunks = int(request.query_params["chunks"])

        async def body() -> AsyncIterator[bytes]:
            for _ in range(chunks):
                yield b"0123456789"

        return StreamingResponse(body(), headers={"x-call": str(n)})

    return CacheMiddleware(Starlette(routes=[Route("/s", stream)]), **options)


@pytest.mark.parametrize(("chunks", "stored"), [(10, True), (11, False), (0, True)])
async def test_body_size_cap_streamed(counter: Counter, chunks: int, stored: bool) -> None:
    app = streaming_app(counter, max_body_size=100)
    async with client_for(app) as c:
        first = await c.get(f"/s?chunks={chunks}")
        second = await c.get(f"/s?chunks={chunks}")
    assert first.content == second.content == b"0123456789" * chunks
    assert ("age" in second.headers) is stored
    if stored:
        assert second.headers["content-length"] == str(10 * chunks)
        assert second.headers["x-call"] == "1"
    else:
        assert second.headers["x-call"] == "2"


async def test_a_short_lived_variant_does_not_orphan_the_others(
    clock: Clock, counter: Counter
) -> None:
    async def page(request: Request) -> Response:
        lang = request.headers.get("accept-language", "")
        headers = {"vary": "Accept-Language"}
        if lang == "fr":
            headers["cache-control"] = "max-age=2"
        return PlainTextResponse(f"{lang}={counter.bump(lang)}", headers=headers)

    app = Starlette(routes=[Route("/p", page)])
    mw = CacheMiddleware(app, client=InprocCacheClient(8, clock=clock), ttl=60, clock=clock)
    async with client_for(mw) as c:
        await c.get("/p", headers={"accept-language": "en"})  # fresh for 60 s
        await c.get("/p", headers={"accept-language": "fr"})  # fresh for 2 s
        clock.now += 10
        assert (await c.get("/p", headers={"accept-language": "en"})).text == "en=1"
        assert (await c.get("/p", headers={"accept-language": "fr"})).text == "fr=2"


async def test_etag_on_the_first_answer_and_304(lab: Any) -> None:
    mw, _counter, _clock = lab
    async with client_for(mw) as c:
        first = await c.get("/lab?vary=accept")
        etag = first.headers["etag"]
        assert not etag.startswith("W/")
        r304 = await c.get("/lab?vary=accept", headers={"if-none-match": etag})
        assert r304.status_code == 304
        assert set(r304.headers) == {"etag", "vary", "age"}
        # Weak ETags from the app are kept and compared weakly.
        await c.get('/lab?etag=W/"w1"')
        assert (
            await c.get('/lab?etag=W/"w1"', headers={"if-none-match": '"w1"'})
        ).status_code == 304
        assert (
            await c.get('/lab?etag=W/"w1"', headers={"if-none-match": '"w2"'})
        ).status_code == 200


async def test_add_etag_false(clock: Clock, counter: Counter) -> None:
    _, mw = lab_app(counter, add_etag=False)
    async with client_for(mw) as c:
        await c.get("/lab")
        hit = await c.get("/lab")
    assert "age" in hit.headers
    assert "etag" not in hit.headers


async def test_key_prefix_keeps_two_caches_apart(counter: Counter) -> None:
    shared = InprocCacheClient(64)
    _, a = lab_app(counter, client=shared, key_prefix="a")
    _, b = lab_app(counter, client=shared, key_prefix="b")
    async with client_for(a) as ca, client_for(b) as cb:
        assert (await ca.get("/lab")).text == "n=1"
        assert (await cb.get("/lab")).text == "n=2"
        assert (await ca.get("/lab")).text == "n=1"


async def test_host_is_part_of_the_key(lab: Any) -> None:
    mw, _counter, _clock = lab
    async with client_for(mw) as c:
        assert (await c.get("/lab", headers={"host": "a.example"})).text == "n=1"
        assert (await c.get("/lab", headers={"host": "b.example"})).text == "n=2"
        assert (await c.get("/lab", headers={"host": "A.example"})).text == "n=1"


# ---- compute-once ---------------------------------------------------------------------------


def gated_app(counter: Counter, headers: dict[str, str] | None = None) -> tuple[Any, asyncio.Event]:
    gate = asyncio.Event()

    async def slow(request: Request) -> Response:
        n = counter.bump("slow")
        await gate.wait()
        if request.query_params.get("fail") and n == 1:
            raise RuntimeError("first call fails")
        lang = request.headers.get("accept-language", "")
        return JSONResponse({"n": n, "lang": lang}, headers=headers)

    return CacheMiddleware(Starlette(routes=[Route("/slow", slow)])), gate


async def _gather_gated(app: Any, gate: asyncio.Event, requests: list[dict[str, Any]]) -> list:
    async with client_for(app) as c:
        tasks = [asyncio.create_task(c.get("/slow", **kw)) for kw in requests]
        for _ in range(50):  # let every request reach the middleware
            await asyncio.sleep(0)
        gate.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_concurrent_misses_share_one_call(counter: Counter) -> None:
    app, gate = gated_app(counter)
    responses = await _gather_gated(app, gate, [{}] * 6)
    assert counter.n == {"slow": 1}
    assert {r.text for r in responses} == {'{"n":1,"lang":""}'}
    assert sum("age" in r.headers for r in responses) == 5


async def test_waiters_call_the_app_when_the_answer_is_private(counter: Counter) -> None:
    app, gate = gated_app(counter, headers={"cache-control": "private"})
    responses = await _gather_gated(app, gate, [{}] * 4)
    assert counter.n == {"slow": 4}
    assert len({r.text for r in responses}) == 4


async def test_waiters_call_the_app_when_the_leader_fails(counter: Counter) -> None:
    app, gate = gated_app(counter)
    async with client_for(app) as c:
        tasks = [asyncio.create_task(c.get("/slow?fail=1")) for _ in range(3)]
        for _ in range(50):
            await asyncio.sleep(0)
        gate.set()
        responses = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert sorted(r.status_code for r in responses) == [200, 200, 500]
    assert counter.n == {"slow": 3}


async def test_waiter_with_other_vary_values_gets_its_own_answer(counter: Counter) -> None:
    app, gate = gated_app(counter, headers={"vary": "Accept-Language"})
    requests = [{"headers": {"accept-language": lang}} for lang in ("en", "fr", "en")]
    responses = await _gather_gated(app, gate, requests)
    assert [r.json()["lang"] for r in responses] == ["en", "fr", "en"]
    assert counter.n == {"slow": 2}


async def test_waiters_do_not_wait_for_a_stream_to_end(counter: Counter) -> None:
    gate = asyncio.Event()

    async def stream(request: Request) -> Response:
        n = counter.bump("stream")

        async def body() -> AsyncIterator[bytes]:
            yield b"first "
            if n == 1:  # the leader's stream lasts until the gate opens
                await gate.wait()
            yield b"last"

        return StreamingResponse(body())

    app = CacheMiddleware(Starlette(routes=[Route("/s", stream)]))
    async with client_for(app) as c:
        leader = asyncio.create_task(c.get("/s"))
        for _ in range(20):
            await asyncio.sleep(0)
        waiters = [asyncio.create_task(c.get("/s")) for _ in range(3)]
        done = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        assert not leader.done()
        gate.set()
        assert (await asyncio.wait_for(leader, 10)).text == "first last"
    assert [r.text for r in done] == ["first last"] * 3
    assert counter.n == {"stream": 4}


async def test_cancelled_leader_releases_its_waiters(counter: Counter) -> None:
    app, gate = gated_app(counter)

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/slow",
            "raw_path": b"/slow",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
        }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    leader = asyncio.create_task(app(scope(), receive, send))
    for _ in range(20):
        await asyncio.sleep(0)
    waiter = asyncio.create_task(app(scope(), receive, send))
    for _ in range(20):
        await asyncio.sleep(0)
    assert counter.n == {"slow": 1}
    leader.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    assert counter.n == {"slow": 2}  # the waiter went to the app itself
    gate.set()
    await asyncio.wait_for(waiter, 10)
    assert leader.cancelled()
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]


# ---- other scopes and messages -------------------------------------------------------------


async def test_lifespan_and_websocket_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    mw = CacheMiddleware(app)
    await mw({"type": "lifespan"}, None, None)
    await mw({"type": "websocket", "path": "/ws", "headers": []}, None, None)
    assert seen == ["lifespan", "websocket"]


async def test_trailers_and_unknown_messages_are_not_stored(counter: Counter) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        counter.bump(scope["path"])
        trailers = scope["path"] == "/trailers"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [], "trailers": trailers}
        )
        await send({"type": "http.response.body", "body": b"x", "more_body": trailers})
        if trailers:
            await send({"type": "http.response.body", "body": b""})

    mw = CacheMiddleware(app)
    async with client_for(mw) as c:
        for path in ("/trailers", "/trailers", "/plain", "/plain"):
            await c.get(path)
    assert counter.n == {"/trailers": 2, "/plain": 1}


class BrokenClient(InprocCacheClient):
    def getTtl(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError("backend down")

    def get(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError("backend down")

    def put(self, key: Any, value: Any, ttl: float) -> None:
        raise RuntimeError("backend down")


async def test_a_failing_client_degrades_to_the_app(counter: Counter, caplog: Any) -> None:
    _, mw = lab_app(counter, client=BrokenClient(8))
    async with client_for(mw) as c:
        assert (await c.get("/lab")).text == "n=1"
        assert (await c.get("/lab")).text == "n=2"
    assert "cache lookup failed" in caplog.text
    assert "cache store failed" in caplog.text


# ---- memcached -----------------------------------------------------------------------------


async def test_entries_round_trip_through_memcached(memcached: Any, counter: Counter) -> None:
    client = MemcachedClient([memcached.address], checksum_key="k", timeout=5)
    try:
        _, mw = lab_app(counter, client=client)
        async with client_for(mw) as c:
            url = "/lab?vary=Accept-Language&etag=%22e%22&cache-control=max-age=60"
            first = await c.get(url, headers={"accept-language": "fr"})
            hit = await c.get(url, headers={"accept-language": "fr"})
            other = await c.get(url, headers={"accept-language": "de"})
        assert hit.text == first.text == "n=1"
        assert other.text == "n=2"
        assert "age" in hit.headers
        assert hit.headers["etag"] == '"e"'
        assert int(memcached.stats()["curr_items"]) >= 3  # vary marker + two variants
    finally:
        client.close()


async def test_memcached_lookup_does_not_block_the_loop(memcached: Any, counter: Counter) -> None:
    client = MemcachedClient([memcached.address], checksum_key="k", timeout=5)
    try:
        _, mw = lab_app(counter, client=client)
        async with client_for(mw) as c:
            assert (await c.get("/lab")).text == "n=1"
            memcached.suspend()
            try:
                request = asyncio.create_task(c.get("/lab"))
                # If the lookup blocked the loop, this sleep would only return once the
                # client timed out and the request had completed.
                await asyncio.sleep(0.05)
                assert not request.done()
            finally:
                memcached.resume()
            assert (await asyncio.wait_for(request, 10)).text == "n=1"
    finally:
        client.close()
