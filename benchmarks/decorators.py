"""Memoizing decorators: the cost of a cached call (hit) and of a miss (compute + store).

Each implementation decorates the same trivial function (so the figures are the
decorator's own overhead) with room for every key, preloads 10,000 int keys (called both
ways below), then is called with the keys in a shuffled order. ``hit-kwargs`` calls
``f(k, scale=1)`` (keyword arguments must be normalised into the key). ``miss`` calls with
10,000 other keys; every implementation computes, stores and (being full) evicts, and is
refilled untimed between passes.

``chorde (hook)`` is chorde with a hook installed (:func:`chorde.observe.add_hook`, a hook
that does nothing: every call is timed and makes an event), ``chorde (prometheus)`` with the
Prometheus exporter installed (:mod:`chorde.exporters.prometheus`, when prometheus_client
is); the plain ``chorde`` rows run with no hook, as functions do by default.

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
    """One implementation: ``make()`` returns ``(decorated, clear)``; ``hooks()`` (before each
    pass, untimed) installs the chorde hooks it is measured with."""

    name: str
    make: Callable[[], tuple[Callable[..., Any], Callable[[], None]]]
    note: dict[str, str] | None = None
    hooks: Callable[[], None] | None = None


def _set_hooks(*wanted: Callable[[Any], Any]) -> None:
    from chorde import observe

    for hook in observe.hooks():
        if hook not in wanted:
            observe.remove_hook(hook)
    for hook in wanted:
        observe.add_hook(hook)


def _no_hooks() -> None:
    _set_hooks()


def _a_hook() -> None:
    _set_hooks(_nothing)


def _nothing(event: Any) -> None:
    pass


_prometheus: list[Any] = []


def _with_prometheus() -> None:
    if not _prometheus:
        import prometheus_client

        from chorde.exporters import prometheus

        exporter = prometheus.install(prometheus_client.CollectorRegistry())
        _prometheus.append(exporter.collector.observe)
    _set_hooks(*_prometheus)


def _prometheus_available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def _chorde(async_ttl: float | None) -> Callable[[], tuple[Callable[..., Any], Any]]:
    def make() -> tuple[Callable[..., Any], Any]:
        from chorde.clients.inproc import InprocCacheClient
        from chorde.decorators import cached

        client = InprocCacheClient(_SIZE)
        return cached(client, TTL, async_ttl, namespace="bench")(_f), client.clear

    return make


def _nothing_to_do() -> None:
    pass


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
    _Impl("chorde", _chorde(None), hooks=_no_hooks),
    _Impl(
        "chorde (async_ttl)",
        _chorde(-60),
        note={"hit": "a refresh window configured (entries fresh: no refresh runs)"},
        hooks=_no_hooks,
    ),
    _Impl("chorde (hook)", _chorde(None), note={"hit": "a hook installed"}, hooks=_a_hook),
    _Impl(
        "chorde (prometheus)",
        _chorde(None),
        note={"hit": "the Prometheus exporter installed"},
        hooks=_with_prometheus,
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

    made: list[tuple[_Impl, Callable[..., Any], Callable[[], None], Callable[[], None]]] = []
    for impl in _IMPLS:
        if impl.hooks is _with_prometheus and not _prometheus_available():
            print(f"  decorators: {impl.name} skipped (no prometheus_client)", file=sys.stderr)
            continue
        try:
            fn, clear = impl.make()
        except ImportError as exc:
            print(f"  decorators: {impl.name} skipped ({exc})", file=sys.stderr)
            continue
        hooks = impl.hooks or _nothing_to_do

        def refill(
            fn: Callable[..., Any] = fn,
            clear: Callable[[], None] = clear,
            hooks: Callable[[], None] = hooks,
        ) -> None:
            _no_hooks()
            clear()
            for k in keys:
                fn(k)
                fn(k, scale=1)
            hooks()

        refill()
        if fn(hit_order[0]) != hit_order[0] or fn(3, scale=1) != 3:
            raise RuntimeError(f"{impl.name} returns wrong results")
        made.append((impl, fn, refill, hooks))

    plan = [
        ("hit", "c(k)", hit_order, False),
        ("hit-kwargs", "c(k, scale=1)", hit_order, False),
        ("miss", "c(k)", miss_order, True),
    ]
    # Every implementation of one operation is measured together, samples taking turns.
    timings: dict[tuple[str, str], Timing] = {}
    try:
        for operation, stmt, order, refills in plan:
            cases = [
                Case(stmt, fn, order, setup=refill if refills else hooks)
                for _, fn, refill, hooks in made
            ]
            for (impl, *_), timing in zip(made, measure_interleaved(cases, config), strict=True):
                timings[impl.name, operation] = timing
    finally:
        _no_hooks()

    results: list[Result] = []
    for impl, *_ in made:
        for operation, stmt, _, _ in plan:
            note = (impl.note or {}).get(operation, "")
            results.append(
                Result.from_timing(
                    _BENCH, operation, impl.name, timings[impl.name, operation], api=stmt, note=note
                )
            )
    return results
