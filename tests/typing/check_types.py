"""The typing test of the decorators: checked by mypy (``make typecheck``), never run.

Each ``assert_type`` fails the type check when a decorator stops keeping the decorated
function's parameters or result type; each ``# type: ignore[code]`` marks a call that must be
rejected, and fails the check (as an unused ignore) once it is accepted. Everything sits in
functions that nothing calls, so importing this module (pytest may) runs no decorator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, assert_type

import tornado.httputil
import tornado.web
from flask import Flask, Response
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from chorde.clients.base import BaseCacheClient
from chorde.decorators import (
    AsyncCachedFunction,
    BackgroundAsyncCachedFunction,
    BackgroundCachedFunction,
    BoundAsyncCachedFunction,
    BoundCachedFunction,
    CachedFunction,
    FutureAsyncCachedFunction,
    FutureCachedFunction,
    cached,
)
from chorde.futures import Future
from chorde.observe import CacheInfo
from chorde_flask import Chorde


def check_cached_function(client: BaseCacheClient) -> None:
    @cached(client, ttl=60)
    def area(width: int, height: int, /) -> float:
        return float(width * height)

    assert_type(area, CachedFunction[[int, int], float])
    assert_type(area(2, 3), float)
    assert_type(area(2, 3), float)
    assert_type(area.peek(2, 3), float)
    assert_type(area.lazy(2, 3), float)
    assert_type(area.refresh(2, 3), float)
    assert_type(area.uncached(2, 3), float)
    assert_type(area.put(2, 3, _cache_put=4.0), None)
    assert_type(area.invalidate(2, 3), None)
    assert_type(area.expire(2, 3), None)
    assert_type(area.client, BaseCacheClient)
    assert_type(area.namespace, str)
    assert_type(area.cache_key(2, 3), Hashable)

    assert_type(area.bg(), BackgroundCachedFunction[[int, int], float])
    assert_type(area.async_(), BackgroundCachedFunction[[int, int], float])
    assert_type(area.bg()(2, 3), float)
    assert_type(area.bg().lazy(2, 3), float)
    assert_type(area.bg().refresh(2, 3), Future[float])

    assert_type(area.future(), FutureCachedFunction[[int, int], float])
    assert_type(area.future()(2, 3), Future[float])
    assert_type(area.future().peek(2, 3), Future[float])
    assert_type(area.future().lazy(2, 3), Future[float])
    assert_type(area.future().refresh(2, 3), Future[float])
    assert_type(area.future().uncached(2, 3), Future[float])
    assert_type(area.future().put(2, 3, _cache_put=4.0), Future[None])
    assert_type(area.future().invalidate(2, 3), Future[None])
    assert_type(area.future()(2, 3).result(), float)

    assert_type(area.forced()(2, 3), float)
    assert_type(area.bg().forced()(2, 3), float)
    assert_type(area.future().forced()(2, 3), Future[float])
    assert_type(area.cache_info(), CacheInfo)
    assert_type(area.invalidate_all(), None)
    assert_type(area.future().invalidate_all(), Future[None])

    @cached(client, ttl=lambda v: 10.0, tags=lambda n: [f"n:{n}"], condition=bool)
    def tagged(n: int) -> int:
        return n

    assert_type(tagged(1), int)

    area("2", 3)  # type: ignore[arg-type]
    area(2)  # type: ignore[call-arg]
    area(1, 2, 3)  # type: ignore[call-arg]
    area.peek("2", 3)  # type: ignore[arg-type]
    area.future()("2", 3)  # type: ignore[arg-type]
    area.put(2, 3, _cache_put="four")  # type: ignore[arg-type]


def check_keyword_parameters(client: BaseCacheClient) -> None:
    @cached(client, ttl=60, async_ttl=-10)
    def greet(name: str, *, polite: bool = False) -> str:
        return ("Dear " if polite else "") + name

    assert_type(greet("Ann", polite=True), str)
    assert_type(greet.future()("Ann", polite=True), Future[str])
    greet("Ann", rude=True)  # type: ignore[call-arg]
    greet("Ann", True)  # type: ignore[call-arg]


async def check_coroutine_function(client: BaseCacheClient) -> None:
    @cached(client, ttl=60)
    async def fetch(url: str, /) -> bytes:
        await asyncio.sleep(0)
        return url.encode()

    assert_type(fetch, AsyncCachedFunction[[str], bytes])
    assert_type(await fetch("u"), bytes)
    _ = assert_type(fetch("u"), Coroutine[Any, Any, bytes])
    assert_type(await fetch.peek("u"), bytes)
    assert_type(await fetch.lazy("u"), bytes)
    assert_type(await fetch.refresh("u"), bytes)
    assert_type(await fetch.uncached("u"), bytes)
    assert_type(await fetch.put("u", _cache_put=b""), None)
    assert_type(await fetch.invalidate("u"), None)
    assert_type(await fetch.expire("u"), None)

    assert_type(fetch.bg(), BackgroundAsyncCachedFunction[[str], bytes])
    assert_type(await fetch.bg()("u"), bytes)
    assert_type(fetch.bg().refresh("u"), asyncio.Task[bytes])

    assert_type(fetch.future(), FutureAsyncCachedFunction[[str], bytes])
    assert_type(fetch.future()("u"), Future[bytes])
    assert_type(await fetch.future()("u"), bytes)
    assert_type(fetch.future().put("u", _cache_put=b""), Future[None])
    assert_type(await fetch.forced()("u"), bytes)
    assert_type(await fetch.bg().forced()("u"), bytes)
    assert_type(fetch.future().forced()("u"), Future[bytes])
    assert_type(fetch.cache_info(), CacheInfo)
    assert_type(await fetch.invalidate_all(), None)

    await fetch(1)  # type: ignore[arg-type]


async def check_cached_methods(client: BaseCacheClient) -> None:
    class Repo:
        @cached(client, ttl=60)
        def load(self, item: int, /) -> list[str]:
            return [str(item)]

        @cached(client, ttl=60)
        async def aload(self, item: int, /) -> dict[str, int]:
            return {"item": item}

    repo = Repo()
    assert_type(Repo.load, CachedFunction[[Repo, int], list[str]])
    assert_type(repo.load, BoundCachedFunction[[int], list[str]])
    assert_type(repo.load(1), list[str])
    assert_type(repo.load.peek(1), list[str])
    assert_type(repo.load.future()(1), Future[list[str]])
    assert_type(repo.aload, BoundAsyncCachedFunction[[int], dict[str, int]])
    assert_type(await repo.aload(1), dict[str, int])
    assert_type(repo.aload.future()(1), Future[dict[str, int]])
    repo.load("1")  # type: ignore[arg-type]


def check_flask(ext: Chorde, app: Flask) -> None:
    @ext.memoize(ttl=60)
    def total(a: int, b: int, /) -> int:
        return a + b

    assert_type(total, CachedFunction[[int, int], int])
    assert_type(total(1, 2), int)
    assert_type(total.peek(1, 2), int)
    assert_type(total.bg()(1, 2), int)
    assert_type(total.future()(1, 2), Future[int])
    total("1", 2)  # type: ignore[arg-type]

    @ext.memoize()
    async def atotal(a: int, /) -> int:
        return a

    assert_type(atotal, AsyncCachedFunction[[int], int])
    assert_type(atotal.future()(1), Future[int])

    @app.route("/items/<int:item>")
    @ext.cached(ttl=30)
    def item_view(item: int) -> str:
        return str(item)

    assert_type(item_view(item=3), str | Response)
    item_view(item="3")  # type: ignore[arg-type]

    @ext.cached()
    async def async_view(item: int) -> str:
        return str(item)

    _ = assert_type(async_view(item=3), Coroutine[Any, Any, str | Response])


def check_django() -> None:
    from chorde_django.decorators import cached as django_cached

    @django_cached(60, alias="default")
    def report(day: str, /) -> dict[str, int]:
        return {day: 1}

    assert_type(report, CachedFunction[[str], dict[str, int]])
    assert_type(report("mon"), dict[str, int])
    assert_type(report.future()("mon"), Future[dict[str, int]])
    report(1)  # type: ignore[arg-type]

    @django_cached(60)
    async def areport(day: str, /) -> int:
        return len(day)

    assert_type(areport, AsyncCachedFunction[[str], int])


def check_tornado(
    app: tornado.web.Application, request: tornado.httputil.HTTPServerRequest
) -> None:
    from chorde_tornado import cache_response

    class Page(tornado.web.RequestHandler):
        @cache_response(30)
        def get(self, slug: str, /) -> None:
            self.write(slug)

    assert_type(Page.get, Callable[[Page, str], Coroutine[Any, Any, None]])
    page = Page(app, request)
    _ = assert_type(page.get("slug"), Coroutine[Any, Any, None])
    _ = page.get(1)  # type: ignore[arg-type]


def check_starlette(request: Request) -> None:
    from chorde_starlette import cache_route

    @cache_route
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    @cache_route(ttl=30, vary=("Accept-Language",))
    async def about(request: Request) -> PlainTextResponse:
        return PlainTextResponse("about")

    _ = assert_type(home(request), Coroutine[Any, Any, PlainTextResponse])
    _ = assert_type(about(request), Coroutine[Any, Any, PlainTextResponse])
    _ = home(1)  # type: ignore[arg-type]
