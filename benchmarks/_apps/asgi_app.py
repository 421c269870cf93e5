"""A one-page FastAPI app for uvicorn: ``benchmarks._apps.asgi_app:app``.

The same endpoint, cached by chorde's ASGI middleware (``chorde_starlette.CacheMiddleware``
around the app), by cashews (``@cache(ttl=...)`` on the endpoint) or by fastapi-cache2
(``@cache(expire=...)``), as ``BENCH_IMPL`` names in :data:`CONFIGS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse

from benchmarks._apps import CHECKSUM_KEY, PAGE, TTL, VIEW_DELAY, impl, memcached, note_miss, redis

__all__ = ["CONFIGS", "app"]

#: Implementation name -> the cache it is given: a chorde client URL (or list: tiered), or
#: a peer's backend URL; None for the peer's in-memory default.
CONFIGS: dict[str, Callable[[], Any]] = {
    "chorde-inproc": lambda: "inproc://?size=10000",
    "chorde-memcached": lambda: f"memcached://{memcached()}",
    "chorde-tiered": lambda: ["inproc://?size=10000&max_ttl=5", f"memcached://{memcached()}"],
    "chorde-redis": lambda: f"redis://{redis()}",
    "cashews-memory": lambda: "mem://",
    "cashews-redis": lambda: f"redis://{redis()}",
    "fastapi-cache2-memory": lambda: None,
    "fastapi-cache2-redis": lambda: f"redis://{redis()}",
}


async def _render() -> str:
    note_miss()
    await asyncio.sleep(VIEW_DELAY)
    return PAGE


def _cashews(url: str) -> tuple[Callable[..., Awaitable[str]], Callable[[], Awaitable[None]]]:
    from cashews import cache

    cache.setup(url)

    @cache(ttl=TTL)
    async def page() -> str:
        return await _render()

    return page, cache.close


def _fastapi_cache(url: str | None) -> tuple[Callable[..., Awaitable[str]], Callable[[], Any]]:
    from fastapi_cache import FastAPICache
    from fastapi_cache.decorator import cache

    def init() -> None:
        if url is None:
            from fastapi_cache.backends.inmemory import InMemoryBackend

            FastAPICache.init(InMemoryBackend(), prefix="bench")
        else:
            from fastapi_cache.backends.redis import RedisBackend
            from redis.asyncio import from_url

            FastAPICache.init(RedisBackend(from_url(url)), prefix="bench")

    @cache(expire=TTL)
    async def page() -> str:
        return await _render()

    return page, init


def create_app(name: str) -> Any:
    """The ASGI app, its page cached by implementation ``name``."""
    target = CONFIGS[name]()
    startup: Callable[[], Any] | None = None
    shutdown: Callable[[], Awaitable[None]] | None = None
    if name.startswith("cashews"):
        page, shutdown = _cashews(target)
    elif name.startswith("fastapi-cache2"):
        page, startup = _fastapi_cache(target)
    else:
        page = _render

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if startup is not None:
            startup()
        yield
        if shutdown is not None:
            await shutdown()

    api = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    api.add_api_route("/page", page, methods=["GET"], response_class=HTMLResponse)
    api.add_api_route("/ready", _ready, methods=["GET"], response_class=PlainTextResponse)
    if not name.startswith("chorde"):
        return api
    from chorde.clients.urls import from_url
    from chorde_starlette import CacheMiddleware

    client = (
        from_url(target) if name == "chorde-inproc" else from_url(target, checksum_key=CHECKSUM_KEY)
    )
    return CacheMiddleware(api, client=client, ttl=TTL)


async def _ready() -> str:
    return "ok"


#: The ASGI application uvicorn serves.
app = create_app(impl())
