"""Per-route counters and hook events of the HTTP response cache, through Flask (blocking
driver) and Starlette (asyncio driver); tags shared with @cached."""

from __future__ import annotations

import pytest

from chorde import observe
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.http import ResponseCache, Route
from chorde.observe import CacheInfo
from chorde.tags import invalidate_tags

flask = pytest.importorskip("flask")


def _flask_app(client):
    from chorde_flask import Chorde

    app = flask.Flask(__name__)
    app.testing = True  # a view's exception reaches the test
    app.config["CHORDE_CLIENT"] = client
    ext = Chorde(app)
    renders = []

    @app.get("/product/<int:pid>")
    @ext.cached(ttl=60)
    def product(pid):
        renders.append(pid)
        if pid == 500:
            raise RuntimeError("broken view")
        return flask.Response(f"product {pid}", headers={"Surrogate-Key": f"product:{pid}"})

    return app, ext, product, renders


def test_flask_route_counters_and_events():
    client = InprocCacheClient(100)
    app, ext, product, _ = _flask_app(client)
    events: list[observe.Event] = []
    web = app.test_client()
    with observe.hooked(events.append):
        assert web.get("/product/1").status_code == 200
        assert web.get("/product/1").status_code == 200
        assert web.get("/product/2").status_code == 200
        with pytest.raises(RuntimeError):
            web.get("/product/500")
    name = f"{product.__module__}.{product.__qualname__}"
    with app.app_context():
        info = ext.route_info()[name]
    assert info == CacheInfo(hits=1, misses=3, errors=1)
    assert [(e.kind, e.name, e.scope) for e in events] == [
        ("miss", name, "route"),
        ("hit", name, "route"),
        ("miss", name, "route"),
        ("error", name, "route"),
    ]
    assert observe.snapshot()[("route", name)].hits >= 1


def test_tags_are_shared_by_pages_and_cached_functions():
    client = InprocCacheClient(100)
    app, ext, _, renders = _flask_app(client)
    calls = []

    @cached(client, ttl=60, tags=lambda pid: [f"product:{pid}"])
    def price(pid):
        calls.append(pid)
        return pid * 10

    web = app.test_client()
    web.get("/product/7")
    price(7)
    web.get("/product/7")
    price(7)
    assert (renders, calls) == ([7], [7])
    invalidate_tags(client, "product:7")  # from anywhere holding the client
    web.get("/product/7")
    price(7)
    assert (renders, calls) == ([7, 7], [7, 7])
    with app.app_context():
        ext.purge_tags("product:7")  # the adapter's purge drops the function's results too
    web.get("/product/7")
    price(7)
    assert (renders, calls) == ([7, 7, 7], [7, 7, 7])


def test_starlette_route_counters():
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute
    from starlette.testclient import TestClient

    from chorde_starlette import CacheMiddleware, cache_route

    @cache_route(ttl=60)
    async def home(request):
        return PlainTextResponse("home")

    async def other(request):
        return PlainTextResponse("other")

    app = Starlette(routes=[StarletteRoute("/", home), StarletteRoute("/other", other)])
    middleware = CacheMiddleware(app, client=InprocCacheClient(100))
    events: list[observe.Event] = []
    with observe.hooked(events.append), TestClient(middleware) as web:
        for path in ("/", "/", "/", "/other", "/other"):
            assert web.get(path).status_code == 200
    info = middleware.cache.route_info()
    assert info[f"{home.__module__}.{home.__qualname__}"] == CacheInfo(hits=2, misses=1)
    assert info["default"] == CacheInfo(hits=1, misses=1)  # endpoints not marked
    assert [e.kind for e in events] == ["miss", "hit", "hit", "miss", "hit"]


def test_route_names_are_checked():
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        Route(name="")
    cache = ResponseCache(InprocCacheClient(10))
    assert cache.route_counters(Route(name="a")) is cache.route_counters(Route(name="a"))
    assert cache.route_info() == {"a": CacheInfo()}


def test_starlette_background_refresh_counts_and_events():
    pytest.importorskip("starlette")
    import time

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute
    from starlette.testclient import TestClient

    from chorde_starlette import CacheMiddleware, cache_route

    renders = []

    @cache_route
    async def news(request):
        renders.append(1)
        cc = "max-age=10, stale-while-revalidate=600"
        return PlainTextResponse(f"news {len(renders)}", headers={"Cache-Control": cc})

    now = [1_000_000.0]
    app = Starlette(routes=[StarletteRoute("/news", news)])
    middleware = CacheMiddleware(app, client=InprocCacheClient(100), clock=lambda: now[0])
    events: list[observe.Event] = []
    name = f"{news.__module__}.{news.__qualname__}"
    with observe.hooked(events.append), TestClient(middleware) as web:
        assert web.get("/news").text == "news 1"
        now[0] += 20  # stale, within stale-while-revalidate
        assert web.get("/news").text == "news 1"
        deadline = time.monotonic() + 5
        while len(renders) < 2 or middleware._refreshing:
            assert time.monotonic() < deadline, "the background refresh never ran"
            time.sleep(0.01)
    assert middleware.cache.route_info()[name] == CacheInfo(misses=1, stale=1, refreshes=1)
    assert [e.kind for e in events] == ["miss", "stale", "refresh"]


async def test_tornado_route_counters():
    tornado_web = pytest.importorskip("tornado.web")
    import httpx

    from chorde_tornado import cache_response
    from tests.servers import free_port

    class Page(tornado_web.RequestHandler):
        @cache_response(60)
        def get(self) -> None:
            self.write("page")

    client = InprocCacheClient(100)
    app = tornado_web.Application([("/page", Page)], chorde_client=client)
    port = free_port()
    server = app.listen(port, address="127.0.0.1")
    events: list[observe.Event] = []
    try:
        with observe.hooked(events.append):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                for _ in range(3):
                    assert (await http.get("/page")).text == "page"
    finally:
        server.stop()
        await server.close_all_connections()
    name = f"{Page.get.__module__}.{Page.get.__qualname__}"
    assert [(e.kind, e.name, e.scope) for e in events] == [
        ("miss", name, "route"),
        ("hit", name, "route"),
        ("hit", name, "route"),
    ]
    assert observe.snapshot()[("route", name)] == CacheInfo(hits=2, misses=1)
