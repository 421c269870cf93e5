"""``@cached`` over a Django cache alias, for views and helpers."""

from __future__ import annotations

import concurrent.futures
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, cast

from chorde.clients.base import BaseCacheClient

if TYPE_CHECKING:
    from chorde.decorators import CachedDecorator

__all__ = ["cached", "cached_functions", "get_client"]


#: The functions cached through :func:`cached`, per cache alias (for chorde_stats).
_functions: dict[str, weakref.WeakSet[Any]] = {}


def _remember(alias: str, wrapped: Any) -> None:
    _functions.setdefault(alias, weakref.WeakSet()).add(wrapped)


def cached_functions(alias: str = "default") -> list[Any]:
    """The live functions cached into ``caches[alias]`` through :func:`cached`."""
    return list(_functions.get(alias, ()))


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
    ttl: float,
    async_ttl: float | None = None,
    *,
    alias: str = "default",
    key: Callable[..., Hashable] | None = None,
    namespace: str | None = None,
    ttl_spread: float | bool = True,
    executor: concurrent.futures.Executor | None = None,
    tags: Any = None,
    condition: Callable[[Any], Any] | None = None,
    stale_if_error: float | None = None,
) -> CachedDecorator:
    """:func:`chorde.decorators.cached` storing into the client of ``caches[alias]``.

    The client is looked up when the function is decorated. The default namespace is
    ``KEY_PREFIX:VERSION:module.qualname``, so sites sharing a memcached with different
    ``KEY_PREFIX`` or ``VERSION`` do not share results. Every other argument (``key=``,
    ``namespace=``, ``ttl_spread=``, ``tags=``, ``condition=``, ``stale_if_error=`` ...)
    is :func:`chorde.decorators.cached`'s. The function's counters are listed by
    ``manage.py chorde_stats`` and :func:`chorde_django.function_stats`.
    """
    from django.core.cache import caches

    from chorde import decorators

    client = get_client(alias)
    backend = caches[alias]

    def decorate(fn: Callable[..., Any]) -> Any:
        ns = namespace
        if ns is None:
            name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
            ns = f"{backend.key_prefix}:{backend.version}:{name}"
        wrapped = decorators.cached(
            client,
            ttl,
            async_ttl,
            key=key,
            namespace=ns,
            ttl_spread=ttl_spread,
            executor=executor,
            tags=tags,
            condition=condition,
            stale_if_error=stale_if_error,
        )(fn)
        _remember(alias, wrapped)
        return wrapped

    # decorate returns what chorde's cached does, keeping each function's signature.
    return cast("CachedDecorator", decorate)
