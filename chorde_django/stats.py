"""What the chorde caches of a Django site do, and dropping tagged entries, by cache alias.

* :func:`function_stats`: the counters (:class:`chorde.observe.CacheInfo`) of every function
  cached into an alias with :func:`chorde_django.cached`.
* :func:`cache_stats`: an alias's client counters (hits, misses, sets, evictions, errors)
  and its usage.
* :func:`invalidate_tags` / :func:`ainvalidate_tags`: drop every entry of an alias tagged
  with one of the tags (``@cached(tags=...)`` results and tagged HTTP responses), in every
  process sharing its client.
* :func:`report`: all of it as text, what ``manage.py chorde_stats`` prints.
"""

from __future__ import annotations

from typing import Any

from chorde import tags as _tags
from chorde.clients.base import CacheStats
from chorde.observe import CacheInfo
from chorde_django.decorators import cached_functions, get_client

__all__ = [
    "ainvalidate_tags",
    "cache_stats",
    "chorde_aliases",
    "function_stats",
    "invalidate_tags",
    "report",
]


def chorde_aliases() -> list[str]:
    """The aliases of ``settings.CACHES`` whose backend is a ChordeCache, in order."""
    from django.conf import settings
    from django.core.cache import caches

    from chorde_django.backend import ChordeCache

    return [alias for alias in settings.CACHES if isinstance(caches[alias], ChordeCache)]


def function_stats(alias: str = "default") -> dict[str, CacheInfo]:
    """Each function cached into ``caches[alias]`` with its counters, by
    ``module.qualname`` (summed over functions of one name)."""
    get_client(alias)  # the alias must be a ChordeCache
    out: dict[str, CacheInfo] = {}
    for fn in cached_functions(alias):
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
        info = fn.cache_info()
        out[name] = out[name] + info if name in out else info
    return dict(sorted(out.items()))


def cache_stats(alias: str = "default") -> dict[str, Any]:
    """``caches[alias]``'s client: its counters (``stats``), ``usage`` and ``capacity``."""
    client = get_client(alias)
    stats: CacheStats = client.stats
    return {"stats": stats, "usage": client.usage, "capacity": client.capacity}


def invalidate_tags(*tags: str, alias: str = "default") -> None:
    """Drop every entry of ``caches[alias]`` tagged with one of ``tags`` (see
    :func:`chorde.tags.invalidate_tags`)."""
    _tags.invalidate_tags(get_client(alias), *tags)


async def ainvalidate_tags(*tags: str, alias: str = "default") -> None:
    """Awaitable :func:`invalidate_tags`."""
    await _tags.ainvalidate_tags(get_client(alias), *tags)


def report(aliases: list[str] | None = None) -> str:
    """Every ChordeCache alias's client counters and cached functions' counters, as text."""
    from django.core.cache import caches

    lines = []
    for alias in aliases if aliases is not None else chorde_aliases():
        backend = caches[alias]
        summary = cache_stats(alias)
        stats: CacheStats = summary["stats"]
        lines.append(f"cache {alias!r}: {getattr(backend, 'stack', '?')} {get_client(alias)!r}")
        lines.append(
            f"  client: hits={stats.hits} misses={stats.misses} "
            f"hit_ratio={stats.hit_ratio:.1%} sets={stats.sets} evictions={stats.evictions} "
            f"errors={stats.errors} usage={summary['usage']}/{summary['capacity']}"
        )
        functions = function_stats(alias)
        if not functions:
            lines.append("  functions: none cached with chorde_django.cached")
        for name, info in functions.items():
            lines.append(
                f"  {name}: hits={info.hits} misses={info.misses} "
                f"hit_ratio={info.hit_ratio:.1%} stale={info.stale} "
                f"refreshes={info.refreshes} coalesced={info.coalesced} errors={info.errors} "
                f"claims={info.claims}"
            )
    if not lines:
        lines.append("no ChordeCache in settings.CACHES")
    return "\n".join(lines)
