"""Route marks (``@cache_route``, ``@no_cache_route``) on FastAPI path operations.

The middleware finds a request's endpoint by matching the application's routes itself,
before FastAPI routes the request; FastAPI's ``APIRoute`` is a Starlette ``Route`` whose
``endpoint`` is the decorated function, so marks on functions registered with the app's
``@app.get`` (in either decorator order) are found, through ``app.mount`` too. Since
FastAPI 0.137, ``include_router`` keeps an included ``APIRouter`` as one node of
``app.routes`` whose match names no endpoint: marks on its operations are not found.

In-process (httpx's ASGI transport): what is checked here is routing, not HTTP.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Header

from chorde_starlette import CacheMiddleware, cache_route, no_cache_route

calls: collections.Counter[str] = collections.Counter()


def build(add: bool = True, **options: Any) -> FastAPI:
    """A FastAPI app whose endpoints carry marks; the middleware added FastAPI's way
    (``app.add_middleware``) unless ``add`` is False."""
    app = FastAPI()
    calls.clear()

    @app.get("/marked-below")
    @no_cache_route
    async def marked_below() -> dict[str, int]:
        calls["marked-below"] += 1
        return {"n": calls["marked-below"]}

    @no_cache_route  # above: FastAPI's decorator returns the function it registered
    @app.get("/marked-above")
    async def marked_above() -> dict[str, int]:
        calls["marked-above"] += 1
        return {"n": calls["marked-above"]}

    @app.get("/short/{item_id}")
    @cache_route(ttl=5)
    async def short(item_id: int) -> dict[str, int]:
        calls["short"] += 1
        return {"item": item_id, "n": calls["short"]}

    @app.get("/plain")
    async def plain() -> dict[str, int]:
        calls["plain"] += 1
        return {"n": calls["plain"]}

    @app.get("/mine")
    @cache_route(per_user=True)
    async def mine(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        calls["mine"] += 1
        return {"user": authorization, "n": calls["mine"]}

    sub = FastAPI()

    @sub.get("/inner")
    @no_cache_route
    async def inner() -> dict[str, int]:
        calls["inner"] += 1
        return {"n": calls["inner"]}

    app.mount("/sub", sub)

    router = APIRouter()

    @router.get("/skipped")
    @no_cache_route
    async def skipped() -> dict[str, int]:
        calls["skipped"] += 1
        return {"n": calls["skipped"]}

    @router.get("/brief")
    @cache_route(ttl=5)
    async def brief() -> dict[str, int]:
        calls["brief"] += 1
        return {"n": calls["brief"]}

    app.include_router(router, prefix="/api")
    if add:
        app.add_middleware(CacheMiddleware, cache_status="chorde", ttl=60, **options)
    return app


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build())
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as client:
        yield client


async def twice(http: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    await http.get(url, headers=headers)
    return await http.get(url, headers=headers)


def ttl(response: httpx.Response) -> int:
    status = response.headers.get("cache-status", "")
    return int(status.split("ttl=")[1].split(";")[0])


@pytest.mark.parametrize("url", ["/marked-below", "/marked-above", "/sub/inner"])
async def test_no_cache_route_on_a_fastapi_operation(http: httpx.AsyncClient, url: str) -> None:
    second = await twice(http, url)
    assert second.json()["n"] == 2
    assert "cache-status" not in second.headers  # the cache stood aside


async def test_cache_route_ttl_on_an_operation_with_a_path_parameter(
    http: httpx.AsyncClient,
) -> None:
    second = await twice(http, "/short/7")
    assert second.json() == {"item": 7, "n": 1}
    assert second.headers["cache-status"].startswith("chorde; hit")
    assert 0 < ttl(second) <= 5  # the route's ttl, not the middleware's 60 s
    other = await http.get("/short/8")
    assert other.json() == {"item": 8, "n": 2}


async def test_an_unmarked_operation_gets_the_middleware_ttl(http: httpx.AsyncClient) -> None:
    second = await twice(http, "/plain")
    assert second.json()["n"] == 1
    assert 5 < ttl(second) <= 60


async def test_per_user_on_an_operation_with_a_header_dependency(
    http: httpx.AsyncClient,
) -> None:
    ann = await twice(http, "/mine", authorization="Bearer ann")
    bob = await twice(http, "/mine", authorization="Bearer bob")
    assert (ann.json()["user"], ann.json()["n"]) == ("Bearer ann", 1)
    assert (bob.json()["user"], bob.json()["n"]) == ("Bearer bob", 2)
    assert ann.headers["cache-status"].startswith("chorde; hit")


async def test_marks_hold_in_strict_mode() -> None:
    transport = httpx.ASGITransport(app=build(strict=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as http:
        skipped = await twice(http, "/marked-below")
        assert skipped.json()["n"] == 2 and "cache-status" not in skipped.headers
        # Strict: no freshness in the response, nothing stored, whatever the route's ttl.
        unstored = await twice(http, "/short/1")
        assert unstored.headers["cache-status"].endswith("stored=?0")


async def test_the_middleware_wrapping_the_app_finds_the_marks() -> None:
    # Wrapped from outside rather than added (what you do to keep a reference for
    # purging): the marks are found on the wrapped app's routes.
    wrapped = CacheMiddleware(build(add=False), cache_status="chorde", ttl=60)
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as http:
        assert (await twice(http, "/marked-below")).json()["n"] == 2
        assert 0 < ttl(await twice(http, "/short/3")) <= 5


@pytest.mark.parametrize(
    "url, check",
    [
        ("/api/skipped", lambda r: r.json()["n"] == 2 and "cache-status" not in r.headers),
        ("/api/brief", lambda r: 0 < ttl(r) <= 5),
    ],
    ids=["no_cache_route", "cache_route-ttl"],
)
async def test_marks_on_an_included_router(http: httpx.AsyncClient, url: str, check: Any) -> None:
    assert check(await twice(http, url))
