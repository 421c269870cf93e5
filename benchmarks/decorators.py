"""Memoizing decorators: the cost of a cached call (hit) and of a miss (compute + store).

Each implementation decorates the same trivial function (so the figures are the
decorator's own overhead) with room for every key, preloads 10,000 int keys (called both
ways below), then is called with the keys in a shuffled order. ``hit-kwargs`` calls
``f(k, scale=1)`` (keyword arguments must be normalised into the key). ``miss`` calls with
10,000 other keys; every implementation computes, stores and (being full) evicts, and is
refilled untimed between passes.

Peers: ``functools.lru_cache`` (C, no expiry), ``cachetools.cached(TTLCache)`` with and
without a lock, and a ``dogpile.cache`` memory region's ``cache_on_arguments``. chorde's
decorated functions are thread-safe without a lock on the hit path and compute each key once
under concurrency; lru_cache is thread-safe too, cachetools only with ``lock=``.
"""

from __future__ import annotations

import functools
import random
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Case, Result, Timing, TimingConfig, measure_interleaved

__all__ = ["N_KEYS", "run"]

N_KEYS = 10_000
TTL = 300
_SEED = 20240502
_BENCH = "decorators"
# Room for every key called both ways, f(k) and f(k, scale=1): no eviction while hitting.
_SIZE = 2 * N_KEYS


def _f(x: Any, scale: int = 1) -> Any:
    return x


@dataclass(slots=True)
class _Impl:
    """One implementation: ``make()`` returns ``(decorated, clear)``."""

    name: str
    make: Callable[[], tuple[Callable[..., Any], Callable[[], None]]]
    note: dict[str, str] | None = None


def _chorde(async_ttl: float | None) -> Callable[[], tuple[Callable[..., Any], Any]]:
    def make() -> tuple[Callable[..., Any], Any]:
        from chorde.clients.inproc import InprocCacheClient
        from chorde.decorators import cached

        client = InprocCacheClient(_SIZE)
        return cached(client, TTL, async_ttl, namespace="bench")(_f), client.clear

    return make


def _lru_cache() -> tuple[Callable[..., Any], Any]:
    fn = functools.lru_cache(maxsize=_SIZE)(_f)
    return fn, fn.cache_clear


def _cachetools(lock: bool) -> Callable[[], tuple[Callable[..., Any], Any]]:
    def make() -> tuple[Callable[..., Any], Any]:
        import cachetools

        cache = cachetools.TTLCache(maxsize=_SIZE, ttl=TTL)
        kw = {"lock": threading.Lock()} if lock else {}
        return cachetools.cached(cache, **kw)(_f), cache.clear

    return make


def _dogpile() -> tuple[Callable[..., Any], Any]:
    from dogpile.cache import make_region

    region = make_region().configure("dogpile.cache.memory", expiration_time=TTL)
    fn = region.cache_on_arguments()(_f)
    # The memory backend is a plain dict: clearing it resets the region.
    return fn, region.backend._cache.clear


_IMPLS: list[_Impl] = [
    _Impl("chorde", _chorde(None)),
    _Impl(
        "chorde (async_ttl)",
        _chorde(-60),
        note={"hit": "a refresh window configured (entries fresh: no refresh runs)"},
    ),
    _Impl("functools.lru_cache", _lru_cache, note={"miss": "no expiry; C implementation"}),
    _Impl("cachetools.cached(TTLCache)", _cachetools(False), note={"hit": "not thread-safe"}),
    _Impl("cachetools.cached(TTLCache, lock)", _cachetools(True)),
    _Impl(
        "dogpile.cache region",
        _dogpile,
        note={"miss": "memory backend never evicts: it grows instead"},
    ),
]


def run(quick: bool) -> list[Result]:
    """Measure every available implementation; see the module docstring."""
    config = TimingConfig.for_run(quick)
    rng = random.Random(_SEED)
    keys = list(range(N_KEYS))
    hit_order = rng.sample(keys, N_KEYS)
    miss_order = rng.sample(range(N_KEYS, 2 * N_KEYS), N_KEYS)

    made: list[tuple[_Impl, Callable[..., Any], Callable[[], None]]] = []
    for impl in _IMPLS:
        try:
            fn, clear = impl.make()
        except ImportError as exc:
            print(f"  decorators: {impl.name} skipped ({exc})", file=sys.stderr)
            continue

        def refill(fn: Callable[..., Any] = fn, clear: Callable[[], None] = clear) -> None:
            clear()
            for k in keys:
                fn(k)
                fn(k, scale=1)

        refill()
        if fn(hit_order[0]) != hit_order[0] or fn(3, scale=1) != 3:
            raise RuntimeError(f"{impl.name} returns wrong results")
        made.append((impl, fn, refill))

    plan = [
        ("hit", "c(k)", hit_order, False),
        ("hit-kwargs", "c(k, scale=1)", hit_order, False),
        ("miss", "c(k)", miss_order, True),
    ]
    # Every implementation of one operation is measured together, samples taking turns.
    timings: dict[tuple[str, str], Timing] = {}
    for operation, stmt, order, refills in plan:
        cases = [Case(stmt, fn, order, setup=refill if refills else None) for _, fn, refill in made]
        for (impl, _, _), timing in zip(made, measure_interleaved(cases, config), strict=True):
            timings[impl.name, operation] = timing

    results: list[Result] = []
    for impl, _, _ in made:
        for operation, stmt, _, _ in plan:
            note = (impl.note or {}).get(operation, "")
            results.append(
                Result.from_timing(
                    _BENCH, operation, impl.name, timings[impl.name, operation], api=stmt, note=note
                )
            )
    return results
