"""Every adapter on Redis by URL, with no adapter code for it: Django's LOCATION, Flask's
CHORDE_URL, Starlette's and tornado's client=. Two instances of each share one Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.servers import free_port


def _configure_django() -> None:
    from django.conf import settings

    if not settings.configured:  # (tests/django/conftest.py does it when it ran first)
        settings.configure(
            SECRET_KEY="chorde-redis-tests-" + "k" * 40,
            INSTALLED_APPS=["chorde_django"],
            CACHES={"default": {"BACKEND": "chorde_django.ChordeCache"}},
            USE_TZ=True,
        )
        import django

        django.setup()


def test_django_location(redis_server) -> None:
    _configure_django()
    from chorde_django import ChordeCache

    url = f"redis://{redis_server.address}/1"
    params = {"OPTIONS": {"NAMESPACE": "site"}, "TIMEOUT": 60}
    one, two = ChordeCache(url, params), ChordeCache(url, params)
    one.set("k", {"v": 1})
    assert two.get("k") == {"v": 1}  # shared; the checksum key derived from SECRET_KEY
    assert one.add("n", 1) and not two.add("n", 5)
    assert two.incr("n", 10) == 11 and one.decr("n") == 10
    assert one.touch("k", 5) and two.get("k") == {"v": 1}
    one.set_many({"a": 1, "b": 2})
    assert two.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
    assert one.get_or_set("computed", lambda: "once") == two.get("computed") == "once"
    two.delete("a")
    assert one.get("a") is None
    one.clear()
    assert two.get("b") is None and two.get("k", "gone") == "gone"

    async def awaited() -> None:
        await one.aset("x", 1)
        assert await two.aget("x") == 1
        assert await two.aincr("x") == 2

    asyncio.run(awaited())
    tiered = ChordeCache(["inproc://?size=100&max_ttl=5", url], params)
    one.set("k", "both")
    assert tiered.get("k") == "both"


def test_flask_by_url(redis_server) -> None:
    from flask import Flask

    from chorde_flask import Chorde

    calls: list[int] = []

    def make() -> Any:
        app = Flask("redis_site")
        app.config.update(SECRET_KEY="k", CHORDE_URL=f"redis://{redis_server.address}")
        ext = Chorde(app)

        @app.get("/page")
        @ext.cached(ttl=60)
        def page() -> str:
            calls.append(1)
            return f"render {len(calls)}"

        return app.test_client()

    one, two = make(), make()
    assert one.get("/page").text == "render 1"
    assert two.get("/page").text == "render 1"  # from Redis, rendered by the other app
    assert calls == [1]


async def test_starlette_by_url(redis_server) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from chorde_starlette import CacheMiddleware

    calls: list[int] = []

    async def page(request: Any) -> PlainTextResponse:
        calls.append(1)
        return PlainTextResponse(f"render {len(calls)}", headers={"cache-control": "max-age=60"})

    # Starlette has no framework secret to derive a signing key from: the URL names one.
    url = f"redis://{redis_server.address}?namespace=star&checksum_key=s3cret"
    apps = [CacheMiddleware(Starlette(routes=[Route("/page", page)]), client=url) for _ in range(2)]
    for app in apps:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://site.example") as http:
            assert (await http.get("/page")).text == "render 1"
    assert calls == [1]


async def test_tornado_by_url(redis_server) -> None:
    import tornado.web

    from chorde_tornado import cache_response

    calls: list[int] = []
    url = f"redis://{redis_server.address}?namespace=tornado"

    class Page(tornado.web.RequestHandler):
        @cache_response(60, client=url)
        def get(self) -> None:
            calls.append(1)
            self.write(f"render {len(calls)}")

    class Setting(tornado.web.RequestHandler):
        @cache_response(60)
        def get(self) -> None:
            calls.append(2)
            self.write("from the setting's client")

    port = free_port()
    app = tornado.web.Application(
        [("/page", Page), ("/setting", Setting)], chorde_client=url, cookie_secret="s"
    )
    server = app.listen(port, address="127.0.0.1")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/page")).text == "render 1"
            assert (await http.get("/page")).text == "render 1"
            await http.get("/setting")
            await http.get("/setting")
    finally:
        server.stop()
        await asyncio.sleep(0)
    assert calls == [1, 2]
