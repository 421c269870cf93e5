"""``cache_response``: tornado's requests and responses translated for :mod:`chorde.http`.

The policy (what is stored and served, the key, concurrent misses) is
:class:`chorde.http.ResponseCache`'s, the same as every chorde adapter's. What is tornado's
own is here: reading ``handler.request``, seeing what a ``get`` wrote (status, headers, body,
cookies, an early flush), and replaying a stored response on another handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import threading
import weakref
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

import tornado.httputil
import tornado.web

from chorde.clients.base import BaseCacheClient
from chorde.clients.urls import check_url, from_url, is_url
from chorde.errors import ConfigurationError
from chorde.http import (
    CacheRequest,
    Conditions,
    Rendered,
    Reply,
    ResponseCache,
    Route,
    Rules,
    StoredResponse,
)
from chorde.http.status import FIELD
from chorde.signing import derive_checksum_keys

__all__ = ["cache_response", "purge_tags"]

logger = logging.getLogger("chorde.tornado")

H = TypeVar("H", bound=tornado.web.RequestHandler)
P = ParamSpec("P")


class _HandlerDecorator(Protocol):
    """What :func:`cache_response` returns: the method keeps its parameters and becomes a
    coroutine function."""

    def __call__(
        self, get: Callable[Concatenate[H, P], object], /
    ) -> Callable[Concatenate[H, P], Coroutine[Any, Any, None]]: ...


_lock = threading.Lock()
_default_client: BaseCacheClient | None = None
# One ResponseCache (policy, flights) per client and allowed-hosts setting, kept while the
# client lives.
_caches: weakref.WeakKeyDictionary[BaseCacheClient, dict[Any, ResponseCache]] = (
    weakref.WeakKeyDictionary()
)
_SETTING_CLIENT = "chorde_client"
_SETTING_HOSTS = "chorde_allowed_hosts"
_SETTING_STATUS = "chorde_cache_status"


def _default() -> BaseCacheClient:
    global _default_client
    with _lock:
        if _default_client is None:
            _default_client = from_url("inproc://?size=1024")
        return _default_client


# Clients built from URLs (the decorator's client= or the chorde_client setting), per URL
# and signing secret, so every handler naming one URL shares one client.
_url_clients: dict[tuple[Any, ...], BaseCacheClient] = {}


def _client_from_url(url: str | Sequence[str], settings: dict[str, Any]) -> BaseCacheClient:
    secret = settings.get("cookie_secret")
    if isinstance(secret, dict):  # versioned secrets: the signing version first
        current = secret.get(settings.get("key_version"))
        secret = [current, *(v for v in secret.values() if v != current)]
    secrets = [s for s in (secret if isinstance(secret, list) else [secret]) if s]
    memo_key = (tuple([url] if isinstance(url, str) else url), tuple(secrets))
    with _lock:
        client = _url_clients.get(memo_key)
        if client is None:
            defaults = (
                {"checksum_key": derive_checksum_keys(secrets[0], secrets[1:])} if secrets else {}
            )
            client = _url_clients[memo_key] = from_url(url, defaults=defaults)
    return client


def _client_for(given: Any, settings: dict[str, Any]) -> BaseCacheClient:
    client = given if given is not None else settings.get(_SETTING_CLIENT)
    if client is None:
        return _default()
    if is_url(client):
        return _client_from_url(client, settings)
    if not isinstance(client, BaseCacheClient):
        raise ConfigurationError(
            f"{_SETTING_CLIENT} must be a chorde client or a client URL, got {client!r}"
        )
    return client


def _cache(client: BaseCacheClient, hosts: Any, status: Any) -> ResponseCache:
    hosts_key = hosts if hosts is None or isinstance(hosts, str) else tuple(hosts)
    with _lock:
        per_settings = _caches.setdefault(client, {})
        cache = per_settings.get((hosts_key, status))
        if cache is None:
            try:
                rules = Rules(allowed_hosts=hosts, add_etag=False)  # tornado makes ETags
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{_SETTING_HOSTS}: {exc}") from None
            try:
                cache = ResponseCache(client, rules=rules, cache_status=status)
            except ValueError as exc:
                raise ConfigurationError(f"{_SETTING_STATUS}: {exc}") from None
            per_settings[(hosts_key, status)] = cache
    return cache


class _Capture:
    """Sees what a handler writes, to judge and store it before it is sent.

    Installed as instance attributes wrapping this handler's own ``set_cookie``, ``flush``
    and ``finish`` (the class and tornado are not changed) until :meth:`release`. A
    ``finish()`` inside ``get`` ends the render there: the response is judged and stored,
    then really finished (sent), so a client asking again at once is served from the cache.
    """

    def __init__(self, handler: tornado.web.RequestHandler) -> None:
        self.handler = handler
        self.cookies: list[str] = []
        self.flushed = False
        self.seen: Rendered | None = None
        self.running: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self.finish_requested: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        cls = type(handler)
        set_cookie = cls.set_cookie.__get__(handler)
        flush = cls.flush.__get__(handler)
        self._finish = cls.finish.__get__(handler)

        def capture_set_cookie(name: str, *args: Any, **kwargs: Any) -> Any:
            self.cookies.append(name)
            return set_cookie(name, *args, **kwargs)

        def capture_flush(*args: Any, **kwargs: Any) -> Any:
            self.flushed = True  # an early flush: the body is streamed
            return flush(*args, **kwargs)

        def capture_finish(chunk: Any = None) -> asyncio.Future[None]:
            if chunk is not None:
                handler.write(chunk)
            self.snapshot()
            if not self.finish_requested.done():
                self.finish_requested.set_result(None)
            return self.finished

        # On this instance only, until release() gives the handler its own methods back.
        handler.set_cookie = capture_set_cookie  # type: ignore[method-assign]  # see above
        handler.flush = capture_flush  # type: ignore[method-assign]  # see above
        handler.finish = capture_finish  # type: ignore[method-assign]  # see above

    def snapshot(self) -> Rendered:
        """The response as the handler has written it so far (the first call's, once)."""
        if self.seen is None:
            handler = self.handler
            # tornado offers no getter for the outgoing fields and body; these attributes
            # have held them since tornado 1.0.
            headers = [(k, v) for k, v in handler._headers.get_all()]
            headers += [("Set-Cookie", name) for name in self.cookies]
            body = b"".join(handler._write_buffer)
            veto = "the response was flushed early (streamed)" if self.flushed else None
            self.seen = Rendered(handler.get_status(), headers, body, veto)
        return self.seen

    async def render(
        self,
        get: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        conditions: Conditions,
    ) -> Rendered:
        """Run ``get`` (with the cache's validators in place of the request's own conditional
        fields) until it returns or finishes its response; see the response then."""
        if conditions:
            headers = self.handler.request.headers
            for name in _OWN_CONDITIONS:
                headers.pop(name, None)
            for field, value in conditions:
                headers[field.decode("latin-1")] = value.decode("latin-1")
        self.running = running = asyncio.ensure_future(_run(get, self.handler, args, kwargs))
        await asyncio.wait({running, self.finish_requested}, return_when=FIRST_COMPLETED)
        if not self.finish_requested.done():
            running.result()  # the handler's own error, if it failed before finishing
        return self.snapshot()

    def release(self) -> None:
        """Give the handler its own methods back; send a response it finished meanwhile."""
        handler = self.handler
        for name in ("set_cookie", "flush", "finish"):
            handler.__dict__.pop(name, None)
        if self.finish_requested.done() and not self.finished.done():
            sent = self._finish()
            sent.add_done_callback(lambda f: _copy_outcome(f, self.finished))


def _copy_outcome(source: asyncio.Future[None], dest: asyncio.Future[None]) -> None:
    if dest.done():
        return
    if source.cancelled():
        dest.cancel()
    elif (exc := source.exception()) is not None:
        dest.set_exception(exc)
    else:
        dest.set_result(None)


_OWN_CONDITIONS: tuple[str, ...] = (
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
)
_OWN_CONDITIONS += ("If-Range",)
# The attribute of a replayed request that carries the stale entry it refreshes.
_REFRESH = "_chorde_refresh"
_refreshes: set[asyncio.Future[Any]] = set()


class _Sink(tornado.httputil.HTTPConnection):
    """The connection of a replayed request: what the handler writes goes nowhere."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def set_close_callback(self, callback: Any) -> None:
        pass

    def write_headers(self, start_line: Any, headers: Any, chunk: bytes | None = None) -> Any:
        return _done()

    def write(self, chunk: bytes) -> Any:
        return _done()

    def finish(self) -> None:
        pass


def _done() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _refresh_later(handler: tornado.web.RequestHandler, stale: StoredResponse) -> None:
    """Refresh ``stale`` in the background (RFC 5861): replay the request through the
    application, its answer written nowhere, the stored response updated."""
    original = handler.request
    headers = tornado.httputil.HTTPHeaders()
    for name, value in original.headers.get_all():
        headers.add(name, value)
    request = tornado.httputil.HTTPServerRequest(
        headers=headers,
        body=b"",
        connection=_Sink(getattr(original.connection, "context", None)),
        start_line=tornado.httputil.RequestStartLine("GET", original.uri or "/", original.version),
    )
    setattr(request, _REFRESH, stale)

    async def replay() -> None:
        try:
            done = handler.application.find_handler(request).execute()
            if done is not None:
                await done
        except Exception:
            logger.warning("background refresh of %s failed", original.uri, exc_info=True)

    task = asyncio.ensure_future(replay())
    _refreshes.add(task)
    task.add_done_callback(_refreshes.discard)


def _status_of(reply: Reply | None) -> tuple[bytes, bytes] | None:
    if reply is None:
        return None
    for name, value in reply.headers:
        if name == FIELD:
            return name, value
    return None


def _replay(handler: tornado.web.RequestHandler, reply: Reply) -> None:
    handler.clear()
    status, headers, body = reply
    for name in {k for k, _ in headers}:
        handler.clear_header(name.decode("latin-1"))
    handler.set_status(status)
    for name, value in headers:
        handler.add_header(name.decode("latin-1"), value.decode("latin-1"))
    if body:
        handler.write(body)


async def _run(get: Callable[..., Any], handler: Any, args: tuple[Any, ...], kwargs: Any) -> None:
    result = get(handler, *args, **kwargs)
    if inspect.isawaitable(result):
        await result


async def purge_tags(*tags: str, client: BaseCacheClient | None = None) -> None:
    """Drop every response ``cache_response`` stored that named one of ``tags`` in its
    ``Surrogate-Key`` field (``client``: where they live, default the process-wide one),
    in every process sharing that client."""
    await _cache(client or _default(), None, None).apurge_tags(*tags)


def cache_response(
    ttl: float,
    *,
    client: BaseCacheClient | str | Sequence[str] | None = None,
    key: Callable[[tornado.web.RequestHandler], Hashable] | None = None,
    namespace: str | None = None,
    public: bool = False,
    per_user: bool = False,
    vary: Sequence[str] = (),
    cookies: Sequence[str] = (),
    query: bool = True,
    wait_timeout: float = 30.0,
) -> _HandlerDecorator:
    """Cache what a ``RequestHandler.get`` writes, for ``ttl`` seconds.

    What is stored and served follows :mod:`chorde.http`'s policy, the same in every
    chorde adapter: the key is the scheme, Host, path and query (parameters sorted by name)
    plus the request's values of every field the response lists in ``Vary``; responses
    that are ``private``/``no-store``/``no-cache`` or whose ``Cache-Control`` cannot be
    parsed, that set a cookie, were flushed early or have an uncacheable status are not
    stored, nor are responses to requests carrying ``Authorization`` or cookies unless the
    response (or the route) says they are the same for everyone. Requests whose Host is
    repeated, malformed or not in the application setting ``chorde_allowed_hosts`` (if
    set) are served uncached. The setting ``chorde_cache_status`` (a name) adds an RFC
    9211 ``Cache-Status`` field to the answers. ``public``, ``per_user``, ``vary``,
    ``cookies`` and ``query`` are what the route declares about its responses (see
    :class:`chorde.http.Route`).

    ``get`` may be a plain method, a ``@gen.coroutine`` or ``async def``. Concurrent
    requests for one page run ``get`` once and the others (waiting up to ``wait_timeout``
    seconds) are answered from it when the policy lets it answer them.

    :param client: where responses live, a client or a URL (:func:`chorde.clients.from_url`;
        its signing key defaults to one derived from the ``cookie_secret`` setting); default
        ``application.settings["chorde_client"]`` (the same), else a process-wide in-process
        cache of 1024 entries.
    :param key: ``key(handler)`` returning what identifies the page in place of path and
        query (Host and the varying fields are still in the key).
    :param namespace: keeps handlers apart; default the method's ``module.qualname``.

    Cache access goes through the client's awaitable methods, so a network client never
    blocks the IOLoop; slow work inside ``get`` belongs on an executor (``fn.future()``).
    """
    route = Route(
        ttl=ttl,
        public=public,
        per_user=per_user,
        vary=vary,
        cookies=cookies,
        query=query,
        wait_timeout=wait_timeout,
    )
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable key(handler), got {key!r}")
    if client is not None and not is_url(client) and not isinstance(client, BaseCacheClient):
        raise TypeError(f"client must be a chorde client or a client URL, got {client!r}")
    if isinstance(client, str) or is_url(client):
        check_url(client)
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {namespace!r}")

    def decorate(get: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(get):
            raise TypeError(f"@cache_response decorates RequestHandler.get, got {get!r}")
        ns = namespace or f"{get.__module__}.{get.__qualname__}"
        named = dataclasses.replace(route, name=ns)  # its counters' name (chorde.observe)

        def cache_request(
            handler: tornado.web.RequestHandler,
        ) -> tuple[ResponseCache, CacheRequest]:
            settings = handler.settings
            cache = _cache(
                _client_for(client, settings),
                settings.get(_SETTING_HOSTS),
                settings.get(_SETTING_STATUS),
            )
            request = handler.request
            req = cache.request(
                method=request.method or "GET",
                scheme=request.protocol,
                hosts=request.headers.get_list("Host"),
                path=request.path,
                query=request.query,
                headers=request.headers.get_list,  # indexed: other fields are not read
                route=named,
                namespace=ns,
                target=None if key is None else ("key", key(handler)),
            )
            return cache, req

        @functools.wraps(get)
        async def wrapped(self: tornado.web.RequestHandler, *args: Any, **kwargs: Any) -> None:
            cache, req = cache_request(self)
            if req.bypass is not None:
                await _run(get, self, args, kwargs)
                return
            capture = _Capture(self)

            def render(conditions: Conditions) -> Awaitable[Rendered]:
                return capture.render(get, args, kwargs, conditions)

            stale = getattr(self.request, _REFRESH, None)
            try:
                if stale is not None:  # a background refresh (see _refresh_later)
                    await cache.arefresh(req, stale, render)
                    return
                outcome = await cache.aserve(req, render)
                if outcome.own:  # the handler's own answer: say how it was handled
                    if cache.rules.tag_field is not None:
                        self.clear_header(cache.rules.tag_field)  # the cache's own field
                    field = outcome.status or _status_of(outcome.reply)
                    if field is not None:
                        self.set_header(field[0].decode("latin-1"), field[1].decode("latin-1"))
                else:  # from the cache, another render, or a stale or freshened entry
                    assert outcome.reply is not None
                    _replay(self, outcome.reply)
                if outcome.refresh is not None:
                    _refresh_later(self, outcome.refresh)
            except BaseException:
                if capture.running is not None:
                    capture.running.cancel()
                raise
            finally:
                capture.release()
            if capture.running is not None:
                await capture.running  # the rest of get, after a finish() it made

        return wrapped

    # The handler method keeps its parameters; it becomes a coroutine function.
    return cast(_HandlerDecorator, decorate)
