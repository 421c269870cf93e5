"""``@cached`` over a Django cache alias, for views and helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chorde.clients.base import BaseCacheClient

__all__ = ["cached", "get_client"]


def get_client(alias: str = "default") -> BaseCacheClient:
    """The chorde client behind ``caches[alias]``, which must be a ChordeCache."""
    from django.core.cache import caches

    from chorde_django.backend import ChordeCache

    backend = caches[alias]
    if not isinstance(backend, ChordeCache):
        raise TypeError(
            f"caches[{alias!r}] is a {type(backend).__name__}, not a chorde_django.ChordeCache"
        )
    return backend.client


def cached(
    ttl: float, async_ttl: float | None = None, *, alias: str = "default", **kwargs: Any
) -> Callable[[Callable[..., Any]], Any]:
    """:func:`chorde.decorators.cached` storing into the client of ``caches[alias]``.

    The client is looked up when the function is decorated. The default namespace is
    ``KEY_PREFIX:VERSION:module.qualname``, so sites sharing a memcached with different
    ``KEY_PREFIX`` or ``VERSION`` do not share results. Every other argument (``key=``,
    ``namespace=``, ``ttl_spread=``, ...) is :func:`chorde.decorators.cached`'s.
    """
    from django.core.cache import caches

    from chorde import decorators

    client = get_client(alias)
    backend = caches[alias]

    def decorate(fn: Callable[..., Any]) -> Any:
        options = dict(kwargs)
        if options.get("namespace") is None:
            name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
            options["namespace"] = f"{backend.key_prefix}:{backend.version}:{name}"
        return decorators.cached(client, ttl, async_ttl, **options)(fn)

    return decorate
