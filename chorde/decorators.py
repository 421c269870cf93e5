"""The ``@cached`` decorator: caching as an optimization of an otherwise expensive function.

::

    @cached(client, ttl=300, async_ttl=-60)
    def expensive(x): ...

    expensive(1)                   # cached call: computes on a miss, at most once per key
    expensive.bg()(1)              # serve what is held (even stale), refresh in the background
    expensive.future()(1)          # a chorde Future (awaitable too); never blocks the caller:
                                   # lookups of blocking (network) clients run on the pool
    expensive.forced()(1)          # recompute now and store (a forced update)
    expensive.peek(1)              # cache only: value or CacheMissError, never computes
    expensive.lazy(1)              # cached value or CacheMissError, never waits
    expensive.bg().lazy(1)         # same, and a miss starts the computation in the background
    expensive.future().lazy(1)     # same, through a Future
    expensive.refresh(1)           # recompute now and store (what forced() calls do)
    expensive.put(1, _cache_put=5) # store an explicit value
    expensive.invalidate(1)        # delete the entry; .expire(1) marks it stale instead
    expensive.invalidate_all()     # drop every result of the function, in every process
    expensive.uncached(1)          # call the function, bypassing the cache
    expensive.cache_info()         # its counters: hits, misses, stale, refreshes ...
    expensive.client               # the cache client

Coroutine functions (``async def``) get a coroutine wrapper: ``await expensive(1)``, and the
plain variants (``peek``, ``lazy``, ``refresh``, ``put``, ``invalidate``, ``expire``,
``invalidate_all``) are coroutines too. Computations then run as tasks on the caller's loop,
cache access goes through the client's awaitable methods, so the loop is never blocked.

Freshness: entries live ``ttl`` seconds (or ``ttl(result)``). ``async_ttl`` opens a refresh
window: a hit with less than ``async_ttl`` seconds left (``ttl + async_ttl`` when negative:
``-60`` means "older than a minute") is returned at once while one background refresh per
key recomputes it. A plain call never returns an entry past its ttl, unless the function
raises and ``stale_if_error`` allows it; ``.bg()`` (and ``.future()``) also serve an expired
entry the client still holds, refreshing it in the background (stale-while-revalidate).

What is kept: ``condition(result)`` false means the result is returned but not stored.
``tags`` name groups the results belong to (:func:`chorde.tags.invalidate_tags` drops a
group), and ``invalidate_all()`` drops the function's results; both write one revision
record, checked by every read in the same round trip (see :mod:`chorde.tags`), so they
work across processes sharing a client without scanning keys. On a process-private
in-process client a function without tags needs no record: ``invalidate_all()`` drops its
entries there and then, and its hits stay a single lookup.

Compute once: concurrent callers of one key wait for a single computation (per process; a
coherent client extends that to a cluster). Its exception reaches every waiter and is not
cached. Background refreshes run on a shared bounded thread pool (see
:func:`set_default_executor`, or pass ``executor=``); their failures are logged on the
``chorde.decorators`` logger and the old value stays until its ttl ends.

Observability: ``fn.cache_info()`` returns the function's :class:`~chorde.observe.CacheInfo`;
hooks installed with :func:`chorde.observe.add_hook` receive an event per call (and per
background refresh) with its duration. With no hook installed nothing is timed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import math
import random
import reprlib
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from chorde import _compute, _legacy, observe
from chorde._cached_types import (
    AsyncCachedFunction,
    BackgroundAsyncCachedFunction,
    BackgroundCachedFunction,
    BoundAsyncCachedFunction,
    BoundCachedFunction,
    CachedDecorator,
    CachedFunction,
    FutureAsyncCachedFunction,
    FutureCachedFunction,
)
from chorde._compute import Flight, Flights, Pending, set_default_executor
from chorde.clients.base import BaseCacheClient, check_ttl
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.steps import Steps, arun, on, run
from chorde.errors import CacheMissError
from chorde.futures import Future, chain, completed, failed
from chorde.keys import encode_key
from chorde.leases import HELD, WON, Computed, aleased_call, leased_call, offered
from chorde.observe import ERROR, FUNCTION, HIT, MISS, REFRESH, STALE, CacheInfo
from chorde.tags import (
    Stamped,
    bump_steps,
    check_tags,
    function_key,
    generation,
    revisions_steps,
    tag_key,
    view,
)

try:
    import cython  # type: ignore[import-untyped]  # Cython ships no type information
except ImportError:  # pure Python without Cython: its declarations are no-ops
    from chorde import _cython_shim as cython

__all__ = [
    "AsyncCachedFunction",
    "BackgroundAsyncCachedFunction",
    "BackgroundCachedFunction",
    "BoundAsyncCachedFunction",
    "BoundCachedFunction",
    "CacheInfo",
    "CachedDecorator",
    "CachedFunction",
    "FutureAsyncCachedFunction",
    "FutureCachedFunction",
    "cached",
    "check_options",
    "set_default_executor",
]

logger = logging.getLogger("chorde.decorators")

T = TypeVar("T")

_PLAIN, _BG, _FUTURE = 0, 1, 2
# The lookup default: NONE would mean "no default" (raise on a miss), so a private marker.
_MISS: Any = object()
_CLIENT_METHODS = ("getTtl", "put", "delete", "expire", "agetTtl", "aput", "adelete", "aexpire")
_clock = time.perf_counter
# Lone misses that found a flight just ending before one computes or waits (see compute_once).
_BEGIN_ATTEMPTS = 8
# The ttl a coherent client's compute-once stores a result with when the real one comes from
# ``ttl(result)``: short, and replaced by the real one as soon as the result is known.
_PROVISIONAL_TTL = 1.0


class _NotStored(Exception):
    """Carries a result the policy does not store out of a coherent client's compute-once
    (which stores what its computation returns)."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


def _threshold(ttl: float | None, async_ttl: Any) -> float:
    """The ttl_left below which a hit triggers a refresh (0: no refresh window).

    ``ttl`` None: the ttl is computed from each result, so only a positive ``async_ttl``
    (seconds left) can be checked.
    """
    if async_ttl is None:
        return 0.0
    if isinstance(async_ttl, bool) or not isinstance(async_ttl, int | float):
        hint = " (a key function goes by keyword: key=; chorde 1.x took it third)"
        raise TypeError(
            f"async_ttl must be a number of seconds or None, got {async_ttl!r}"
            + (hint if callable(async_ttl) else "")
        )
    if async_ttl == 0:
        return 0.0
    if ttl is None:
        if not 0 < async_ttl < math.inf:
            raise ValueError(
                f"async_ttl={async_ttl!r}: with a ttl computed from the result, async_ttl "
                "must be None, 0 or a positive number of seconds left"
            )
        return float(async_ttl)
    threshold = ttl + async_ttl if async_ttl < 0 else float(async_ttl)
    if not 0 < threshold <= math.inf:
        raise ValueError(
            f"async_ttl={async_ttl!r} must be None, 0, a number of seconds left, or more "
            f"than -ttl (ttl={ttl!r})"
        )
    # async_ttl >= ttl (chorde 1.x took it too): every hit refreshes in the background.
    return min(threshold, ttl)


def _spread(ttl: float | None, ttl_spread: Any) -> float | None:
    """The jitter in seconds; None: a tenth of each computed ttl (``ttl_spread=True`` with a
    ttl computed from the result)."""
    if ttl_spread is True:
        if ttl is None:
            return None
        return ttl / 10 if math.isfinite(ttl) else 0.0
    if ttl_spread is False or ttl_spread is None:
        return 0.0
    spread = check_ttl(ttl_spread, "ttl_spread")
    if ttl is not None and spread >= ttl:
        raise ValueError(f"ttl_spread={ttl_spread!r} must be smaller than ttl={ttl!r}")
    return spread


class _ARun:
    """An in-flight computation of a coroutine function (a task on one loop)."""

    __slots__ = ("background", "task")

    #: Set by _Core._astart right after construction (the task's coroutine needs the run).
    task: asyncio.Task[Any]

    def __init__(self, background: bool) -> None:
        self.background = background


def _consume(task: asyncio.Future[Any]) -> None:
    # Mark the outcome retrieved: failures are logged or delivered by us, not by asyncio.
    if not task.cancelled():
        task.exception()


def _from_task(task: asyncio.Future[T]) -> Future[T]:
    out: Future[T] = Future()

    def _copy(t: asyncio.Future[T]) -> None:
        if out.done():
            return  # cancelled by its holder; the task ran to completion regardless
        if t.cancelled():
            out.cancel()
        elif (exc := t.exception()) is not None:
            out.set_exception(exc)
        else:
            out.set_result(t.result())

    task.add_done_callback(_copy)
    return out


def _afuture(coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Run a coroutine as a task (on the running loop, else chorde's loop thread): a Future."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        out: Future[T] = Future()
        chain(_compute.run_coroutine(coro), out)
        return out
    return _from_task(loop.create_task(coro))


# ---- process-private clients: invalidate_all without revision records -------------------


class _Space:
    """The cached functions of one namespace on one process-private (in-process) client.

    ``invalidate_all()`` there needs no revision record: keys routed to the client's
    namespace table (positional calls, ``key=`` functions) are deleted from it, the others
    move to a new key head (``generation``), so the old ones are never read again and age
    out by eviction. ``epoch`` lets a computation that started before an invalidation drop
    what it stored after it.
    """

    __slots__ = ("__weakref__", "cores", "epoch", "generation")

    def __init__(self) -> None:
        self.epoch = 0
        self.generation = 0
        self.cores: weakref.WeakSet[_Core] = weakref.WeakSet()


_spaces: weakref.WeakKeyDictionary[BaseCacheClient, dict[str, _Space]]
_spaces = weakref.WeakKeyDictionary()
_spaces_lock = threading.Lock()


def _space(client: BaseCacheClient, namespace: str) -> _Space:
    with _spaces_lock:
        spaces = _spaces.setdefault(client, {})
        space = spaces.get(namespace)
        if space is None:
            space = spaces[namespace] = _Space()
        return space


class _Core:
    """Everything a cached function needs: configuration, key building, the slow paths."""

    def __init__(
        self,
        fn: Callable[..., Any],
        client: BaseCacheClient,
        ttl: float | Callable[[Any], float],
        threshold: float,
        spread: float | None,
        namespace: str,
        keyfn: Callable[..., Hashable] | None,
        executor: concurrent.futures.Executor | None,
        tags: tuple[str, ...] | Callable[..., Any] | None = None,
        condition: Callable[[Any], Any] | None = None,
        stale_if_error: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', fn)}"
        self.client = client
        self.ttl_fn = ttl if callable(ttl) else None
        self.ttl = 0.0 if callable(ttl) else ttl
        self.threshold = threshold
        self.spread = spread
        self.namespace = namespace
        self.keyfn = keyfn
        self.executor = executor
        self.condition = condition
        self.stale_if_error = stale_if_error
        self.flights = Flights()
        self.aflights: dict[Hashable, _ARun] = {}
        # A coherent client coordinates computations across processes (once per cluster).
        self.coordinate = getattr(client, "compute_once", None)
        self.acoordinate = getattr(client, "acompute_once", None)
        # A client handing out leases (chorde.leases) computes once per cluster by itself,
        # with no broker: its leases win over a coherent client's claims.
        self.leases = client if offered(client) else None
        self.counters = observe.Counters()
        #: The hits counted by the wrapper's own hit path (set by _make_wrapper).
        self.fast_hits: Callable[[], float] = lambda: 0.0
        #: Rebinds the wrapper's view of the key heads and of the hooks (set by _make_wrapper).
        self.rebind: Callable[..., None] = lambda **_: None
        # Revision records (chorde.tags): every function on a shared client (its results
        # may be dropped by another process), and tagged ones everywhere.
        self.fn_key = function_key(namespace)
        self.tagfn = tags if callable(tags) else None
        static = () if tags is None or callable(tags) else tags
        self.guard_keys: tuple[Hashable, ...] = (self.fn_key, *map(tag_key, static))
        # A guarded read is one batch lookup, unless the client's class has no batch lookup
        # of its own (a duck-typed wrapper forwarding the rest: its reads must be its own).
        self.batch = callable(getattr(type(client), "getTtlMulti", None))
        private = isinstance(client, InprocCacheClient)
        self.guarded = tags is not None or not private
        self.space = None if self.guarded else _space(client, namespace)
        # What this process last read of the records (chorde.tags.view): a guarded hit it
        # vouches for reads the entry alone.
        self.view = view(client)
        # An in-process client's table of this namespace: the wrapper's hit path reads it.
        # Looked up on the class: a wrapper forwarding attributes to an in-process client it
        # wraps must not have its own reads bypassed.
        namespace_table = getattr(type(client), "namespace_table", None)
        self.table = (
            namespace_table(client, namespace)
            if namespace_table is not None and not self.guarded
            else None
        )
        self.rekey()
        if self.space is not None:
            self.space.cores.add(self)
        self.observed = observe.watch(self)
        observe.register(self)

    # ---- keys ------------------------------------------------------------------

    def rekey(self) -> None:
        """Key heads for the space's generation (see :class:`_Space`)."""
        generation = self.space.generation if self.space is not None else 0
        moved: Hashable = self.namespace if generation == 0 else (self.namespace, generation)
        # Key heads (see cached()): flat keys hash and compare with the fewest steps, and a
        # tuple head can never equal the str head of a positional-only key. Keys routed to
        # a namespace table keep the namespace (they are deleted instead of moved).
        self.key_ns: Hashable = self.namespace if self.table is not None else moved
        self.head = (self.key_ns,)
        self.kw_head = (moved, "**")
        self.rebind(head=self.head, kw_head=self.kw_head)

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        """The cache key for a call; see :func:`cached`."""
        if self.keyfn is not None:
            return (self.key_ns, self.keyfn(*args, **kwargs))
        if kwargs:
            return (self.kw_head, args, tuple(sorted(kwargs.items())))
        return self.head + args

    def key_error(self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: TypeError) -> TypeError:
        """Turn a client's TypeError about a key into one naming the offending argument."""
        if self.keyfn is not None:
            return TypeError(f"{self.name}: key function returned an unusable cache key: {exc}")
        try:
            params = list(inspect.signature(self.fn).parameters)
        except (TypeError, ValueError):
            params = []
        named = [(f"{params[i]!r}" if i < len(params) else f"#{i}", v) for i, v in enumerate(args)]
        named += [(repr(k), v) for k, v in kwargs.items()]
        for label, value in named:
            try:
                hash(value)
            except TypeError:
                return TypeError(
                    f"{self.name}: argument {label} = {reprlib.repr(value)} is unhashable "
                    f"({type(value).__name__}) and cannot be part of a cache key; "
                    "pass key= to build one"
                )
        # Hashable but maybe not encodable, for clients whose keys leave the process.
        for label, value in named:
            try:
                encode_key(value)
            except TypeError:
                return TypeError(
                    f"{self.name}: argument {label} = {reprlib.repr(value)} "
                    f"({type(value).__name__}) "
                    "cannot be encoded as a cache key for this client; pass key= to build one"
                )
        return exc

    def _raise_key_error(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: TypeError
    ) -> None:
        err = self.key_error(args, kwargs, exc)
        if err is exc:
            raise exc
        raise err from exc

    def guards(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Hashable, ...]:
        """The revision records a call's entry is checked against."""
        if self.tagfn is None:
            return self.guard_keys
        tags = check_tags(self.tagfn(*args, **kwargs), f"{self.name}: tags(...) result")
        return (self.fn_key, *map(tag_key, tags))

    # ---- policy: what is stored, for how long ----------------------------------

    def store_ttl(self, value: Any) -> float:
        """The ttl to store ``value`` with (``ttl`` less the jitter); 0: not stored."""
        if self.condition is not None and not self.condition(value):
            return 0.0
        ttl = self.ttl
        if self.ttl_fn is not None:
            got = self.ttl_fn(value)
            if isinstance(got, bool) or not isinstance(got, int | float) or not got >= 0:
                raise TypeError(
                    f"{self.name}: ttl({reprlib.repr(value)}) must return a number of "
                    f"seconds >= 0 (0: do not store), got {got!r}"
                )
            ttl = float(got)
            if ttl == 0:
                return 0.0
        spread = self.spread
        if self.ttl_fn is not None:  # a computed ttl: a tenth of it, or at most its half
            spread = (ttl / 10 if math.isfinite(ttl) else 0.0) if spread is None else spread
            spread = min(spread, ttl / 2)
        return ttl - random.random() * spread if spread else ttl

    # ---- observation -----------------------------------------------------------

    def hooks_changed(self, on: bool) -> None:
        """Hooks were installed or removed (:mod:`chorde.observe`): switch paths."""
        self.observed = on
        self.rebind(observed=on)

    def stats_items(self) -> list[tuple[str, str, CacheInfo]]:
        """For :func:`chorde.observe.snapshot`."""
        return [(FUNCTION, self.name, self.cache_info())]

    def cache_info(self) -> CacheInfo:
        """The function's counters."""
        return self.counters.info(self.fast_hits())

    def _emit(self, kind: str, started: float) -> None:
        observe.emit(kind, self.name, _clock() - started)

    # ---- edges: what the blocking and the asyncio drivers do differently -------------
    #
    # Each operation below is written once, as a generator of steps (chorde.clients.steps):
    # it yields ``(client, name, args)`` calls, which the blocking driver makes with
    # ``client.name(...)`` and the asyncio one with ``await client.aname(...)``. What really
    # differs between the two (running the function, starting and joining a computation:
    # executor and Futures, or tasks on the running loop) is a pair of edge methods of the
    # core, ``name``/``aname``, yielded as steps too. Their results come back in 1-tuples:
    # the blocking driver turns an iterator a call returns into a list.

    def call_fn(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any]:
        """Run the function (the edge of a step ``(core, "call_fn", (args, kwargs))``)."""
        return (self.fn(*args, **kwargs),)

    async def acall_fn(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any]:
        """Await the coroutine function."""
        return (await self.fn(*args, **kwargs),)

    # ---- reads -----------------------------------------------------------------

    def read(
        self, ckey: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, float, Any]:
        """``(value, ttl_left, guard)`` of a call's entry; a miss is ``(_MISS, -1.0, ...)``.

        ``guard`` is None for unguarded functions, else ``(record keys, revisions read)``:
        an entry stamped with other revisions than the records' is a miss (never stale).

        :meth:`_read` with blocking calls, made here rather than by driving its steps: this
        is a guarded function's hit path and the misses' rechecks (driving steps made a
        tagged function's in-process hit 2.8 us -> 3.8 us).
        """
        keys = self.guards(args, kwargs) if self.guarded else None
        try:
            if keys is None:
                value, ttl_left = self.client.getTtl(ckey, _MISS)
                return value, ttl_left, None
            revisions = self.view.current(keys)
            if revisions is not None:
                value, ttl_left = self.client.getTtl(ckey, _MISS)
                found = _vouched(value, ttl_left, keys, revisions)
                if found is not None:
                    return found
            started = generation()
            if self.batch:
                pairs = list(self.client.getTtlMulti([ckey, *keys], _MISS))
            else:
                getTtl = self.client.getTtl
                pairs = [(k, getTtl(k, _MISS)) for k in (ckey, *keys)]
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)
            raise  # unreachable
        found = _verified(pairs, keys)
        self.view.note(keys, found[2][1], started)
        return found

    async def aread(
        self, ckey: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, float, Any]:
        """Awaitable :meth:`read`."""
        return await arun(self._read(ckey, args, kwargs))

    def _read(
        self, ckey: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Steps[tuple[Any, float, Any]]:
        """:meth:`read` as steps."""
        client = self.client
        keys = self.guards(args, kwargs) if self.guarded else None
        try:
            if keys is None:
                value, ttl_left = yield (client, "getTtl", (ckey, _MISS))
                return value, ttl_left, None
            revisions = self.view.current(keys)
            if revisions is not None:
                value, ttl_left = yield (client, "getTtl", (ckey, _MISS))
                found = _vouched(value, ttl_left, keys, revisions)
                if found is not None:
                    return found
            started = generation()
            if self.batch:
                pairs = yield (client, "getTtlMulti", ([ckey, *keys], _MISS))
            else:
                pairs = []
                for k in (ckey, *keys):
                    pairs.append((k, (yield (client, "getTtl", (k, _MISS)))))
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)
            raise  # unreachable
        found = _verified(pairs, keys)
        self.view.note(keys, found[2][1], started)
        return found

    def revisions(self, guard: Any) -> tuple[int, ...] | None:
        """The revisions to stamp a new entry with (records made where missing)."""
        if guard is None or None not in guard[1]:  # (the miss path: no steps to drive)
            return None if guard is None else guard[1]
        return run(self._revisions(guard))

    async def arevisions(self, guard: Any) -> tuple[int, ...] | None:
        """Awaitable :meth:`revisions`."""
        return await arun(self._revisions(guard))

    def _revisions(self, guard: Any) -> Steps[tuple[int, ...] | None]:
        if guard is None:
            return None
        keys, revisions = guard
        if None not in revisions:
            return revisions  # type: ignore[no-any-return]  # a tuple of ints, from _verified
        started = generation()
        result: tuple[int, ...] = yield from on(
            self.client, revisions_steps(keys, dict(zip(keys, revisions, strict=True)))
        )
        self.view.note(keys, result, started)
        return result

    # ---- writes ----------------------------------------------------------------

    def store(
        self, ckey: Hashable, value: Any, revisions: tuple[int, ...] | None, epoch: int = -1
    ) -> None:
        """Put a computed value as the policy says (ttl with jitter, condition, stamp); a
        failing client is logged, not raised. ``epoch``: the space's when the computation
        started (an invalidation since then drops what is stored).

        :meth:`_store` with blocking calls, made here rather than by driving its steps: this
        is the miss path (driving steps made a lone in-process miss 2.2 us -> 3.1 us).
        """
        ttl = self.store_ttl(value)
        if not ttl > 0:
            return
        try:
            self.client.put(ckey, value if revisions is None else Stamped(value, revisions), ttl)
            space = self.space
            if space is not None and epoch >= 0 and space.epoch != epoch:
                self.client.delete(ckey)
        except TypeError:
            raise
        except Exception:
            logger.exception("%s: storing a computed value failed", self.name)

    async def astore(
        self, ckey: Hashable, value: Any, revisions: tuple[int, ...] | None, epoch: int = -1
    ) -> None:
        """Awaitable :meth:`store`."""
        await arun(self._store(ckey, value, revisions, epoch))

    def _store(
        self, ckey: Hashable, value: Any, revisions: tuple[int, ...] | None, epoch: int = -1
    ) -> Steps[None]:
        ttl = self.store_ttl(value)
        if not ttl > 0:
            return
        try:
            yield (
                self.client,
                "put",
                (ckey, value if revisions is None else Stamped(value, revisions), ttl),
            )
            space = self.space
            if space is not None and epoch >= 0 and space.epoch != epoch:
                yield (self.client, "delete", (ckey,))
        except TypeError:
            raise
        except Exception:
            logger.exception("%s: storing a computed value failed", self.name)

    def epoch(self) -> int:
        return self.space.epoch if self.space is not None else -1

    # ---- sync paths ------------------------------------------------------------

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any], stale_ok: bool) -> Any:
        """A full cached call (the wrapper inlines the hit path of this)."""
        if not self.observed:
            return self._call(args, kwargs, stale_ok)[0]
        return self.timed_call(args, kwargs, stale_ok, _clock())

    def timed_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], stale_ok: bool, started: float
    ) -> Any:
        """:meth:`call` with hooks installed: an event for the call, timed from ``started``."""
        try:
            value, kind = self._call(args, kwargs, stale_ok)
        except Exception:
            self._emit(ERROR, started)
            raise
        self._emit(kind, started)
        return value

    def plain_miss(self, ckey: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A miss of the wrapper without refresh window: counted and computed; with hooks
        installed, an event timed from here (its lookup was timed by the wrapper's timed_get).
        """
        self.counters.misses += 1
        if not self.observed:
            return self.compute_once(ckey, None, args, kwargs)
        started = _clock()
        try:
            value = self.compute_once(ckey, None, args, kwargs)
        except Exception:
            self._emit(ERROR, started)
            raise
        self._emit(MISS, started)
        return value

    def _call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], stale_ok: bool
    ) -> tuple[Any, str]:
        ckey = self.key(args, kwargs)
        value, ttl_left, guard = self.read(ckey, args, kwargs)
        if ttl_left > self.threshold:
            self.counters.hits += 1
            return value, HIT
        return self._slow(ckey, value, ttl_left, guard, args, kwargs, stale_ok)

    def slow(
        self,
        ckey: Hashable,
        value: Any,
        ttl_left: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale_ok: bool,
    ) -> Any:
        """Everything but a fresh hit, for the wrapper's hit path (unguarded functions)."""
        return self._slow(ckey, value, ttl_left, None, args, kwargs, stale_ok)[0]

    def _slow(
        self,
        ckey: Hashable,
        value: Any,
        ttl_left: float,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale_ok: bool,
    ) -> tuple[Any, str]:
        """Refresh window, stale entry, miss: the value and how the call was answered."""
        counters = self.counters
        if ttl_left > 0 or (stale_ok and value is not _MISS):
            return self._held(ckey, value, ttl_left, guard, args, kwargs, self.refresh_bg)
        counters.misses += 1
        try:
            if stale_ok:
                return self._wait(
                    self.refresh_bg(ckey, guard, args, kwargs, background=False)
                ), MISS
            return self.compute_once(ckey, guard, args, kwargs), MISS
        except Exception:
            if not self._serves_stale(value, ttl_left):
                raise
            return self._stale_served(value, args)

    def _held(
        self,
        ckey: Hashable,
        value: Any,
        ttl_left: float,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        refresh_bg: Callable[[Hashable, Any, tuple[Any, ...], dict[str, Any]], Any],
    ) -> tuple[Any, str]:
        """A held entry answers (in the refresh window, or stale for ``bg()``) while
        ``refresh_bg`` (the pool's, or the running loop's) refreshes it in the background."""
        refresh_bg(ckey, guard, args, kwargs)
        if ttl_left > 0:
            self.counters.hits += 1
            return value, HIT
        self.counters.stale += 1
        return value, STALE

    def _serves_stale(self, value: Any, ttl_left: float) -> bool:
        """``stale_if_error``: whether a held entry may answer when computing it failed."""
        window = self.stale_if_error
        return window is not None and value is not _MISS and -ttl_left <= window

    def _stale_served(self, value: Any, args: tuple[Any, ...]) -> tuple[Any, str]:
        """The stale entry answers for a failed computation (called while handling it)."""
        self.counters.stale += 1
        logger.warning(
            "%s%s: serving a stale value, the computation failed",
            self.name,
            reprlib.repr(args),
            exc_info=True,
        )
        return value, STALE

    def _wait(self, flight: Flight) -> Any:
        if flight.owner == threading.get_ident():
            raise RuntimeError(f"{self.name} called itself with the same arguments")
        # A pool thread waiting for a job still queued behind it could deadlock a saturated
        # pool: it runs the job itself instead.
        runner = flight.runner
        if runner is not None and _compute.in_worker() and self.flights.take(flight):
            return runner()
        return flight.result()

    def compute_once(
        self, ckey: Hashable, guard: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Compute in this thread, or wait for the thread already computing this key.

        The flight is a pending list until a second caller comes (see
        :meth:`Flights.begin`): a lone miss makes no Future.
        """
        flights = self.flights
        for _ in range(_BEGIN_ATTEMPTS):
            flight = flights.begin(ckey)
            if isinstance(flight, list):
                return self._fly(ckey, flight, guard, args, kwargs, 0.0)
            if flight is not None:
                flight.background = False
                self.counters.coalesced += 1
                return self._wait(flight)
            # The flight found ended just now: its value is there to read.
            if self.guarded:
                value, ttl_left, guard = self.read(ckey, args, kwargs)
            else:
                value, ttl_left = self.client.getTtl(ckey, _MISS)
            if ttl_left > 0:
                return value
        flight, _ = flights.claim(ckey)  # (flights keep ending under us: wait or run one)
        if flight.owner is None and flights.take(flight):
            return self._fly(ckey, flight, guard, args, kwargs, 0.0)
        return self._wait(flight)

    def _fly(
        self,
        ckey: Hashable,
        flight: Flight | Pending,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float | None,
        refresh: bool = False,
    ) -> Any:
        """Run a claimed flight (a :class:`Flight`, or the pending list of a lone miss):
        compute, store, then resolve every waiter."""
        started = _clock() if refresh and self.observed else 0.0
        try:
            value = _MISS
            if self.leases is not None:
                value = run(self._leased(ckey, flight, guard, args, kwargs, recheck))
            elif self.coordinate is not None:
                value = run(self._coordinated(ckey, guard, args, kwargs, recheck))
            else:
                if recheck is not None and (
                    not isinstance(flight, list) or self.flights.ended_lately(ckey)
                ):
                    # Another flight may have stored the value between our miss and our
                    # claim (and the revisions may have moved).
                    if self.guarded:
                        held, ttl_left, guard = self.read(ckey, args, kwargs)
                    else:
                        held, ttl_left = self.client.getTtl(ckey, _MISS)
                    if ttl_left > recheck:
                        value = held
                if value is _MISS:
                    space = self.space
                    epoch = space.epoch if space is not None else -1
                    revisions = None if guard is None else self.revisions(guard)
                    value = self.fn(*args, **kwargs)
                    self.store(ckey, value, revisions, epoch)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.counters.errors += 1
                if not isinstance(flight, list) and flight.background:
                    # Logged before waiters wake: nobody asked for this result.
                    logger.exception(
                        "%s%s: background computation failed", self.name, reprlib.repr(args)
                    )
                if started:
                    self._emit(ERROR, started)
            if isinstance(flight, list):
                self.flights.end(ckey, flight, None, exc)
            else:
                self.flights.release(ckey, flight)
                flight.set_exception(exc)
            raise
        if isinstance(flight, list):
            self.flights.end(ckey, flight, value)
        else:
            self.flights.release(ckey, flight)
            flight.set_result(value)
        if started:
            self._emit(REFRESH, started)
        return value

    def _coordinated(
        self,
        ckey: Hashable,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float | None,
    ) -> Steps[Any]:
        """Compute once per cluster with the coherent client's ``compute_once``."""
        revisions = yield from self._revisions(guard)
        ran: list[Any] = []
        for attempt in range(2):
            try:
                call = (ckey, revisions, ran, args, kwargs, recheck)
                (got,) = yield (self, "coordinate_call", call)
            except _NotStored as not_stored:
                self.counters.claims += 1
                return not_stored.value
            if ran:
                self.counters.claims += 1
                if self.ttl_fn is not None:
                    stored = got.value if revisions is not None else got
                    yield from self._store(ckey, stored, revisions)
            if revisions is None:
                return got
            if type(got) is Stamped and got.revisions == revisions:
                return got.value
            # Another process's result, stamped before an invalidation: compute anew.
            recheck = None if attempt == 0 else recheck
        (value,) = yield (self, "call_fn", (args, kwargs))
        yield from self._store(ckey, value, revisions)
        return value

    def coordinate_call(
        self,
        ckey: Hashable,
        revisions: tuple[int, ...] | None,
        ran: list[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float | None,
    ) -> tuple[Any]:
        """Edge: the coherent client's ``compute_once``, computing with the function."""
        assert self.coordinate is not None

        def compute() -> Any:
            return self._coordinated_entry(self.fn(*args, **kwargs), revisions, ran)

        return (self.coordinate(ckey, compute, self._coordinated_ttl(), recheck),)

    async def acoordinate_call(
        self,
        ckey: Hashable,
        revisions: tuple[int, ...] | None,
        ran: list[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float | None,
    ) -> tuple[Any]:
        """Edge: the coherent client's ``acompute_once``, awaiting the function."""
        assert self.acoordinate is not None

        async def compute() -> Any:
            return self._coordinated_entry(await self.fn(*args, **kwargs), revisions, ran)

        return (await self.acoordinate(ckey, compute, self._coordinated_ttl(), recheck),)

    def _coordinated_entry(
        self, value: Any, revisions: tuple[int, ...] | None, ran: list[Any]
    ) -> Any:
        """What a coordinated computation stores for ``value`` (noted in ``ran``)."""
        ttl = self.store_ttl(value)
        ran.append(ttl)
        if not ttl > 0:
            raise _NotStored(value)
        return value if revisions is None else Stamped(value, revisions)

    def _lease_terms(
        self, revisions: tuple[int, ...] | None, recheck: float | None
    ) -> tuple[Callable[[Any, float], bool], Callable[[Any], bool]]:
        """``(accept, usable)`` for a leased computation: an entry held is the answer when
        it has more than ``recheck`` seconds left and carries ``revisions`` (a guarded
        function's, records made where missing, so every process expects the same); a stale
        one may be served when it carries them."""
        fresh = 0.0 if recheck is None else recheck
        if revisions is None:
            return (lambda value, ttl: ttl > fresh), (lambda value: True)

        def usable(value: Any) -> bool:
            return type(value) is Stamped and value.revisions == revisions

        return (lambda value, ttl: ttl > fresh and usable(value)), usable

    def _leased(
        self,
        ckey: Hashable,
        flight: Flight | Pending | _ARun,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float | None,
    ) -> Steps[Any]:
        """Compute once per cluster with the client's leases (:mod:`chorde.leases`): one
        caller computes, the others wait for its value, or take the stale one held when
        this is a background refresh (``recheck`` None: a forced one)."""
        revisions = yield from self._revisions(guard)
        accept, usable = self._lease_terms(revisions, recheck)
        serve_stale = None
        if not isinstance(flight, list):
            background = flight  # (a refresh nobody waits for, until someone does)
            serve_stale = lambda held: background.background and usable(held)  # noqa: E731
        call = (ckey, revisions, accept, serve_stale, recheck is None, args, kwargs)
        outcome, value = yield (self, "lease_call", call)
        if outcome == WON:
            self.counters.claims += 1
        elif guard is not None and outcome in HELD:
            value = value.value  # (held, as stored: stamped)
        return value

    def lease_call(
        self,
        ckey: Hashable,
        revisions: tuple[int, ...] | None,
        accept: Callable[[Any, float], bool],
        serve_stale: Callable[[Any], bool] | None,
        force: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[str, Any]:
        """Edge: :func:`chorde.leases.leased_call`, computing with the function."""

        def compute() -> Computed:
            return self._computed(self.fn(*args, **kwargs), revisions)

        return leased_call(self.leases, ckey, compute, accept, serve_stale=serve_stale, force=force)

    async def alease_call(
        self,
        ckey: Hashable,
        revisions: tuple[int, ...] | None,
        accept: Callable[[Any, float], bool],
        serve_stale: Callable[[Any], bool] | None,
        force: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[str, Any]:
        """Edge: :func:`chorde.leases.aleased_call`, awaiting the function."""

        async def compute() -> Computed:
            return self._computed(await self.fn(*args, **kwargs), revisions)

        return await aleased_call(
            self.leases, ckey, compute, accept, serve_stale=serve_stale, force=force
        )

    def _computed(self, value: Any, revisions: tuple[int, ...] | None) -> Computed:
        """A leased computation's ``(value, stored, ttl)``."""
        return (
            value,
            value if revisions is None else Stamped(value, revisions),
            self.store_ttl(value),
        )

    def _coordinated_ttl(self) -> float:
        return _PROVISIONAL_TTL if self.ttl_fn is not None else self.store_ttl(None)

    def _submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        executor = self.executor or _compute.default_executor()
        return executor.submit(fn, *args)

    def refresh_bg(
        self,
        ckey: Hashable,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        background: bool = True,
        force: bool = False,
    ) -> Flight:
        """Start a computation of ``ckey`` on the pool unless one is already in flight.

        Unless ``force``, the job first rechecks the cache and skips computing when another
        process or thread refreshed the entry meanwhile.
        """
        flight, owner = self.flights.claim(ckey)
        if not owner:
            if not background:
                flight.background = False
                self.counters.coalesced += 1
            return flight
        flight.background = background
        if background:
            self.counters.refreshes += 1
        recheck = None if force else self.threshold
        flight.runner = functools.partial(
            self._fly, ckey, flight, guard, args, kwargs, recheck, background
        )
        try:
            self._submit(self._bg_job, flight)
        except Exception as exc:  # a shut-down executor, typically
            self.flights.release(ckey, flight)
            flight.set_exception(exc)
            logger.error("%s: cannot schedule a background computation: %s", self.name, exc)
        return flight

    def _bg_job(self, flight: Flight) -> None:
        runner = flight.runner  # set by refresh_bg before it submits this job
        if runner is None or not self.flights.take(flight):
            return  # a waiting pool thread ran it already
        with contextlib.suppress(Exception):  # delivered to waiters, logged by _fly
            _compute.run_as_worker(runner)

    def peek(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The live cached value, or CacheMissError; never computes."""
        ckey = self.key(args, kwargs)
        value, ttl_left, _ = self.read(ckey, args, kwargs)
        return _peeked(ckey, value, ttl_left)

    async def apeek(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Awaitable :meth:`peek`."""
        ckey = self.key(args, kwargs)
        value, ttl_left, _ = await self.aread(ckey, args, kwargs)
        return _peeked(ckey, value, ttl_left)

    def lazy(self, args: tuple[Any, ...], kwargs: dict[str, Any], compute: bool) -> Any:
        """The cached value or CacheMissError, never waiting; ``compute``: start it on a miss."""
        ckey = self.key(args, kwargs)
        found = self.read(ckey, args, kwargs)
        return self._lazy(ckey, found, args, kwargs, compute, self.refresh_bg)

    async def alazy(self, args: tuple[Any, ...], kwargs: dict[str, Any], compute: bool) -> Any:
        """Awaitable :meth:`lazy`; background work runs as tasks on the running loop."""
        ckey = self.key(args, kwargs)
        found = await self.aread(ckey, args, kwargs)
        return self._lazy(ckey, found, args, kwargs, compute, self.arefresh_bg)

    def _lazy(
        self,
        ckey: Hashable,
        found: tuple[Any, float, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        compute: bool,
        refresh_bg: Callable[[Hashable, Any, tuple[Any, ...], dict[str, Any]], Any],
    ) -> Any:
        """:meth:`lazy` once the entry is read; ``refresh_bg`` starts a background
        computation (on the pool, or as a task on the running loop)."""
        value, ttl_left, guard = found
        if ttl_left > self.threshold:
            return value
        if ttl_left > 0 or (compute and value is not _MISS):
            refresh_bg(ckey, guard, args, kwargs)
            return value
        if compute:
            refresh_bg(ckey, guard, args, kwargs)
        raise CacheMissError(ckey)

    def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Recompute now, store (as the policy says) and return: a forced update."""
        return run(self._refresh(args, kwargs))

    async def arefresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Awaitable :meth:`refresh`."""
        return await arun(self._refresh(args, kwargs))

    def _refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps[Any]:
        started = _clock() if self.observed else 0.0
        ckey = self.key(args, kwargs)
        self.counters.misses += 1
        try:
            guard = None
            if self.guarded:
                guard = (yield from self._read(ckey, args, kwargs))[2]
            epoch = self.epoch()
            revisions = yield from self._revisions(guard)
            (value,) = yield (self, "call_fn", (args, kwargs))
            try:
                yield from self._store(ckey, value, revisions, epoch)
            except TypeError as exc:
                self._raise_key_error(args, kwargs, exc)
        except Exception:
            self.counters.errors += 1
            if started:
                self._emit(ERROR, started)
            raise
        if started:
            self._emit(MISS, started)
        return value

    def refresh_later(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """``.bg().refresh(...)``: a forced computation on the pool, as a Future."""
        out: Future[Any] = Future()
        try:
            ckey = self.key(args, kwargs)
            guard = self.read(ckey, args, kwargs)[2] if self.guarded else None
            chain(self.refresh_bg(ckey, guard, args, kwargs, force=True), out)
        except Exception as exc:
            out.set_exception(exc)
        return out

    def forced_bg(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``.bg().forced()(...)``: what is held, at once, while a refresh is forced."""
        return run(self._forced_bg(args, kwargs))

    async def aforced_bg(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Awaitable :meth:`forced_bg`: the refresh runs as a task on the running loop."""
        return await arun(self._forced_bg(args, kwargs))

    def _forced_bg(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps[Any]:
        ckey = self.key(args, kwargs)
        value, _, guard = yield from self._read(ckey, args, kwargs)
        held = value is not _MISS
        (flight,) = yield (self, "force", (ckey, guard, args, kwargs, held))
        if held:
            return value
        self.counters.misses += 1
        (value,) = yield (self, "join", (flight,))
        return value

    def force(
        self,
        ckey: Hashable,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        background: bool,
    ) -> tuple[Flight]:
        """Edge: a forced computation on the pool (joined by :meth:`join`)."""
        return (self.refresh_bg(ckey, guard, args, kwargs, background=background, force=True),)

    async def aforce(
        self,
        ckey: Hashable,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        background: bool,
    ) -> tuple[_ARun]:
        """Edge: a forced computation as a task on the running loop, unless one runs."""
        loop = asyncio.get_running_loop()
        run = self.aflights.get(ckey)
        if run is None or run.task.get_loop() is not loop or run.task.done():
            if background:
                self.counters.refreshes += 1
            run = self._astart(ckey, guard, args, kwargs, None, background, loop)
        return (run,)

    def join(self, flight: Flight) -> tuple[Any]:
        """Edge: wait for a computation's value."""
        return (self._wait(flight),)

    async def ajoin(self, run: _ARun) -> tuple[Any]:
        """Edge: await a computation's value (a cancelled caller leaves it running)."""
        return (await asyncio.shield(run.task),)

    def put(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
        """Store an explicit value for these arguments (its ttl as the policy says)."""
        run(self._put(args, kwargs, value))

    async def aput(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
        """Awaitable :meth:`put`."""
        await arun(self._put(args, kwargs, value))

    def _put(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> Steps[None]:
        ckey = self.key(args, kwargs)
        try:
            guard = None
            if self.guarded:
                guard = (yield from self._read(ckey, args, kwargs))[2]
            revisions = yield from self._revisions(guard)
            yield from self._store(ckey, value, revisions)
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Delete the entry for these arguments."""
        run(self._drop("delete", args, kwargs))

    async def ainvalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Awaitable :meth:`invalidate`."""
        await arun(self._drop("delete", args, kwargs))

    def expire(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Mark the entry stale: plain calls recompute, ``.bg()`` serves it while refreshing."""
        run(self._drop("expire", args, kwargs))

    async def aexpire(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Awaitable :meth:`expire`."""
        await arun(self._drop("expire", args, kwargs))

    def _drop(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps[None]:
        """``delete`` or ``expire`` the entry for these arguments."""
        try:
            yield (self.client, name, (self.key(args, kwargs),))
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)

    def invalidate_all(self) -> None:
        """Drop every result of the function (of its namespace, on its client)."""
        run(self._invalidate_all())

    async def ainvalidate_all(self) -> None:
        """Awaitable :meth:`invalidate_all`."""
        await arun(self._invalidate_all())

    def _invalidate_all(self) -> Steps[None]:
        space = self.space
        if space is None:
            yield from on(self.client, bump_steps([self.fn_key]))
            return
        _invalidate_space(self.client, self.namespace, space, self.table)

    def fcall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """``.future()(...)``: cache access inline for non-blocking clients, else on the pool."""
        out: Future[Any] = Future()
        kind: list[str] = []
        if self.observed:
            started = _clock()

            def emit(done: concurrent.futures.Future[Any]) -> None:
                bad = done.cancelled() or done.exception() is not None
                self._emit(ERROR if bad or not kind else kind[0], started)

            out.add_done_callback(emit)
        if getattr(self.client, "blocking", True):
            try:
                self._submit(self._fjob, out, args, kwargs, kind)
            except Exception as exc:
                out.set_exception(exc)
        else:
            self._fjob(out, args, kwargs, kind)
        return out

    def _fjob(
        self, out: Future[Any], args: tuple[Any, ...], kwargs: dict[str, Any], kind: list[str]
    ) -> None:
        counters = self.counters
        try:
            ckey = self.key(args, kwargs)
            value, ttl_left, guard = self.read(ckey, args, kwargs)
            if ttl_left > self.threshold:
                counters.hits += 1
                kind.append(HIT)
                out.set_result(value)
            elif ttl_left > 0 or value is not _MISS:
                self.refresh_bg(ckey, guard, args, kwargs)
                if ttl_left > 0:
                    counters.hits += 1
                    kind.append(HIT)
                else:
                    counters.stale += 1
                    kind.append(STALE)
                out.set_result(value)
            else:
                counters.misses += 1
                kind.append(MISS)
                chain(self.refresh_bg(ckey, guard, args, kwargs, background=False), out)
        except Exception as exc:
            if not out.done():  # its holder may have cancelled it
                out.set_exception(exc)

    def finline(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run a cache-only operation as a Future: inline unless the client blocks."""
        if getattr(self.client, "blocking", True):
            return self.fpool(fn, *args)
        try:
            return completed(fn(*args))
        except Exception as exc:
            return failed(exc)

    def fpool(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn`` on the pool, as a chorde Future."""
        out: Future[T] = Future()
        try:
            chain(self._submit(fn, *args), out)
        except Exception as exc:
            out.set_exception(exc)
        return out

    # ---- async paths (coroutine functions) -------------------------------------

    async def acall(self, args: tuple[Any, ...], kwargs: dict[str, Any], stale_ok: bool) -> Any:
        """A full cached call of a coroutine function."""
        if not self.observed:
            return (await self._acall(args, kwargs, stale_ok))[0]
        started = _clock()
        try:
            value, kind = await self._acall(args, kwargs, stale_ok)
        except Exception:
            self._emit(ERROR, started)
            raise
        self._emit(kind, started)
        return value

    async def aobserved_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A plain call of a coroutine function with hooks installed (the wrapper's path)."""
        return await self.acall(args, kwargs, False)

    async def _acall(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], stale_ok: bool
    ) -> tuple[Any, str]:
        ckey = self.key(args, kwargs)
        value, ttl_left, guard = await self.aread(ckey, args, kwargs)
        if ttl_left > self.threshold:
            self.counters.hits += 1
            return value, HIT
        return await self._aslow(ckey, value, ttl_left, guard, args, kwargs, stale_ok)

    async def aslow(
        self,
        ckey: Hashable,
        value: Any,
        ttl_left: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale_ok: bool,
    ) -> Any:
        """Awaitable :meth:`slow`."""
        return (await self._aslow(ckey, value, ttl_left, None, args, kwargs, stale_ok))[0]

    async def _aslow(
        self,
        ckey: Hashable,
        value: Any,
        ttl_left: float,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale_ok: bool,
    ) -> tuple[Any, str]:
        """Awaitable :meth:`_slow`: the computation is a task on the running loop."""
        if ttl_left > 0 or (stale_ok and value is not _MISS):
            return self._held(ckey, value, ttl_left, guard, args, kwargs, self.arefresh_bg)
        counters = self.counters
        counters.misses += 1
        loop = asyncio.get_running_loop()
        run = self.aflights.get(ckey)
        if run is None or run.task.get_loop() is not loop:
            run = self._astart(ckey, guard, args, kwargs, 0.0, False, loop)
        elif run.task is asyncio.current_task():
            raise RuntimeError(f"{self.name} awaited itself with the same arguments")
        else:
            run.background = False
            counters.coalesced += 1
        try:
            # shield: a cancelled caller must not cancel the computation others wait for.
            return await asyncio.shield(run.task), MISS
        except Exception:
            if not self._serves_stale(value, ttl_left):
                raise
            return self._stale_served(value, args)

    def _astart(
        self,
        ckey: Hashable,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float | None,
        background: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> _ARun:
        run = _ARun(background)
        current = self.aflights.get(ckey)
        if current is None or current.task.done():
            self.aflights[ckey] = run
        run.task = loop.create_task(self._arun(run, ckey, guard, args, kwargs, recheck))
        run.task.add_done_callback(_consume)
        return run

    async def _arun(
        self,
        run: _ARun,
        ckey: Hashable,
        guard: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float | None,
    ) -> Any:
        refresh = run.background
        started = _clock() if refresh and self.observed else 0.0
        try:
            if self.leases is not None:
                value = await arun(self._leased(ckey, run, guard, args, kwargs, recheck))
            elif self.acoordinate is not None:
                value = await arun(self._coordinated(ckey, guard, args, kwargs, recheck))
            else:
                if recheck is not None:
                    held, ttl_left, guard = await self.aread(ckey, args, kwargs)
                    if ttl_left > recheck:
                        return held
                epoch = self.epoch()
                revisions = await self.arevisions(guard)
                value = await self.fn(*args, **kwargs)
                await self.astore(ckey, value, revisions, epoch)
        except Exception:
            self.counters.errors += 1
            if run.background:
                logger.exception(
                    "%s%s: background computation failed", self.name, reprlib.repr(args)
                )
            if started:
                self._emit(ERROR, started)
            raise
        finally:
            if self.aflights.get(ckey) is run:
                self.aflights.pop(ckey, None)  # pop: another loop's thread may race us
        if started:
            self._emit(REFRESH, started)
        return value

    def arefresh_bg(
        self, ckey: Hashable, guard: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Task[Any]:
        """Start a background computation task on the running loop unless one is running."""
        loop = asyncio.get_running_loop()
        run = self.aflights.get(ckey)
        if run is not None and run.task.get_loop() is loop and not run.task.done():
            return run.task
        self.counters.refreshes += 1
        return self._astart(ckey, guard, args, kwargs, self.threshold, True, loop).task


def _peeked(ckey: Hashable, value: Any, ttl_left: float) -> Any:
    """:meth:`_Core.peek` once the entry is read."""
    if ttl_left > 0:
        return value
    raise CacheMissError(ckey)


def _vouched(
    value: Any, ttl_left: float, keys: tuple[Hashable, ...], revisions: tuple[int, ...]
) -> tuple[Any, float, Any] | None:
    """A guarded read's answer from the entry alone, the view vouching for ``revisions``;
    None: the entry is stamped otherwise (older, or newer than the view): read the records."""
    if type(value) is not Stamped:
        return _MISS, -1.0, (keys, revisions)
    if value.revisions == revisions:
        return value.value, ttl_left, (keys, revisions)
    return None


def _verified(
    pairs: list[tuple[Hashable, Any]], keys: tuple[Hashable, ...]
) -> tuple[Any, float, Any]:
    """A guarded read's ``(value, ttl_left, guard)`` from ``getTtlMulti([ckey, *keys])``."""
    value, ttl_left = pairs[0][1]
    revisions = tuple(
        found if type(found) is int else None for _, (found, _ttl) in pairs[1 : len(keys) + 1]
    )
    guard = (keys, revisions)
    if type(value) is not Stamped or value.revisions != revisions:
        return _MISS, -1.0, guard
    return value.value, ttl_left, guard


def _invalidate_space(client: BaseCacheClient, namespace: str, space: _Space, table: Any) -> None:
    """``invalidate_all()`` on a process-private client (see :class:`_Space`)."""
    space.epoch += 1
    space.generation += 1
    for core in list(space.cores):
        core.rekey()
    if table is None:
        return
    # The namespace table holds the keys (namespace, *rest), each under rest itself, or
    # under its single element when that is not a tuple.
    for sub in list(table):
        rest = sub if type(sub) is tuple else (sub,)
        client.delete((namespace, *rest))
    client.delete((namespace,))


def _pop_put_value(kwargs: dict[str, Any]) -> Any:
    value = kwargs.pop("_cache_put", _MISS)
    if value is _MISS:
        raise TypeError("put() needs the value to store as the _cache_put= keyword argument")
    return value


class _SyncVariant:
    """A way of calling a cached (plain) function: plain, ``bg()`` or ``future()``, and
    ``forced()`` (each call recomputes).

    ``bound`` holds the instance for methods, prepended to the arguments.
    """

    __slots__ = ("_bound", "_core", "_forced", "_mode")

    def __init__(
        self, core: _Core, mode: int, bound: tuple[Any, ...] = (), forced: bool = False
    ) -> None:
        self._core = core
        self._mode = mode
        self._bound = bound
        self._forced = forced

    @property
    def client(self) -> Any:
        """The cache client."""
        return self._core.client

    def bg(self) -> _SyncVariant:
        """Serve what the cache holds (even stale) and compute on the background pool."""
        return type(self)(self._core, _BG, self._bound, self._forced)

    async_ = bg

    def future(self) -> _SyncVariant:
        """Return chorde Futures instead of results; the caller never blocks."""
        return type(self)(self._core, _FUTURE, self._bound, self._forced)

    def forced(self) -> _SyncVariant:
        """Calls that recompute and store whatever is cached (a forced update); with
        ``bg()`` they return what is held at once and refresh it in the background."""
        return type(self)(self._core, self._mode, self._bound, True)

    def cache_info(self) -> CacheInfo:
        """The function's counters (:class:`~chorde.observe.CacheInfo`)."""
        return self._core.cache_info()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        core = self._core
        args = self._bound + args
        if self._forced:
            if self._mode == _BG:
                return core.forced_bg(args, kwargs)
            if self._mode == _FUTURE:
                return core.fpool(core.refresh, args, kwargs)
            return core.refresh(args, kwargs)
        if self._mode == _FUTURE:
            return core.fcall(args, kwargs)
        return core.call(args, kwargs, self._mode == _BG)

    def _cache_op(self, op: Callable[..., Any], args: tuple[Any, ...], *rest: Any) -> Any:
        """Run a cache-only operation of the core now, or as a Future for ``future()``."""
        args = self._bound + args
        if self._mode == _FUTURE:
            return self._core.finline(op, args, *rest)
        return op(args, *rest)

    def peek(self, *args: Any, **kwargs: Any) -> Any:
        """The cached value or CacheMissError; never computes."""
        return self._cache_op(self._core.peek, args, kwargs)

    def lazy(self, *args: Any, **kwargs: Any) -> Any:
        """The cached value or CacheMissError; with bg()/future() a miss starts computing."""
        return self._cache_op(self._core.lazy, args, kwargs, self._mode != _PLAIN)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Recompute now and store; with bg()/future() returns a Future of the new value."""
        core = self._core
        args = self._bound + args
        if self._mode == _FUTURE:
            return core.fpool(core.refresh, args, kwargs)
        if self._mode == _BG:
            return core.refresh_later(args, kwargs)
        return core.refresh(args, kwargs)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        """Store ``_cache_put=value`` as the result for these arguments."""
        value = _pop_put_value(kwargs)
        return self._cache_op(self._core.put, args, kwargs, value)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        """Delete the cached entry for these arguments."""
        return self._cache_op(self._core.invalidate, args, kwargs)

    def expire(self, *args: Any, **kwargs: Any) -> Any:
        """Mark the entry stale (plain calls recompute, bg() serves it while refreshing)."""
        return self._cache_op(self._core.expire, args, kwargs)

    def invalidate_all(self) -> Any:
        """Drop every result of the function, in every process sharing the client."""
        core = self._core
        if self._mode == _FUTURE:
            return core.finline(core.invalidate_all)
        return core.invalidate_all()

    def uncached(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, bypassing the cache (neither read nor written)."""
        core = self._core
        args = self._bound + args
        if self._mode == _FUTURE:
            return core.fpool(lambda: core.fn(*args, **kwargs))
        return core.fn(*args, **kwargs)


class _AsyncVariant(_SyncVariant):
    """A way of calling a cached coroutine function; plain/bg methods return coroutines."""

    __slots__ = ()

    def _wrap(self, coro: Any) -> Any:
        return _afuture(coro) if self._mode == _FUTURE else coro

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        core = self._core
        args = self._bound + args
        if self._forced:
            if self._mode == _BG:
                return core.aforced_bg(args, kwargs)
            return self._wrap(core.arefresh(args, kwargs))
        return self._wrap(core.acall(args, kwargs, self._mode != _PLAIN))

    def peek(self, *args: Any, **kwargs: Any) -> Any:
        """The cached value or CacheMissError; never computes."""
        return self._wrap(self._core.apeek(self._bound + args, kwargs))

    def lazy(self, *args: Any, **kwargs: Any) -> Any:
        """The cached value or CacheMissError; with bg()/future() a miss starts computing."""
        return self._wrap(self._core.alazy(self._bound + args, kwargs, self._mode != _PLAIN))

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Recompute and store; with bg() it starts a task now and returns it."""
        core = self._core
        args = self._bound + args
        if self._mode == _BG:
            core.counters.refreshes += 1
            return asyncio.get_running_loop().create_task(core.arefresh(args, kwargs))
        return self._wrap(core.arefresh(args, kwargs))

    def put(self, *args: Any, **kwargs: Any) -> Any:
        """Store ``_cache_put=value`` as the result for these arguments."""
        value = _pop_put_value(kwargs)
        return self._wrap(self._core.aput(self._bound + args, kwargs, value))

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        """Delete the cached entry for these arguments."""
        return self._wrap(self._core.ainvalidate(self._bound + args, kwargs))

    def expire(self, *args: Any, **kwargs: Any) -> Any:
        """Mark the entry stale (plain calls recompute, bg() serves it while refreshing)."""
        return self._wrap(self._core.aexpire(self._bound + args, kwargs))

    def invalidate_all(self) -> Any:
        """Drop every result of the function, in every process sharing the client."""
        return self._wrap(self._core.ainvalidate_all())

    def uncached(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, bypassing the cache."""
        return self._wrap(self._core.fn(*self._bound, *args, **kwargs))


_VARIANT_ATTRS: tuple[str, ...] = (
    "bg",
    "async_",
    "future",
    "forced",
    "peek",
    "lazy",
    "refresh",
    "put",
    "invalidate",
)
_VARIANT_ATTRS += ("expire", "invalidate_all", "uncached", "cache_info")


class _CachedMethod:
    """Descriptor for cached functions defined in a class body: binds the variants too.

    ``obj.method(x)`` caches on ``(obj, x)`` (pass ``key=`` to leave ``obj`` out), and
    ``obj.method.peek(x)``, ``obj.method.bg()(x)`` ... pass ``obj`` along.
    """

    def __init__(self, wrapper: Callable[..., Any], core: _Core, variant: type) -> None:
        functools.update_wrapper(self, wrapper)
        self._wrapper = wrapper
        self._core = core
        self._variant = variant

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return self._wrapper
        return self._variant(self._core, _PLAIN, (obj,))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_wrapper":
            raise AttributeError(name)  # e.g. copy/pickle probing before __init__ ran
        return getattr(self._wrapper, name)

    def __repr__(self) -> str:
        return f"<cached method {self._core.name}>"


def _make_wrapper(core: _Core) -> Callable[..., Any]:
    # The hit path is inlined here with everything bound to locals: no locks, no attribute
    # lookups on the core, one client call. Hits are counted in a C double when compiled
    # (a float otherwise: CPython recycles floats, but allocates ints above 256), adding
    # 1.0: float + float is specialized by CPython, float + int is not.
    hits = cython.declare(cython.double, 0.0)
    head = core.head
    kw_head = core.kw_head
    client = core.client
    getTtl = client.getTtl
    threshold = core.threshold
    slow = core.slow
    raise_key_error = core._raise_key_error
    table = core.table
    # Called only with a table, which only a client with namespace_get makes.
    namespace_get: Any = getattr(client, "namespace_get", None)
    timed_call = core.timed_call
    name = core.name
    emit = observe.emit

    def observed(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The path every call takes while hooks are installed: timed, an event each.
        nonlocal hits
        started = _clock()
        if table is not None and args and not kwargs:
            try:
                value = namespace_get(table, args, threshold, _MISS)
            except TypeError:  # the full path raises it, naming the argument
                value = _MISS
            if value is not _MISS:
                hits += 1.0
                emit(HIT, name, _clock() - started)
                return value
        return timed_call(args, kwargs, False, started)

    get = client.get

    def timed_get(ckey: Hashable, default: Any) -> Any:
        # The lookup of the plain wrapper below while hooks are installed: a hit is an event
        # timed around it (a miss is timed by _Core.plain_miss), a failure an error event.
        started = _clock()
        try:
            value = get(ckey, default)
        except Exception:
            emit(ERROR, name, _clock() - started)
            raise
        if value is not default:
            emit(HIT, name, _clock() - started)
        return value

    # None with no hook installed; else the timed path.
    observe_call: Any = observed if core.observed else None
    # The plain wrapper's lookup: hooks are checked when they come and go, not per hit.
    lookup: Any = timed_get if core.observed else get

    def rebind(**changes: Any) -> None:
        nonlocal observe_call, lookup, head, kw_head
        if "observed" in changes:
            observe_call = observed if changes["observed"] else None
            lookup = timed_get if changes["observed"] else get
        if "head" in changes:
            head = changes["head"]
        if "kw_head" in changes:
            kw_head = changes["kw_head"]

    def fast_hits() -> float:
        return float(hits)

    core.rebind = rebind
    core.fast_hits = fast_hits

    if core.guarded:
        call = core.call

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return call(args, kwargs, False)

    elif core.keyfn is not None:
        key = core.key

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal hits
            if observe_call is not None:
                return observe_call(args, kwargs)
            ckey = key(args, kwargs)
            try:
                value, ttl_left = getTtl(ckey, _MISS)
            except TypeError as exc:
                raise_key_error(args, kwargs, exc)
            if ttl_left > threshold:
                hits += 1.0
                return value
            return slow(ckey, value, ttl_left, args, kwargs, False)

    elif table is not None or threshold or core.stale_if_error is not None:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal hits
            if observe_call is not None:
                return observe_call(args, kwargs)
            if table is not None and args and not kwargs:
                try:
                    value = namespace_get(table, args, threshold, _MISS)
                except TypeError as exc:
                    raise_key_error(args, kwargs, exc)
                if value is not _MISS:
                    hits += 1.0
                    return value
            # No table, a miss, a refresh due, keyword arguments or none at all.
            ckey = (kw_head, args, tuple(sorted(kwargs.items()))) if kwargs else head + args
            try:
                value, ttl_left = getTtl(ckey, _MISS)
            except TypeError as exc:
                raise_key_error(args, kwargs, exc)
            if ttl_left > threshold:
                hits += 1.0
                return value
            return slow(ckey, value, ttl_left, args, kwargs, False)

    else:
        # No refresh window: a plain call only needs a live value, which get() answers
        # more cheaply than getTtl(); anything else is computed now. No hook check on a hit:
        # with hooks installed, lookup is timed_get (see rebind). What the wrapper's closure
        # holds is copied into every call's frame: the miss path is one method.
        miss = core.plain_miss

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal hits
            ckey = (kw_head, args, tuple(sorted(kwargs.items()))) if kwargs else head + args
            try:
                value = lookup(ckey, _MISS)
            except TypeError as exc:
                raise_key_error(args, kwargs, exc)
            if value is not _MISS:
                hits += 1.0
                return value
            return miss(ckey, args, kwargs)

    return wrapper


def _make_async_wrapper(core: _Core) -> Callable[..., Any]:
    hits = cython.declare(cython.double, 0.0)
    key = core.key
    agetTtl = core.client.agetTtl
    threshold = core.threshold
    aslow = core.aslow
    raise_key_error = core._raise_key_error
    observe_call: Any = core.aobserved_call if core.observed else None

    def rebind(**changes: Any) -> None:
        nonlocal observe_call
        if "observed" in changes:
            observe_call = core.aobserved_call if changes["observed"] else None

    def fast_hits() -> float:
        return float(hits)

    core.rebind = rebind
    core.fast_hits = fast_hits

    if core.guarded:
        acall = core.acall

        async def guarded_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await acall(args, kwargs, False)

        return guarded_wrapper

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal hits
        if observe_call is not None:
            return await observe_call(args, kwargs)
        ckey = key(args, kwargs)
        try:
            value, ttl_left = await agetTtl(ckey, _MISS)
        except TypeError as exc:
            raise_key_error(args, kwargs, exc)
        if ttl_left > threshold:
            hits += 1.0
            return value
        return await aslow(ckey, value, ttl_left, args, kwargs, False)

    return wrapper


def _in_class_body(fn: Callable[..., Any]) -> bool:
    parts = getattr(fn, "__qualname__", "").split(".")
    return len(parts) > 1 and parts[-2] != "<locals>"


def _options(
    ttl: Any,
    async_ttl: Any,
    key: Any,
    namespace: Any,
    ttl_spread: Any,
    executor: Any,
    tags: Any = None,
    condition: Any = None,
    stale_if_error: Any = None,
) -> tuple[Any, float, float | None, Any, float | None]:
    """Validate :func:`cached`'s options: the ttl (or its function), the refresh threshold,
    the spread, the tags and the stale-if-error window."""
    if callable(ttl):
        fixed = None
    else:
        ttl = fixed = check_ttl(ttl)
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, got {ttl!r}")
    threshold = _threshold(fixed, async_ttl)
    spread = _spread(fixed, ttl_spread)
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable building the cache key, got {key!r}")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {namespace!r}")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit() method, got {executor!r}")
    if tags is not None and not callable(tags):
        tags = check_tags(tags)
    if condition is not None and not callable(condition):
        raise TypeError(f"condition must be a callable taking the result, got {condition!r}")
    if stale_if_error is not None:
        stale_if_error = check_ttl(stale_if_error, "stale_if_error")
    return ttl, threshold, spread, tags, stale_if_error


def check_options(
    ttl: float | Callable[[Any], float],
    async_ttl: float | None = None,
    *,
    key: Callable[..., Hashable] | None = None,
    namespace: str | None = None,
    ttl_spread: float | bool = True,
    executor: concurrent.futures.Executor | None = None,
    tags: Any = None,
    condition: Callable[[Any], Any] | None = None,
    stale_if_error: float | None = None,
) -> None:
    """Raise what :func:`cached` would for these options, before any client exists.

    For decorators that build their ``cached`` wrapper later (per application, per
    client) but should reject bad options where they are written.
    """
    _options(ttl, async_ttl, key, namespace, ttl_spread, executor, tags, condition, stale_if_error)


def cached(
    client: BaseCacheClient,
    ttl: float | Callable[[Any], float],
    async_ttl: float | None = None,
    *,
    key: Callable[..., Hashable] | None = None,
    namespace: str | None = None,
    ttl_spread: float | bool = True,
    executor: concurrent.futures.Executor | None = None,
    tags: Any = None,
    condition: Callable[[Any], Any] | None = None,
    stale_if_error: float | None = None,
    **legacy: Any,
) -> CachedDecorator:
    """Cache a function's results in ``client``; see the module docstring for the variants.

    :param client: a chorde cache client (any :class:`~chorde.clients.base.BaseCacheClient`).
    :param ttl: seconds a result lives; no plain call ever returns an older one. Must be > 0.
        Or a function of the result returning its ttl (0: do not store this one).
    :param async_ttl: refresh window. A hit with less than ``async_ttl`` seconds left
        (``ttl + async_ttl`` if negative; positive only with a ttl function) is served
        while a background refresh recomputes it. ``None`` (default): no window, an
        expired entry is recomputed on the next call.
    :param key: ``key(*args, **kwargs)`` returning the hashable part of the cache key, for
        arguments that are unhashable or should not all count (``self``, a connection).
    :param namespace: first element of every cache key; default ``module.qualname``, which
        is stable across processes, so a shared client shares results.
    :param ttl_spread: jitter so a fleet does not expire together: each stored ttl is
        shortened by a random amount up to this many seconds (``True``: ttl/10).
    :param executor: pool for background computations (default: a shared bounded pool,
        see :func:`set_default_executor`).
    :param tags: the groups each result belongs to, dropped together by
        :func:`chorde.tags.invalidate_tags`: a list of str, or ``tags(*args, **kwargs)``
        returning one (``lambda user_id: [f"user:{user_id}"]``).
    :param condition: ``condition(result)``: false means the result is returned (to every
        caller waiting for it) but not stored.
    :param stale_if_error: seconds: when the function raises, a plain call answers with
        the entry the client still holds if it expired less than this long ago (it is
        logged), instead of raising.

    The cache key is ``(namespace, *args)``, or ``((namespace, "**"), args, sorted kwargs
    items)`` when keyword arguments are passed, or ``(namespace, key(*args, **kwargs))``:
    tuples of the arguments, usable as they are by in-process clients and encodable by
    clients that serialize keys when the arguments are str/bytes/numbers/None/tuples.
    ``f.cache_key(*args, **kwargs)`` returns it.
    """
    if legacy:  # chorde 1.x's options: each refused, naming what replaced it
        _legacy.options("cached", legacy)
    missing = [m for m in _CLIENT_METHODS if not callable(getattr(client, m, None))]
    if missing:
        raise TypeError(f"client must be a chorde cache client, {client!r} lacks {missing}")
    ttl, threshold, spread, tags, stale_if_error = _options(
        ttl, async_ttl, key, namespace, ttl_spread, executor, tags, condition, stale_if_error
    )

    def decorate(fn: Callable[..., Any]) -> Any:
        if not callable(fn):
            raise TypeError(f"@cached decorates functions, got {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"@cached cannot cache generator function {fn.__qualname__}: "
                "its result is a one-shot iterator; return a list instead"
            )
        ns = namespace
        if ns is None:
            ns = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        core = _Core(
            fn,
            client,
            ttl,
            threshold,
            spread,
            ns,
            key,
            executor,
            tags=tags,
            condition=condition,
            stale_if_error=stale_if_error,
        )
        # A function carrying its variants as attributes: CachedFunction describes it.
        wrapper: Any
        if inspect.iscoroutinefunction(fn):
            wrapper = _make_async_wrapper(core)
            variant_cls: type = _AsyncVariant
        else:
            wrapper = _make_wrapper(core)
            variant_cls = _SyncVariant
        functools.update_wrapper(wrapper, fn)
        plain = variant_cls(core, _PLAIN)
        for attr in _VARIANT_ATTRS:
            setattr(wrapper, attr, getattr(plain, attr))
        wrapper.client = client
        wrapper.namespace = ns
        wrapper.cache_key = lambda *args, **kwargs: core.key(args, kwargs)
        wrapper._chorde_core = core
        wrapper.clear = wrapper.invalidate_all  # 1.x's name for it
        for attr, removed in _legacy.DECORATED_GONE.items():  # 1.x's on_value, on_promote
            setattr(wrapper, attr, _legacy.removed_call(f"{ns}.{attr}", removed))
        if _in_class_body(fn):
            return _CachedMethod(wrapper, core, variant_cls)
        return wrapper

    # decorate keeps each function's parameters and result type: see CachedDecorator.
    return cast(CachedDecorator, decorate)


if not TYPE_CHECKING:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        from chorde import _legacy

        return _legacy.attribute(__name__, name)
