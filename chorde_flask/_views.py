"""Flask view caching: Flask's request and response translated for :mod:`chorde.http`.

The policy (what is stored and served, the key, concurrent misses) is
:class:`chorde.http.ResponseCache`'s, the same as every chorde adapter's; what is Flask's
own is here: reading ``flask.request``, turning a view's return value into the response the
policy judges, noticing a view that read the session, and building the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import io
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Response, current_app, has_request_context, request
from flask.globals import request_ctx

from chorde.http import (
    ARender,
    CacheRequest,
    Conditions,
    Outcome,
    Render,
    Rendered,
    Reply,
    ResponseCache,
    Route,
    StoredResponse,
)
from chorde_flask._options import holds

if TYPE_CHECKING:
    from flask import Flask

    from chorde_flask import Chorde

__all__: list[str] = []  # internal module

NAMESPACE = "chorde_flask.view"


def _app() -> Flask:
    """The app behind ``current_app`` (one context lookup)."""
    return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]  # a LocalProxy


def _session_state() -> tuple[bool, bool]:
    """Whether the view read, and whether it changed, the session."""
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
    # Flask >= 3.1 marks the session accessed whenever ctx.session is read (so asking would
    # answer yes); the opened session is held in _session there, in session before.
    current = getattr(ctx, "_session", None)
    if current is None:
        current = getattr(ctx, "session", None)
    return bool(getattr(current, "accessed", False)), bool(getattr(current, "modified", False))


@functools.lru_cache(maxsize=256)
def _environ_key(name: str) -> str:
    """The WSGI environ key of request field ``name`` (PEP 3333)."""
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def _environ_fields(environ: dict[str, Any]) -> Callable[[str], list[str]]:
    """Look request fields up in the WSGI environ, one key each.

    The server has joined repeated lines with commas; a request's other fields (a hostile
    client may send thousands) are never read.
    """

    def values(name: str) -> list[str]:
        value = environ.get(_environ_key(name))
        return [value] if value is not None else []

    return values


def cache_request(
    cache: ResponseCache, route: Route, target: Hashable = None, namespace: Hashable = NAMESPACE
) -> CacheRequest:
    """The current Flask request as the cache sees it."""
    # One context lookup instead of one per attribute: half this function's cost on a hit.
    req = request._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
    return cache.request(
        method=req.method,
        scheme=req.scheme,
        # Werkzeug and gunicorn join repeated Host lines with a comma: the policy refuses it.
        hosts=[req.host],
        path=req.root_path + req.path,
        query=req.query_string.decode("latin-1"),
        headers=_environ_fields(req.environ),
        route=route,
        namespace=namespace,
        target=target,
    )


def url_request(cache: ResponseCache, url: str) -> CacheRequest:
    """A GET of ``url`` as the cache would see it (for keys and invalidation).

    A relative URL takes its scheme and host from the current request, else from the
    ``SERVER_NAME`` and ``PREFERRED_URL_SCHEME`` settings.
    """
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.netloc
    if not host:
        if has_request_context():
            scheme, host = request.scheme, request.host
        else:
            host = current_app.config.get("SERVER_NAME") or ""
            scheme = current_app.config.get("PREFERRED_URL_SCHEME") or "http"
        if not host:
            raise ValueError(
                f"no host for {url!r}: give an absolute URL (http://host/path), call this "
                "during a request, or set SERVER_NAME (the host is part of every view key)"
            )
    req = cache.request(
        method="GET",
        scheme=scheme or "http",
        hosts=[host],
        path=parts.path or "/",
        query=parts.query,
        headers=[],
        namespace=NAMESPACE,
    )
    if req.bypass is not None:
        raise ValueError(f"{url!r} is not cached: {req.bypass}")
    return req


def _response(reply: Reply, response_class: type[Response]) -> Response:
    """The answer to send from what the cache replied (a hit, or a render stored and
    answered like one)."""
    headers = []
    length = None
    for name, value in reply.headers:
        if name == b"content-length":
            length = value
        else:
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
    body = reply.body
    # The body sets Content-Length; a HEAD's (empty body) is the stored GET's length.
    response = response_class(body, status=reply.status, headers=headers)
    if length is not None and length != b"%d" % len(body):
        response.headers["Content-Length"] = length.decode("latin-1")
    return response


class ViewCache:
    """The cache of one decorated view.

    ``unless`` and ``forced_update`` are Flask-Caching's per-request predicates (see
    :func:`chorde_flask._options.holds`): the view runs uncached, or its response is
    rendered and stored whatever is cached. ``condition(response)`` false: not stored.
    ``namespace`` keeps the view's keys apart (``source_check``).
    """

    __slots__ = ("condition", "ext", "forced_update", "key", "namespace", "route", "unless", "view")

    def __init__(
        self,
        ext: Chorde,
        view: Callable[..., Any],
        route: Route,
        key: Callable[[], Hashable] | None,
        *,
        unless: Callable[..., Any] | None = None,
        forced_update: Callable[..., Any] | None = None,
        condition: Callable[[Response], Any] | None = None,
        namespace: Hashable = NAMESPACE,
    ) -> None:
        self.ext = ext
        self.view = view
        self.route = route
        self.key = key
        self.unless = unless
        self.forced_update = forced_update
        self.condition = condition
        self.namespace = namespace

    def _request(self, cache: ResponseCache) -> CacheRequest:
        target = None if self.key is None else ("key", self.key())
        return cache_request(cache, self.route, target, self.namespace)

    def _rendered(self, result: Any) -> Rendered:
        response = current_app.make_response(result)
        body = None if response.is_streamed else response.get_data()
        veto = None
        read, changed = _session_state()
        if self.condition is not None and not self.condition(response):
            veto = "condition(response) is false"
        elif changed:
            veto = "the view changed the session"
        elif read and not self.route.per_user:
            veto = "the view read the session (declare the route per_user)"
        headers = list(response.headers.items())
        return Rendered(response.status_code, headers, body, veto, response)

    def _answer(
        self,
        app: Flask,
        cache: ResponseCache,
        outcome: Outcome,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if outcome.refresh is not None:
            self._refresh_later(cache, outcome.refresh, args, kwargs)
        if outcome.reply is not None:  # a hit, or a stored render answered like one
            return _response(outcome.reply, app.response_class)
        assert outcome.rendered is not None
        response = outcome.rendered.native
        if cache.rules.tag_field is not None:
            response.headers.pop(cache.rules.tag_field, None)  # the cache's, not the client's
        if outcome.status is not None:
            name, value = outcome.status
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return response

    def _render(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Render:
        def render(conditions: Conditions) -> Rendered:
            with _conditions(request.environ, conditions):
                return self._rendered(self.view(*args, **kwargs))

        return render

    def _arender(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ARender:
        async def render(conditions: Conditions) -> Rendered:
            with _conditions(request.environ, conditions):
                return self._rendered(await self.view(*args, **kwargs))

        return render

    def _refresh_later(
        self,
        cache: ResponseCache,
        stale: StoredResponse,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Refresh ``stale`` on a thread of its own, replaying this request (RFC 5861)."""
        app = _app()
        environ = dict(request.environ)
        environ["wsgi.input"] = io.BytesIO(b"")
        environ["CONTENT_LENGTH"] = "0"
        is_async = inspect.iscoroutinefunction(self.view)

        def run() -> None:
            with app.request_context(environ):
                req = self._request(cache)
                if is_async:
                    asyncio.run(cache.arefresh(req, stale, self._arender(args, kwargs)))
                else:
                    cache.refresh(req, stale, self._render(args, kwargs))

        threading.Thread(target=run, name="chorde-refresh", daemon=True).start()

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if holds(self.unless, self.view, args, kwargs):
            return self.view(*args, **kwargs)
        app = _app()
        cache = self.ext._state(app).views
        req = self._request(cache)
        if req.bypass is not None:
            return self.view(*args, **kwargs)
        if holds(self.forced_update, self.view, args, kwargs):
            cache.delete(req.key)  # rendered and stored anew
        outcome = cache.serve(req, self._render(args, kwargs))
        return self._answer(app, cache, outcome, args, kwargs)

    async def acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if holds(self.unless, self.view, args, kwargs):
            return await self.view(*args, **kwargs)
        app = _app()
        cache = self.ext._state(app).views
        req = self._request(cache)
        if req.bypass is not None:
            return await self.view(*args, **kwargs)
        if holds(self.forced_update, self.view, args, kwargs):
            await cache.adelete(req.key)
        outcome = await cache.aserve(req, self._arender(args, kwargs))
        return self._answer(app, cache, outcome, args, kwargs)


_OWN_CONDITIONS: tuple[str, ...] = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_MATCH")
_OWN_CONDITIONS += ("HTTP_IF_UNMODIFIED_SINCE", "HTTP_IF_RANGE")


@contextlib.contextmanager
def _conditions(environ: dict[str, Any], conditions: Conditions) -> Iterator[None]:
    """The cache's validators in place of the request's own conditional fields, while the
    view renders (it may then answer 304, which freshens the stored page)."""
    if not conditions:
        yield
        return
    saved = {key: environ.pop(key) for key in _OWN_CONDITIONS if key in environ}
    added = []
    for name, value in conditions:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        environ[key] = value.decode("latin-1")
        added.append(key)
    try:
        yield
    finally:
        for key in added:
            environ.pop(key, None)
        environ.update(saved)
