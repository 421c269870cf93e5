"""An HTTP-correct shared response cache for Starlette and any ASGI application.

:class:`CacheMiddleware` is a pure ASGI middleware. What may be stored and served, and under
which key, is :mod:`chorde.http`'s policy, the same for every chorde adapter (its rules,
with their RFC 9111 sections, are listed in :mod:`chorde.http.rules`); this module only
translates ASGI messages and holds a response until that policy has decided on it.
:func:`cache_route` and :func:`no_cache_route` mark endpoints to opt them in or out, with
what they declare about themselves (ttl, ``public``, ``per_user``, ``vary``, ``cookies``).

What the middleware adds to the policy:

* Bodies sent in one message are held until the decision is made (so even the first answer
  gets its ETag and can be a 304); streamed bodies (``more_body``) pass through as they
  come while a copy is kept for storage, dropped as soon as it outgrows ``max_body_size``.
  A response with trailers, or any message but start and body, is not stored.
* An unsafe request (POST, PUT, DELETE, PATCH ...) answered with a 2xx or 3xx status
  invalidates the entry of its URI (RFC 9111 section 4.4), before the answer is sent.
* A response is stored before its last byte is sent, so a client that asks again at once
  is served from the cache.
* Concurrent misses of one key make one call to the application: the others wait for its
  response and are served it when the policy lets it answer them. Otherwise each of them
  calls the application itself; so they do when it is streamed, rather than wait for a
  stream's end.
"""

from __future__ import annotations

import asyncio
import logging
import numbers
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, overload

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chorde import observe
from chorde.clients.base import BaseCacheClient, check_capacity
from chorde.clients.urls import from_url, is_url
from chorde.http import (
    DEFAULT_MAX_VARY_BYTES,
    DEFAULT_MAX_VARY_FIELDS,
    DEFAULT_STATUSES,
    CacheRequest,
    ResponseCache,
    Route,
    Rules,
    StoredResponse,
)
from chorde.http.request import FRESH, STALE_WHILE_REVALIDATE
from chorde.http.route import DEFAULT_ROUTE
from chorde.observe import HIT, MISS, STALE
from chorde_starlette._responder import _Responder

__all__ = [
    "DEFAULT_STATUSES",
    "CacheMiddleware",
    "RoutePolicy",
    "cache_route",
    "no_cache_route",
]

logger = logging.getLogger("chorde.starlette")

E = TypeVar("E")

_POLICY_ATTR = "__chorde_cache_policy__"
# RFC 9110 section 9.2.1: the safe methods besides GET and HEAD; the others invalidate.
_SAFE_METHODS = frozenset({"OPTIONS", "TRACE"})
_MAX_MOUNT_DEPTH = 16
_POLICY_MEMO_SIZE = 4096
_NAMESPACE = "chorde_starlette"


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """Whether an endpoint's responses are cached, and what the endpoint declares."""

    cache: bool
    route: Route = DEFAULT_ROUTE

    @property
    def ttl(self) -> float | None:
        return self.route.ttl


def _mark(endpoint: E, policy: RoutePolicy) -> E:
    if not callable(endpoint):
        raise TypeError(f"cache_route/no_cache_route decorate an endpoint, got {endpoint!r}")
    try:
        setattr(endpoint, _POLICY_ATTR, policy)
    except (AttributeError, TypeError):
        raise TypeError(
            f"cannot mark {endpoint!r}: decorate the endpoint function or HTTPEndpoint class"
        ) from None
    return endpoint


@overload
def cache_route(endpoint: E, /) -> E: ...
@overload
def cache_route(
    *,
    ttl: float | None = None,
    public: bool = False,
    per_user: bool = False,
    vary: Sequence[str] = (),
    cookies: Sequence[str] = (),
    query: bool = True,
) -> Callable[[E], E]: ...
def cache_route(
    endpoint: Any = None,
    /,
    *,
    ttl: float | None = None,
    public: bool = False,
    per_user: bool = False,
    vary: Sequence[str] = (),
    cookies: Sequence[str] = (),
    query: bool = True,
) -> Any:
    """Cache this endpoint's responses, for ``ttl`` seconds (the middleware's ttl if None).

    Use as ``@cache_route`` or ``@cache_route(ttl=30, ...)`` on a function endpoint or an
    ``HTTPEndpoint`` class, below the ``@app.route`` decorator if any. ``public``,
    ``per_user``, ``vary``, ``cookies`` and ``query`` are what the endpoint declares about
    its responses (see :class:`chorde.http.Route`).
    """
    route = Route(
        ttl=ttl, public=public, per_user=per_user, vary=vary, cookies=cookies, query=query
    )

    def mark(fn: Any) -> Any:
        # The endpoint names its route's counters (chorde.observe).
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
        return _mark(fn, RoutePolicy(True, replace(route, name=name)))

    if endpoint is not None:
        return mark(endpoint)
    return mark


def no_cache_route(endpoint: E, /) -> E:
    """Never look up or store this endpoint's responses."""
    return _mark(endpoint, RoutePolicy(False))


class CacheMiddleware:
    """A shared HTTP response cache as pure ASGI middleware; see the module docstring.

    Options (keyword-only):

    * ``client``: a chorde client (any :class:`~chorde.clients.base.BaseCacheClient`), or a
      URL (or list of URLs) for :func:`chorde.clients.from_url`; the default is a private
      in-process cache of ``inproc_size`` entries. Entries are plain tuples of ints, floats,
      bytes and strings, so any client, memcached included, can hold them.
    * ``ttl``: seconds a response is kept when its route gives no ttl (default 60); the
      response's own ``s-maxage``/``max-age``/``Expires`` can only shorten it.
    * ``max_body_size``: bodies above this many bytes are streamed on uncached (1 MiB).
    * ``cache_by_default``: whether endpoints not marked with :func:`cache_route` or
      :func:`no_cache_route` are cached (default True).
    * ``statuses``: the response statuses that may be stored (:data:`DEFAULT_STATUSES`).
    * ``allowed_hosts``: the Host names served from the cache (None: any well-formed one;
      ``".example.com"`` matches the domain and its subdomains); others pass through.
    * ``max_vary_fields`` / ``max_vary_bytes``: a response varying on more request fields,
      or a request whose values of them are larger, is not cached (bounds hostile input).
    * ``key_prefix``: a string put in every key, to keep several caches in one client apart.
    * ``add_etag``: give stored responses without an ETag a strong one (default True).
    * ``strict``: the shared-cache mode for use in front of an origin (a reverse proxy,
      a CDN-like tier): responses are stored only for the freshness they grant (or RFC 9111
      heuristics from ``Last-Modified``), route ttls play no part, and ``CDN-Cache-Control``
      is honoured (see :class:`chorde.http.Rules`). Default: the application mode.
    * ``targeted``: the RFC 9213 targeted fields this cache obeys, first first (default:
      ``("CDN-Cache-Control",)`` in strict mode, none otherwise).
    * ``stale_while_revalidate`` / ``stale_if_error``: seconds a stale response may be
      served while it is refreshed in the background / when the application fails or
      answers 5xx, for responses that do not say (RFC 5861; default 0).
    * ``cache_status``: a name, to add an RFC 9211 ``Cache-Status`` field to every cached
      route's response (``"chorde"``: ``chorde; hit; ttl=42``); ``cache_status_key=True``
      adds the key to it. Default: no field.
    * ``clock``: the wall clock entries are dated by (``time.time``; tests replace it). It
      must agree across processes sharing a client, since ``Age`` is computed from it.

    A stale entry with validators (its ETag, its Last-Modified) is revalidated: the
    application gets the request with ``If-None-Match``/``If-Modified-Since`` in place of
    the client's own, and a ``304`` freshens the entry (its fields updated, its body kept).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: BaseCacheClient | str | Sequence[str] | None = None,
        ttl: float = 60.0,
        max_body_size: int = 1 << 20,
        cache_by_default: bool = True,
        statuses: Iterable[int] = DEFAULT_STATUSES,
        allowed_hosts: Iterable[str] | None = None,
        max_vary_fields: int = DEFAULT_MAX_VARY_FIELDS,
        max_vary_bytes: int = DEFAULT_MAX_VARY_BYTES,
        key_prefix: str = "",
        add_etag: bool = True,
        strict: bool = False,
        targeted: Iterable[str] | None = None,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        cache_status: str | None = None,
        cache_status_key: bool = False,
        inproc_size: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if client is None:
            client = from_url(f"inproc://?size={check_capacity(inproc_size, 'inproc_size')}")
        elif is_url(client):
            client = from_url(client)
        if isinstance(max_body_size, bool) or not isinstance(max_body_size, numbers.Integral):
            raise TypeError(f"max_body_size must be an int of bytes, got {max_body_size!r}")
        if max_body_size < 0:
            raise ValueError(f"max_body_size must be >= 0, got {max_body_size!r}")
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be a str, got {key_prefix!r}")
        rules = Rules(
            statuses=statuses,
            allowed_hosts=allowed_hosts,
            max_vary_fields=max_vary_fields,
            max_vary_bytes=max_vary_bytes,
            add_etag=add_etag,
            strict=strict,
            targeted=targeted,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
        )
        self.app: ASGIApp = app
        self.cache: ResponseCache = ResponseCache(
            client,
            rules=rules,
            ttl=ttl,
            clock=clock,
            cache_status=cache_status,
            cache_status_key=cache_status_key,
        )
        self.max_body_size: int = int(max_body_size)
        self.cache_by_default = bool(cache_by_default)
        self.key_prefix = key_prefix
        self._namespace: tuple[str, str] = (_NAMESPACE, key_prefix)
        self._default_policy: RoutePolicy = RoutePolicy(self.cache_by_default)
        self._policies: dict[tuple[Any, ...], RoutePolicy] = {}
        self._inflight: dict[tuple[Any, ...], asyncio.Future[StoredResponse | None]] = {}
        self._refreshing: dict[tuple[Any, ...], asyncio.Task[None]] = {}

    @property
    def client(self) -> BaseCacheClient:
        """Where the responses live."""
        return self.cache.client

    @property
    def ttl(self) -> float:
        """The ttl of routes that name none."""
        return self.cache.ttl

    @property
    def statuses(self) -> frozenset[int]:
        """The statuses that may be stored."""
        return self.cache.rules.statuses

    # ---- purging -------------------------------------------------------------------------

    async def purge(self, url: str) -> None:
        """Drop the stored response(s) of a GET of the absolute ``url`` (every variant)."""
        await self.cache.adelete(self.cache.url_key(url, namespace=self._namespace))

    async def purge_tags(self, *tags: str) -> None:
        """Drop every stored response that named one of ``tags`` in its tag field
        (``Surrogate-Key``), in every process sharing the client."""
        await self.cache.apurge_tags(*tags)

    # ---- the request path ---------------------------------------------------------------

    def _request(self, scope: Scope, route: Route, method: str) -> CacheRequest:
        return self.cache.request(
            method=method,
            scheme=scope.get("scheme", "http"),
            hosts=None,  # every Host line: two of them mean "do not cache"
            path=scope.get("root_path", "") + scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=scope["headers"],
            route=route,
            namespace=self._namespace,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve from the cache, or call the application and store what it may."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            if method in _SAFE_METHODS:
                await self.app(scope, receive, send)
            else:
                await self._unsafe(scope, receive, send)
            return
        policy = self._policy(scope)
        if not policy.cache:
            await self.app(scope, receive, send)
            return
        request = self._request(scope, policy.route, method)
        if request.bypass is not None:
            await self.app(scope, receive, send)
            return
        cache = self.cache
        # The route's counters and the hooks (chorde.observe): one count per request.
        started = time.perf_counter() if observe.hooks() else 0.0
        entry = await cache.alookup(request)
        if entry is None:
            entry = self._just_computed(request)
        verdict = request.freshness(entry, cache.clock()) if entry is not None else None
        if entry is not None and verdict in (FRESH, STALE_WHILE_REVALIDATE):
            await self._send_reply(send, request, entry, hit=True)
            cache.count(request, HIT if verdict == FRESH else STALE, started)
            if verdict == STALE_WHILE_REVALIDATE:  # RFC 5861 section 3
                self._refresh(scope, request, entry)
            return
        try:
            if request.only_if_cached:  # RFC 9111 section 5.2.1.7
                await send({"type": "http.response.start", "status": 504, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            if request.head:
                # A HEAD miss is answered by the application as a HEAD, which has no body to
                # store; later GETs fill the cache and HEADs are then served from it.
                await self.app(scope, receive, send)
                return
            stale = entry  # stale, or None
            if not cache.coalesces(request):
                await self._forward(scope, receive, send, request, None, stale)
                return

            flight_key = self._flight_key(request)
            loop = asyncio.get_running_loop()
            pending = self._inflight.get(flight_key)
            if pending is not None and pending.get_loop() is loop:
                cache.route_counters(request.route).coalesced += 1
                shared = await asyncio.shield(pending)
                if shared is not None and request.accepts(shared, cache.clock()):
                    await self._send_reply(send, request, shared, hit=True)
                else:
                    await self._forward(scope, receive, send, request, None, stale)
                return
            if pending is not None:  # a future of another event loop: leave it alone
                await self._forward(scope, receive, send, request, None, stale)
                return
            future: asyncio.Future[StoredResponse | None] = loop.create_future()
            self._inflight[flight_key] = future
            try:
                await self._forward(scope, receive, send, request, future, stale)
            finally:
                if not future.done():
                    future.set_result(None)
                if self._inflight.get(flight_key) is future:
                    del self._inflight[flight_key]
        finally:  # a miss, whatever answered it (timed to the end of the answer)
            cache.count(request, MISS, started)

    @staticmethod
    def _flight_key(request: CacheRequest) -> tuple[Any, ...]:
        return (request.key, request.variant(request.route.keyed_on))

    async def _unsafe(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the app; a non-error answer invalidates the target URI (RFC 9111 4.4)."""
        policy = self._policy(scope)
        if not policy.cache:
            await self.app(scope, receive, send)
            return
        # Keyed as the GET of the same URI would be.
        key = self._request(scope, policy.route, "GET").key

        async def invalidating_send(message: Message) -> None:
            if key and message["type"] == "http.response.start" and 200 <= message["status"] < 400:
                # Before the answer leaves, so the client's next GET sees the change. A
                # varying resource loses its Vary marker, which orphans every variant.
                await self.cache.adelete(key)
            await send(message)

        await self.app(scope, receive, invalidating_send)

    def _just_computed(self, request: CacheRequest) -> StoredResponse | None:
        """An entry computed for the request whose storage is still under way, if any."""
        pending = self._inflight.get(self._flight_key(request))
        if pending is None or not pending.done() or pending.cancelled():
            return None
        entry = pending.result()
        return entry if entry is not None and request.accepts(entry, self.cache.clock()) else None

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: CacheRequest,
        future: asyncio.Future[StoredResponse | None] | None,
        stale: StoredResponse | None,
    ) -> None:
        """Call the application (revalidating ``stale`` when it has validators); store its
        response when the policy allows; answer from ``stale`` when it fails (RFC 5861)."""
        if stale is not None and stale.validators:
            scope = {**scope, "headers": _conditional(scope["headers"], stale.validators)}
        responder = _Responder(self, send, request, future, stale)
        try:
            await self.app(scope, receive, responder.send)
        except Exception:
            if not responder.started and stale is not None and self.cache.serves_on_error(stale):
                logger.warning("serving a stale %r: the application failed", request.key)
                fwd = request.forward_reason(True)
                await self._send_reply(send, request, stale, hit=True, fwd=fwd)
                return
            raise
        finally:
            responder.abandon()
        await responder.flush()

    def _refresh(self, scope: Scope, request: CacheRequest, stale: StoredResponse) -> None:
        """Refresh ``stale`` in the background, once per key at a time (RFC 5861)."""
        key = self._flight_key(request)
        if key in self._refreshing:
            return

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def sink(message: Message) -> None:
            pass  # the client was answered already, from the stale entry

        counters = self.cache.route_counters(request.route)
        counters.refreshes += 1
        name = request.route.name or "default"

        async def refresh() -> None:
            started = time.perf_counter() if observe.hooks() else 0.0
            kind = observe.REFRESH
            try:
                await self._forward(dict(scope), receive, sink, request, None, stale)
            except Exception:  # nobody is waiting for it: the stale entry just stays
                counters.errors += 1
                kind = observe.ERROR
                logger.warning("background refresh of %r failed", request.key, exc_info=True)
            finally:
                self._refreshing.pop(key, None)
                if started:
                    observe.emit(kind, name, time.perf_counter() - started, observe.ROUTE)

        self._refreshing[key] = asyncio.get_running_loop().create_task(refresh())

    def status_field(
        self,
        request: CacheRequest,
        entry: StoredResponse | None,
        *,
        fwd: str | None = None,
        fwd_status: int | None = None,
        stored: bool | None = None,
    ) -> tuple[bytes, bytes] | None:
        """The ``Cache-Status`` field of an answer the application gave (None when off)."""
        return self.cache.status_field(
            request, entry, fwd=fwd, fwd_status=fwd_status, stored=stored
        )

    async def _send_reply(
        self,
        send: Send,
        request: CacheRequest,
        entry: StoredResponse,
        *,
        hit: bool,
        fwd: str | None = None,
        fwd_status: int | None = None,
        stored: bool | None = None,
    ) -> None:
        status, headers, body = self.cache.reply(
            request, entry, hit=hit, fwd=fwd, fwd_status=fwd_status, stored=stored
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # ---- per-endpoint policy -------------------------------------------------------------

    def _policy(self, scope: Scope) -> RoutePolicy:
        """The policy of the endpoint Starlette's routing would pick for this request.

        The middleware runs before the router, so it matches the routes itself (the same
        ``Route.matches`` the router calls, through ``Mount`` and ``Host``), on the
        application in ``scope["app"]`` (set by Starlette) or the wrapped app. Results are
        memoised per Host line(s) and path.
        """
        routes = getattr(scope.get("app"), "routes", None)
        if routes is None:
            routes = getattr(self.app, "routes", None)
            if routes is None:
                return self._default_policy
        hosts = tuple(v for k, v in scope["headers"] if k == b"host")
        memo_key = (id(routes), hosts, scope.get("root_path", ""), scope["path"])
        policy = self._policies.get(memo_key)
        if policy is None:
            match_scope = dict(scope)
            match_scope["method"] = "GET"  # HEAD is routed like GET
            endpoint = _resolve_endpoint(routes, match_scope, 0)
            policy = getattr(endpoint, _POLICY_ATTR, None)
            if not isinstance(policy, RoutePolicy):
                policy = self._default_policy
            if len(self._policies) >= _POLICY_MEMO_SIZE:
                self._policies.clear()
            self._policies[memo_key] = policy
        return policy


def _candidates(routes: Any) -> Any:
    """The routes to match, a FastAPI app's included routers expanded into their operations
    (FastAPI 0.137+ routes an ``include_router`` through a node that matches without naming
    the endpoint; its ``iter_route_contexts`` lists what that node holds)."""
    iter_route_contexts = _fastapi_route_contexts()
    if iter_route_contexts is None:
        return routes
    try:
        return list(iter_route_contexts(routes))
    except Exception:  # not FastAPI routes after all
        return routes


def _fastapi_route_contexts() -> Any:
    module = sys.modules.get("fastapi.routing")  # only an app already using FastAPI
    return getattr(module, "iter_route_contexts", None)


def _conditional(
    headers: Iterable[tuple[bytes, bytes]], validators: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The request's fields with the cache's validators in place of the client's own."""
    own = {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since"}
    return [(k, v) for k, v in headers if k.lower() not in own] + list(validators)


def _resolve_endpoint(routes: Any, scope: Scope, depth: int) -> Any:
    """The endpoint (or mounted app) a full route match leads to, None when none matches."""
    for route in _candidates(routes):
        try:
            match, child = route.matches(scope)
        except Exception:  # a custom route failing to match is no match
            continue
        if match is not Match.FULL:
            continue
        sub_routes = getattr(getattr(route, "original_route", route), "routes", None)
        if sub_routes and depth < _MAX_MOUNT_DEPTH:
            found = _resolve_endpoint(sub_routes, {**scope, **child}, depth + 1)
            if found is not None:
                return found
        return child.get("endpoint", getattr(route, "endpoint", None))
    return None
