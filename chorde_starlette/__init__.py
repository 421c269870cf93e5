"""chorde for Starlette and any ASGI application: an HTTP-correct shared response cache.

``CacheMiddleware(app, client=..., ttl=...)`` caches GET/HEAD responses by the RFC 9111
rules for a shared cache; ``@cache_route(ttl=...)`` / ``@no_cache_route`` opt endpoints in
or out. See :mod:`chorde_starlette.middleware` for the rules.
"""

from __future__ import annotations

from chorde.errors import requires_extra

with requires_extra("starlette"):
    import starlette  # noqa: F401 (the dependency; the middleware imports what it uses)

from chorde_starlette.middleware import (
    DEFAULT_STATUSES,
    CacheMiddleware,
    RoutePolicy,
    cache_route,
    no_cache_route,
)

__all__ = [
    "DEFAULT_STATUSES",
    "CacheMiddleware",
    "RoutePolicy",
    "cache_route",
    "no_cache_route",
]
