"""An HTTP-correct shared response cache for Starlette and any ASGI application.

:class:`CacheMiddleware` is a pure ASGI middleware. For each GET or HEAD request it looks
the response up in a chorde client (through the client's awaitable methods, so a memcached
client never blocks the event loop), serves it when RFC 9111 allows a shared cache to, and
otherwise calls the application and stores what it answered when RFC 9111 allows it.
:func:`cache_route` and :func:`no_cache_route` mark endpoints to opt them in or out, with a
ttl of their own.

What the cache does, and where it comes from (RFC 9111 unless said otherwise):

* Only GET and HEAD are looked up; a HEAD is served from a cached GET. The key is the
  method-normalised target (scheme, host, path, query) plus the values of the request
  fields the stored response listed in ``Vary`` (section 4.1).
* Request ``Cache-Control``: ``no-store`` bypasses the cache (5.2.1.5); ``no-cache`` and
  ``max-age=0`` go to the application and store the fresh answer (5.2.1.4, 5.2.1.1);
  ``max-age=N`` and ``min-fresh=N`` refuse entries too old / not fresh enough (5.2.1.1,
  5.2.1.3); ``only-if-cached`` answers 504 on a miss (5.2.1.7).
* A request with ``Authorization`` is served from, and its response stored in, the cache
  only when the response says ``public``, ``s-maxage`` or ``must-revalidate`` (3.5).
* A response is stored only with a status listed in ``statuses`` (by default the
  heuristically cacheable ones of RFC 9110 section 15.1, less 206: ranges are not
  handled), no ``Set-Cookie``, no ``no-store``/``private``/``no-cache`` (5.2.2.5, 5.2.2.7,
  5.2.2.4; a no-cache response would need revalidation on every use, which this cache
  does not do), no ``Vary: *`` (4.1), and without trailers.
* The ttl is the route's (or the middleware's) ttl, bounded by the response's explicit
  freshness: ``s-maxage``, else ``max-age``, else ``Expires`` - ``Date`` (4.2.1). A zero
  freshness is not stored.
* A served hit carries ``Age`` (5.1). A stored response without an ``ETag`` gets a strong
  one, a hash of its body; a request whose ``If-None-Match`` matches the ETag is answered
  ``304 Not Modified`` with the fields RFC 9110 section 15.4.5 lists.
* Bodies sent in one message are held until the decision is made (so even the first answer
  gets its ETag); streamed bodies (``more_body``) pass through as they come while a copy
  is kept for storage, dropped as soon as it outgrows ``max_body_size``.
* An unsafe request (POST, PUT, DELETE, PATCH ...) answered with a 2xx or 3xx status
  invalidates the entry of its URI (4.4), before the answer is sent.
* A response is stored before its last byte is sent, so a client that asks again at once
  is served from the cache.
* Concurrent misses of one key make one call to the application: the others wait for its
  response and are served it. When it turns out not to be storable, each of them calls the
  application itself (such a response is not theirs to share); so they do when it is
  streamed, rather than wait for a stream's end.
"""

from __future__ import annotations

import asyncio
import logging
import numbers
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, overload

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chorde.clients.base import BaseCacheClient, check_capacity, check_ttl
from chorde.clients.inproc import InprocCacheClient
from chorde_starlette._http import (
    delta_seconds,
    freshness_lifetime,
    header_values,
    if_none_match_matches,
    joined,
    parse_cache_control,
    strong_etag,
    vary_names,
    vary_values,
)

__all__ = [
    "DEFAULT_STATUSES",
    "CacheMiddleware",
    "RoutePolicy",
    "cache_route",
    "no_cache_route",
]

logger = logging.getLogger("chorde.starlette")

E = TypeVar("E")

#: RFC 9110 section 15.1: statuses cacheable by default (206 left out: no range support).
DEFAULT_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}
)

_POLICY_ATTR = "__chorde_cache_policy__"
# RFC 9110 section 9.2.1: the safe methods besides GET and HEAD; the others invalidate.
_SAFE_METHODS = frozenset({"OPTIONS", "TRACE"})
_ENTRY_TAG = "chorde-http-1"
_VARY_TAG = "chorde-vary-1"
_MAX_MOUNT_DEPTH = 16
_POLICY_MEMO_SIZE = 4096

# Hop-by-hop fields (RFC 9110 section 7.6.1) and those RFC 9111 section 3.1 says not to
# store; Age is recomputed on every hit.
_UNSTORED_FIELDS = frozenset(
    {
        b"age",
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# RFC 9110 section 15.4.5: what a 304 must carry when the 200 would have.
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)
# RFC 9110 section 6.4.1: no content in these, hence no Content-Length to add.
_NO_CONTENT_STATUSES = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """Whether an endpoint's responses are cached, and for how long (None: the default)."""

    cache: bool
    ttl: float | None = None


def _positive_ttl(ttl: Any, name: str) -> float:
    value = check_ttl(ttl, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0 seconds, got {ttl!r}")
    return value


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
def cache_route(*, ttl: float | None = None) -> Callable[[E], E]: ...
def cache_route(endpoint: Any = None, /, *, ttl: float | None = None) -> Any:
    """Cache this endpoint's responses, for ``ttl`` seconds (the middleware's ttl if None).

    Use as ``@cache_route`` or ``@cache_route(ttl=30)`` on a function endpoint or an
    ``HTTPEndpoint`` class, below the ``@app.route`` decorator if any.
    """
    policy = RoutePolicy(True, None if ttl is None else _positive_ttl(ttl, "ttl"))
    if endpoint is not None:
        return _mark(endpoint, policy)
    return lambda fn: _mark(fn, policy)


def no_cache_route(endpoint: E, /) -> E:
    """Never look up or store this endpoint's responses."""
    return _mark(endpoint, RoutePolicy(False))


class _Entry(NamedTuple):
    """A stored response; kept in the client as a plain tuple tagged with ``_ENTRY_TAG``."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    stored_at: float  # wall clock (shared caches span processes), minus any initial Age
    lifetime: float
    shareable: bool  # may answer requests with Authorization (RFC 9111 section 3.5)
    vary_names: tuple[str, ...]
    vary_values: tuple[str | None, ...]
    etag: bytes | None

    def to_value(self) -> tuple[Any, ...]:
        return (_ENTRY_TAG, *self)

    @classmethod
    def from_value(cls, value: Any) -> _Entry | None:
        if type(value) is tuple and len(value) == _ENTRY_LEN and value[0] == _ENTRY_TAG:
            return cls._make(value[1:])
        return None


_ENTRY_LEN = len(_Entry._fields) + 1


class _Request:
    """What the cache needs to know about one request."""

    __slots__ = ("authorized", "cc", "head", "headers", "host", "if_none_match")

    def __init__(self, scope: Scope) -> None:
        headers = scope["headers"]
        self.headers = headers
        self.head = scope["method"] == "HEAD"
        cc_values: list[bytes] = []
        inm: list[bytes] = []
        authorized = False
        host = None
        for name, value in headers:
            name = name.lower()
            if name == b"host":
                host = value
            elif name == b"cache-control":
                cc_values.append(value)
            elif name == b"authorization":
                authorized = True
            elif name == b"if-none-match":
                inm.append(value)
        self.cc = parse_cache_control(cc_values) if cc_values else {}
        self.authorized = authorized
        self.if_none_match = b", ".join(inm) if inm else None
        if host is not None:
            self.host = host.decode("latin-1").lower()
        else:
            server = scope.get("server")
            self.host = f"{server[0]}:{server[1]}" if server else ""

    def revalidates(self) -> bool:
        """True when the request refuses any stored response (RFC 9111 5.2.1.4, 5.2.1.1)."""
        cc = self.cc
        return "no-cache" in cc or ("max-age" in cc and delta_seconds(cc["max-age"]) == 0)

    def accepts(self, entry: _Entry, now: float) -> bool:
        """True when ``entry`` may answer this request."""
        age = now - entry.stored_at
        left = entry.lifetime - age
        if left <= 0:
            return False
        if self.authorized and not entry.shareable:
            return False
        cc = self.cc
        if cc:
            max_age = delta_seconds(cc.get("max-age"))
            if max_age is not None and age > max_age:
                return False
            min_fresh = delta_seconds(cc.get("min-fresh"))
            if min_fresh is not None and left < min_fresh:
                return False
        return True

    def matches_variant(self, entry: _Entry) -> bool:
        """True when the request has the values of the fields ``entry`` varies on."""
        names = entry.vary_names
        return not names or vary_values(self.headers, names) == entry.vary_values


class CacheMiddleware:
    """A shared HTTP response cache as pure ASGI middleware; see the module docstring.

    Options (keyword-only):

    * ``client``: a chorde client (any :class:`~chorde.clients.base.BaseCacheClient`);
      the default is a private ``InprocCacheClient(inproc_size)``. Entries are plain tuples
      of ints, floats, bytes and strings, so any client, memcached included, can hold them.
    * ``ttl``: seconds a response is kept when its route gives no ttl (default 60); the
      response's own ``s-maxage``/``max-age``/``Expires`` can only shorten it.
    * ``max_body_size``: bodies above this many bytes are streamed on uncached (1 MiB).
    * ``cache_by_default``: whether endpoints not marked with :func:`cache_route` or
      :func:`no_cache_route` are cached (default True).
    * ``statuses``: the response statuses that may be stored (:data:`DEFAULT_STATUSES`).
    * ``key_prefix``: a string put in every key, to keep several caches in one client apart.
    * ``add_etag``: give stored responses without an ETag a strong one (default True).
    * ``clock``: the wall clock entries are dated by (``time.time``; tests replace it). It
      must agree across processes sharing a client, since ``Age`` is computed from it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: BaseCacheClient | None = None,
        ttl: float = 60.0,
        max_body_size: int = 1 << 20,
        cache_by_default: bool = True,
        statuses: Iterable[int] = DEFAULT_STATUSES,
        key_prefix: str = "",
        add_etag: bool = True,
        inproc_size: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if client is None:
            client = InprocCacheClient(check_capacity(inproc_size, "inproc_size"))
        elif not isinstance(client, BaseCacheClient):
            raise TypeError(f"client must be a chorde BaseCacheClient, got {client!r}")
        if isinstance(max_body_size, bool) or not isinstance(max_body_size, numbers.Integral):
            raise TypeError(f"max_body_size must be an int of bytes, got {max_body_size!r}")
        if max_body_size < 0:
            raise ValueError(f"max_body_size must be >= 0, got {max_body_size!r}")
        statuses = frozenset(statuses)
        for status in statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status < 600:
                raise ValueError(f"statuses must be final HTTP statuses, got {status!r}")
        if 304 in statuses or 206 in statuses:
            raise ValueError("statuses cannot include 206 or 304: this cache stores full responses")
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be a str, got {key_prefix!r}")
        self.app = app
        self.client = client
        self.ttl = _positive_ttl(ttl, "ttl")
        self.max_body_size = int(max_body_size)
        self.cache_by_default = bool(cache_by_default)
        self.statuses = statuses
        self.key_prefix = key_prefix
        self.add_etag = bool(add_etag)
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self._clock = clock
        self._default_policy = RoutePolicy(self.cache_by_default)
        self._policies: dict[tuple[Any, ...], RoutePolicy] = {}
        self._inflight: dict[tuple[Any, ...], asyncio.Future[_Entry | None]] = {}

    # ---- the request path ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve from the cache, or call the application and store what it may."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            if scope["method"] in _SAFE_METHODS:
                await self.app(scope, receive, send)
            else:
                await self._unsafe(scope, receive, send)
            return
        request = _Request(scope)
        policy = self._policy(scope, request.host)
        if not policy.cache:
            await self.app(scope, receive, send)
            return
        if "no-store" in request.cc:  # RFC 9111 section 5.2.1.5
            await self.app(scope, receive, send)
            return
        ttl = policy.ttl or self.ttl
        base = key = self._key(scope, request.host)

        entry: _Entry | None = None
        revalidate = request.revalidates()
        if not revalidate:
            entry, key = await self._lookup(key, request)
            if entry is None:
                entry = self._just_computed(key, request)
            if entry is not None:
                if request.accepts(entry, self._clock()):
                    await self._send_entry(send, entry, request, hit=True)
                    return
                revalidate = True
        if "only-if-cached" in request.cc:  # RFC 9111 section 5.2.1.7
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if revalidate or request.authorized:
            # Not a plain miss: the request wants its own answer, which it may then store.
            await self._forward(scope, receive, send, request, base, ttl, None)
            return

        loop = asyncio.get_running_loop()
        pending = self._inflight.get(key)
        if pending is not None and pending.get_loop() is loop:
            shared = await asyncio.shield(pending)
            if shared is not None and request.matches_variant(shared):
                await self._send_entry(send, shared, request, hit=True)
            else:
                await self._forward(scope, receive, send, request, base, ttl, None)
            return
        if request.head:
            # A HEAD miss is answered by the application as a HEAD, which has no body to
            # store; later GETs fill the cache and HEADs are then served from it.
            await self.app(scope, receive, send)
            return
        if pending is not None:  # a future of another event loop: leave it alone
            await self._forward(scope, receive, send, request, base, ttl, None)
            return
        future: asyncio.Future[_Entry | None] = loop.create_future()
        self._inflight[key] = future
        try:
            await self._forward(scope, receive, send, request, base, ttl, future)
        finally:
            if not future.done():
                future.set_result(None)
            if self._inflight.get(key) is future:
                del self._inflight[key]

    async def _unsafe(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the app; a non-error answer invalidates the target URI (RFC 9111 4.4)."""
        request = _Request(scope)
        if not self._policy(scope, request.host).cache:
            await self.app(scope, receive, send)
            return
        key = self._key(scope, request.host)

        async def invalidating_send(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
                # Before the answer leaves, so the client's next GET sees the change. A
                # varying resource loses its Vary marker, which orphans every variant.
                try:
                    await self.client.adelete(key)
                except Exception:  # a broken cache must not break the response
                    logger.warning("cache invalidation failed for %r", key, exc_info=True)
            await send(message)

        await self.app(scope, receive, invalidating_send)

    def _just_computed(self, key: tuple[Any, ...], request: _Request) -> _Entry | None:
        """An entry computed for ``key`` whose storage is still under way, if any."""
        pending = self._inflight.get(key)
        if pending is None or not pending.done() or pending.cancelled():
            return None
        entry = pending.result()
        return entry if entry is not None and request.matches_variant(entry) else None

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: _Request,
        base: tuple[Any, ...],
        ttl: float,
        future: asyncio.Future[_Entry | None] | None,
    ) -> None:
        """Call the application; store its response under ``base`` when allowed."""
        if request.head:
            await self.app(scope, receive, send)
            return
        responder = _Responder(self, send, request, base, ttl, future)
        try:
            await self.app(scope, receive, responder.send)
        finally:
            responder.abandon()
        await responder.flush()

    # ---- per-endpoint policy -------------------------------------------------------------

    def _policy(self, scope: Scope, host: str) -> RoutePolicy:
        """The policy of the endpoint Starlette's routing would pick for this request.

        The middleware runs before the router, so it matches the routes itself (the same
        ``Route.matches`` the router calls, through ``Mount`` and ``Host``), on the
        application in ``scope["app"]`` (set by Starlette) or the wrapped app. Results are
        memoised per host and path.
        """
        routes = getattr(scope.get("app"), "routes", None)
        if routes is None:
            routes = getattr(self.app, "routes", None)
            if routes is None:
                return self._default_policy
        memo_key = (id(routes), host, scope.get("root_path", ""), scope["path"])
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

    # ---- keys, lookup and storage -------------------------------------------------------

    def _key(self, scope: Scope, host: str) -> tuple[Any, ...]:
        return (
            "chorde_starlette",
            self.key_prefix,
            "GET",  # HEAD is answered from the GET entry (RFC 9110 section 9.3.2)
            scope.get("scheme", "http"),
            host,
            scope.get("root_path", ""),
            scope["path"],
            scope.get("query_string", b"").decode("latin-1"),
        )

    async def _get(self, key: tuple[Any, ...]) -> Any:
        try:
            return await self.client.aget(key, None)
        except Exception:  # a broken cache must not break the response
            logger.warning("cache lookup failed for %r", key, exc_info=True)
            return None

    async def _lookup(
        self, key: tuple[Any, ...], request: _Request
    ) -> tuple[_Entry | None, tuple[Any, ...]]:
        """The stored entry for the request and the key it lives (or would live) under."""
        value = await self._get(key)
        if value is None:
            return None, key
        if type(value) is tuple and len(value) == 2 and value[0] == _VARY_TAG:
            names = value[1]
            key = (*key, names, vary_values(request.headers, names))
            value = await self._get(key)
        entry = _Entry.from_value(value)
        if entry is not None and not request.matches_variant(entry):
            entry = None
        return entry, key

    async def _store(self, base: tuple[Any, ...], entry: _Entry, route_ttl: float) -> None:
        """Store ``entry``; one that varies goes under a variant key, named from ``base``.

        The marker naming the Vary fields lives for the route's ttl, the longest any of
        its variants can, so a short-lived variant does not orphan the longer ones.
        """
        key = base
        try:
            if entry.vary_names:
                await self.client.aput(base, (_VARY_TAG, entry.vary_names), route_ttl)
                key = (*base, entry.vary_names, entry.vary_values)
            await self.client.aput(key, entry.to_value(), entry.lifetime)
        except Exception:  # a broken cache must not break the response
            logger.warning("cache store failed for %r", key, exc_info=True)

    # ---- responses ----------------------------------------------------------------------

    def _lifetime(self, start: Message, request: _Request, ttl: float) -> float | None:
        """How long the response may be stored, or None if it may not (see module doc)."""
        if start["status"] not in self.statuses or start.get("trailers"):
            return None
        headers = start.get("headers", ())
        cc_values: list[bytes] = []
        for name, value in headers:
            name = name.lower()
            if name == b"set-cookie":
                return None
            if name == b"cache-control":
                cc_values.append(value)
        cc = parse_cache_control(cc_values) if cc_values else {}
        # RFC 9111 sections 5.2.2.5 (no-store), 5.2.2.7 (private), 5.2.2.4 (no-cache).
        if "no-store" in cc or "private" in cc or "no-cache" in cc:
            return None
        if request.authorized and not (
            "public" in cc or "s-maxage" in cc or "must-revalidate" in cc
        ):
            return None  # RFC 9111 section 3.5
        if vary_names(headers) is None:  # Vary: * (RFC 9111 section 4.1)
            return None
        explicit = freshness_lifetime(cc, headers, self._clock())
        lifetime = ttl if explicit is None else min(ttl, explicit)
        return lifetime if lifetime > 0 else None

    def _make_entry(
        self, start: Message, body: bytes, request: _Request, lifetime: float, started: float
    ) -> _Entry:
        """The entry for a complete response whose start message came at ``started``."""
        status = start["status"]
        headers: list[tuple[bytes, bytes]] = []
        initial_age = 0
        for name, value in start.get("headers", ()):
            name = name.lower()
            if name == b"age":
                initial_age = delta_seconds(value.decode("latin-1").strip()) or 0
            if name not in _UNSTORED_FIELDS:
                headers.append((name, value))
        etag = joined(headers, b"etag")
        if etag is None and self.add_etag:
            etag = strong_etag(body)
            headers.append((b"etag", etag))
        # Streamed bodies came without a length; the stored one is sent in one piece.
        if status not in _NO_CONTENT_STATUSES and joined(headers, b"content-length") is None:
            headers.append((b"content-length", str(len(body)).encode()))
        cc = parse_cache_control(header_values(headers, b"cache-control"))
        names = vary_names(headers) or ()
        return _Entry(
            status=status,
            headers=tuple(headers),
            body=body,
            stored_at=started - initial_age,
            lifetime=lifetime,
            shareable="public" in cc or "s-maxage" in cc or "must-revalidate" in cc,
            vary_names=names,
            vary_values=vary_values(request.headers, names),
            etag=etag,
        )

    async def _send_entry(self, send: Send, entry: _Entry, request: _Request, hit: bool) -> None:
        """Send a stored response: Age on hits (RFC 9111 section 5.1), 304 when it matches."""
        if hit:
            age = max(0, int(self._clock() - entry.stored_at))
            headers = [*entry.headers, (b"age", b"%d" % age)]
        else:
            headers = list(entry.headers)
        if request.if_none_match is not None and if_none_match_matches(
            request.if_none_match, entry.etag
        ):
            headers = [(k, v) for k, v in headers if k in _NOT_MODIFIED_FIELDS or k == b"age"]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if request.head else entry.body})


def _resolve_endpoint(routes: Any, scope: Scope, depth: int) -> Any:
    """The endpoint (or mounted app) a full route match leads to, None when none matches."""
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a custom route failing to match is no match
            continue
        if match is not Match.FULL:
            continue
        sub_routes = getattr(route, "routes", None)
        if sub_routes and depth < _MAX_MOUNT_DEPTH:
            found = _resolve_endpoint(sub_routes, {**scope, **child}, depth + 1)
            if found is not None:
                return found
        return child.get("endpoint", getattr(route, "endpoint", None))
    return None


class _Responder:
    """Wraps ``send`` for one forwarded request: decides, passes through, keeps a copy."""

    __slots__ = (
        "_base",
        "_buffer",
        "_future",
        "_lifetime",
        "_middleware",
        "_request",
        "_send",
        "_size",
        "_start",
        "_started",
        "_state",
        "_ttl",
        "entry",
    )

    # states: waiting for the start; holding the start; streaming with a copy; passing.
    _WAIT, _HOLD, _COPY, _PASS = range(4)

    def __init__(
        self,
        middleware: CacheMiddleware,
        send: Send,
        request: _Request,
        base: tuple[Any, ...],
        ttl: float,
        future: asyncio.Future[_Entry | None] | None,
    ) -> None:
        self._middleware = middleware
        self._send = send
        self._request = request
        self._base = base
        self._ttl = ttl
        self._future = future
        self._state = self._WAIT
        self._start: Message | None = None
        self._lifetime = 0.0
        self._started = 0.0
        self._buffer: list[bytes] = []
        self._size = 0
        self.entry: _Entry | None = None

    def _resolve(self, entry: _Entry | None) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(entry)

    def abandon(self) -> None:
        """Give up storing (the app finished or failed): waiters go to the app themselves."""
        if self.entry is None:
            self._resolve(None)

    async def flush(self) -> None:
        """Send a start still held when the app returned without a final body."""
        if self._state == self._HOLD and self._start is not None:
            self._state = self._PASS
            await self._send(self._start)

    async def _give_up(self) -> None:
        held = self._state == self._HOLD
        self._state = self._PASS
        self._buffer = []
        self._resolve(None)
        if held and self._start is not None:
            await self._send(self._start)

    async def send(self, message: Message) -> None:
        state = self._state
        if state == self._PASS:
            await self._send(message)
            return
        kind = message["type"]
        if kind == "http.response.start" and state == self._WAIT:
            lifetime = self._middleware._lifetime(message, self._request, self._ttl)
            self._start = message
            if lifetime is None:
                await self._give_up()
                await self._send(message)
                return
            self._lifetime = lifetime
            # The response's age counts from its start, not from the end of a slow stream.
            self._started = self._middleware._clock()
            self._state = self._HOLD
            return
        if kind != "http.response.body" or state == self._WAIT:
            # Anything else (pathsend, trailers, debug messages ...) is not ours to store.
            if state != self._WAIT:
                await self._give_up()
            await self._send(message)
            return

        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        mw = self._middleware
        if state == self._HOLD:
            assert self._start is not None
            if not more:
                self._state = self._PASS
                if len(body) > mw.max_body_size:
                    self._resolve(None)
                    await self._send(self._start)
                    await self._send(message)
                    return
                entry = mw._make_entry(
                    self._start, body, self._request, self._lifetime, self._started
                )
                self.entry = entry
                self._resolve(entry)
                # Stored before it is sent: a client that asks again is served from it.
                await mw._store(self._base, entry, self._ttl)
                await mw._send_entry(self._send, entry, self._request, hit=False)
                return
            # A streamed body: pass it through as it comes, keeping a copy while it fits.
            # Waiters are released now: a stream may last (server-sent events ...), and
            # they must not wait for its end to get a single byte.
            self._state = self._COPY
            self._resolve(None)
            await self._send(self._start)
        self._size += len(body)
        if self._size > mw.max_body_size:
            await self._give_up()
            await self._send(message)
            return
        self._buffer.append(body)
        if not more:
            self._state = self._PASS
            assert self._start is not None
            entry = mw._make_entry(
                self._start, b"".join(self._buffer), self._request, self._lifetime, self._started
            )
            self._buffer = []
            self.entry = entry
            await mw._store(self._base, entry, self._ttl)
        await self._send(message)
