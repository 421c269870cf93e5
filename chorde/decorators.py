"""The ``@cached`` decorator: caching as an optimization of an otherwise expensive function.

::

    @cached(client, ttl=300, async_ttl=-60)
    def expensive(x): ...

    expensive(1)                   # cached call: computes on a miss, at most once per key
    expensive.bg()(1)              # serve what is held (even stale), refresh in the background
    expensive.future()(1)          # a chorde Future (awaitable too); never blocks the caller:
                                   # lookups of blocking (network) clients run on the pool
    expensive.peek(1)              # cache only: value or CacheMissError, never computes
    expensive.lazy(1)              # cached value or CacheMissError, never waits
    expensive.bg().lazy(1)         # same, and a miss starts the computation in the background
    expensive.future().lazy(1)     # same, through a Future
    expensive.refresh(1)           # recompute now and store
    expensive.put(1, _cache_put=5) # store an explicit value
    expensive.invalidate(1)        # delete the entry; .expire(1) marks it stale instead
    expensive.uncached(1)          # call the function, bypassing the cache
    expensive.client               # the cache client

Coroutine functions (``async def``) get a coroutine wrapper: ``await expensive(1)``, and the
plain variants (``peek``, ``lazy``, ``refresh``, ``put``, ``invalidate``, ``expire``) are
coroutines too. Computations then run as tasks on the caller's loop, cache access goes
through the client's awaitable methods, so the loop is never blocked.

Freshness: entries live ``ttl`` seconds. ``async_ttl`` opens a refresh window: a hit with
less than ``async_ttl`` seconds left (``ttl + async_ttl`` when negative: ``-60`` means "older
than a minute") is returned at once while one background refresh per key recomputes it. A
plain call never returns an entry past its ttl; ``.bg()`` (and ``.future()``) also serve an
expired entry the client still holds, refreshing it in the background
(stale-while-revalidate).

Compute once: concurrent callers of one key wait for a single computation (per process; a
coherent client extends that to a cluster). Its exception reaches every waiter and is not
cached. Background refreshes run on a shared bounded thread pool (see
:func:`set_default_executor`, or pass ``executor=``); their failures are logged on the
``chorde.decorators`` logger and the old value stays until its ttl ends.
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
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar, cast

from chorde import _compute
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
from chorde._compute import Flight, Flights, set_default_executor
from chorde.clients.base import BaseCacheClient, check_ttl
from chorde.errors import CacheMissError
from chorde.futures import Future, chain, completed, failed
from chorde.keys import encode_key

__all__ = [
    "AsyncCachedFunction",
    "BackgroundAsyncCachedFunction",
    "BackgroundCachedFunction",
    "BoundAsyncCachedFunction",
    "BoundCachedFunction",
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


def _threshold(ttl: float, async_ttl: Any) -> float:
    """The ttl_left below which a hit triggers a refresh (0: no refresh window)."""
    if async_ttl is None:
        return 0.0
    if isinstance(async_ttl, bool) or not isinstance(async_ttl, int | float):
        raise TypeError(f"async_ttl must be a number of seconds or None, got {async_ttl!r}")
    if async_ttl == 0:
        return 0.0
    threshold = ttl + async_ttl if async_ttl < 0 else float(async_ttl)
    if not 0 < threshold < ttl:
        raise ValueError(
            f"async_ttl={async_ttl!r} must be None, 0, or strictly between -ttl and ttl "
            f"(ttl={ttl!r})"
        )
    return threshold


def _spread(ttl: float, ttl_spread: Any) -> float:
    if ttl_spread is True:
        return ttl / 10 if math.isfinite(ttl) else 0.0
    if ttl_spread is False or ttl_spread is None:
        return 0.0
    spread = check_ttl(ttl_spread, "ttl_spread")
    if spread >= ttl:
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


class _Core:
    """Everything a cached function needs: configuration, key building, the slow paths."""

    def __init__(
        self,
        fn: Callable[..., Any],
        client: BaseCacheClient,
        ttl: float,
        threshold: float,
        spread: float,
        namespace: str,
        keyfn: Callable[..., Hashable] | None,
        executor: concurrent.futures.Executor | None,
    ) -> None:
        self.fn = fn
        self.name = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', fn)}"
        self.client = client
        self.ttl = ttl
        self.threshold = threshold
        self.spread = spread
        self.namespace = namespace
        # Key heads (see cached()): flat keys hash and compare with the fewest steps, and a
        # tuple head can never equal the str head of a positional-only key.
        self.head = (namespace,)
        self.kw_head = (namespace, "**")
        self.keyfn = keyfn
        self.executor = executor
        self.flights = Flights()
        self.aflights: dict[Hashable, _ARun] = {}
        # A coherent client coordinates computations across processes (once per cluster).
        self.coordinate = getattr(client, "compute_once", None)
        self.acoordinate = getattr(client, "acompute_once", None)

    # ---- keys ------------------------------------------------------------------

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        """The cache key for a call; see :func:`cached`."""
        if self.keyfn is not None:
            return (self.namespace, self.keyfn(*args, **kwargs))
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

    # ---- sync paths ------------------------------------------------------------

    def lookup(
        self, ckey: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, float]:
        """``client.getTtl(ckey, _MISS)`` with key errors naming the argument."""
        try:
            return self.client.getTtl(ckey, _MISS)
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)
            raise  # unreachable

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any], stale_ok: bool) -> Any:
        """A full cached call (the wrapper inlines the hit path of this)."""
        ckey = self.key(args, kwargs)
        value, ttl_left = self.lookup(ckey, args, kwargs)
        if ttl_left > self.threshold:
            return value
        return self.slow(ckey, value, ttl_left, args, kwargs, stale_ok)

    def slow(
        self,
        ckey: Hashable,
        value: Any,
        ttl_left: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        stale_ok: bool,
    ) -> Any:
        """Everything but a fresh hit: refresh window, stale entry, miss."""
        if ttl_left > 0 or (stale_ok and value is not _MISS):
            self.refresh_bg(ckey, args, kwargs)
            return value
        if stale_ok:
            return self._wait(self.refresh_bg(ckey, args, kwargs, background=False))
        return self.compute_once(ckey, args, kwargs)

    def _wait(self, flight: Flight) -> Any:
        if flight.owner == threading.get_ident():
            raise RuntimeError(f"{self.name} called itself with the same arguments")
        # A pool thread waiting for a job still queued behind it could deadlock a saturated
        # pool: it runs the job itself instead.
        runner = flight.runner
        if runner is not None and _compute.in_worker() and self.flights.take(flight):
            return runner()
        return flight.result()

    def compute_once(self, ckey: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Compute in this thread, or wait for the thread already computing this key."""
        flight, owner = self.flights.claim(ckey)
        if not owner:
            flight.background = False
            return self._wait(flight)
        flight.owner = threading.get_ident()
        return self._fly(ckey, flight, args, kwargs, 0.0)

    def _fly(
        self,
        ckey: Hashable,
        flight: Flight,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float | None,
    ) -> Any:
        """Run a claimed flight: compute, store, then resolve every waiter."""
        try:
            value = _MISS
            if self.coordinate is not None:
                compute = functools.partial(self.fn, *args, **kwargs)
                value = self.coordinate(ckey, compute, self.store_ttl(), recheck)
            elif recheck is not None:
                # Another flight may have stored the value between our miss and our claim.
                held, ttl_left = self.client.getTtl(ckey, _MISS)
                if ttl_left > recheck:
                    value = held
            if value is _MISS:
                value = self.fn(*args, **kwargs)
                self.store(ckey, value)
        except BaseException as exc:
            if flight.background and isinstance(exc, Exception):
                # Logged before waiters wake: nobody asked for this result.
                logger.exception(
                    "%s%s: background computation failed", self.name, reprlib.repr(args)
                )
            self.flights.release(ckey, flight)
            flight.set_exception(exc)
            raise
        self.flights.release(ckey, flight)
        flight.set_result(value)
        return value

    def store_ttl(self) -> float:
        """The ttl to store a computed value with: ``ttl`` less the jitter."""
        return self.ttl - random.random() * self.spread if self.spread else self.ttl

    def store(self, ckey: Hashable, value: Any) -> None:
        """Put a computed value, with ttl jitter; a failing client is logged, not raised."""
        ttl = self.store_ttl()
        try:
            self.client.put(ckey, value, ttl)
        except TypeError:
            raise
        except Exception:
            logger.exception("%s: storing a computed value failed", self.name)

    def _submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        executor = self.executor or _compute.default_executor()
        return executor.submit(fn, *args)

    def refresh_bg(
        self,
        ckey: Hashable,
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
            return flight
        flight.background = background
        recheck = None if force else self.threshold
        flight.runner = functools.partial(self._fly, ckey, flight, args, kwargs, recheck)
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
        value, ttl_left = self.lookup(ckey, args, kwargs)
        if ttl_left > 0:
            return value
        raise CacheMissError(ckey)

    def lazy(self, args: tuple[Any, ...], kwargs: dict[str, Any], compute: bool) -> Any:
        """The cached value or CacheMissError, never waiting; ``compute``: start it on a miss."""
        ckey = self.key(args, kwargs)
        value, ttl_left = self.lookup(ckey, args, kwargs)
        if ttl_left > self.threshold:
            return value
        if ttl_left > 0 or (compute and value is not _MISS):
            self.refresh_bg(ckey, args, kwargs)
            return value
        if compute:
            self.refresh_bg(ckey, args, kwargs)
        raise CacheMissError(ckey)

    def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Recompute now, store and return."""
        ckey = self.key(args, kwargs)
        value = self.fn(*args, **kwargs)
        self._put(ckey, value, args, kwargs)
        return value

    def _put(
        self, ckey: Hashable, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            self.store(ckey, value)
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)

    def put(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
        """Store an explicit value for these arguments."""
        self._put(self.key(args, kwargs), value, args, kwargs)

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Delete the entry for these arguments."""
        try:
            self.client.delete(self.key(args, kwargs))
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)

    def expire(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Mark the entry stale: plain calls recompute, ``.bg()`` serves it while refreshing."""
        try:
            self.client.expire(self.key(args, kwargs))
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)

    def fcall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """``.future()(...)``: cache access inline for non-blocking clients, else on the pool."""
        out: Future[Any] = Future()
        if getattr(self.client, "blocking", True):
            try:
                self._submit(self._fjob, out, args, kwargs)
            except Exception as exc:
                out.set_exception(exc)
        else:
            self._fjob(out, args, kwargs)
        return out

    def _fjob(self, out: Future[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            ckey = self.key(args, kwargs)
            value, ttl_left = self.lookup(ckey, args, kwargs)
            if ttl_left > self.threshold:
                out.set_result(value)
            elif ttl_left > 0 or value is not _MISS:
                self.refresh_bg(ckey, args, kwargs)
                out.set_result(value)
            else:
                chain(self.refresh_bg(ckey, args, kwargs, background=False), out)
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

    async def alookup(
        self, ckey: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, float]:
        """Awaitable :meth:`lookup`."""
        try:
            return await self.client.agetTtl(ckey, _MISS)
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)
            raise  # unreachable

    async def acall(self, args: tuple[Any, ...], kwargs: dict[str, Any], stale_ok: bool) -> Any:
        """A full cached call of a coroutine function."""
        ckey = self.key(args, kwargs)
        value, ttl_left = await self.alookup(ckey, args, kwargs)
        if ttl_left > self.threshold:
            return value
        return await self.aslow(ckey, value, ttl_left, args, kwargs, stale_ok)

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
        if ttl_left > 0 or (stale_ok and value is not _MISS):
            self.arefresh_bg(ckey, args, kwargs)
            return value
        loop = asyncio.get_running_loop()
        run = self.aflights.get(ckey)
        if run is None or run.task.get_loop() is not loop:
            run = self._astart(ckey, args, kwargs, 0.0, False, loop)
        elif run.task is asyncio.current_task():
            raise RuntimeError(f"{self.name} awaited itself with the same arguments")
        else:
            run.background = False
        # shield: a cancelled caller must not cancel the computation others wait for.
        return await asyncio.shield(run.task)

    def _astart(
        self,
        ckey: Hashable,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float,
        background: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> _ARun:
        run = _ARun(background)
        current = self.aflights.get(ckey)
        if current is None or current.task.done():
            self.aflights[ckey] = run
        run.task = loop.create_task(self._arun(run, ckey, args, kwargs, recheck))
        run.task.add_done_callback(_consume)
        return run

    async def _arun(
        self,
        run: _ARun,
        ckey: Hashable,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        recheck: float,
    ) -> Any:
        try:
            if self.acoordinate is not None:
                compute = functools.partial(self.fn, *args, **kwargs)
                return await self.acoordinate(ckey, compute, self.store_ttl(), recheck)
            held, ttl_left = await self.client.agetTtl(ckey, _MISS)
            if ttl_left > recheck:
                return held
            value = await self.fn(*args, **kwargs)
            await self.astore(ckey, value)
            return value
        except Exception:
            if run.background:
                logger.exception(
                    "%s%s: background computation failed", self.name, reprlib.repr(args)
                )
            raise
        finally:
            if self.aflights.get(ckey) is run:
                self.aflights.pop(ckey, None)  # pop: another loop's thread may race us

    def arefresh_bg(
        self, ckey: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Task[Any]:
        """Start a background computation task on the running loop unless one is running."""
        loop = asyncio.get_running_loop()
        run = self.aflights.get(ckey)
        if run is not None and run.task.get_loop() is loop and not run.task.done():
            return run.task
        return self._astart(ckey, args, kwargs, self.threshold, True, loop).task

    async def astore(self, ckey: Hashable, value: Any) -> None:
        """Awaitable :meth:`store`."""
        ttl = self.store_ttl()
        try:
            await self.client.aput(ckey, value, ttl)
        except TypeError:
            raise
        except Exception:
            logger.exception("%s: storing a computed value failed", self.name)

    async def apeek(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Awaitable :meth:`peek`."""
        ckey = self.key(args, kwargs)
        value, ttl_left = await self.alookup(ckey, args, kwargs)
        if ttl_left > 0:
            return value
        raise CacheMissError(ckey)

    async def alazy(self, args: tuple[Any, ...], kwargs: dict[str, Any], compute: bool) -> Any:
        """Awaitable :meth:`lazy`; background work runs as tasks on the running loop."""
        ckey = self.key(args, kwargs)
        value, ttl_left = await self.alookup(ckey, args, kwargs)
        if ttl_left > self.threshold:
            return value
        if ttl_left > 0 or (compute and value is not _MISS):
            self.arefresh_bg(ckey, args, kwargs)
            return value
        if compute:
            self.arefresh_bg(ckey, args, kwargs)
        raise CacheMissError(ckey)

    async def arefresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Awaitable :meth:`refresh`."""
        ckey = self.key(args, kwargs)
        value = await self.fn(*args, **kwargs)
        await self._aput(ckey, value, args, kwargs)
        return value

    async def _aput(
        self, ckey: Hashable, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            await self.astore(ckey, value)
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)

    async def aput(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
        """Awaitable :meth:`put`."""
        await self._aput(self.key(args, kwargs), value, args, kwargs)

    async def ainvalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Awaitable :meth:`invalidate`."""
        try:
            await self.client.adelete(self.key(args, kwargs))
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)

    async def aexpire(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Awaitable :meth:`expire`."""
        try:
            await self.client.aexpire(self.key(args, kwargs))
        except TypeError as exc:
            self._raise_key_error(args, kwargs, exc)


def _pop_put_value(kwargs: dict[str, Any]) -> Any:
    value = kwargs.pop("_cache_put", _MISS)
    if value is _MISS:
        raise TypeError("put() needs the value to store as the _cache_put= keyword argument")
    return value


class _SyncVariant:
    """A way of calling a cached (plain) function: plain, ``bg()`` or ``future()``.

    ``bound`` holds the instance for methods, prepended to the arguments.
    """

    __slots__ = ("_bound", "_core", "_mode")

    def __init__(self, core: _Core, mode: int, bound: tuple[Any, ...] = ()) -> None:
        self._core = core
        self._mode = mode
        self._bound = bound

    @property
    def client(self) -> Any:
        """The cache client."""
        return self._core.client

    def bg(self) -> _SyncVariant:
        """Serve what the cache holds (even stale) and compute on the background pool."""
        return _SyncVariant(self._core, _BG, self._bound)

    async_ = bg

    def future(self) -> _SyncVariant:
        """Return chorde Futures instead of results; the caller never blocks."""
        return _SyncVariant(self._core, _FUTURE, self._bound)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        core = self._core
        args = self._bound + args
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
            out: Future[Any] = Future()
            try:
                ckey = core.key(args, kwargs)
                chain(core.refresh_bg(ckey, args, kwargs, force=True), out)
            except Exception as exc:
                out.set_exception(exc)
            return out
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

    def bg(self) -> _AsyncVariant:
        """Serve what the cache holds (even stale) and compute in background tasks."""
        return _AsyncVariant(self._core, _BG, self._bound)

    async_ = bg

    def future(self) -> _AsyncVariant:
        """Return chorde Futures (tasks on the running loop, or on chorde's loop thread)."""
        return _AsyncVariant(self._core, _FUTURE, self._bound)

    def _wrap(self, coro: Any) -> Any:
        return _afuture(coro) if self._mode == _FUTURE else coro

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._core.acall(self._bound + args, kwargs, self._mode != _PLAIN))

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

    def uncached(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, bypassing the cache."""
        return self._wrap(self._core.fn(*self._bound, *args, **kwargs))


_VARIANT_ATTRS: tuple[str, ...] = (
    "bg",
    "async_",
    "future",
    "peek",
    "lazy",
    "refresh",
    "put",
    "invalidate",
)
_VARIANT_ATTRS += ("expire", "uncached")


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
    # lookups on the core, one client call.
    head = core.head
    kw_head = core.kw_head
    client = core.client
    getTtl = client.getTtl
    threshold = core.threshold
    slow = core.slow
    raise_key_error = core._raise_key_error

    # An in-process client keeps a table of this namespace's keys: a hit looks up the bare
    # arguments there, as functools.lru_cache does (the table's key for (namespace, *args)).
    # Looked up on the class: a wrapper forwarding attributes to an in-process client it
    # wraps must not have its own reads bypassed.
    namespace_table = getattr(type(client), "namespace_table", None)
    table = namespace_table(client, core.namespace) if namespace_table is not None else None

    if core.keyfn is not None:
        key = core.key

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ckey = key(args, kwargs)
            try:
                value, ttl_left = getTtl(ckey, _MISS)
            except TypeError as exc:
                raise_key_error(args, kwargs, exc)
            if ttl_left > threshold:
                return value
            return slow(ckey, value, ttl_left, args, kwargs, False)

    elif table is not None or threshold:
        # Called only with a table, which only a client with namespace_get makes.
        namespace_get: Any = getattr(client, "namespace_get", None)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if table is not None and args and not kwargs:
                try:
                    value = namespace_get(table, args, threshold, _MISS)
                except TypeError as exc:
                    raise_key_error(args, kwargs, exc)
                if value is not _MISS:
                    return value
            # No table, a miss, a refresh due, keyword arguments or none at all.
            ckey = (kw_head, args, tuple(sorted(kwargs.items()))) if kwargs else head + args
            try:
                value, ttl_left = getTtl(ckey, _MISS)
            except TypeError as exc:
                raise_key_error(args, kwargs, exc)
            if ttl_left > threshold:
                return value
            return slow(ckey, value, ttl_left, args, kwargs, False)

    else:
        # No refresh window: a plain call only needs a live value, which get() answers
        # more cheaply than getTtl(); anything else is computed now.
        get = client.get
        compute_once = core.compute_once

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ckey = (kw_head, args, tuple(sorted(kwargs.items()))) if kwargs else head + args
            try:
                value = get(ckey, _MISS)
            except TypeError as exc:
                raise_key_error(args, kwargs, exc)
            if value is not _MISS:
                return value
            return compute_once(ckey, args, kwargs)

    return wrapper


def _make_async_wrapper(core: _Core) -> Callable[..., Any]:
    key = core.key
    agetTtl = core.client.agetTtl
    threshold = core.threshold
    aslow = core.aslow
    raise_key_error = core._raise_key_error

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        ckey = key(args, kwargs)
        try:
            value, ttl_left = await agetTtl(ckey, _MISS)
        except TypeError as exc:
            raise_key_error(args, kwargs, exc)
        if ttl_left > threshold:
            return value
        return await aslow(ckey, value, ttl_left, args, kwargs, False)

    return wrapper


def _in_class_body(fn: Callable[..., Any]) -> bool:
    parts = getattr(fn, "__qualname__", "").split(".")
    return len(parts) > 1 and parts[-2] != "<locals>"


def _options(
    ttl: Any, async_ttl: Any, key: Any, namespace: Any, ttl_spread: Any, executor: Any
) -> tuple[float, float, float]:
    """Validate :func:`cached`'s options: the ttl, the refresh threshold and the spread."""
    ttl = check_ttl(ttl)
    if not ttl > 0:
        raise ValueError(f"ttl must be > 0, got {ttl!r}")
    threshold = _threshold(ttl, async_ttl)
    spread = _spread(ttl, ttl_spread)
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable building the cache key, got {key!r}")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {namespace!r}")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit() method, got {executor!r}")
    return ttl, threshold, spread


def check_options(
    ttl: float,
    async_ttl: float | None = None,
    *,
    key: Callable[..., Hashable] | None = None,
    namespace: str | None = None,
    ttl_spread: float | bool = True,
    executor: concurrent.futures.Executor | None = None,
) -> None:
    """Raise what :func:`cached` would for these options, before any client exists.

    For decorators that build their ``cached`` wrapper later (per application, per
    client) but should reject bad options where they are written.
    """
    _options(ttl, async_ttl, key, namespace, ttl_spread, executor)


def cached(
    client: BaseCacheClient,
    ttl: float,
    async_ttl: float | None = None,
    *,
    key: Callable[..., Hashable] | None = None,
    namespace: str | None = None,
    ttl_spread: float | bool = True,
    executor: concurrent.futures.Executor | None = None,
) -> CachedDecorator:
    """Cache a function's results in ``client``; see the module docstring for the variants.

    :param client: a chorde cache client (any :class:`~chorde.clients.base.BaseCacheClient`).
    :param ttl: seconds a result lives; no plain call ever returns an older one. Must be > 0.
    :param async_ttl: refresh window. A hit with less than ``async_ttl`` seconds left
        (``ttl + async_ttl`` if negative) is served while a background refresh recomputes
        it. ``None`` (default): no window, an expired entry is recomputed on the next call.
    :param key: ``key(*args, **kwargs)`` returning the hashable part of the cache key, for
        arguments that are unhashable or should not all count (``self``, a connection).
    :param namespace: first element of every cache key; default ``module.qualname``, which
        is stable across processes, so a shared client shares results.
    :param ttl_spread: jitter so a fleet does not expire together: each stored ttl is
        shortened by a random amount up to this many seconds (``True``: ttl/10).
    :param executor: pool for background computations (default: a shared bounded pool,
        see :func:`set_default_executor`).

    The cache key is ``(namespace, *args)``, or ``((namespace, "**"), args, sorted kwargs
    items)`` when keyword arguments are passed, or ``(namespace, key(*args, **kwargs))``:
    tuples of the arguments, usable as they are by in-process clients and encodable by
    clients that serialize keys when the arguments are str/bytes/numbers/None/tuples.
    ``f.cache_key(*args, **kwargs)`` returns it.
    """
    missing = [m for m in _CLIENT_METHODS if not callable(getattr(client, m, None))]
    if missing:
        raise TypeError(f"client must be a chorde cache client, {client!r} lacks {missing}")
    ttl, threshold, spread = _options(ttl, async_ttl, key, namespace, ttl_spread, executor)

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
        core = _Core(fn, client, ttl, threshold, spread, ns, key, executor)
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
        if _in_class_body(fn):
            return _CachedMethod(wrapper, core, variant_cls)
        return wrapper

    # decorate keeps each function's parameters and result type: see CachedDecorator.
    return cast(CachedDecorator, decorate)
