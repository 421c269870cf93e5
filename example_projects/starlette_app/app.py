"""A Starlette app behind chorde's HTTP response cache, served by uvicorn.

Run it from the repository root::

    uvicorn app:app --app-dir example_projects/starlette_app

Endpoints (each counts how often its handler really ran; ``/stats`` shows the counts):

* ``/slow``: a slow JSON computation, cached for 30 s by ``@cache_route(ttl=SLOW_TTL)``;
  concurrent first requests share one computation.
* ``/me``: personalised (``Authorization: Bearer <name>`` or a ``session`` cookie from
  ``/login?user=<name>``): never shared between users.
* ``/news``: the same for everyone, declared ``public`` so that it is shared even between
  requests that carry ``Authorization``.
* ``/greeting``: answers in the language of ``Accept-Language`` and says ``Vary`` on it.
* ``/stream``: a streamed body (``chunks`` x ``size`` bytes), passed through as it is
  produced; cached only when it fits the cache's body size cap. With ``hold=<token>`` it
  stops after the first chunk until ``/stream/release?token=<token>`` is called (at most
  10 s); the release answers 404 when no stream waits for that token.
* ``/lab``: a playground whose response fields come from the query string (``status``,
  ``cc`` for Cache-Control, ``vary``, ``cookie``, ``etag``, ``expires``) to watch the rules.
* ``/static``: a trivial uncached endpoint (the benchmark's baseline); ``/stats``.

Environment: ``CHORDE_MEMCACHED=host:port`` (with ``CHORDE_CHECKSUM_KEY``) caches in
memcached instead of in process, ``CHORDE_REDIS=redis://host:port`` (any client URL) in
Redis or Valkey; ``SLOW_SECONDS`` (default 0.5), ``SLOW_TTL`` (``/slow``'s
ttl, default 30), ``CACHE_TTL`` (the others', default 60) and ``MAX_BODY_SIZE`` (bytes,
default 65536) tune the demo.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from chorde.clients.base import BaseCacheClient
from chorde.clients.inproc import InprocCacheClient
from chorde_starlette import CacheMiddleware, cache_route, no_cache_route

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "0.5"))
SLOW_TTL = float(os.environ.get("SLOW_TTL", "30"))
CACHE_TTL = float(os.environ.get("CACHE_TTL", "60"))
MAX_BODY_SIZE = int(os.environ.get("MAX_BODY_SIZE", "65536"))
HOLD_TIMEOUT = 10.0

calls: collections.Counter[str] = collections.Counter()
_releases: dict[str, asyncio.Event] = {}


def make_client() -> BaseCacheClient:
    """The cache client the environment asks for."""
    servers = os.environ.get("CHORDE_MEMCACHED")
    redis_url = os.environ.get("CHORDE_REDIS")
    if redis_url:
        from chorde.clients import from_url

        key = os.environ.get("CHORDE_CHECKSUM_KEY")
        if not key:
            raise RuntimeError("CHORDE_REDIS is set: set CHORDE_CHECKSUM_KEY to a secret too")
        return from_url(redis_url, checksum_key=key, namespace="starlette-app")
    if not servers:
        return InprocCacheClient(4096)
    from chorde.clients.memcached import MemcachedClient

    key = os.environ.get("CHORDE_CHECKSUM_KEY")
    if not key:
        raise RuntimeError("CHORDE_MEMCACHED is set: set CHORDE_CHECKSUM_KEY to a secret too")
    return MemcachedClient(servers.split(","), checksum_key=key, namespace="starlette-app")


@cache_route(ttl=SLOW_TTL)
async def slow(request: Request) -> Response:
    calls["slow"] += 1
    n = calls["slow"]
    await asyncio.sleep(SLOW_SECONDS)
    return JSONResponse(
        {"computed": n, "item": request.query_params.get("item"), "at": time.time()}
    )


def _user(request: Request) -> tuple[str | None, str]:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), "authorization"
    return request.cookies.get("session"), "cookie"


async def me(request: Request) -> Response:
    calls["me"] += 1
    user, via = _user(request)
    # The guest answer is shared, so every answer says it depends on the cookie: a
    # logged-in user must never get the guest's copy.
    headers = {"vary": "Cookie"}
    if user is None:
        return JSONResponse({"user": None, "hello": "guest", "n": calls["me"]}, headers=headers)
    # Authorization alone keeps the answer out of the shared cache (RFC 9111 section 3.5);
    # a cookie does not, so a cookie-personalised answer must say private.
    if via == "cookie":
        headers["cache-control"] = "private"
    body = {"user": user, "hello": f"hello {user}", "n": calls["me"]}
    return JSONResponse(body, headers=headers)


async def login(request: Request) -> Response:
    calls["login"] += 1
    user = request.query_params.get("user", "guest")
    response = JSONResponse({"logged_in": user, "n": calls["login"]})
    response.set_cookie("session", user, httponly=True, samesite="lax")
    return response


async def news(request: Request) -> Response:
    calls["news"] += 1
    return JSONResponse(
        {"headline": "chorde caches responses", "n": calls["news"]},
        headers={"cache-control": "public, s-maxage=30"},
    )


_GREETINGS = {"en": "Hello", "fr": "Bonjour", "es": "Hola", "de": "Hallo"}


async def greeting(request: Request) -> Response:
    calls["greeting"] += 1
    lang = "en"
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in _GREETINGS:
            lang = tag
            break
    return JSONResponse(
        {"greeting": _GREETINGS[lang], "lang": lang, "n": calls["greeting"]},
        headers={"vary": "Accept-Language", "content-language": lang},
    )


async def stream(request: Request) -> Response:
    calls["stream"] += 1
    n = calls["stream"]
    chunks = min(int(request.query_params.get("chunks", "4")), 10_000)
    size = min(int(request.query_params.get("size", "1024")), 1 << 20)
    hold = request.query_params.get("hold")

    async def body() -> AsyncIterator[bytes]:
        # Registered before the first chunk leaves, so a client that got it can release.
        event = _releases.setdefault(hold, asyncio.Event()) if hold else None
        try:
            for i in range(chunks):
                line = f"call {n} chunk {i}\n".encode()
                yield line + b"." * max(0, size - len(line) - 1) + b"\n"
                if i == 0 and event is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), HOLD_TIMEOUT)
                else:
                    await asyncio.sleep(0)
        finally:
            if hold:
                _releases.pop(hold, None)

    return StreamingResponse(body(), media_type="text/plain")


@no_cache_route
async def release(request: Request) -> Response:
    event = _releases.get(request.query_params.get("token", ""))
    if event is None:
        return PlainTextResponse("no stream is waiting for this token", status_code=404)
    event.set()
    return PlainTextResponse("released")


async def lab(request: Request) -> Response:
    calls["lab"] += 1
    q = request.query_params
    headers: dict[str, str] = {}
    for param, field in (
        ("cc", "cache-control"),
        ("vary", "vary"),
        ("etag", "etag"),
        ("expires", "expires"),
    ):
        if param in q:
            headers[field] = q[param]
    body = json.dumps({"n": calls["lab"], "query": str(request.url.query)})
    response = Response(body, status_code=int(q.get("status", "200")), headers=headers)
    if "cookie" in q:
        response.set_cookie("lab", q["cookie"])
    return response


@no_cache_route
async def static(request: Request) -> Response:
    return PlainTextResponse("ok")


@no_cache_route
async def stats(request: Request) -> Response:
    return JSONResponse(dict(calls))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await client.aclose()


client = make_client()
app = Starlette(
    routes=[
        Route("/slow", slow),
        Route("/me", me),
        Route("/login", login),
        Route("/news", news),
        Route("/greeting", greeting),
        Route("/stream", stream),
        Route("/stream/release", release),
        Route("/lab", lab, methods=["GET", "POST"]),
        Route("/static", static),
        Route("/stats", stats),
    ],
    middleware=[
        Middleware(CacheMiddleware, client=client, ttl=CACHE_TTL, max_body_size=MAX_BODY_SIZE)
    ],
    lifespan=lifespan,
)
