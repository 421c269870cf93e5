"""chorde_tornado.cache_response: RequestHandler.get responses cached, served by a real server."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx
import pytest
import tornado.gen
import tornado.httpserver
import tornado.web

from chorde.clients.inproc import InprocCacheClient
from chorde.clients.memcached import MemcachedClient
from chorde.decorators import cached
from chorde_tornado import cache_response
from tests.servers import free_port

calls: collections.Counter[str] = collections.Counter()
_pool_client = InprocCacheClient(100)


@cached(_pool_client, 60)
def slow_upper(text: str) -> str:
    time.sleep(0.05)
    calls["slow_upper"] += 1
    return text.upper()


class SyncHandler(tornado.web.RequestHandler):
    @cache_response(60)
    def get(self) -> None:
        calls["sync"] += 1
        self.write({"n": calls["sync"], "q": self.get_argument("q", "")})


class GenHandler(tornado.web.RequestHandler):
    @cache_response(60)
    @tornado.gen.coroutine
    def get(self, word: str):
        calls["gen"] += 1
        upper = yield slow_upper.future()(word)
        self.write(f"{upper} #{calls['gen']}")


class AsyncHandler(tornado.web.RequestHandler):
    gate: asyncio.Event | None = None

    @cache_response(60)
    async def get(self) -> None:
        calls["async"] += 1
        if AsyncHandler.gate is not None:
            await AsyncHandler.gate.wait()
        self.write(f"async #{calls['async']}")


class HeadersHandler(tornado.web.RequestHandler):
    @cache_response(60)
    def get(self) -> None:
        calls["headers"] += 1
        self.set_status(200, "Fine Thanks")
        self.set_header("Content-Type", "text/plain")
        self.set_header("X-Drop", "x")
        self.clear_header("X-Drop")
        self.add_header("X-Multi", "a")
        self.add_header("X-Multi", "b")
        self.finish(f"headers #{calls['headers']}")


class CookieHandler(tornado.web.RequestHandler):
    @cache_response(60)
    def get(self) -> None:
        calls["cookie"] += 1
        self.set_cookie("seen", str(calls["cookie"]))
        self.write("cookie")


class MissingHandler(tornado.web.RequestHandler):
    @cache_response(60)
    def get(self) -> None:
        calls["missing"] += 1
        raise tornado.web.HTTPError(404)


class RedirectHandler(tornado.web.RequestHandler):
    @cache_response(60)
    def get(self) -> None:
        calls["redirect"] += 1
        self.redirect("/sync")


class StreamHandler(tornado.web.RequestHandler):
    @cache_response(60)
    async def get(self) -> None:
        calls["stream"] += 1
        self.write("part 1;")
        await self.flush()
        self.write("part 2")


class PathKeyHandler(tornado.web.RequestHandler):
    @cache_response(60, key=lambda handler: handler.request.path)
    def get(self) -> None:
        calls["pathkey"] += 1
        self.write(self.get_argument("q", ""))

    post = get


def make_app(**settings) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/sync", SyncHandler),
            (r"/gen/(\w+)", GenHandler),
            (r"/async", AsyncHandler),
            (r"/headers", HeadersHandler),
            (r"/cookie", CookieHandler),
            (r"/missing", MissingHandler),
            (r"/redirect", RedirectHandler),
            (r"/stream", StreamHandler),
            (r"/pathkey", PathKeyHandler),
        ],
        **settings,
    )


@pytest.fixture
async def serve():
    servers: list[tornado.httpserver.HTTPServer] = []

    async def start(**settings) -> httpx.AsyncClient:
        port = free_port()
        server = make_app(**settings).listen(port, address="127.0.0.1")
        servers.append(server)
        # One site name for every server, as a load balancer in front of them would send:
        # the Host is part of every cache key.
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10.0, headers={"host": "app.example"}
        )

    calls.clear()
    AsyncHandler.gate = None
    yield start
    for server in servers:
        server.stop()
        await server.close_all_connections()


async def test_sync_get_cached_by_uri(serve):
    async with await serve(chorde_client=InprocCacheClient(100)) as http:
        first = await http.get("/sync?q=a")
        assert first.json() == {"n": 1, "q": "a"}
        again = await http.get("/sync?q=a")
        assert again.json() == {"n": 1, "q": "a"}
        assert again.headers["content-type"] == first.headers["content-type"]
        assert (await http.get("/sync?q=b")).json() == {"n": 2, "q": "b"}
        assert calls["sync"] == 2


async def test_gen_coroutine_get_with_future_cached(serve):
    async with await serve() as http:
        assert (await http.get("/gen/abc")).text == "ABC #1"
        assert (await http.get("/gen/abc")).text == "ABC #1"
        assert (await http.get("/gen/xyz")).text == "XYZ #2"
    assert calls["gen"] == 2


async def test_concurrent_requests_render_once(serve):
    AsyncHandler.gate = asyncio.Event()
    async with await serve(chorde_client=InprocCacheClient(100)) as http:
        requests = [asyncio.ensure_future(http.get("/async")) for _ in range(5)]
        for _ in range(200):  # bounded: until the first request is rendering
            if calls["async"]:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # let the other requests arrive and join it
        AsyncHandler.gate.set()
        responses = await asyncio.gather(*requests)
    assert [r.text for r in responses] == ["async #1"] * 5
    assert calls["async"] == 1


async def test_status_headers_and_finish_replayed(serve):
    async with await serve(chorde_client=InprocCacheClient(100)) as http:
        first = await http.get("/headers")
        second = await http.get("/headers")
    # A custom reason phrase is not kept: a stored response is status, fields and body
    # (RFC 9110 section 15: clients ignore the phrase; HTTP/2 has none).
    assert first.reason_phrase == "Fine Thanks"
    for response in (first, second):
        assert response.status_code == 200
        assert response.text == "headers #1"
        assert response.headers["content-type"] == "text/plain"
        assert response.headers.get_list("x-multi") == ["a", "b"]
        assert "x-drop" not in response.headers
    assert calls["headers"] == 1


async def test_etag_revalidation_on_a_cached_response(serve):
    async with await serve(chorde_client=InprocCacheClient(100)) as http:
        first = await http.get("/sync")
        etag = first.headers["etag"]
        revalidated = await http.get("/sync", headers={"If-None-Match": etag})
        assert revalidated.status_code == 304
        assert calls["sync"] == 1


@pytest.mark.parametrize(
    ("path", "status", "counter"),
    [
        ("/cookie", 200, "cookie"),
        ("/missing", 404, "missing"),
        ("/redirect", 302, "redirect"),
        ("/stream", 200, "stream"),
    ],
)
async def test_uncacheable_responses_are_computed_each_time(serve, path, status, counter):
    client = InprocCacheClient(100)
    async with await serve(chorde_client=client) as http:
        for _ in range(2):
            response = await http.get(path, follow_redirects=False)
            assert response.status_code == status
        if path == "/stream":
            assert response.text == "part 1;part 2"
        if path == "/cookie":
            assert response.headers["set-cookie"].startswith("seen=2")
    assert calls[counter] == 2
    assert client.usage == 0


async def test_custom_key_and_other_methods_bypass(serve):
    async with await serve(chorde_client=InprocCacheClient(100)) as http:
        assert (await http.get("/pathkey?q=1")).text == "1"
        assert (await http.get("/pathkey?q=2")).text == "1"  # the key ignores the query
        assert (await http.post("/pathkey?q=3", content=b"")).text == "3"
        assert (await http.post("/pathkey?q=4", content=b"")).text == "4"
    assert calls["pathkey"] == 3


async def test_responses_shared_through_memcached(serve, memcached):
    one = MemcachedClient([memcached.address], "k")
    two = MemcachedClient([memcached.address], "k")
    try:
        async with await serve(chorde_client=one) as a, await serve(chorde_client=two) as b:
            assert (await a.get("/gen/mc")).text == "MC #1"
            assert (await b.get("/gen/mc")).text == "MC #1"  # rendered by the other app
            assert (await b.get("/headers")).headers.get_list("x-multi") == ["a", "b"]
            assert (await a.get("/headers")).text == "headers #1"
        assert calls["gen"] == 1
        assert calls["headers"] == 1
    finally:
        one.close()
        two.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="ttl"):
        cache_response(0)
    with pytest.raises(TypeError, match="key"):
        cache_response(10, key="uri")
    with pytest.raises(TypeError):
        cache_response(10)("not a method")
