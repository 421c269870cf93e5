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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chorde.clients.base import BaseCacheClient, check_capacity
from chorde.clients.urls import from_url, is_url
from chorde.http import (
    DEFAULT_MAX_VARY_BYTES,
    DEFAULT_MAX_VARY_FIELDS,
    DEFAULT_STATUSES,
    CacheRequest,
    Decision,
    ResponseCache,
    Route,
    Rules,
    StoredResponse,
)
from chorde.http.route import DEFAULT_ROUTE

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
    policy = RoutePolicy(True, route)
    if endpoint is not None:
        return _mark(endpoint, policy)
    return lambda fn: _mark(fn, policy)


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
    * ``clock``: the wall clock entries are dated by (``time.time``; tests replace it). It
      must agree across processes sharing a client, since ``Age`` is computed from it.
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
        inproc_size: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if client is None:
            client = from_url(f"inproc://?size={check_capacity(inproc_size, 'inproc_size')}")
        elif is_url(client):
            client = from_url(client)  # type: ignore[arg-type]
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
        )
        self.app = app
        self.cache = ResponseCache(client, rules=rules, ttl=ttl, clock=clock)
        self.max_body_size = int(max_body_size)
        self.cache_by_default = bool(cache_by_default)
        self.key_prefix = key_prefix
        self._namespace = (_NAMESPACE, key_prefix)
        self._default_policy = RoutePolicy(self.cache_by_default)
        self._policies: dict[tuple[Any, ...], RoutePolicy] = {}
        self._inflight: dict[tuple[Any, ...], asyncio.Future[StoredResponse | None]] = {}

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

        revalidate = request.revalidates
        if not revalidate:
            entry = await cache.alookup(request)
            if entry is None:
                entry = self._just_computed(request)
            if entry is not None:
                await self._send_reply(send, request, entry, hit=True)
                return
        if request.only_if_cached:  # RFC 9111 section 5.2.1.7
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if request.head:
            # A HEAD miss is answered by the application as a HEAD, which has no body to
            # store; later GETs fill the cache and HEADs are then served from it.
            await self.app(scope, receive, send)
            return
        if not cache.coalesces(request):
            await self._forward(scope, receive, send, request, None)
            return

        flight_key = self._flight_key(request)
        loop = asyncio.get_running_loop()
        pending = self._inflight.get(flight_key)
        if pending is not None and pending.get_loop() is loop:
            shared = await asyncio.shield(pending)
            if shared is not None and request.accepts(shared, cache.clock()):
                await self._send_reply(send, request, shared, hit=True)
            else:
                await self._forward(scope, receive, send, request, None)
            return
        if pending is not None:  # a future of another event loop: leave it alone
            await self._forward(scope, receive, send, request, None)
            return
        future: asyncio.Future[StoredResponse | None] = loop.create_future()
        self._inflight[flight_key] = future
        try:
            await self._forward(scope, receive, send, request, future)
        finally:
            if not future.done():
                future.set_result(None)
            if self._inflight.get(flight_key) is future:
                del self._inflight[flight_key]

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
    ) -> None:
        """Call the application; store its response when the policy allows."""
        responder = _Responder(self, send, request, future)
        try:
            await self.app(scope, receive, responder.send)
        finally:
            responder.abandon()
        await responder.flush()

    async def _send_reply(
        self, send: Send, request: CacheRequest, entry: StoredResponse, *, hit: bool
    ) -> None:
        status, headers, body = self.cache.reply(request, entry, hit=hit)
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
        "_buffer",
        "_decision",
        "_future",
        "_middleware",
        "_request",
        "_requested_at",
        "_send",
        "_size",
        "_start",
        "_state",
        "entry",
    )

    # states: waiting for the start; holding the start; streaming with a copy; passing.
    _WAIT, _HOLD, _COPY, _PASS = range(4)

    def __init__(
        self,
        middleware: CacheMiddleware,
        send: Send,
        request: CacheRequest,
        future: asyncio.Future[StoredResponse | None] | None,
    ) -> None:
        self._middleware = middleware
        self._send = send
        self._request = request
        self._future = future
        self._requested_at = middleware.cache.clock()
        self._state = self._WAIT
        self._start: Message | None = None
        self._decision: Decision | None = None
        self._buffer: list[bytes] = []
        self._size = 0
        self.entry: StoredResponse | None = None

    def _resolve(self, entry: StoredResponse | None) -> None:
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

    def _store_entry(self, body: bytes) -> StoredResponse:
        start, decision = self._start, self._decision
        assert start is not None and decision is not None
        rules = self._middleware.cache.rules
        entry = rules.entry(self._request, decision, start["status"], start["headers"], body)
        self.entry = entry
        return entry

    async def send(self, message: Message) -> None:
        state = self._state
        if state == self._PASS:
            await self._send(message)
            return
        kind = message["type"]
        cache = self._middleware.cache
        if kind == "http.response.start" and state == self._WAIT:
            # The response's age counts from its start, not from the end of a slow stream.
            decision = cache.rules.decide(
                self._request,
                message["status"],
                message.get("headers", ()),
                now=cache.clock(),
                ttl=self._request.route.ttl or cache.ttl,
                veto="the response has trailers" if message.get("trailers") else None,
                requested_at=self._requested_at,
            )
            message.setdefault("headers", [])
            self._start = message
            if decision.reason is not None:
                logger.debug("not stored %r: %s", self._request.key, decision.reason)
                await self._give_up()
                await self._send(message)
                return
            self._decision = decision
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
        max_body_size = self._middleware.max_body_size
        if state == self._HOLD:
            assert self._start is not None
            if not more:
                self._state = self._PASS
                if len(body) > max_body_size:
                    self._resolve(None)
                    await self._send(self._start)
                    await self._send(message)
                    return
                entry = self._store_entry(body)
                self._resolve(entry)
                # Stored before it is sent: a client that asks again is served from it.
                await cache.astore(self._request, entry)
                await self._middleware._send_reply(self._send, self._request, entry, hit=False)
                return
            # A streamed body: pass it through as it comes, keeping a copy while it fits.
            # Waiters are released now: a stream may last (server-sent events ...), and
            # they must not wait for its end to get a single byte.
            self._state = self._COPY
            self._resolve(None)
            await self._send(self._start)
        self._size += len(body)
        if self._size > max_body_size:
            await self._give_up()
            await self._send(message)
            return
        self._buffer.append(body)
        if not more:
            self._state = self._PASS
            entry = self._store_entry(b"".join(self._buffer))
            self._buffer = []
            await cache.astore(self._request, entry)
        await self._send(message)
