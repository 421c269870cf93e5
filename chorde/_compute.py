"""Compute-once machinery shared by the decorators: in-flight registries and background pools.

Internal module: the public knobs are re-exported by :mod:`chorde.decorators`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine, Hashable
from threading import get_ident
from typing import Any, TypeVar

from chorde.futures import Future

__all__ = [
    "Flight",
    "Flights",
    "Pending",
    "default_executor",
    "in_worker",
    "run_as_worker",
    "run_coroutine",
    "set_default_executor",
]

T = TypeVar("T")


class Flight(Future[Any]):
    """A computation in progress for one key; every caller of that key waits on it."""

    #: Thread ident of the thread running the computation (detects self-recursion).
    owner: int | None = None
    #: True when nobody asked for the result (a refresh): failures are only logged.
    background: bool = False
    #: For flights queued on a pool: runs the computation (whoever takes it first).
    runner: Callable[[], Any] | None = None


#: A flight begun by :meth:`Flights.begin`: ``[owner thread ident, *waiters]``. No
#: :class:`Flight` is made unless a second caller comes: each waiter appends its own, which
#: the owner resolves when it ends (after appending :data:`_DONE`).
Pending = list[Any]
_DONE: Any = object()
#: Keys whose flight ended lately, kept to tell a new owner whether to read the cache again.
_ENDED_MAX = 1024


class Flights:
    """A per-key registry of in-flight computations (thread-safe, lock-free: each entry is
    set with ``dict.setdefault``, atomic, and never replaced but by its owner's removal).

    Two kinds of entries: a :class:`Flight` made by :meth:`claim` (background refreshes,
    whose runner any thread may take), and the lighter pending list of :meth:`begin`, for a
    caller computing in its own thread, which makes a Future only for callers that wait.
    """

    __slots__ = ("_ended", "_flights", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Flight | Pending] = {}
        self._ended: dict[Hashable, None] = {}

    def begin(self, key: Hashable) -> Pending | Flight | None:
        """Start computing ``key`` in this thread unless some thread already is.

        Returns the caller's own pending flight (a list: end it with :meth:`end`), or the
        :class:`Flight` to wait for, or None when the flight found ended just now (its value
        is to be read again).
        """
        mine = [get_ident()]
        found = self._flights.setdefault(key, mine)
        if found is mine:
            return mine
        if isinstance(found, list):
            return _join(found)
        return found

    def end(
        self, key: Hashable, pending: Pending, value: Any = None, exc: BaseException | None = None
    ) -> None:
        """End the caller's flight of ``key`` (:meth:`begin`): every waiter gets ``value``, or
        ``exc`` when given."""
        flights = self._flights
        if flights.get(key) is pending:
            del flights[key]
        self._note_end(key)
        pending.append(_DONE)
        if len(pending) > 2:
            for waiter in pending[1:]:
                if waiter is _DONE:
                    break
                if exc is None:
                    waiter.set_result(value)
                else:
                    waiter.set_exception(exc)

    def ended_lately(self, key: Hashable) -> bool:
        """Whether a flight of ``key`` ended lately (after the caller's read of the cache,
        perhaps): a new owner then reads it again rather than compute a second time."""
        return key in self._ended

    def _note_end(self, key: Hashable) -> None:
        ended = self._ended
        if len(ended) >= _ENDED_MAX:
            ended.clear()
        ended[key] = None

    def claim(self, key: Hashable) -> tuple[Flight, bool]:
        """Return ``(flight, True)`` for a new flight the caller must run, else the running one."""
        while True:
            flight = Flight()
            found = self._flights.setdefault(key, flight)
            if found is flight:
                return flight, True
            if type(found) is not list:
                return found, False  # type: ignore[return-value]  # (a Flight)
            joined = _join(found)
            if joined is not None:
                return joined, False
            # (the pending flight ended meanwhile: claim again)

    def get(self, key: Hashable) -> Flight | None:
        """The :class:`Flight` running for ``key``, if any (a pending one is not)."""
        found = self._flights.get(key)
        return found if type(found) is Flight else None

    def take(self, flight: Flight) -> bool:
        """Become the thread running ``flight``; False if some thread already is."""
        with self._lock:
            if flight.owner is not None:
                return False
            flight.owner = get_ident()
            return True

    def release(self, key: Hashable, flight: Flight) -> None:
        """Forget ``flight`` (done or abandoned) so the next caller starts a new one."""
        flights = self._flights
        if flights.get(key) is flight:
            del flights[key]
            self._note_end(key)

    def __len__(self) -> int:
        return len(self._flights)


def _join(pending: Pending) -> Flight | None:
    """A :class:`Flight` resolved when the pending flight ends; None if it ended already."""
    flight = Flight()
    flight.owner = pending[0]
    pending.append(flight)
    if _DONE in pending and pending.index(_DONE) < pending.index(flight):
        return None  # (its owner resolved those before _DONE only)
    return flight


_lock = threading.Lock()
_local = threading.local()


def in_worker() -> bool:
    """True inside a background computation run by chorde (on a pool thread)."""
    return getattr(_local, "busy", False)


def run_as_worker(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` flagged as a background computation (see :func:`in_worker`)."""
    busy = getattr(_local, "busy", False)
    _local.busy = True
    try:
        return fn()
    finally:
        _local.busy = busy


_executor: concurrent.futures.Executor | None = None
_loop: asyncio.AbstractEventLoop | None = None


def default_executor() -> concurrent.futures.Executor:
    """The shared, bounded pool that runs background computations (created on first use)."""
    global _executor
    executor = _executor
    if executor is None:
        with _lock:
            if _executor is None:
                _executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=min(32, (os.cpu_count() or 1) + 4),
                    thread_name_prefix="chorde-bg",
                )
            executor = _executor
    return executor


def set_default_executor(executor: concurrent.futures.Executor | None) -> None:
    """Replace the shared background pool (``None``: a fresh default one on next use).

    The previous pool is not shut down: work already queued on it still completes.
    """
    global _executor
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit() method, got {executor!r}")
    with _lock:
        _executor = executor


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="chorde-asyncio", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run_coroutine(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run ``coro`` on chorde's background event loop thread (for callers outside a loop)."""
    return asyncio.run_coroutine_threadsafe(coro, _background_loop())
