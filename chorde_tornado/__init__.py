"""chorde for tornado: ``yield`` chorde futures in coroutines, cache ``RequestHandler.get``.

``import chorde_tornado`` registers chorde's :class:`~chorde.futures.Future` with
``tornado.gen.convert_yielded`` (tornado's documented extension point, a
``functools.singledispatch``), so a ``@tornado.gen.coroutine`` can ``yield`` what
``fn.future()(...)`` returns, in lists and dicts too (``gen.multi``). Native coroutines
``await`` chorde futures without any registration. Nothing in tornado or asyncio is
replaced::

    import chorde_tornado  # noqa: F401

    class Handler(tornado.web.RequestHandler):
        @tornado.gen.coroutine
        def get(self):
            value = yield expensive.future()(3)   # computed on chorde's pool
            self.write({"value": value})

:func:`cache_response` caches what a ``get`` writes, keyed on the request URI.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Hashable
from typing import Any

import tornado.gen
import tornado.web

from chorde.clients.asyncache import makeFutureWrapper
from chorde.clients.base import BaseCacheClient
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.futures import Future

__all__ = ["cache_response", "to_tornado_future"]

#: ``to_tornado_future(chorde_future)``: the same outcome as a tornado (asyncio) Future on the
#: running loop, completed thread-safely; cancelling it leaves the chorde future alone.
to_tornado_future: Callable[[Future], asyncio.Future] = makeFutureWrapper(asyncio.Future)


@tornado.gen.convert_yielded.register(Future)
def _convert_chorde_future(future: Future) -> asyncio.Future:
    return to_tornado_future(future)


# ---- response caching ----------------------------------------------------------------

_CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
_default_client: BaseCacheClient | None = None
_default_lock = threading.Lock()


def _default() -> BaseCacheClient:
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = InprocCacheClient(1024)
        return _default_client


class _Uncacheable(Exception):
    """The computed response must not be stored (nor shared with concurrent requests)."""


class _Capture:
    """Records what a handler does to its response, to replay it on other handlers.

    Installed as instance attributes shadowing the handler's own methods (this handler
    only; the class and tornado are untouched).
    """

    _RECORDED = ("set_status", "set_header", "add_header", "clear_header", "write")

    def __init__(self, handler: tornado.web.RequestHandler) -> None:
        self.handler = handler
        self.ops: list[tuple[str, tuple, dict]] = []
        self.cacheable = True
        self.frozen = False
        self.status = 200
        cls = type(handler)
        for name in self._RECORDED:
            setattr(handler, name, self._recorder(name, getattr(cls, name).__get__(handler)))
        handler.set_cookie = self._spoiler(cls.set_cookie.__get__(handler))  # type: ignore[method-assign]
        handler.flush = self._spoiler(cls.flush.__get__(handler))  # type: ignore[method-assign]
        handler.finish = self._finisher(cls.finish.__get__(handler))  # type: ignore[method-assign]

    def _recorder(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if not self.frozen:
                self.ops.append((name, args, kwargs))
            return result

        return record

    def _spoiler(self, method: Callable[..., Any]) -> Callable[..., Any]:
        # A cookie is for one client; an early flush means a streamed response.
        def spoil(*args: Any, **kwargs: Any) -> Any:
            if not self.frozen:
                self.cacheable = False
            return method(*args, **kwargs)

        return spoil

    def _finisher(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def finish(chunk: Any = None) -> Any:
            if chunk is not None and not self.frozen:
                self.ops.append(("write", (chunk,), {}))
            # What finish() adds itself (ETag, Content-Length, 304) is redone on replay.
            self.frozen = True
            self.status = self.handler.get_status()
            return method(chunk)

        return finish

    def snapshot(self) -> list[tuple[str, tuple, dict]]:
        """The recorded operations, or raise :class:`_Uncacheable`."""
        status = self.status if self.frozen else self.handler.get_status()
        self.frozen = True
        if not self.cacheable or status != 200:
            raise _Uncacheable
        return self.ops


def _replay(handler: tornado.web.RequestHandler, ops: list[tuple[str, tuple, dict]]) -> None:
    for name, args, kwargs in ops:
        getattr(handler, name)(*args, **kwargs)


async def _run(get: Callable[..., Any], handler: Any, args: tuple, kwargs: dict) -> None:
    result = get(handler, *args, **kwargs)
    if inspect.isawaitable(result):
        await result


def _uri_key(handler: tornado.web.RequestHandler) -> Hashable:
    return handler.request.uri


def cache_response(
    ttl: float,
    *,
    client: BaseCacheClient | None = None,
    key: Callable[[tornado.web.RequestHandler], Hashable] | None = None,
    namespace: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache what a ``RequestHandler.get`` writes for ``ttl`` seconds, keyed on the URI.

    ``get`` may be a plain method, a ``@gen.coroutine`` or ``async def``. Cached: responses
    with status 200 that set no cookie and were not flushed early (streamed); others are
    served as computed and not stored. Concurrent requests for one key run ``get`` once
    (through :func:`chorde.decorators.cached`) and the others replay its response.

    :param client: where responses live; default ``application.settings["chorde_client"]``,
        else a process-wide in-process cache of 1024 entries.
    :param key: ``key(handler)`` returning the cache key; default ``request.uri`` (path and
        query). Pages that depend on the user, a cookie or a header need one that says so.
    :param namespace: the first part of the key; default the method's ``module.qualname``.

    Cache access goes through the client's awaitable methods, so a network client never
    blocks the IOLoop; slow work inside ``get`` belongs on an executor (``fn.future()``).
    """
    keyfn = key or _uri_key
    if not callable(keyfn):
        raise TypeError(f"key must be a callable key(handler), got {key!r}")
    cached(InprocCacheClient(1), ttl, namespace=namespace)  # bad ttl/namespace fail here

    def decorate(get: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(get):
            raise TypeError(f"@cache_response decorates RequestHandler.get, got {get!r}")
        ns = namespace or f"{get.__module__}.{get.__qualname__}"
        wrappers: dict[BaseCacheClient, Any] = {}
        lock = threading.Lock()

        async def render(handler: tornado.web.RequestHandler, args: tuple, kwargs: dict) -> Any:
            capture = _Capture(handler)
            handler._chorde_rendered = True  # type: ignore[attr-defined]
            await _run(get, handler, args, kwargs)
            return capture.snapshot()

        def shared(client: BaseCacheClient) -> Any:
            wrapper = wrappers.get(client)
            if wrapper is None:
                with lock:
                    wrapper = wrappers.get(client)
                    if wrapper is None:
                        wrapper = cached(
                            client,
                            ttl,
                            key=lambda handler, args, kwargs: keyfn(handler),
                            namespace=ns,
                        )(render)
                        wrappers[client] = wrapper
            return wrapper

        @functools.wraps(get)
        async def wrapped(self: tornado.web.RequestHandler, *args: Any, **kwargs: Any) -> None:
            if self.request.method not in _CACHEABLE_METHODS:
                await _run(get, self, args, kwargs)
                return
            the_client = client
            if the_client is None:
                the_client = self.settings.get("chorde_client")
                if the_client is None:
                    the_client = _default()
            try:
                entry = await shared(the_client)(self, args, kwargs)
            except _Uncacheable:
                entry = None
            except Exception:
                if getattr(self, "_chorde_rendered", False):
                    raise
                entry = None  # another request's failure: try ourselves
            if getattr(self, "_chorde_rendered", False):
                return
            if entry is None:
                await _run(get, self, args, kwargs)
                return
            _replay(self, entry)

        return wrapped

    return decorate
