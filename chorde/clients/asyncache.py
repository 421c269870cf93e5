"""Write-behind caching and future adapters.

:class:`AsyncWriteCacheClient` wraps a client whose writes are slow (a network cache) so that
``put``/``delete``/``expire`` return at once and worker threads apply them in the background:

* writes to one key coalesce: only the latest pending operation of a key is applied;
* reads see pending writes and deletes (read-your-writes within the process);
* operations of one key are applied in order, never two at once;
* the queue holds at most ``queue_size`` distinct keys; when it is full a write of another
  key is applied synchronously in the caller's thread (backpressure, no data dropped);
* ``wait(key)``, ``flush()`` and ``close()`` wait for pending writes; a write the backend
  rejects is logged on ``chorde.clients.asyncache`` and counted in ``stats.errors``.

:func:`makeFutureWrapper` adapts chorde futures (``cached_fn.future()(...)``) to another
future type, e.g. ``WF = makeFutureWrapper(tornado.concurrent.Future)``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from chorde.clients.base import (
    BaseCacheClient,
    CacheStats,
    ClientWrapper,
    check_capacity,
    check_ttl,
)
from chorde.clients.steps import Steps, arun, run
from chorde.errors import CacheMissError
from chorde.sentinel import NONE

__all__ = ["AsyncWriteCacheClient", "makeFutureWrapper"]

logger = logging.getLogger("chorde.clients.asyncache")

_PUT, _DELETE, _EXPIRE, _EXCLUSIVE = "put", "delete", "expire", "exclusive"
_MISS: Any = object()
T = TypeVar("T")


class _Op:
    """A pending write of one key."""

    __slots__ = ("deadline", "kind", "stale_at", "value")

    def __init__(
        self, kind: str, value: Any = None, deadline: float = 0.0, stale_at: float | None = None
    ) -> None:
        self.kind = kind
        self.value = value
        #: put: when the value expires (client clock).
        self.deadline = deadline
        #: put/expire: when it was marked stale by expire(), if it was.
        self.stale_at = stale_at


_EXCLUSIVE_OP = _Op(_EXCLUSIVE)


def _bad_key(key: Any) -> TypeError:
    return TypeError(f"cache keys must be hashable, got {key!r} of type {type(key).__name__}")


class AsyncWriteCacheClient(ClientWrapper):
    """Write-behind wrapper: writes return at once and are applied by worker threads.

    :param client: the client that receives the writes (it is closed by :meth:`close`).
    :param writer_threads: how many worker threads apply writes (keyword-only: chorde 1.x
        took a queue size and a worker count positionally, in the other order).
    :param queue_size: most distinct keys waiting to be written; beyond it, writes of new
        keys are applied in the caller's thread (backpressure) rather than dropped.
    :param clock: monotonic clock, the same one the wrapped client uses (tests pass a fake).

    ``capacity`` and ``usage`` are the wrapped client's (pending writes not included).
    ``add`` and ``renew`` need the backend's answer: they wait for the key's pending writes,
    then run in the caller's thread, atomically on the backend.
    """

    is_async = True

    def __init__(
        self,
        client: BaseCacheClient,
        *positional: Any,
        writer_threads: int = 1,
        queue_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        **legacy: Any,
    ) -> None:
        if positional or legacy:  # chorde 1.x's (client, writer_queue_size, writer_workers)
            from chorde import _legacy

            renamed = _legacy.write_behind_options(positional, legacy)
            writer_threads = renamed.get("writer_threads", writer_threads)
            queue_size = renamed.get("queue_size", queue_size)
        if not isinstance(client, BaseCacheClient):
            raise TypeError(f"client must be a chorde BaseCacheClient, got {client!r}")
        super().__init__(client)
        self._writers = check_capacity(writer_threads, "writer_threads")
        self._queue_size = check_capacity(queue_size, "queue_size")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._clock = clock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # signalled when a key is queued
        self._done = threading.Condition(self._lock)  # signalled when a key is written
        self._pending: dict[Hashable, _Op] = {}
        # Keys whose put expired while queued, with its deadline (for purge; bounded).
        self._late: dict[Hashable, float] = {}
        self._inflight: dict[Hashable, _Op] = {}
        self._queue: deque[Hashable] = deque()
        self._closed = False  # rejects new writes
        self._stopping = False  # ends the workers
        self._hits = self._misses = self._sets = self._errors = 0
        self._write_throughs = 0
        self._threads = [
            threading.Thread(target=self._worker, name=f"chorde-writer-{i}", daemon=True)
            for i in range(self._writers)
        ]
        for thread in self._threads:
            thread.start()
        ref = weakref.ref(self)
        self._atexit = lambda: (c := ref()) is not None and c.flush(timeout=5)
        atexit.register(self._atexit)

    # ---- the write queue -----------------------------------------------------------

    def _enqueue(self, key: Hashable, op: _Op) -> None:
        if not self._queued(key, op):
            self._exclusive(key, lambda: self._apply(key, op))

    async def _aenqueue(self, key: Hashable, op: _Op) -> None:
        if not self._queued(key, op):  # backpressure: the wait for the key is a thread's
            await asyncio.get_running_loop().run_in_executor(
                None, self._exclusive, key, lambda: self._apply(key, op)
            )

    def _queued(self, key: Hashable, op: _Op) -> bool:
        """Queue ``op``; False when the queue is full and the caller must write it through."""
        try:
            hash(key)
        except TypeError:
            raise _bad_key(key) from None
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            current = self._pending.get(key)
            if current is not None:
                self._pending[key] = self._coalesce(current, op)
                return True
            inflight = key in self._inflight
            if inflight or len(self._pending) < self._queue_size:
                # An in-flight key is queued again by its writer when done, so this may
                # exceed queue_size by at most writer_threads entries.
                self._pending[key] = op
                if not inflight:
                    self._queue.append(key)
                    self._work.notify()
                return True
            self._write_throughs += 1
            return False

    def _coalesce(self, current: _Op, op: _Op) -> _Op:
        if op.kind != _EXPIRE:
            return op  # a put or delete supersedes whatever was pending
        if current.kind == _PUT:
            stale_at = op.stale_at if current.stale_at is None else current.stale_at
            return _Op(_PUT, current.value, current.deadline, stale_at)
        return current  # expire after delete/expire changes nothing

    def _apply(self, key: Hashable, op: _Op) -> None:
        """Apply one operation to the wrapped client."""
        self._late.pop(key, None)
        if op.kind == _PUT:
            left = op.deadline - self._clock()
            # Expired before it could be written, it is still what a direct put would have
            # left: the value, stale (readable by getTtl), replacing any older one. Its
            # expiry is now, not its deadline: purge() remembers the deadline.
            self.client.put(key, op.value, max(left, 0.0))
            if left <= 0 or op.stale_at is not None:
                self.client.expire(key)
            if left <= 0 and len(self._late) < self._queue_size:
                self._late[key] = op.deadline
        elif op.kind == _DELETE:
            self.client.delete(key)
        elif op.kind == _EXPIRE:
            self.client.expire(key)

    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._work.wait()
                if not self._queue:
                    return  # closed and drained
                key = self._queue.popleft()
                op = self._pending.get(key)
                if op is None or key in self._inflight:
                    continue  # cleared, or its current writer will queue it again
                # In this order, lock-free readers always find the op in one of the two.
                self._inflight[key] = op
                del self._pending[key]
            self._write(key, op)
            self._finish(key)

    def _write(self, key: Hashable, op: _Op) -> None:
        try:
            self._apply(key, op)
        except Exception:
            self._errors += 1
            logger.exception("write-behind %s of key %r failed; the write is lost", op.kind, key)

    def _finish(self, key: Hashable) -> None:
        with self._lock:
            del self._inflight[key]
            if key in self._pending:
                self._queue.append(key)
                self._work.notify()
            self._done.notify_all()

    def _exclusive(self, key: Hashable, fn: Callable[[], T]) -> T:
        """Run ``fn`` as the only writer of ``key``, after its pending writes are applied."""
        with self._lock:
            while key in self._pending or key in self._inflight:
                self._done.wait()
            self._inflight[key] = _EXCLUSIVE_OP
        try:
            return fn()
        finally:
            self._finish(key)

    # ---- reads ---------------------------------------------------------------------

    def _find(self, key: Hashable) -> _Op | None:
        try:
            op = self._pending.get(key)
            if op is None:
                op = self._inflight.get(key)
        except TypeError:
            raise _bad_key(key) from None
        return op

    def _read(self, key: Hashable, op: _Op) -> Steps[tuple[Any, float]]:
        """``(value, ttl_left)`` as ``op`` leaves the key, ``(_MISS, -1.0)`` if absent."""
        if op.kind == _PUT:
            left = op.deadline - self._clock()
            if op.stale_at is not None:
                left = min(left, op.stale_at - self._clock())
            return op.value, left
        if op.kind == _DELETE:
            return _MISS, -1.0
        value, left = yield (self.client, "getTtl", (key, _MISS))
        if op.kind == _EXPIRE and value is not _MISS and op.stale_at is not None:
            left = min(left, op.stale_at - self._clock())
        return value, left

    def _get_ttl(self, key: Hashable, default: Any) -> Steps[tuple[Any, float]]:
        op = self._find(key)
        if op is None or op.kind == _EXCLUSIVE:
            found: tuple[Any, float] = yield (self.client, "getTtl", (key, default))
            return found
        value, left = yield from self._read(key, op)
        if value is _MISS:
            self._misses += 1
            if default is NONE:
                raise CacheMissError(key)
            return default, -1.0
        if left > 0:
            self._hits += 1
        else:
            self._misses += 1
        return value, left

    def _get(self, key: Hashable, default: Any) -> Steps[Any]:
        op = self._find(key)
        if op is None or op.kind == _EXCLUSIVE:
            return (yield (self.client, "get", (key, default)))
        value, left = yield from self._get_ttl(key, _MISS)
        if value is not _MISS and left > 0:
            return value
        if default is NONE:
            raise CacheMissError(key)
        return default

    def _contains(self, key: Hashable, ttl: float | None) -> Steps[bool]:
        op = self._find(key)
        if op is None or op.kind == _EXCLUSIVE:
            contained: bool = yield (self.client, "contains", (key, ttl))
            return contained
        value, left = yield from self._get_ttl(key, _MISS)
        return value is not _MISS and left > (ttl or 0)

    def _multi(self, keys: Iterable[Hashable], default: Any) -> Steps[list[tuple[Any, Any]]]:
        keys = list(keys)
        ops = [self._find(k) for k in keys]
        rest = [k for k, op in zip(keys, ops, strict=True) if op is None or op.kind == _EXCLUSIVE]
        fetched = dict((yield (self.client, "getTtlMulti", (rest, default)))) if rest else {}
        answer = []
        for key, op in zip(keys, ops, strict=True):
            if op is None or op.kind == _EXCLUSIVE:
                answer.append((key, fetched[key]))
            else:
                value, left = yield from self._read(key, op)
                answer.append((key, (default, -1.0) if value is _MISS else (value, left)))
        return answer

    def getTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """Return ``(value, ttl_left)``, pending writes included."""
        return run(self._get_ttl(key, default))

    def get(self, key: Hashable, default: Any = NONE) -> Any:
        """Return the live value for ``key``, pending writes included."""
        return run(self._get(key, default))

    def contains(self, key: Hashable, ttl: float | None = None) -> bool:
        """True if ``key`` has a live entry, pending writes included."""
        return run(self._contains(key, ttl))

    def getTtlMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> Iterator[tuple[Hashable, Any]]:
        """Batch :meth:`getTtl`: keys without pending writes go to the client in one batch."""
        yield from run(self._multi(keys, default))

    async def agetTtl(self, key: Hashable, default: Any = NONE) -> tuple[Any, float]:
        """Awaitable :meth:`getTtl` (the wrapped client's own awaitables)."""
        return await arun(self._get_ttl(key, default))

    async def aget(self, key: Hashable, default: Any = NONE) -> Any:
        """Awaitable :meth:`get`."""
        return await arun(self._get(key, default))

    async def acontains(self, key: Hashable, ttl: float | None = None) -> bool:
        """Awaitable :meth:`contains`."""
        return await arun(self._contains(key, ttl))

    async def agetTtlMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> list[tuple[Hashable, Any]]:
        """Awaitable :meth:`getTtlMulti`."""
        return await arun(self._multi(keys, default))

    async def agetMulti(
        self, keys: Iterable[Hashable], default: Any = NONE
    ) -> list[tuple[Hashable, Any]]:
        """Awaitable :meth:`getMulti`."""
        answer = await arun(self._multi(keys, NONE))
        return [(key, value if ttl > 0 else default) for key, (value, ttl) in answer]

    # ---- writes --------------------------------------------------------------------

    def _puts(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[tuple[Hashable, _Op]]:
        deadline = self._clock() + check_ttl(ttl)
        pairs = items.items() if isinstance(items, dict) else items
        return [(key, _Op(_PUT, value, deadline)) for key, value in pairs]

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        """Queue a write of ``value`` for ``ttl`` seconds (counted from now)."""
        self.putMulti([(key, value)], ttl)

    def putMulti(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[Hashable]:
        """Queue many writes with one ttl (none fails here: a write that fails later, in
        the background, is logged and counted)."""
        for key, op in self._puts(items, ttl):
            self._enqueue(key, op)
            self._sets += 1
        return []

    def delete(self, key: Hashable) -> None:
        """Queue a delete of ``key``."""
        self._enqueue(key, _Op(_DELETE))

    def expire(self, key: Hashable) -> None:
        """Queue marking ``key`` stale (reads see it stale at once)."""
        self._enqueue(key, _Op(_EXPIRE, stale_at=self._clock()))

    async def aput(self, key: Hashable, value: Any, ttl: float) -> None:
        """Awaitable :meth:`put`: queued without blocking the loop."""
        await self.aputMulti([(key, value)], ttl)

    async def aputMulti(
        self, items: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], ttl: float
    ) -> list[Hashable]:
        """Awaitable :meth:`putMulti`."""
        for key, op in self._puts(items, ttl):
            await self._aenqueue(key, op)
            self._sets += 1
        return []

    async def adelete(self, key: Hashable) -> None:
        """Awaitable :meth:`delete`."""
        await self._aenqueue(key, _Op(_DELETE))

    async def aexpire(self, key: Hashable) -> None:
        """Awaitable :meth:`expire`."""
        await self._aenqueue(key, _Op(_EXPIRE, stale_at=self._clock()))

    def add(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Store only if absent or expired, atomically on the wrapped client."""
        ttl = check_ttl(ttl)
        self._find(key)  # rejects unhashable keys
        added = self._exclusive(key, lambda: self.client.add(key, value, ttl))
        if added:
            self._sets += 1
        return added

    def updateTtl(
        self, key: Hashable, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Update on the wrapped client (after the key's pending writes are applied)."""
        self._find(key)  # rejects unhashable keys
        return self._exclusive(key, lambda: self.client.updateTtl(key, fn, ttl))

    async def aupdateTtl(
        self, key: Hashable, fn: Callable[[Any], Any], ttl: float | None = None
    ) -> tuple[Any, float]:
        """Awaitable :meth:`updateTtl` (the wait for pending writes is a thread's)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.updateTtl, key, fn, ttl)

    def renew(self, key: Hashable, ttl: float) -> bool:
        """Extend an entry's ttl (after its pending writes are applied)."""
        ttl = check_ttl(ttl)
        self._find(key)  # rejects unhashable keys
        return self._exclusive(key, lambda: self.client.renew(key, ttl))

    def clear(self) -> None:
        """Drop pending writes and clear the wrapped client."""
        with self._lock:
            self._pending.clear()
            self._queue.clear()
            while self._inflight:
                self._done.wait()
        self.client.clear()

    def purge(self, timeout: float = 0) -> None:
        """Apply pending writes, then drop expired entries from the wrapped client (a put
        that expired while queued counts from its own deadline, as a direct put would)."""
        self.flush()
        cutoff = self._clock() - check_ttl(timeout, "timeout")
        for key, deadline in list(self._late.items()):
            if deadline < cutoff and self._late.pop(key, None) is not None:
                self.client.delete(key)
        self.client.purge(timeout)

    # ---- waiting -------------------------------------------------------------------

    def wait(self, key: Hashable, timeout: float | None = None) -> None:
        """Return once ``key`` has no pending write (or after ``timeout`` seconds)."""
        self._find(key)
        with self._lock:
            self._done.wait_for(
                lambda: key not in self._pending and key not in self._inflight, timeout
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every pending write is applied; False if ``timeout`` ran out first."""
        with self._lock:
            return self._done.wait_for(lambda: not self._pending and not self._inflight, timeout)

    def close(self) -> None:
        """Apply pending writes, stop the workers and close the wrapped client."""
        with self._lock:
            if self._closed:
                return
            self._closed = True  # no new writes from here on
        self.flush()
        # Close the backend while the workers still live: clients with per-thread
        # connections can then close the workers' connections too.
        self.client.close()
        with self._lock:
            self._stopping = True
            self._work.notify_all()
        for thread in self._threads:
            thread.join()
        atexit.unregister(self._atexit)

    async def aflush(self, timeout: float | None = None) -> bool:
        """Awaitable :meth:`flush` (waits on an executor thread)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    async def aclose(self) -> None:
        """Awaitable :meth:`close` (waits on an executor thread)."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # ---- attributes ----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many keys have writes not yet applied."""
        return len(self._pending) + len(self._inflight)

    @property
    def write_throughs(self) -> int:
        """How many writes the full queue made the caller apply itself."""
        return self._write_throughs

    @property
    def stats(self) -> CacheStats:
        """Counters: sets as queued, reads answered here, plus the wrapped client's."""
        inner = self.client.stats
        return CacheStats(
            hits=inner.hits + self._hits,
            misses=inner.misses + self._misses,
            sets=self._sets,
            evictions=inner.evictions,
            errors=inner.errors + self._errors,
        )

    def __repr__(self) -> str:
        return f"<AsyncWriteCacheClient pending={self.pending} over {self.client!r}>"


# ---- future adapters ---------------------------------------------------------------


def _outcome(source: concurrent.futures.Future[Any]) -> tuple[bool, Any]:
    """``(ok, result_or_exception)`` of a done future (cancellation is an exception)."""
    if source.cancelled():
        return False, concurrent.futures.CancelledError()
    exc = source.exception()
    return (False, exc) if exc is not None else (True, source.result())


class _Completable(Protocol):
    """What :func:`makeFutureWrapper` completes: a future-like with these two methods."""

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


F = TypeVar("F", bound=_Completable)


def makeFutureWrapper(future_class: type[F]) -> Callable[[concurrent.futures.Future[Any]], F]:
    """Return ``wrap(future) -> future_class`` adapting a chorde future to another type.

    Supported: ``concurrent.futures.Future`` (and subclasses), ``asyncio.Future`` and its
    subclasses (``tornado.concurrent.Future`` is ``asyncio.Future`` in tornado >= 5), which
    are created on the running event loop (or the thread's current one) and completed
    thread-safely; any other class with ``set_result``/``set_exception`` is completed from
    the thread that completes the source future.
    """
    if not isinstance(future_class, type):
        raise TypeError(f"makeFutureWrapper needs a future class, got {future_class!r}")
    if issubclass(future_class, asyncio.Future):

        def wrap_asyncio(future: concurrent.futures.Future[Any]) -> F:
            if isinstance(future, future_class):
                return future
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = asyncio.get_event_loop_policy().get_event_loop()
            dest = future_class(loop=loop)

            def deliver(ok: bool, value: Any) -> None:
                if dest.done():
                    return
                if ok:
                    dest.set_result(value)
                elif isinstance(value, concurrent.futures.CancelledError):
                    dest.cancel()
                else:
                    dest.set_exception(value)

            def on_done(source: concurrent.futures.Future[Any]) -> None:
                outcome = _outcome(source)
                if loop.is_closed():
                    return
                try:
                    running = asyncio.get_running_loop()
                except RuntimeError:
                    running = None
                if running is loop:
                    deliver(*outcome)
                else:
                    loop.call_soon_threadsafe(deliver, *outcome)

            future.add_done_callback(on_done)
            return dest

        return wrap_asyncio

    if not callable(getattr(future_class, "set_result", None)) or not callable(
        getattr(future_class, "set_exception", None)
    ):
        raise TypeError(
            f"makeFutureWrapper: {future_class.__qualname__} has no set_result/set_exception"
        )

    def wrap(future: concurrent.futures.Future[Any]) -> F:
        if isinstance(future, future_class):
            return future
        dest = future_class()

        def on_done(source: concurrent.futures.Future[Any]) -> None:
            ok, value = _outcome(source)
            try:
                if ok:
                    dest.set_result(value)
                else:
                    dest.set_exception(value)
            except concurrent.futures.InvalidStateError:
                pass  # the destination was cancelled meanwhile

        future.add_done_callback(on_done)
        return dest

    return wrap


if not TYPE_CHECKING:  # (type checkers keep flagging unknown names)

    def __getattr__(name: str) -> Any:
        # chorde 1.x's names here: what replaced them (see chorde._legacy).
        from chorde import _legacy

        return _legacy.attribute(__name__, name)
