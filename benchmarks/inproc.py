"""In-process caches: get-hit, get-miss and put (overwrite) over 10,000 preloaded int keys.

Every implementation holds the same 10,000 keys (its capacity is at least that, so nothing
is evicted while preloading) and is driven with the statement natural to its API. Hits use
the keys in a precomputed random order; misses use 10,000 other ints, also shuffled.
"""

from __future__ import annotations

import functools
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Case, Result, Timing, TimingConfig, measure_interleaved

__all__ = ["N_KEYS", "run"]

N_KEYS = 10_000
TTL = 300
_SEED = 20240501
_BENCH = "inproc"


@dataclass(slots=True)
class _Impl:
    """One implementation: how to build and fill it, and the statement for each operation."""

    name: str
    make: Callable[[], Any]
    fill: Callable[[Any, Sequence[int], Any], None]
    count: Callable[[Any, Sequence[int]], int]
    hit: str
    miss: str
    put: str | None
    # Some caches change their content on a miss (lru_cache stores every result): this
    # puts it back, untimed, before each pass.
    reset: Callable[[Any], None] | None = None
    note: dict[str, str] | None = None


def _identity(k: Any) -> Any:
    return k


def _count_mapping(c: Any, keys: Sequence[int]) -> int:
    return sum(1 for k in keys if k in c)


def _count_get(c: Any, keys: Sequence[int]) -> int:
    return sum(1 for k in keys if c.get(k, None) is not None)


def _fill_items(c: Any, keys: Sequence[int], v: Any) -> None:
    for k in keys:
        c[k] = v


def _chorde(store: str | None) -> Callable[[], Any]:
    from chorde.clients.inproc import InprocCacheClient

    return lambda: InprocCacheClient(N_KEYS, store=store)


def _fill_put(c: Any, keys: Sequence[int], v: Any) -> None:
    for k in keys:
        c.put(k, v, TTL)


def _chorde_impl(name: str, store: str | None) -> _Impl:
    return _Impl(
        name,
        _chorde(store),
        fill=_fill_put,
        count=_count_get,
        hit="c.get(k)",
        miss="c.get(k, None)",
        put=f"c.put(k, v, {TTL})",
    )


def _lru_cache_impl() -> _Impl:
    def make() -> Any:
        return functools.lru_cache(maxsize=N_KEYS)(_identity)

    def fill(c: Any, keys: Sequence[int], v: Any) -> None:
        for k in keys:
            c(k)

    def reset(c: Any) -> None:
        c.cache_clear()
        fill(c, _HIT_KEYS, None)

    return _Impl(
        "functools.lru_cache",
        make,
        fill,
        count=lambda c, keys: c.cache_info().currsize,
        hit="c(k)",
        miss="c(k)",
        put=None,
        reset=reset,
        note={"get-miss": "a miss also computes, stores and evicts (lru_cache always stores)"},
    )


def _cachetools_impls() -> list[_Impl]:
    import cachetools

    return [
        _Impl(
            "cachetools.LRUCache",
            lambda: cachetools.LRUCache(maxsize=N_KEYS),
            _fill_items,
            _count_mapping,
            hit="c[k]",
            miss="c.get(k)",
            put="c[k] = v",
        ),
        _Impl(
            "cachetools.TTLCache",
            lambda: cachetools.TTLCache(maxsize=N_KEYS, ttl=TTL),
            _fill_items,
            _count_mapping,
            hit="c[k]",
            miss="c.get(k)",
            put="c[k] = v",
        ),
    ]


def _lru_dict_impl() -> _Impl:
    import lru

    return _Impl(
        "lru.LRU",
        lambda: lru.LRU(N_KEYS),
        _fill_items,
        _count_mapping,
        hit="c[k]",
        miss="c.get(k)",
        put="c[k] = v",
    )


def _django_impl() -> _Impl:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.locmem import LocMemCache

    def make() -> Any:
        # MAX_ENTRIES above N_KEYS: LocMemCache culls a third of a full cache on any set,
        # even an overwrite, which would turn the put benchmark into a cull benchmark.
        params = {"TIMEOUT": TTL, "OPTIONS": {"MAX_ENTRIES": 2 * N_KEYS}}
        cache = LocMemCache("chorde-benchmark", params)
        cache.clear()  # instances of one name share their storage
        return cache

    def fill(c: Any, keys: Sequence[int], v: Any) -> None:
        for k in keys:
            c.set(k, v, TTL)

    return _Impl(
        "django.LocMemCache",
        make,
        fill,
        _count_get,
        hit="c.get(k)",
        miss="c.get(k)",
        put=f"c.set(k, v, {TTL})",
        note={"get-hit": "values are pickled on set and unpickled on get (Django's design)"},
    )


def _dict_impl() -> _Impl:
    return _Impl(
        "dict",
        dict,
        _fill_items,
        _count_mapping,
        hit="c[k]",
        miss="c.get(k)",
        put="c[k] = v",
        note={"put": "unbounded, no eviction or expiry: the floor, not a peer"},
    )


_HIT_KEYS: list[int] = list(range(N_KEYS))

# (name, builder): a builder that raises ImportError skips its implementation(s).
_BUILDERS: list[tuple[str, Callable[[], _Impl | list[_Impl]]]] = [
    ("chorde", lambda: _chorde_impl("chorde", None)),
    ("chorde-cuckoo", lambda: _chorde_impl("chorde-cuckoo", "cuckoo")),
    ("dict", _dict_impl),
    ("functools.lru_cache", _lru_cache_impl),
    ("cachetools", _cachetools_impls),
    ("lru.LRU", _lru_dict_impl),
    ("django.LocMemCache", _django_impl),
]


def _implementations() -> list[_Impl]:
    impls: list[_Impl] = []
    for name, build in _BUILDERS:
        try:
            built = build()
        except ImportError as exc:
            print(f"  inproc: {name} skipped ({exc})", file=sys.stderr)
            continue
        impls.extend(built if isinstance(built, list) else [built])
    return impls


def run(quick: bool) -> list[Result]:
    """Measure every available implementation; see the module docstring."""
    config = TimingConfig.for_run(quick)
    rng = random.Random(_SEED)
    hit_order = rng.sample(_HIT_KEYS, N_KEYS)
    miss_order = rng.sample(range(N_KEYS, 2 * N_KEYS), N_KEYS)
    value = object()

    caches: list[tuple[_Impl, Any]] = []
    for impl in _implementations():
        cache = impl.make()
        impl.fill(cache, _HIT_KEYS, value)
        held = impl.count(cache, _HIT_KEYS)
        if held != N_KEYS:
            raise RuntimeError(f"{impl.name} holds {held} of {N_KEYS} preloaded keys")
        caches.append((impl, cache))

    # Every implementation of one operation is measured together, samples taking turns.
    timings: dict[tuple[str, str], Timing] = {}
    for operation, keys in (("get-hit", hit_order), ("get-miss", miss_order), ("put", hit_order)):
        cases: list[tuple[str, Case]] = []
        for impl, cache in caches:
            stmt = _statement(impl, operation)
            if stmt is not None:
                reset = (lambda c=cache, r=impl.reset: r(c)) if impl.reset else None
                setup = reset if operation == "get-miss" else None
                cases.append((impl.name, Case(stmt, cache, keys, value, setup)))
        measured = measure_interleaved([case for _, case in cases], config)
        for (name, _), timing in zip(cases, measured, strict=True):
            timings[name, operation] = timing

    results: list[Result] = []
    for impl, _ in caches:
        for operation in ("get-hit", "get-miss", "put"):
            note = (impl.note or {}).get(operation, "")
            stmt = _statement(impl, operation)
            if stmt is None:
                results.append(
                    Result(_BENCH, operation, impl.name, None, note=note or "not applicable")
                )
                continue
            timing = timings[impl.name, operation]
            results.append(
                Result.from_timing(_BENCH, operation, impl.name, timing, api=stmt, note=note)
            )
    return results


def _statement(impl: _Impl, operation: str) -> str | None:
    return {"get-hit": impl.hit, "get-miss": impl.miss, "put": impl.put}[operation]
