"""A FastAPI app behind chorde's HTTP cache in strict shared-cache mode, served by uvicorn.

Run it from the repository root::

    uvicorn app:app --app-dir example_projects/fastapi_app

``app`` is the FastAPI application (``api``) wrapped in :class:`CacheMiddleware` with
``strict=True``: the cache stores a response only for the freshness the response itself
grants (``Cache-Control``, ``Expires``, or a share of the time since its ``Last-Modified``),
as a CDN or a reverse proxy would. Every answer says what the cache did in its
``Cache-Status`` field (RFC 9211). The endpoints (``/stats`` counts how often each handler
really ran):

* ``/reports/{name}``: slow; ``Cache-Control: public, max-age=REPORT_MAX_AGE,
  stale-while-revalidate=REPORT_MAX_AGE`` and an ``ETag``. Once stale it is served at once
  while the cache revalidates it in the background; the handler answers the cache's
  ``If-None-Match`` with a quick ``304`` instead of computing the report again.
* ``/articles/{slug}``: slow; only ``Last-Modified``: the cache gives it heuristic freshness
  (a tenth of the time since it changed) and revalidates it with ``If-Modified-Since``.
* ``/live``: slow, and says nothing about freshness: a strict cache never stores it.
* ``/me``: personalised, by ``Authorization: Bearer <name>`` or the ``session`` cookie that
  ``POST /login?user=<name>`` sets; ``Cache-Control: private``: never shared.
* ``/products`` and ``/products/{id}``: tagged with ``Surrogate-Key`` (``products``,
  ``product-<id>``); the cache strips the field and can drop every response carrying a tag.
  ``PUT /products/{id}`` (admin) changes a price and purges that product's tag itself.
* ``POST /purge`` (admin): ``{"tags": [...], "urls": [...]}`` purges by tag and by URL
  (a path is taken on the Host the purge request was sent to).
* ``/static``: trivial and never cached (the benchmark's baseline); ``/stats``.

Admin endpoints want ``Authorization: Bearer $PURGE_TOKEN``; without ``PURGE_TOKEN`` in the
environment they are disabled (``503``): the example does not teach an open purge.

Environment: ``CHORDE_MEMCACHED=host:port[,host:port]`` (with ``CHORDE_CHECKSUM_KEY``) caches
in memcached, shared by every worker, instead of in process; ``SLOW_SECONDS`` (0.5),
``REPORT_MAX_AGE`` (30), ``PRODUCT_MAX_AGE`` (300), ``ARTICLE_AGE`` (seconds since the
articles changed, 86400) and ``STALE_IF_ERROR`` (seconds a stale response may answer when a
handler fails, 300) tune the demo.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import hmac
import os
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from chorde.clients.base import BaseCacheClient
from chorde.clients.inproc import InprocCacheClient
from chorde_starlette import CacheMiddleware, no_cache_route

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "0.5"))
REPORT_MAX_AGE = int(os.environ.get("REPORT_MAX_AGE", "30"))
PRODUCT_MAX_AGE = int(os.environ.get("PRODUCT_MAX_AGE", "300"))
ARTICLE_AGE = float(os.environ.get("ARTICLE_AGE", "86400"))
STALE_IF_ERROR = float(os.environ.get("STALE_IF_ERROR", "300"))
PURGE_TOKEN = os.environ.get("PURGE_TOKEN", "")
#: Bumped when the reports' data changes; part of their ETag, so every process agrees on it.
REPORT_DATA_VERSION = 1
#: When the articles last changed (they never change while the app runs).
ARTICLES_MODIFIED = time.time() - ARTICLE_AGE

calls: collections.Counter[str] = collections.Counter()
products: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "teapot", "price": 25.0},
    2: {"id": 2, "name": "kettle", "price": 40.0},
    3: {"id": 3, "name": "mug", "price": 8.5},
}


def make_client() -> BaseCacheClient:
    """The cache client the environment asks for."""
    servers = os.environ.get("CHORDE_MEMCACHED")
    if not servers:
        return InprocCacheClient(4096)
    from chorde.clients.memcached import MemcachedClient

    key = os.environ.get("CHORDE_CHECKSUM_KEY")
    if not key:
        raise RuntimeError("CHORDE_MEMCACHED is set: set CHORDE_CHECKSUM_KEY to a secret too")
    return MemcachedClient(servers.split(","), checksum_key=key, namespace="fastapi-app")


def _etag_matches(condition: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` condition names ``etag`` (weak comparison)."""
    if condition is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in condition.split(",")]
    return "*" in tags or etag in tags


def _not_modified_since(condition: str | None, modified: float) -> bool:
    """Whether an ``If-Modified-Since`` date is at or after ``modified``."""
    if condition is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(condition).timestamp()
    except (TypeError, ValueError):
        return False  # an invalid date is ignored (RFC 9110 section 13.1.3)
    return since >= int(modified)


@contextlib.asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    yield
    await client.aclose()


api = FastAPI(title="chorde FastAPI example", lifespan=lifespan)


# ---- slow endpoints, their freshness from the fields they set -------------------------------


@api.get("/reports/{name}")
async def report(name: str, request: Request) -> Response:
    etag = f'"report-{name}-v{REPORT_DATA_VERSION}"'
    headers = {
        "etag": etag,
        "cache-control": (
            f"public, max-age={REPORT_MAX_AGE}, stale-while-revalidate={REPORT_MAX_AGE}"
        ),
    }
    if _etag_matches(request.headers.get("if-none-match"), etag):
        # The cache revalidating its copy (or a client its own): nothing to compute.
        calls["reports_not_modified"] += 1
        return Response(status_code=304, headers=headers)
    calls["reports"] += 1
    n = calls["reports"]
    await asyncio.sleep(SLOW_SECONDS)
    body = {"report": name, "computed": n, "rows": [name * i for i in range(3)], "at": time.time()}
    return JSONResponse(body, headers=headers)


@api.get("/articles/{slug}")
async def article(slug: str, request: Request) -> Response:
    headers = {"last-modified": email.utils.formatdate(ARTICLES_MODIFIED, usegmt=True)}
    if "if-none-match" not in request.headers and _not_modified_since(
        request.headers.get("if-modified-since"), ARTICLES_MODIFIED
    ):
        calls["articles_not_modified"] += 1
        return Response(status_code=304, headers=headers)
    calls["articles"] += 1
    await asyncio.sleep(SLOW_SECONDS)
    body = {"article": slug, "text": f"All about {slug}.", "computed": calls["articles"]}
    return JSONResponse(body, headers=headers)


@api.get("/live")
async def live() -> dict[str, Any]:
    # No Cache-Control, Expires nor Last-Modified: in strict mode, never stored.
    calls["live"] += 1
    await asyncio.sleep(SLOW_SECONDS)
    return {"n": calls["live"], "at": time.time()}


# ---- personalised: never shared -------------------------------------------------------------


def current_user(
    authorization: Annotated[str | None, Header()] = None,
    session: Annotated[str | None, Cookie()] = None,
) -> str | None:
    """The user a request comes from: its bearer token or its session cookie (a demo: a
    real app verifies the token or looks the session up)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return session or None


@api.get("/me")
async def me(user: Annotated[str | None, Depends(current_user)]) -> Response:
    calls["me"] += 1
    body = {"user": user, "hello": f"hello {user or 'guest'}", "n": calls["me"]}
    # private: for this user's browser only, never for a shared cache (RFC 9111 5.2.2.7).
    headers = {"cache-control": "private", "vary": "Authorization, Cookie"}
    return JSONResponse(body, headers=headers)


@api.post("/login")
async def login(user: str) -> Response:
    calls["login"] += 1
    response = JSONResponse({"logged_in": user})
    response.set_cookie("session", user, httponly=True, samesite="lax")
    return response


# ---- tagged responses, and purging them -----------------------------------------------------


def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
    """Let through requests bearing the admin token from the environment (``PURGE_TOKEN``)."""
    if not PURGE_TOKEN:
        raise HTTPException(503, "admin endpoints are disabled: set PURGE_TOKEN")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), PURGE_TOKEN.encode()
    ):
        raise HTTPException(401, "an admin token is required", {"WWW-Authenticate": "Bearer"})


def _tagged(body: Any, tags: list[str]) -> Response:
    headers = {
        "cache-control": f"public, max-age={PRODUCT_MAX_AGE}",
        "surrogate-key": " ".join(tags),  # the cache's, stripped before the answer leaves
    }
    return JSONResponse(body, headers=headers)


@api.get("/products")
async def list_products() -> Response:
    calls["products"] += 1
    items = [products[i] for i in sorted(products)]
    return _tagged({"products": items}, ["products", *(f"product-{i}" for i in products)])


@api.get("/products/{product_id}")
async def get_product(product_id: int) -> Response:
    calls["product"] += 1
    if product_id not in products:
        raise HTTPException(404, "no such product")
    return _tagged(products[product_id], [f"product-{product_id}"])


class PriceChange(BaseModel):
    price: float = Field(gt=0)


@api.put("/products/{product_id}", dependencies=[Depends(require_admin)])
async def change_price(product_id: int, change: PriceChange) -> dict[str, Any]:
    if product_id not in products:
        raise HTTPException(404, "no such product")
    products[product_id]["price"] = change.price
    # The cache drops this URL's own entry (a successful PUT, RFC 9111 4.4); the tag also
    # takes the lists showing the product, in every process sharing the cache.
    await app.purge_tags(f"product-{product_id}")
    return products[product_id]


Tag = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[!-~]+$")]
Url = Annotated[str, Field(min_length=1, max_length=2000)]


class Purge(BaseModel):
    tags: list[Tag] = Field(default_factory=list, max_length=100)
    urls: list[Url] = Field(default_factory=list, max_length=100)


@api.post("/purge", dependencies=[Depends(require_admin)])
async def purge(order: Purge, request: Request) -> dict[str, list[str]]:
    urls = [urllib.parse.urljoin(str(request.base_url), url) for url in order.urls]
    for url in urls:
        try:
            await app.purge(url)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    if order.tags:
        await app.purge_tags(*order.tags)
    return {"tags": order.tags, "urls": urls}


# ---- never cached ---------------------------------------------------------------------------


@api.get("/static")
@no_cache_route
async def static() -> PlainTextResponse:
    return PlainTextResponse("ok")


@api.get("/stats")
@no_cache_route
async def stats() -> dict[str, int]:
    return dict(calls)


client = make_client()
app = CacheMiddleware(
    api, client=client, strict=True, cache_status="chorde", stale_if_error=STALE_IF_ERROR
)
