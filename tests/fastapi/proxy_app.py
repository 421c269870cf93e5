"""A caching reverse proxy for the tests: CacheMiddleware(strict=True) in front of an origin.

``forward`` sends every request on to ``ORIGIN_URL`` with an ``httpx.AsyncClient`` and
passes back whatever the origin answers, every field line of it (two ``Age`` lines stay
two) but the hop-by-hop ones, so that all the origin sends reaches the cache. It reads the
origin's body whole before answering, as nginx's ``proxy_buffering`` does: concurrent misses
then share one origin request (a streamed body would let them go on their own). An origin
that cannot be reached is a ``502 Bad Gateway``, one that does not answer in time a ``504``.

``POST /_chorde/purge`` (``Authorization: Bearer $PURGE_TOKEN``) with
``{"tags": [...], "urls": [...]}`` purges; ``GET /_chorde/ready`` answers once it serves.
Both are handled ahead of the cache.

Environment: ``ORIGIN_URL`` (required), ``CHORDE_MEMCACHED`` + ``CHORDE_CHECKSUM_KEY``
(cache in memcached; in process otherwise), ``PROXY_TTL`` (the application-mode ttl, which
strict mode must not use), ``PROXY_STALE_WHILE_REVALIDATE`` / ``PROXY_STALE_IF_ERROR``
(the middleware's defaults for responses that do not say), ``PROXY_CACHE_NAME`` (its name
in Cache-Status, ``chorde``), ``PROXY_STATUS_KEY=1`` (the key in Cache-Status),
``PURGE_TOKEN``. Uvicorn must run it with ``--no-date-header`` (the
origin's ``Date`` is passed on).
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

import httpx

from chorde.clients.base import BaseCacheClient
from chorde.clients.inproc import InprocCacheClient
from chorde_starlette import CacheMiddleware

ORIGIN_URL = os.environ["ORIGIN_URL"]
PURGE_TOKEN = os.environ.get("PURGE_TOKEN", "")
# RFC 9110 section 7.6.1: fields for one connection only, never forwarded.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"content-length"}

_origin: httpx.AsyncClient | None = None


def make_client() -> BaseCacheClient:
    servers = os.environ.get("CHORDE_MEMCACHED")
    if not servers:
        return InprocCacheClient(4096)
    from chorde.clients.memcached import MemcachedClient

    return MemcachedClient(
        servers.split(","), checksum_key=os.environ["CHORDE_CHECKSUM_KEY"], namespace="proxy"
    )


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _answer(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def forward(scope: Any, receive: Any, send: Any) -> None:
    """Send the request to the origin, answer with the origin's response."""
    assert _origin is not None, "the proxy serves once its lifespan has started"
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _NOT_FORWARDED]
    headers += [(b"x-forwarded-host", v) for k, v in scope["headers"] if k == b"host"]
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    request = _origin.build_request(
        scope["method"],
        target.decode("latin-1"),
        headers=headers,
        content=await _read_body(receive),
    )
    try:
        response = await _origin.send(request, stream=True)
        try:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
    except httpx.TimeoutException:
        await _answer(send, 504, b"the origin did not answer in time", b"text/plain")
        return
    except httpx.TransportError:
        await _answer(send, 502, b"the origin cannot be reached", b"text/plain")
        return
    fields = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
    await send({"type": "http.response.start", "status": response.status_code, "headers": fields})
    await send({"type": "http.response.body", "body": body})


cache = CacheMiddleware(
    forward,
    client=make_client(),
    strict=True,
    cache_status=os.environ.get("PROXY_CACHE_NAME", "chorde"),
    cache_status_key=os.environ.get("PROXY_STATUS_KEY") == "1",
    ttl=float(os.environ.get("PROXY_TTL", "60")),
    stale_while_revalidate=float(os.environ.get("PROXY_STALE_WHILE_REVALIDATE", "0")),
    stale_if_error=float(os.environ.get("PROXY_STALE_IF_ERROR", "0")),
)


async def _purge(scope: Any, receive: Any, send: Any) -> None:
    fields = dict(scope["headers"])
    scheme, _, token = fields.get(b"authorization", b"").decode("latin-1").partition(" ")
    if (
        not PURGE_TOKEN
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(token.strip().encode(), PURGE_TOKEN.encode())
    ):
        await _answer(send, 401, b"an admin token is required", b"text/plain")
        return
    try:
        order = json.loads(await _read_body(receive))
        for url in order.get("urls", []):
            await cache.purge(url)
        await cache.purge_tags(*order.get("tags", []))
    except (ValueError, TypeError, AttributeError) as exc:
        await _answer(send, 422, str(exc).encode(), b"text/plain")
        return
    await _answer(send, 200, json.dumps(order).encode(), b"application/json")


async def _lifespan(receive: Any, send: Any) -> None:
    global _origin
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _origin = httpx.AsyncClient(base_url=ORIGIN_URL, timeout=10.0)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _origin is not None:
                await _origin.aclose()
            await cache.client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"] == "/_chorde/purge":
        await _purge(scope, receive, send)
    elif scope["type"] == "http" and scope["path"] == "/_chorde/ready":
        await _answer(send, 200, b"ready", b"text/plain")
    else:
        await cache(scope, receive, send)
