"""Flask view caching: Flask's request and response translated for :mod:`chorde.http`.

The policy (what is stored and served, the key, concurrent misses) is
:class:`chorde.http.ResponseCache`'s, the same as every chorde adapter's; what is Flask's
own is here: reading ``flask.request``, turning a view's return value into the response the
policy judges, noticing a view that read the session, and building the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Response, current_app, has_request_context, request
from flask.globals import request_ctx

from chorde.http import CacheRequest, Outcome, Rendered, Reply, ResponseCache, Route

if TYPE_CHECKING:
    from chorde_flask import Chorde

__all__: list[str] = []  # internal module

NAMESPACE = "chorde_flask.view"


def _session_state() -> tuple[bool, bool]:
    """Whether the view read, and whether it changed, the session."""
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    # Flask >= 3.1 marks the session accessed whenever ctx.session is read (so asking would
    # answer yes); the opened session is held in _session there, in session before.
    current = getattr(ctx, "_session", None)
    if current is None:
        current = getattr(ctx, "session", None)
    return bool(getattr(current, "accessed", False)), bool(getattr(current, "modified", False))


def _environ_fields(environ: dict[str, Any]) -> Callable[[str], list[str]]:
    """Look request fields up in the WSGI environ (PEP 3333 names), one key each.

    The server has joined repeated lines with commas; a request's other fields (a hostile
    client may send thousands) are never read.
    """

    def values(name: str) -> list[str]:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        value = environ.get(key)
        return [value] if value is not None else []

    return values


def cache_request(cache: ResponseCache, route: Route, target: Hashable = None) -> CacheRequest:
    """The current Flask request as the cache sees it."""
    return cache.request(
        method=request.method,
        scheme=request.scheme,
        # Werkzeug and gunicorn join repeated Host lines with a comma: the policy refuses it.
        hosts=[request.host],
        path=request.root_path + request.path,
        query=request.query_string.decode("latin-1"),
        headers=_environ_fields(request.environ),
        route=route,
        namespace=NAMESPACE,
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


def _response(reply: Reply) -> Response:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in reply.headers]
    response: Response = current_app.response_class(
        reply.body, status=reply.status, headers=headers
    )
    # The body given to the constructor set Content-Length: a HEAD's is the GET's length.
    length = [v for k, v in headers if k == "content-length"]
    if length:
        response.headers["Content-Length"] = length[0]
    return response


class ViewCache:
    """The cache of one decorated view."""

    __slots__ = ("ext", "key", "route", "view")

    def __init__(
        self,
        ext: Chorde,
        view: Callable[..., Any],
        route: Route,
        key: Callable[[], Hashable] | None,
    ) -> None:
        self.ext = ext
        self.view = view
        self.route = route
        self.key = key

    def _request(self, cache: ResponseCache) -> CacheRequest:
        target = None if self.key is None else ("key", self.key())
        return cache_request(cache, self.route, target)

    def _rendered(self, result: Any) -> Rendered:
        response = current_app.make_response(result)
        body = None if response.is_streamed else response.get_data()
        veto = None
        read, changed = _session_state()
        if changed:
            veto = "the view changed the session"
        elif read and not self.route.per_user:
            veto = "the view read the session (declare the route per_user)"
        headers = list(response.headers.items())
        return Rendered(response.status_code, headers, body, veto, response)

    @staticmethod
    def _answer(cache: ResponseCache, req: CacheRequest, outcome: Outcome) -> Any:
        if outcome.reply is not None:  # a hit, or a stored render answered like one
            return _response(outcome.reply)
        assert outcome.rendered is not None
        response = outcome.rendered.native
        if cache.rules.tag_field is not None:
            response.headers.pop(cache.rules.tag_field, None)  # the cache's, not the client's
        if outcome.status is not None:
            name, value = outcome.status
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return response

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.ext._state().views
        req = self._request(cache)
        if req.bypass is not None:
            return self.view(*args, **kwargs)

        def render() -> Rendered:
            return self._rendered(self.view(*args, **kwargs))

        return self._answer(cache, req, cache.serve(req, render))

    async def acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.ext._state().views
        req = self._request(cache)
        if req.bypass is not None:
            return await self.view(*args, **kwargs)

        async def render() -> Rendered:
            return self._rendered(await self.view(*args, **kwargs))

        outcome = await cache.aserve(req, render)
        return self._answer(cache, req, outcome)
